//! `kafka_auth` over plain text (SASL_PLAINTEXT), one gateway per mechanism: PLAIN with an
//! argon2id line from `tributary passwd`, a bcrypt line and SCRAM lines (usable with PLAIN
//! too); SCRAM-SHA-256 and SCRAM-SHA-512 with a line from `tributary passwd --mechanism` and
//! one computed by the test. Right credentials produce and consume exact records with
//! rdkafka, confluent-kafka, kafka-python and kcat; the exact error codes come from raw
//! requests (ApiVersions before authentication, 33 for another mechanism, 58 then a close for
//! a wrong password or an unknown user, the v0 raw-token flow); wrong, unknown, missing and
//! other-mechanism clients store nothing; the gateway serves good clients afterwards.

use crate::common::*;
use crate::raw::{self, Conn};
use crate::scram::{Credential, FinalNonce, Hash};
use rdkafka::error::RDKafkaErrorCode;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A user the gateway knows, and how its users_file line was made.
#[derive(Debug, Clone)]
pub struct User {
    pub name: &'static str,
    pub password: &'static str,
    pub line: String,
}

/// `tributary passwd` for PLAIN (argon2id) or a SCRAM mechanism (RFC 5803 line).
pub fn passwd_user(name: &'static str, password: &'static str, mechanism: Option<&str>) -> User {
    let line = passwd(name, password, mechanism);
    match mechanism {
        None => assert!(line.starts_with(&format!("{name}:$argon2id$")), "{line}"),
        Some(m) => {
            let hash = line
                .strip_prefix(&format!("{name}:"))
                .unwrap_or_else(|| panic!("{line}: not `{name}:...`"));
            let c = Credential::parse(hash).unwrap_or_else(|e| panic!("{line}: {e}"));
            assert_eq!(c.hash.mechanism(), m, "{line}");
            assert!(c.verifies(password), "{line}: not made from the password");
        }
    }
    User {
        name,
        password,
        line,
    }
}

/// A SCRAM line computed here, not by the gateway (`iterations` 4096, a fixed salt).
pub fn computed_user(name: &'static str, password: &'static str, hash: Hash) -> User {
    let c = Credential::new(hash, password, b"kafka-security-salt", 4096);
    User {
        name,
        password,
        line: format!("{name}:{}", c.rfc5803()),
    }
}

/// A bcrypt line (as `htpasswd -B` writes).
pub fn bcrypt_user(name: &'static str, password: &'static str) -> User {
    let hash = bcrypt::hash(password, 4).unwrap();
    assert!(hash.starts_with("$2b$04$"), "{hash}");
    User {
        name,
        password,
        line: format!("{name}:{hash}"),
    }
}

/// The users file for `mechanism`: alice from `tributary passwd`, and the other kinds of line
/// that mechanism takes. A comment and a blank line too.
pub fn users(mechanism: &str) -> Vec<User> {
    match Hash::of(mechanism) {
        None => vec![
            passwd_user("alice", "alice-pw-3f9", None),
            bcrypt_user("bob", "bob-pw-71c"),
            computed_user("carol", "carol-pw-0d2", Hash::Sha256),
            passwd_user("dave", "dave-pw-9aa", Some("SCRAM-SHA-512")),
        ],
        Some(hash) => vec![
            passwd_user("alice", "alice-pw-3f9", Some(mechanism)),
            computed_user("carol", "carol-pw-0d2", hash),
        ],
    }
}

pub fn write_users(dir: &Path, users: &[User]) -> PathBuf {
    let path = dir.join("kafka-users");
    let mut text = String::from("# Kafka clients\n\n");
    for u in users {
        text.push_str(&u.line);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

pub fn kafka_auth(mechanism: &str, users_file: &Path) -> String {
    format!(
        ", kafka_auth: {{ mechanism: {mechanism}, users_file: \"{}\" }}",
        users_file.display()
    )
}

/// A mechanism the gateway does not have when `mechanism` is configured.
fn another(mechanism: &str) -> &'static str {
    match mechanism {
        "PLAIN" => "SCRAM-SHA-256",
        "SCRAM-SHA-256" => "SCRAM-SHA-512",
        _ => "PLAIN",
    }
}

#[test]
fn sasl_plain() {
    scenario("PLAIN");
}

#[test]
fn sasl_scram_sha_256() {
    scenario("SCRAM-SHA-256");
}

#[test]
fn sasl_scram_sha_512() {
    scenario("SCRAM-SHA-512");
}

fn scenario(mechanism: &str) {
    let dir = tempfile::tempdir().unwrap();
    let users = users(mechanism);
    let file = write_users(dir.path(), &users);
    let mut face = Face::start(&kafka_auth(mechanism, &file));
    let alice = &users[0];
    raw_exchanges(&face, mechanism, &users);

    let b = face.bootstrap();
    let good = Client::sasl(mechanism, alice.name, alice.password);
    create_ok(
        &b,
        &good,
        &[("rd", 2), ("py-confluent", 2), ("py-kafka", 2), ("kcat", 1)],
    );

    // rdkafka: every user, each kind of line.
    let mut rd_sent = batch("rd-alice", 12);
    produce(&b, &good, "rd", &rd_sent, &[]).assert_all_ok("rdkafka alice");
    for u in &users[1..] {
        let sent = batch(&format!("rd-{}", u.name), 3);
        let c = Client::sasl(mechanism, u.name, u.password);
        produce(&b, &c, "rd", &sent, &[]).assert_all_ok(&format!("rdkafka {}", u.name));
        rd_sent.extend(sent);
    }
    let stored = face.recs("rd");
    assert_exact(&stored, &rd_sent, "rdkafka");
    assert_eq!(
        consume(&b, &good, "rd", CALL).unwrap(),
        stored,
        "rdkafka reads the log"
    );
    // A consumer group: librdkafka authenticates its coordinator connection too.
    let (values, committed) = group_read(&b, &good, "sasl-group", "rd", stored.len());
    let mut want: Vec<String> = stored.iter().map(|r| r.value.clone()).collect();
    want.sort();
    assert_eq!(values, want, "the group reads every record");
    assert_eq!(
        committed,
        stored.len() as i64,
        "the group's committed offsets"
    );

    // confluent-kafka and kafka-python, each its own topic.
    for (py, topic) in [("confluent", "py-confluent"), ("kafka-python", "py-kafka")] {
        let sent = batch(py, 8);
        let out = python(py, &b, &good, topic, &sent, PyOpts::both());
        assert!(
            out.exception.is_none() && out.produced.iter().all(Result::is_ok),
            "{py} {mechanism}: {out:#?}\n{}",
            face.gw.log()
        );
        assert_eq!(out.produced.len(), sent.len(), "{py}: {out:#?}");
        let stored = face.recs(topic);
        assert_exact(&stored, &sent, py);
        assert_eq!(
            out.consumed.as_ref(),
            Some(&stored),
            "{py} reads the log: {out:#?}"
        );
    }

    // kcat produces keyed lines and reads them back.
    let lines = "a:kcat-1\nb:kcat-2\na:kcat-3\n";
    let out = kcat(
        &b,
        &good,
        &["-P", "-t", "kcat", "-K", ":"],
        lines.as_bytes(),
    );
    assert!(out.status.success(), "kcat -P: {out:?}");
    let out = kcat(
        &b,
        &good,
        &[
            "-C",
            "-t",
            "kcat",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k:%s\n",
        ],
        b"",
    );
    assert!(out.status.success(), "kcat -C: {out:?}");
    assert_eq!(out.stdout, lines, "kcat reads what it wrote");

    // Refused clients, all at once: nothing of theirs is stored.
    let before: Vec<(String, usize)> = face
        .topics()
        .into_iter()
        .map(|t| {
            let n = face.count(&t);
            (t, n)
        })
        .collect();
    refused_clients(&b, mechanism, alice);
    let after: Vec<(String, usize)> = face
        .topics()
        .into_iter()
        .map(|t| {
            let n = face.count(&t);
            (t, n)
        })
        .collect();
    assert_eq!(after, before, "refused clients stored nothing");

    // Still serving: a good client produces and reads again.
    let more = batch("rd-after", 3);
    produce(&b, &good, "rd", &more, &[]).assert_all_ok("rdkafka after the refusals");
    rd_sent.extend(more);
    let stored = face.recs("rd");
    assert_exact(&stored, &rd_sent, "rdkafka, at the end");
    assert_eq!(consume(&b, &good, "rd", CALL).unwrap(), stored);
    face.assert_running();
    // No password, right or wrong, is ever logged.
    let log = face.gw.log();
    for secret in users.iter().map(|u| u.password).chain(["not-her-password"]) {
        assert!(
            !log.contains(secret),
            "the gateway logged a password ({secret}):\n{log}"
        );
    }
}

/// The listener's answers, byte for byte.
fn raw_exchanges(face: &Face, mechanism: &str, users: &[User]) {
    let alice = &users[0];
    let port = face.kafka;
    // ApiVersions before authentication, offering both SASL APIs; anything else closes.
    let mut c = Conn::open(port);
    let apis = c.api_versions();
    for api in [raw::SASL_HANDSHAKE, raw::SASL_AUTHENTICATE] {
        let (_, min, max) = *apis
            .iter()
            .find(|a| a.0 == api)
            .unwrap_or_else(|| panic!("ApiVersions offers api {api}: {apis:?}"));
        assert!(min <= 1 && max >= 1, "api {api}: v1 offered: {min}..={max}");
    }
    assert_eq!(
        c.metadata(),
        None,
        "Metadata before authentication closes the connection"
    );

    // Without ApiVersions first, too.
    let mut c = Conn::open(port);
    assert_eq!(
        c.metadata(),
        None,
        "Metadata as the first request closes the connection"
    );

    // Another mechanism: 33 with the enabled one listed.
    let other = another(mechanism);
    let mut c = Conn::open(port);
    assert_eq!(
        c.handshake(1, other),
        Some((raw::UNSUPPORTED_SASL_MECHANISM, vec![mechanism.to_string()])),
        "SaslHandshake v1 {other}"
    );
    let mut c = Conn::open(port);
    assert_eq!(
        c.handshake(0, other),
        Some((raw::UNSUPPORTED_SASL_MECHANISM, vec![mechanism.to_string()])),
        "SaslHandshake v0 {other}"
    );
    // The configured one, as the handshake lists it.
    let mut c = Conn::open(port);
    assert_eq!(
        c.handshake(1, mechanism),
        Some((0, vec![mechanism.to_string()])),
        "SaslHandshake v1 {mechanism}"
    );

    // SaslHandshake v1 + SaslAuthenticate: right password, then requests are served.
    let mut c = Conn::open(port);
    c.api_versions();
    c.login(false, mechanism, alice.name, alice.password)
        .unwrap_or_else(|e| panic!("{mechanism} login: {e:?}\n{}", face.gw.log()));
    let topics = c.metadata().expect("Metadata served after authentication");
    assert!(!topics.iter().any(|t| t.is_empty()), "{topics:?}");

    // Every user with each kind of line: the right password gets in (for SCRAM with the salt
    // and iterations of the user's line), a wrong one gets 58 and the close.
    for user in users {
        let mut c = Conn::open(port);
        let got = c
            .login_with(
                false,
                mechanism,
                user.name,
                user.password,
                FinalNonce::Server,
            )
            .unwrap_or_else(|e| panic!("{mechanism} login of {}: {e:?}", user.name));
        if let Some((salt, iterations)) = got {
            let line = Credential::parse(user.line.split_once(':').unwrap().1).unwrap();
            assert_eq!(
                (salt, iterations),
                (line.salt, line.iterations),
                "{}: server-first-message has the salt and iterations of the line",
                user.name
            );
        }
        assert!(c.metadata().is_some(), "{} served after login", user.name);
        let mut c = Conn::open(port);
        match c.login(false, mechanism, user.name, &format!("{}x", user.password)) {
            Err((code, _)) if code == raw::SASL_AUTHENTICATION_FAILED => {}
            other => panic!(
                "{mechanism} {}'s wrong password: expected 58, got {other:?}",
                user.name
            ),
        }
        c.assert_closed(&format!("{mechanism} {}'s wrong password", user.name));
    }

    // Wrong password, unknown user: 58, then the connection is closed.
    for (what, user, password) in [
        ("wrong password", alice.name, "not-her-password"),
        ("unknown user", "mallory", alice.password),
        ("empty password", alice.name, ""),
    ] {
        let mut c = Conn::open(port);
        match c.login(false, mechanism, user, password) {
            Err((code, _)) if code == raw::SASL_AUTHENTICATION_FAILED => {}
            other => panic!("{mechanism} {what}: expected error 58, got {other:?}"),
        }
        c.assert_closed(&format!("{mechanism} {what}, after error 58"));
    }

    if Hash::of(mechanism).is_some() {
        // librdkafka before 2.6.1 puts its own nonce twice in client-final-message (kcat 1.7.1
        // on Debian has 2.0.2); Apache Kafka takes it (3.8.1+: the server's nonce ends it).
        let mut c = Conn::open(port);
        c.login_with(
            false,
            mechanism,
            alice.name,
            alice.password,
            FinalNonce::Doubled,
        )
        .unwrap_or_else(|e| {
            panic!(
                "{mechanism} login with librdkafka < 2.6.1's doubled client nonce: {e:?}\n{}",
                face.gw.log()
            )
        });
        assert!(
            c.metadata().is_some(),
            "served after the doubled-nonce login"
        );
        // A final nonce the server's does not end: refused like a wrong password.
        let mut c = Conn::open(port);
        match c.login_with(
            false,
            mechanism,
            alice.name,
            alice.password,
            FinalNonce::Tampered,
        ) {
            Err((code, _)) if code == raw::SASL_AUTHENTICATION_FAILED => {}
            other => panic!("{mechanism} tampered final nonce: expected error 58, got {other:?}"),
        }
        c.assert_closed(&format!("{mechanism} tampered final nonce, after error 58"));
    }

    // The v0 flow: SaslHandshake v0, then raw length-prefixed tokens (kafka-python and old
    // librdkafka). Right password: served; wrong: closed, nothing served.
    let mut c = Conn::open(port);
    v0_login(&mut c, mechanism, alice.name, alice.password)
        .unwrap_or_else(|e| panic!("{mechanism} v0 login: {e:?}\n{}", face.gw.log()));
    let mut c = Conn::open(port);
    let refused = v0_login(&mut c, mechanism, alice.name, "not-her-password");
    assert!(
        refused.is_err(),
        "{mechanism} v0 wrong password: {refused:?}"
    );
}

/// The v0 raw-token flow; Ok once a Metadata request is answered after it. For PLAIN the
/// server may answer the token with an empty frame or with nothing: Metadata is pipelined
/// behind the token and an empty frame before its answer is skipped.
fn v0_login(c: &mut Conn, mechanism: &str, user: &str, password: &str) -> Result<(), String> {
    if Hash::of(mechanism).is_some() {
        c.login(true, mechanism, user, password)
            .map_err(|e| format!("{e:?}"))?;
        return c
            .metadata()
            .map(|_| ())
            .ok_or("closed after authentication".into());
    }
    match c.handshake(0, mechanism) {
        Some((0, _)) => {}
        other => return Err(format!("handshake v0: {other:?}")),
    }
    c.write_frame(format!("\0{user}\0{password}").as_bytes());
    let correlation = c.send(raw::METADATA, 1, &raw::Body::default().i32(-1).0);
    loop {
        match c.read_frame() {
            raw::Reply::Closed => return Err("closed".into()),
            raw::Reply::Frame(f) if f.is_empty() => continue,
            raw::Reply::Frame(f) => {
                let got = i32::from_be_bytes(f[..4].try_into().unwrap());
                return if got == correlation {
                    Ok(())
                } else {
                    Err(format!("a frame that is not the Metadata answer: {f:?}"))
                };
            }
        }
    }
}

/// Clients that must not get in, side by side: rdkafka with a wrong password, an unknown
/// user, no SASL, another mechanism; confluent-kafka, kafka-python and kcat with a wrong
/// password. Each fails, and says why where the client can.
fn refused_clients(b: &str, mechanism: &str, alice: &User) {
    let other = another(mechanism);
    std::thread::scope(|s| {
        let rd = |what: &'static str, client: Client, expect: Option<Vec<String>>| {
            s.spawn(move || {
                let out = produce_failing(b, &client, "rd", &batch(what, 3));
                out.assert_all_failed(what);
                if let Some(words) = expect {
                    let words: Vec<&str> = words.iter().map(String::as_str).collect();
                    assert!(
                        out.seen.has(RDKafkaErrorCode::Authentication, &words),
                        "{mechanism} {what}: an authentication error with {words:?}:\n{}",
                        out.seen.report()
                    );
                }
                let read = consume(b, &client, "rd", Duration::from_millis(FAIL_MS));
                assert!(read.is_err(), "{mechanism} {what}: consumed {read:?}");
            })
        };
        let handles = vec![
            rd(
                "wrong password",
                Client::sasl(mechanism, alice.name, "not-her-password"),
                Some(vec!["SASL authentication error".into()]),
            ),
            rd(
                "unknown user",
                Client::sasl(mechanism, "mallory", alice.password),
                Some(vec!["SASL authentication error".into()]),
            ),
            rd("no SASL", Client::plain(), None),
            rd(
                "another mechanism",
                Client::sasl(other, alice.name, alice.password),
                Some(vec![
                    "Unsupported SASL mechanism".into(),
                    format!("supported mechanisms: {mechanism}"),
                ]),
            ),
            s.spawn(|| {
                let c = Client::sasl(mechanism, alice.name, "not-her-password");
                let out = python(
                    "confluent",
                    b,
                    &c,
                    "py-confluent",
                    &batch("bad", 2),
                    PyOpts::failing(),
                );
                assert!(
                    out.produced.iter().all(Result::is_err),
                    "confluent wrong password: {out:#?}"
                );
                assert!(
                    out.errors.iter().any(|e| e.starts_with("_AUTHENTICATION")),
                    "confluent wrong password: an _AUTHENTICATION error: {out:#?}"
                );
            }),
            s.spawn(|| {
                let c = Client::sasl(mechanism, alice.name, "not-her-password");
                let out = python(
                    "kafka-python",
                    b,
                    &c,
                    "py-kafka",
                    &batch("bad", 2),
                    PyOpts::failing(),
                );
                assert!(
                    out.exception.is_some() || out.produced.iter().all(Result::is_err),
                    "kafka-python wrong password: {out:#?}"
                );
                // kafka-python 3.0.12 logs the server's error 58, or, when the answer and
                // the close arrive together, only "socket disconnected" (the gateway did send
                // 58 first: seen through a proxy; the raw exchanges above assert it).
                let all = format!("{out:?}");
                assert!(
                    all.contains("SaslAuthenticationFailed") || all.contains("socket disconnected"),
                    "kafka-python wrong password: an authentication error: {out:#?}"
                );
            }),
            s.spawn(|| {
                let c = Client::sasl(mechanism, alice.name, "not-her-password");
                let out = kcat(b, &c, &["-L", "-m", "3"], b"");
                assert!(
                    !out.status.success() && out.stderr.contains("SASL authentication error"),
                    "kcat -L with a wrong password: {out:?}"
                );
                let out = kcat(
                    b,
                    &c,
                    &["-P", "-t", "kcat", "-X", "message.timeout.ms=3000"],
                    b"x\n",
                );
                assert!(
                    !out.status.success() && out.stderr.contains("SASL authentication error"),
                    "kcat -P with a wrong password: {out:?}"
                );
            }),
        ];
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
}
