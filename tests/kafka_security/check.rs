//! `tributary check` on the Kafka listener's security: a warning when it binds beyond loopback
//! without `kafka_auth` (exit 0 all the same); users_file lines the configured mechanism cannot
//! use refused by `check` and `run` (exit 2, naming the file, the line and the fix); and the
//! SCRAM lines of `tributary passwd --mechanism` in the RFC 5803 form, derived from the
//! password (checked with the test's own PBKDF2).

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
