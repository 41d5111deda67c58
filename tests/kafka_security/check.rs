//! `tributary check` on the Kafka listener's security: a warning when it binds beyond loopback
//! without `kafka_auth` (exit 0 all the same); users_file lines the configured mechanism cannot
//! use refused by `check` and `run` (exit 2, naming the file, the line and the fix); and the
//! SCRAM lines of `tributary passwd --mechanism` in the RFC 5803 form, derived from the
//! password (checked with the test's own PBKDF2).

use crate::certs::Certs;
use crate::common::*;
use crate::sasl::{bcrypt_user, computed_user, kafka_auth, passwd_user, write_users};
use crate::scram::{Credential, Hash};
use crate::support;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn write_config(dir: &Path, name: &str, kafka_listener: &str, embedded: &str) -> PathBuf {
    let path = dir.join(name);
    let yaml = config(support::free_port(), kafka_listener, embedded)
        .replace("DATA_DIR", &dir.join("data").display().to_string());
    std::fs::write(&path, yaml).unwrap();
    path
}

/// The lines of `check`'s output (stdout and stderr) that warn about `kafka_auth`.
fn auth_warnings(out: &Ran) -> Vec<String> {
    out.stdout
        .lines()
        .chain(out.stderr.lines())
        .filter(|l| l.contains("warning:") && l.contains("kafka_auth"))
        .map(String::from)
        .collect()
}

#[test]
fn check_warns_about_a_kafka_listener_beyond_loopback_without_kafka_auth() {
    let dir = tempfile::tempdir().unwrap();
    let users = write_users(dir.path(), &[passwd_user("alice", "alice-pw-3f9", None)]);
    let port = support::free_port();
    let cases = [
        (
            "0.0.0.0 without kafka_auth",
            format!("0.0.0.0:{port}"),
            String::new(),
            true,
        ),
        (
            "[::] without kafka_auth",
            format!("[::]:{port}"),
            String::new(),
            true,
        ),
        (
            "127.0.0.1 without kafka_auth",
            format!("127.0.0.1:{port}"),
            String::new(),
            false,
        ),
        (
            "[::1] without kafka_auth",
            format!("[::1]:{port}"),
            String::new(),
            false,
        ),
        (
            "0.0.0.0 with kafka_auth",
            format!("0.0.0.0:{port}"),
            kafka_auth("PLAIN", &users),
            false,
        ),
    ];
    for (i, (what, listen, embedded, warns)) in cases.iter().enumerate() {
        let path = write_config(dir.path(), &format!("{i}.yaml"), listen, embedded);
        let out = check(&path);
        assert_eq!(out.code(), Some(0), "{what}: {out:?}");
        let warnings = auth_warnings(&out);
        if *warns {
            assert_eq!(
                warnings.len(),
                1,
                "{what}: one warning line naming kafka_auth: {out:?}"
            );
        } else {
            assert!(warnings.is_empty(), "{what}: no warning: {out:?}");
        }
    }
}

#[test]
fn check_and_run_refuse_a_users_file_line_the_mechanism_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    let argon2 = passwd_user("alice", "alice-pw-3f9", None);
    let bcrypt = bcrypt_user("bob", "bob-pw-71c");
    let scram256 = computed_user("carol", "carol-pw-0d2", Hash::Sha256);
    let scram512 = computed_user("dave", "dave-pw-9aa", Hash::Sha512);
    // (mechanism, the file's lines, which of them is bad, its user)
    let cases = [
        (
            "SCRAM-SHA-256",
            vec![scram256.clone(), argon2.clone()],
            1,
            "alice",
        ),
        (
            "SCRAM-SHA-512",
            vec![bcrypt.clone(), scram512.clone()],
            0,
            "bob",
        ),
        (
            "SCRAM-SHA-512",
            vec![scram512.clone(), scram256.clone()],
            1,
            "carol",
        ),
        ("SCRAM-SHA-256", vec![scram512.clone()], 0, "dave"),
    ];
    for (i, (mechanism, lines, index, user)) in cases.iter().enumerate() {
        let sub = dir.path().join(i.to_string());
        std::fs::create_dir(&sub).unwrap();
        let users = write_users(&sub, lines);
        // write_users puts a comment line and a blank line first.
        let bad = index + 3;
        let text = std::fs::read_to_string(&users).unwrap();
        assert!(
            text.lines()
                .nth(bad - 1)
                .unwrap()
                .starts_with(&format!("{user}:")),
            "line {bad} of {text}"
        );
        let path = write_config(
            &sub,
            "bridge.yaml",
            &format!("127.0.0.1:{}", support::free_port()),
            &kafka_auth(mechanism, &users),
        );
        let what = format!("{mechanism} with {user}'s line");
        let out = check(&path);
        assert_eq!(out.code(), Some(2), "{what}: {out:?}");
        assert_names_the_line(&out.stderr, &users, (bad, user), mechanism, &what);
        // `run` refuses it too, before serving.
        let mut cmd = Command::new(support::BIN);
        cmd.args(["run", "-c"]).arg(&path).current_dir(&sub);
        let out = run(&mut cmd, b"", Duration::from_secs(20));
        assert_eq!(out.code(), Some(2), "run, {what}: {out:?}");
        assert_names_the_line(
            &out.stderr,
            &users,
            (bad, user),
            mechanism,
            &format!("run, {what}"),
        );
    }
    // Every line fits: valid.
    let users = write_users(dir.path(), std::slice::from_ref(&scram256));
    let path = write_config(
        dir.path(),
        "ok.yaml",
        &format!("127.0.0.1:{}", support::free_port()),
        &kafka_auth("SCRAM-SHA-256", &users),
    );
    let out = check(&path);
    assert_eq!(out.code(), Some(0), "{out:?}");
    // PLAIN takes every kind of line.
    let users = write_users(dir.path(), &[argon2, bcrypt, scram256, scram512]);
    let path = write_config(
        dir.path(),
        "plain.yaml",
        &format!("127.0.0.1:{}", support::free_port()),
        &kafka_auth("PLAIN", &users),
    );
    let out = check(&path);
    assert_eq!(out.code(), Some(0), "{out:?}");
}

#[track_caller]
fn assert_names_the_line(
    stderr: &str,
    users: &Path,
    (line, user): (usize, &str),
    mechanism: &str,
    what: &str,
) {
    let file = users.display().to_string();
    assert!(
        stderr.contains(&file),
        "{what}: names the file {file}:\n{stderr}"
    );
    // The line by its number, or by its user (a users file has one line per user).
    assert!(
        stderr.contains(&format!("{file}:{line}"))
            || stderr.contains(&format!("line {line}"))
            || stderr.contains(&format!(" {user}")),
        "{what}: names line {line} or its user {user}:\n{stderr}"
    );
    assert!(
        stderr.contains("tributary passwd") && stderr.contains(mechanism),
        "{what}: says how to make a {mechanism} line (tributary passwd ... {mechanism}):\n{stderr}"
    );
    assert!(
        !stderr.lines().next().unwrap_or_default().is_empty(),
        "{what}: a readable first line:\n{stderr}"
    );
}

#[test]
fn passwd_scram_lines_are_rfc5803_and_come_from_the_password() {
    for mechanism in ["SCRAM-SHA-256", "SCRAM-SHA-512"] {
        let hash = Hash::of(mechanism).unwrap();
        let line = passwd("user-1", "pass word €", Some(mechanism));
        let prefix = format!("user-1:{mechanism}$4096:");
        assert!(line.starts_with(&prefix), "{line}: starts with {prefix}");
        let c = Credential::parse(line.strip_prefix("user-1:").unwrap()).unwrap();
        assert_eq!((c.hash, c.iterations), (hash, 4096), "{line}");
        assert!(c.salt.len() >= 16, "{line}: a salt of 16 bytes or more");
        assert_eq!(
            c.rfc5803(),
            line["user-1:".len()..],
            "canonical base64: {line}"
        );
        assert!(
            c.verifies("pass word €"),
            "{line}: StoredKey and ServerKey of the password"
        );
        assert!(!c.verifies("pass word"), "{line}");
        let again = passwd("user-1", "pass word €", Some(mechanism));
        let c2 = Credential::parse(again.strip_prefix("user-1:").unwrap()).unwrap();
        assert_ne!(c.salt, c2.salt, "a fresh salt each time");
    }
    // A mechanism that does not exist is a usage error.
    let mut cmd = Command::new(support::BIN);
    cmd.args(["passwd", "u", "--mechanism", "SCRAM-SHA-1"]);
    let out = run(&mut cmd, b"pw\n", Duration::from_secs(20));
    assert_eq!(out.code(), Some(2), "{out:?}");
}

#[test]
fn check_and_run_name_the_key_of_a_missing_or_unfit_kafka_tls_or_kafka_auth_file() {
    let certs = Certs::make();
    let dir = tempfile::tempdir().unwrap();
    let (crt, key, ca, rogue_key) = (
        certs.file("server.crt"),
        certs.file("server.key"),
        certs.file("ca.crt"),
        certs.file("rogue.key"),
    );
    let missing = dir.path().join("missing.pem").display().to_string();
    let tls = |cert: &str, key: &str, client_ca: Option<&str>| {
        let ca = client_ca.map_or("null".to_string(), |c| format!("\"{c}\""));
        format!(
            ", kafka_tls: {{ cert_file: \"{cert}\", key_file: \"{key}\", client_ca_file: {ca} }}"
        )
    };
    let users_file = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let malformed = users_file("malformed", "# x\nalice\nbob:plain-text-password\n");
    let empty = users_file("empty", "# nobody yet\n\n");
    let cases: Vec<(&str, String, &str, Vec<&str>)> = vec![
        (
            "missing cert",
            tls(&missing, &key, None),
            "log.embedded.kafka_tls.cert_file",
            vec!["does not exist"],
        ),
        (
            "missing key",
            tls(&crt, &missing, None),
            "log.embedded.kafka_tls.key_file",
            vec!["does not exist"],
        ),
        (
            "missing client CA",
            tls(&crt, &key, Some(&missing)),
            "log.embedded.kafka_tls.client_ca_file",
            vec!["does not exist"],
        ),
        (
            "a key that is not the certificate's",
            tls(&crt, &rogue_key, None),
            "log.embedded.kafka_tls",
            vec!["do not go together"],
        ),
        (
            "a certificate as the key",
            tls(&crt, &crt, None),
            "log.embedded.kafka_tls.key_file",
            vec!["no usable private key"],
        ),
        (
            "a key as the certificate",
            tls(&key, &key, None),
            "log.embedded.kafka_tls.cert_file",
            vec!["no PEM certificate"],
        ),
        (
            "a key as the client CA",
            tls(&crt, &key, Some(&key)),
            "log.embedded.kafka_tls.client_ca_file",
            vec!["no PEM certificate"],
        ),
        (
            "a missing users file",
            kafka_auth("PLAIN", Path::new(&missing)),
            "log.embedded.kafka_auth.users_file",
            vec!["does not exist"],
        ),
        (
            "malformed users file lines",
            kafka_auth("PLAIN", &malformed),
            "log.embedded.kafka_auth.users_file",
            vec!["line 2", "line 3", "tributary passwd"],
        ),
        (
            "a users file without users",
            kafka_auth("SCRAM-SHA-256", &empty),
            "log.embedded.kafka_auth.users_file",
            vec!["no users"],
        ),
        (
            "an unknown mechanism",
            kafka_auth("GSSAPI", &empty),
            "log.embedded.kafka_auth.mechanism",
            vec!["GSSAPI", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"],
        ),
    ];
    for (i, (what, embedded, key_path, words)) in cases.iter().enumerate() {
        let path = write_config(
            dir.path(),
            &format!("{i}.yaml"),
            &format!("127.0.0.1:{}", support::free_port()),
            embedded,
        );
        let out = check(&path);
        assert_eq!(out.code(), Some(2), "{what}: {out:?}");
        let line = out
            .stderr
            .lines()
            .find(|l| l.contains(&format!("{key_path}: ")))
            .unwrap_or_else(|| panic!("{what}: a line naming {key_path}:\n{}", out.stderr));
        for w in words {
            assert!(line.contains(w), "{what}: `{w}` in {line:?}");
        }
    }
    // `run` refuses them too, before it listens on the Kafka port.
    let kafka = support::free_port();
    let path = write_config(
        dir.path(),
        "run.yaml",
        &format!("127.0.0.1:{kafka}"),
        &tls(&crt, &rogue_key, Some(&ca)),
    );
    let mut cmd = Command::new(support::BIN);
    cmd.args(["run", "-c"]).arg(&path).current_dir(dir.path());
    let out = run(&mut cmd, b"", Duration::from_secs(20));
    assert_eq!(out.code(), Some(2), "run: {out:?}");
    assert!(out.stderr.contains("do not go together"), "run: {out:?}");
}
