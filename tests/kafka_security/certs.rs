//! A test PKI made with the openssl command (as tests/listener_security/tls.rs does): CA `ca`
//! signs the server's and a client's certificate, CA `other` signs a rogue client's.
//! Certificates name 127.0.0.1 (CN and IP SAN) and localhost, so clients that check the host
//! (librdkafka's default `ssl.endpoint.identification.algorithm=https`, Python's ssl) accept
//! the server's.

use crate::common::run;
use crate::support;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

pub struct Certs {
    pub dir: TempDir,
}

impl Certs {
    pub fn make() -> Certs {
        let dir = tempfile::tempdir().unwrap();
        make_ca(dir.path(), "ca", "Tributary Kafka test CA");
        make_ca(dir.path(), "other", "Someone else's CA");
        make_cert(dir.path(), "server", "ca");
        make_cert(dir.path(), "client", "ca");
        make_cert(dir.path(), "rogue", "other");
        Certs { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The path as a string, for configs and command lines.
    pub fn file(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    /// `, kafka_tls: {...}` for `log.embedded`: the server's pair, and `client_ca_file` (the CA
    /// `ca`) when `mutual`.
    pub fn kafka_tls(&self, mutual: bool) -> String {
        let client_ca = if mutual {
            format!("\"{}\"", self.file("ca.crt"))
        } else {
            "null".into()
        };
        format!(
            ", kafka_tls: {{ cert_file: \"{}\", key_file: \"{}\", client_ca_file: {client_ca} }}",
            self.file("server.crt"),
            self.file("server.key")
        )
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = run(
        Command::new(support::require("openssl", "apt-get install -y openssl"))
            .args(args)
            .current_dir(dir),
        b"",
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
}

const EC: [&str; 5] = [
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
];

/// A self-signed CA: `{name}.crt`, `{name}.key`.
fn make_ca(dir: &Path, name: &str, cn: &str) {
    let (key, crt, subject) = (
        format!("{name}.key"),
        format!("{name}.crt"),
        format!("/CN={cn}"),
    );
    let mut args = vec!["req", "-x509"];
    args.extend(EC);
    args.extend([
        "-keyout", &key, "-out", &crt, "-days", "2", "-subj", &subject,
    ]);
    openssl(dir, &args);
}

/// `{name}.crt`/`{name}.key` signed by the CA `ca`, for 127.0.0.1 and localhost, usable by a
/// server and by a client.
fn make_cert(dir: &Path, name: &str, ca: &str) {
    let ext = format!("{name}.ext");
    std::fs::write(
        dir.join(&ext),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .unwrap();
    let (key, csr, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    let mut args = vec!["req"];
    args.extend(EC);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
    openssl(dir, &args);
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            &ca_crt,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ],
    );
}
