//! `kafka_tls`: the Kafka listener speaks TLS only. rdkafka, kcat and the Python clients
//! trusting the test CA produce and consume exact records; a client trusting another CA, and
//! plain text on the port, get nothing and store nothing. With `client_ca_file`, only a client
//! certificate that CA signed gets in. SASL_SSL (SCRAM-SHA-256 over TLS) works, and its wrong
//! password does not.

use crate::certs::Certs;
use crate::common::*;
use crate::raw::{self, Conn};
use crate::sasl::{kafka_auth, passwd_user, write_users};
use std::io::Read;
use std::time::Duration;

/// Plain Kafka requests on the TLS port get no Kafka answer: the connection ends without
/// an ApiVersions response (at most a TLS alert comes back).
fn plain_text_gets_no_answer(port: u16) {
    let mut c = Conn::open(port);
    let correlation = c.send(raw::API_VERSIONS, 0, &[]);
    let mut all = Vec::new();
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match c.stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => all.extend_from_slice(&buf[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                panic!("plain text on the TLS port: still open after 10 s; got {all:?}")
            }
            Err(_) => break,
        }
    }
    assert!(
        all.len() < 8 || all[4..8] != correlation.to_be_bytes(),
        "plain text on the TLS port was answered: {all:?}"
    );
}

#[test]
fn tls_with_the_right_ca_works_and_another_ca_or_plain_text_does_not() {
    let certs = Certs::make();
    let mut face = Face::start(&certs.kafka_tls(false));
    let b = face.bootstrap();
    let good = Client::tls(&certs.file("ca.crt"));
    create_ok(
        &b,
        &good,
        &[
            ("tls", 2),
            ("py-confluent", 1),
            ("py-kafka", 1),
            ("kcat", 1),
        ],
    );

    let sent = batch("tls-rdkafka", 10);
    produce(&b, &good, "tls", &sent, &[]).assert_all_ok("rdkafka over TLS");
    let stored = face.recs("tls");
    assert_exact(&stored, &sent, "rdkafka over TLS");
    assert_eq!(consume(&b, &good, "tls", CALL).unwrap(), stored);

    for (py, topic) in [("confluent", "py-confluent"), ("kafka-python", "py-kafka")] {
        let sent = batch(py, 5);
        let out = python(py, &b, &good, topic, &sent, PyOpts::both());
        assert!(
            out.exception.is_none() && out.produced.iter().all(Result::is_ok),
            "{py} over TLS: {out:#?}\n{}",
            face.gw.log()
        );
        let stored = face.recs(topic);
        assert_exact(&stored, &sent, py);
        assert_eq!(out.consumed.as_ref(), Some(&stored), "{py}: {out:#?}");
    }

    let lines = "a:kcat-tls-1\nb:kcat-tls-2\n";
    let out = kcat(
        &b,
        &good,
        &["-P", "-t", "kcat", "-K", ":"],
        lines.as_bytes(),
    );
    assert!(out.status.success(), "kcat -P over TLS: {out:?}");
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
    assert!(out.status.success(), "kcat -C over TLS: {out:?}");
    assert_eq!(out.stdout, lines);

    // Refused: the server's certificate is not from the CA the client trusts; plain text.
    let counts = |face: &Face| -> Vec<(String, usize)> {
        face.topics()
            .into_iter()
            .map(|t| {
                let n = face.count(&t);
                (t, n)
            })
            .collect()
    };
    let before = counts(&face);
    let rogue_ca = Client::tls(&certs.file("other.crt"));
    let out = produce_failing(&b, &rogue_ca, "tls", &batch("other-ca", 3));
    out.assert_all_failed("rdkafka trusting another CA");
    assert!(
        out.seen
            .errors()
            .iter()
            .any(|(_, e)| e.contains("SSL") || e.contains("certificate")),
        "rdkafka trusting another CA: an SSL error:\n{}",
        out.seen.report()
    );
    assert!(consume(&b, &rogue_ca, "tls", Duration::from_millis(FAIL_MS)).is_err());
    let out = kcat(&b, &rogue_ca, &["-L", "-m", "3"], b"");
    assert!(!out.status.success(), "kcat trusting another CA: {out:?}");
    let out = produce_failing(&b, &Client::plain(), "tls", &batch("plain", 3));
    out.assert_all_failed("rdkafka in plain text on the TLS port");
    plain_text_gets_no_answer(face.kafka);
    assert_eq!(counts(&face), before, "refused clients stored nothing");

    // Still serving.
    let more = batch("tls-after", 2);
    produce(&b, &good, "tls", &more, &[]).assert_all_ok("rdkafka over TLS, after");
    let all: Vec<Sent> = sent.iter().chain(&more).cloned().collect();
    assert_exact(&face.recs("tls"), &all, "rdkafka over TLS, at the end");
    face.assert_running();
}

#[test]
fn mutual_tls_takes_only_a_certificate_the_client_ca_signed() {
    let certs = Certs::make();
    let mut face = Face::start(&certs.kafka_tls(true));
    let b = face.bootstrap();
    let ca = certs.file("ca.crt");
    let good = Client::tls(&ca).with_cert(&certs.file("client.crt"), &certs.file("client.key"));
    create_ok(
        &b,
        &good,
        &[("mtls", 2), ("py-confluent", 1), ("py-kafka", 1)],
    );
    let sent = batch("mtls-rdkafka", 8);
    produce(&b, &good, "mtls", &sent, &[]).assert_all_ok("rdkafka with a client certificate");
    let stored = face.recs("mtls");
    assert_exact(&stored, &sent, "mutual TLS");
    assert_eq!(consume(&b, &good, "mtls", CALL).unwrap(), stored);
    let out = kcat(&b, &good, &["-L", "-t", "mtls"], b"");
    assert!(
        out.status.success() && out.stdout.contains("topic \"mtls\" with 2 partitions"),
        "kcat with a client certificate: {out:?}"
    );
    for (py, topic) in [("confluent", "py-confluent"), ("kafka-python", "py-kafka")] {
        let sent = batch(py, 4);
        let out = python(py, &b, &good, topic, &sent, PyOpts::both());
        assert!(
            out.exception.is_none() && out.produced.iter().all(Result::is_ok),
            "{py} with a client certificate: {out:#?}\n{}",
            face.gw.log()
        );
        let stored = face.recs(topic);
        assert_exact(&stored, &sent, py);
        assert_eq!(out.consumed.as_ref(), Some(&stored), "{py}: {out:#?}");
    }

    let before: Vec<usize> = ["mtls", "py-confluent", "py-kafka"]
        .iter()
        .map(|t| face.count(t))
        .collect();
    let refused = [
        ("no client certificate", Client::tls(&ca)),
        (
            "a certificate from another CA",
            Client::tls(&ca).with_cert(&certs.file("rogue.crt"), &certs.file("rogue.key")),
        ),
    ];
    std::thread::scope(|s| {
        let handles: Vec<_> = refused
            .iter()
            .map(|(what, client)| {
                let b = &b;
                s.spawn(move || {
                    let out = produce_failing(b, client, "mtls", &batch(what, 3));
                    out.assert_all_failed(what);
                    assert!(
                        consume(b, client, "mtls", Duration::from_millis(FAIL_MS)).is_err(),
                        "{what}"
                    );
                    let out = kcat(b, client, &["-L", "-m", "3"], b"");
                    assert!(!out.status.success(), "kcat with {what}: {out:?}");
                    let out = python(
                        "confluent",
                        b,
                        client,
                        "py-confluent",
                        &batch(what, 1),
                        PyOpts::failing(),
                    );
                    assert!(
                        out.produced.iter().all(Result::is_err),
                        "confluent with {what}: {out:#?}"
                    );
                })
            })
            .collect();
        for h in handles {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
    let after: Vec<usize> = ["mtls", "py-confluent", "py-kafka"]
        .iter()
        .map(|t| face.count(t))
        .collect();
    assert_eq!(after, before, "refused clients stored nothing");
    plain_text_gets_no_answer(face.kafka);

    let more = batch("mtls-after", 2);
    produce(&b, &good, "mtls", &more, &[]).assert_all_ok("mutual TLS, after");
    let all: Vec<Sent> = sent.iter().chain(&more).cloned().collect();
    assert_exact(&face.recs("mtls"), &all, "mutual TLS, at the end");
    face.assert_running();
}

#[test]
fn sasl_ssl_scram_over_tls() {
    let certs = Certs::make();
    let mechanism = "SCRAM-SHA-256";
    let dir = tempfile::tempdir().unwrap();
    let alice = passwd_user("alice", "alice-tls-pw", Some(mechanism));
    let file = write_users(dir.path(), std::slice::from_ref(&alice));
    let mut face = Face::start(&format!(
        "{}{}",
        certs.kafka_tls(false),
        kafka_auth(mechanism, &file)
    ));
    let b = face.bootstrap();
    let ca = certs.file("ca.crt");
    let good = Client::tls(&ca).with_sasl(mechanism, alice.name, alice.password);
    assert_eq!(good.protocol(), "SASL_SSL");
    create_ok(
        &b,
        &good,
        &[("sasl-ssl", 2), ("py-confluent", 1), ("py-kafka", 1)],
    );
    let sent = batch("sasl-ssl", 8);
    produce(&b, &good, "sasl-ssl", &sent, &[]).assert_all_ok("rdkafka SASL_SSL");
    let stored = face.recs("sasl-ssl");
    assert_exact(&stored, &sent, "SASL_SSL");
    assert_eq!(consume(&b, &good, "sasl-ssl", CALL).unwrap(), stored);
    let (values, committed) = group_read(&b, &good, "sasl-ssl-group", "sasl-ssl", stored.len());
    let mut want: Vec<String> = stored.iter().map(|r| r.value.clone()).collect();
    want.sort();
    assert_eq!(values, want, "a group over SASL_SSL reads every record");
    assert_eq!(committed, stored.len() as i64);
    for (py, topic) in [("confluent", "py-confluent"), ("kafka-python", "py-kafka")] {
        let sent = batch(py, 4);
        let out = python(py, &b, &good, topic, &sent, PyOpts::both());
        assert!(
            out.exception.is_none() && out.produced.iter().all(Result::is_ok),
            "{py} SASL_SSL: {out:#?}\n{}",
            face.gw.log()
        );
        let stored = face.recs(topic);
        assert_exact(&stored, &sent, py);
        assert_eq!(out.consumed.as_ref(), Some(&stored), "{py}: {out:#?}");
    }
    let out = kcat(&b, &good, &["-L", "-t", "sasl-ssl"], b"");
    assert!(
        out.status.success() && out.stdout.contains("topic \"sasl-ssl\" with 2 partitions"),
        "kcat SASL_SSL: {out:?}"
    );

    let before = face.count("sasl-ssl");
    std::thread::scope(|s| {
        let wrong = s.spawn(|| {
            let c = Client::tls(&ca).with_sasl(mechanism, alice.name, "not-her-password");
            let out = produce_failing(&b, &c, "sasl-ssl", &batch("wrong", 3));
            out.assert_all_failed("SASL_SSL with a wrong password");
            assert!(
                out.seen.has(
                    rdkafka::error::RDKafkaErrorCode::Authentication,
                    &["SASL authentication error"]
                ),
                "SASL_SSL wrong password: {}",
                out.seen.report()
            );
        });
        // TLS without SASL; SASL without TLS.
        let tls_only = s.spawn(|| {
            let out = produce_failing(&b, &Client::tls(&ca), "sasl-ssl", &batch("tls-only", 3));
            out.assert_all_failed("SSL without SASL");
        });
        let sasl_only = s.spawn(|| {
            let c = Client::sasl(mechanism, alice.name, alice.password);
            let out = produce_failing(&b, &c, "sasl-ssl", &batch("sasl-only", 3));
            out.assert_all_failed("SASL_PLAINTEXT on the TLS port");
        });
        for h in [wrong, tls_only, sasl_only] {
            if let Err(p) = h.join() {
                std::panic::resume_unwind(p);
            }
        }
    });
    assert_eq!(
        face.count("sasl-ssl"),
        before,
        "refused clients stored nothing"
    );
    let more = batch("sasl-ssl-after", 2);
    produce(&b, &good, "sasl-ssl", &more, &[]).assert_all_ok("SASL_SSL, after");
    let all: Vec<Sent> = sent.iter().chain(&more).cloned().collect();
    assert_exact(&face.recs("sasl-ssl"), &all, "SASL_SSL, at the end");
    face.assert_running();
}
