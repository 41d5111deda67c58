//! `listener.tls`: MQTT over TLS with a test CA made by the openssl command, mutual TLS with
//! `client_ca_file`, and what `check` (and `run`) say about certificate files that are missing
//! or do not fit.

use crate::common::*;
use crate::support;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use tempfile::TempDir;

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
fn make_ca(dir: &Path, name: &str) {
    let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
    let mut args = vec!["req", "-x509"];
    args.extend(EC);
    args.extend([
        "-keyout",
        &key,
        "-out",
        &crt,
        "-days",
        "2",
        "-subj",
        "/CN=Tributary listener test CA",
    ]);
    openssl(dir, &args);
}

/// `{name}.crt`/`{name}.key` signed by the CA `ca`, with the IP SAN 127.0.0.1.
fn make_cert(dir: &Path, name: &str, ca: &str) {
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
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
            "san.ext",
        ],
    );
}

/// CA `ca` signs `server` and `client`; CA `other` signs `rogue`.
fn certs() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    make_ca(dir.path(), "ca");
    make_ca(dir.path(), "other");
    make_cert(dir.path(), "server", "ca");
    make_cert(dir.path(), "client", "ca");
    make_cert(dir.path(), "rogue", "other");
    dir
}

fn file(dir: &TempDir, name: &str) -> String {
    dir.path().join(name).display().to_string()
}

/// The `tls:` map for a server certificate signed by `ca`, plus `extra` keys.
fn tls_fields(certs: &TempDir, tls_port: u16, extra: &str) -> String {
    format!(
        ", tls: {{ listen: \"127.0.0.1:{tls_port}\", cert_file: \"{}\", key_file: \"{}\"{extra} }}",
        file(certs, "server.crt"),
        file(certs, "server.key")
    )
}

#[test]
fn tls_publishes_and_a_client_trusting_another_ca_fails() {
    let certs = certs();
    let tls = support::free_port();
    let server = Server::start(&tls_fields(&certs, tls, ""));
    let ca = file(&certs, "ca.crt");
    for version in ["5", "311"] {
        let out = pub_one(
            tls,
            version,
            "devices/tls/telemetry/t",
            &format!("tls-{version}"),
            &["--cafile", &ca],
        );
        assert!(out.status.success(), "{out:?}\n{}", server.gw.log());
    }
    // The client does not trust the server's certificate: no connection, nothing stored.
    let other = file(&certs, "other.crt");
    let out = pub_one(
        tls,
        "5",
        "devices/tls/telemetry/t",
        "tls-other-ca",
        &["--cafile", &other],
    );
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("TLS error"), "{out:?}");
    // Plain MQTT on the TLS port: no CONNACK, the connection is closed.
    let mut raw = Raw::open(tls, true);
    raw.send(&Hello::v5("plain-on-tls").bytes());
    let answer = raw.bytes_until_closed(ANSWER);
    assert!(
        answer.first() != Some(&0x20),
        "a CONNACK for plain text on the TLS port: {answer:?}"
    );
    // The plain port works beside it.
    let mut raw = Raw::connect(server.port, &Hello::v5("plain"));
    raw.publish("devices/plain/telemetry/t", "plain");
    raw.disconnect();
    assert_eq!(server.values("telemetry"), ["plain", "tls-311", "tls-5"]);
}

#[test]
fn mutual_tls_takes_only_a_certificate_the_client_ca_signed() {
    let certs = certs();
    let tls = support::free_port();
    let ca = file(&certs, "ca.crt");
    let server = Server::start(&tls_fields(
        &certs,
        tls,
        &format!(", client_ca_file: \"{ca}\""),
    ));
    let refused: [(&str, Vec<String>); 2] = [
        ("mtls-no-cert", vec![]),
        (
            "mtls-rogue-cert",
            vec![
                "--cert".into(),
                file(&certs, "rogue.crt"),
                "--key".into(),
                file(&certs, "rogue.key"),
            ],
        ),
    ];
    for (what, extra) in refused {
        for version in ["5", "311"] {
            let mut args = vec!["--cafile", &ca];
            args.extend(extra.iter().map(String::as_str));
            let out = pub_one(tls, version, "devices/mtls/telemetry/t", what, &args);
            assert!(!out.status.success(), "{what} {version}: {out:?}");
        }
    }
    let (crt, key) = (file(&certs, "client.crt"), file(&certs, "client.key"));
    for version in ["5", "311"] {
        let what = format!("mtls-client-{version}");
        let out = pub_one(
            tls,
            version,
            "devices/mtls/telemetry/t",
            &what,
            &["--cafile", &ca, "--cert", &crt, "--key", &key],
        );
        assert!(out.status.success(), "{what}: {out:?}\n{}", server.gw.log());
    }
    assert_eq!(
        server.values("telemetry"),
        ["mtls-client-311", "mtls-client-5"]
    );
    let out = check(&server.gw.config_path());
    assert_eq!(out.code(), Some(0), "{out:?}");
    let line = format!(
        "listener: mqtt://127.0.0.1:{} and mqtts://127.0.0.1:{tls}, client certificates required (MQTT 5 and 3.1.1; anonymous;",
        server.port
    );
    assert!(out.stdout.contains(&line), "{line}\n{out:?}");
}

#[test]
fn check_and_run_name_the_tls_key_of_a_missing_or_unfit_file() {
    let certs = certs();
    let (crt, key, ca) = (
        file(&certs, "server.crt"),
        file(&certs, "server.key"),
        file(&certs, "ca.crt"),
    );
    let missing = file(&certs, "missing.pem");
    let rogue_key = file(&certs, "rogue.key");
    let tls = |cert: &str, key: &str, client_ca: Option<&str>| {
        let ca = client_ca.map_or(String::new(), |c| format!(", client_ca_file: \"{c}\""));
        format!(
            ", tls: {{ listen: \"127.0.0.1:{}\", cert_file: \"{cert}\", key_file: \"{key}\"{ca} }}",
            support::free_port()
        )
    };
    let cases = [
        (
            "missing cert",
            tls(&missing, &key, None),
            "listener.tls.cert_file",
            "does not exist",
        ),
        (
            "missing key",
            tls(&crt, &missing, None),
            "listener.tls.key_file",
            "does not exist",
        ),
        (
            "missing client CA",
            tls(&crt, &key, Some(&missing)),
            "listener.tls.client_ca_file",
            "does not exist",
        ),
        (
            "a key that is not the certificate's",
            tls(&crt, &rogue_key, None),
            "listener.tls",
            "do not go together",
        ),
        (
            "a certificate as the key",
            tls(&crt, &crt, None),
            "listener.tls.key_file",
            "no usable private key",
        ),
        (
            "a key as the certificate",
            tls(&key, &key, None),
            "listener.tls.cert_file",
            "no PEM certificate",
        ),
        (
            "a key as the client CA",
            tls(&crt, &key, Some(&key)),
            "listener.tls.client_ca_file",
            "no PEM certificate",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (what, fields, key, message)) in cases.iter().enumerate() {
        let listen = format!("\"127.0.0.1:{}\"", support::free_port());
        let path = write_config(
            dir.path(),
            &format!("{i}.yaml"),
            &config(&listen, fields, None),
        );
        let out = check(&path);
        assert_eq!(out.code(), Some(2), "{what}: {out:?}");
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(
            out.stderr.contains(&format!("{key}: ")) && out.stderr.contains(message),
            "{what}: expected `{key}: ...{message}`:\n{}",
            out.stderr
        );
        assert!(!first.is_empty(), "{what}: a readable first line: {out:?}");
    }
    // `run` refuses the key that does not fit too, before listening.
    let listen = format!("\"127.0.0.1:{}\"", support::free_port());
    let mut gw = support::Gateway::new(&config(&listen, &tls(&crt, &rogue_key, Some(&ca)), None));
    gw.spawn();
    let status = gw.wait_exit(Duration::from_secs(20));
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{}", gw.log());
    assert!(gw.log().contains("do not go together"), "{}", gw.log());
}
