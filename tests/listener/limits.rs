//! Messages the listener cannot turn into records as asked: a topic no route matches is acked
//! and counted (`tributary_messages_unrouted_total`); a payload over `listener.max_payload`
//! from an MQTT 5 client is refused with reason 0x97 (quota exceeded) and the connection goes on; from a 3.1.1
//! client (no reason codes) it becomes a dead letter, and is acked.

use crate::common::{paho_publish, paho_try, sample, Listener, Raw, Reply, Setup};
use crate::support;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);
const DEAD_LETTER: &str = "tributary.dead-letter";

/// Reads the acks of `n` QoS 1 and 2 publishes (PUBACK or PUBREC): their (packet id,
/// reason), in order. A successful PUBREC is answered with PUBREL, and its PUBCOMP checked.
fn acks(c: &mut Raw, n: usize) -> Vec<(u16, u8)> {
    let mut got = Vec::new();
    let mut released = Vec::new();
    let mut completed = Vec::new();
    while got.len() < n || completed.len() < released.len() {
        match c.read(WAIT) {
            Some(Reply::PubAck { pkid, reason }) => got.push((pkid, reason)),
            Some(Reply::PubRec { pkid, reason }) => {
                got.push((pkid, reason));
                if reason < 0x80 {
                    c.write(&Raw::pubrel(pkid));
                    released.push(pkid);
                }
            }
            Some(Reply::PubComp { pkid, reason: 0 }) => completed.push(pkid),
            other => panic!("after {got:?}: {other:?}"),
        }
    }
    assert_eq!(completed, released, "PUBCOMP for each PUBREL, in order");
    got
}

#[test]
fn unroutable_messages_are_acked_and_counted() {
    let gw = Listener::start(Setup {
        http: true,
        ..Setup::default()
    });
    let before = gw.metrics();
    assert_eq!(
        sample(&before, "tributary_messages_unrouted_total"),
        Some(0.0)
    );

    let (mut v5, _) = Raw::connect(gw.port, "unrouted-v5", true);
    let mut bytes = Vec::new();
    for pkid in 1..=4 {
        bytes.extend(v5.publish("other/a", 1, pkid, false, b"no route"));
    }
    for pkid in 5..=7 {
        bytes.extend(v5.publish("nobody/listens/here", 2, pkid, false, b"no route"));
    }
    for _ in 0..2 {
        bytes.extend(v5.publish("other/q0", 0, 0, false, b"no route"));
    }
    for pkid in 8..=9 {
        bytes.extend(v5.publish("devices/r/telemetry/x", 1, pkid, false, b"routed"));
    }
    v5.write(&bytes);
    assert_eq!(
        acks(&mut v5, 9),
        (1..=9).map(|p| (p, 0)).collect::<Vec<_>>(),
        "MQTT 5: every unroutable QoS 1 and 2 message acked with success, in order"
    );
    // "devices/r/status" is not under the telemetry route's filter.
    let (mut v4, _) = Raw::connect(gw.port, "unrouted-v311", false);
    let mut bytes = Vec::new();
    for pkid in 1..=3 {
        bytes.extend(v4.publish("devices/r/status", 1, pkid, false, b"no route"));
    }
    v4.write(&bytes);
    assert_eq!(acks(&mut v4, 3), [(1, 0), (2, 0), (3, 0)]);

    let unrouted = 4 + 3 + 2 + 3;
    let counted = support::wait_until(Duration::from_secs(3), || {
        sample(&gw.metrics(), "tributary_messages_unrouted_total") == Some(f64::from(unrouted))
    });
    let text = gw.metrics();
    assert!(
        counted,
        "tributary_messages_unrouted_total is {:?}, expected {unrouted}",
        sample(&text, "tributary_messages_unrouted_total")
    );
    assert_eq!(
        sample(
            &text,
            "tributary_records_appended_total{topic=\"telemetry\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        gw.all("telemetry")
            .iter()
            .map(|r| r.value_str())
            .collect::<Vec<_>>(),
        ["routed", "routed"]
    );
    assert!(gw.all(DEAD_LETTER).is_empty(), "no dead letter for them");
}

#[test]
fn oversized_payload_from_mqtt5_is_refused_with_0x97_and_the_connection_goes_on() {
    let gw = Listener::start(Setup {
        listener: ", max_payload: 1KiB",
        ..Setup::default()
    });
    let topic = "devices/big5/telemetry/x";
    let (mut c, _) = Raw::connect(gw.port, "big-v5", true);
    let at_limit = vec![b'='; 1024];
    let over = vec![b'+'; 1025];
    let mut bytes = c.publish(topic, 1, 1, false, &vec![b'!'; 5000]);
    bytes.extend(c.publish(topic, 1, 2, false, b"small after big"));
    bytes.extend(c.publish(topic, 2, 3, false, &over));
    bytes.extend(c.publish(topic, 0, 0, false, &over));
    bytes.extend(c.publish(topic, 1, 4, false, &at_limit));
    bytes.extend(c.publish(topic, 1, 5, false, &over));
    bytes.extend(c.publish(topic, 2, 6, false, b"last"));
    c.write(&bytes);
    assert_eq!(
        acks(&mut c, 6),
        [(1, 0x97), (2, 0), (3, 0x97), (4, 0), (5, 0x97), (6, 0)],
        "over 1 KiB refused with 0x97 (Quota exceeded: 0x95 is no PUBACK code), each in its turn"
    );
    // The refused QoS 2 id is not held: PUBREL for it finds nothing (0x92).
    c.write(&Raw::pubrel(3));
    assert_eq!(
        c.read(WAIT),
        Some(Reply::PubComp {
            pkid: 3,
            reason: 0x92
        })
    );
    let values: Vec<Vec<u8>> = gw
        .all("telemetry")
        .into_iter()
        .map(|r| r.value.to_vec())
        .collect();
    assert_eq!(
        values,
        [b"small after big".to_vec(), at_limit, b"last".to_vec()],
        "the refused ones are not stored, the rest are"
    );
    assert!(gw.all(DEAD_LETTER).is_empty(), "refused, not dead-lettered");
}

/// paho-mqtt (MQTT 5) publishing over `max_payload`: the refusal reaches it as a failed
/// publish (a reason code of 0x80 or more on its PUBACK), the connection is kept, and the
/// next message is stored. A PUBACK reason code must be one MQTT 5 §3.4.2.1 allows (0x95
/// Packet too large is a CONNACK and DISCONNECT code, not a PUBACK one): paho reads any other
/// as a malformed packet, drops the connection and sends the message again, forever.
#[test]
fn oversized_payload_refusal_reaches_paho_as_a_failed_publish() {
    let gw = Listener::start(Setup {
        listener: ", max_payload: 1KiB",
        ..Setup::default()
    });
    let topic = "devices/big-paho/telemetry/x";
    let (completed, report) = paho_try(
        gw.port,
        &[
            "--version",
            "5",
            "--qos",
            "1",
            "--count",
            "2",
            "--size",
            "2000",
            "--topic",
            topic,
            "--timeout",
            "5",
        ],
    );
    println!("paho, 2 publishes of 2000 bytes over a 1 KiB limit: {report}");
    assert_eq!(report["connects"], 1, "the connection is kept: {report}");
    assert!(completed, "paho got an answer to each: {report}");
    let codes = report["reason_codes"].as_object().unwrap();
    assert!(
        codes.keys().all(|c| c.parse::<u8>().unwrap() >= 0x80)
            && codes.values().map(|n| n.as_u64().unwrap()).sum::<u64>() == 2,
        "two failure reason codes: {report}"
    );
    assert!(gw.all("telemetry").is_empty());
    let report = paho_publish(gw.port, &["--version", "5", "--qos", "1", "--topic", topic]);
    assert_eq!(report["reason_codes"]["0"], 1, "{report}");
    assert_eq!(gw.all("telemetry").len(), 1);
}

#[test]
fn oversized_payload_from_v311_becomes_a_dead_letter_and_is_acked() {
    let gw = Listener::start(Setup {
        listener: ", max_payload: 1KiB",
        http: true,
        ..Setup::default()
    });
    let topic = "devices/big3/telemetry/x";
    let big: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let (mut c, _) = Raw::connect(gw.port, "big-v311", false);
    let mut bytes = c.publish(topic, 1, 1, false, &big);
    bytes.extend(c.publish(topic, 1, 2, false, b"small after big"));
    c.write(&bytes);
    assert_eq!(acks(&mut c, 2), [(1, 0), (2, 0)], "both acked");
    // mosquitto_pub 3.1.1 with the payload on stdin: it exits 0 once PUBACKed.
    let mut child = Command::new(support::require(
        "mosquitto_pub",
        "apt-get install -y mosquitto-clients",
    ))
    .args(["-h", "127.0.0.1", "-p", &gw.port.to_string()])
    .args(["-V", "mqttv311", "-q", "1", "-t", topic, "-s"])
    .stdin(Stdio::piped())
    .spawn()
    .unwrap();
    child.stdin.take().unwrap().write_all(&big[..2000]).unwrap();
    assert!(child.wait().unwrap().success(), "mosquitto_pub was acked");

    let dead = gw.all(DEAD_LETTER);
    assert_eq!(dead.len(), 2, "one dead letter per oversized message");
    for (r, size) in dead.iter().zip([3000, 2000]) {
        assert_eq!(&r.value[..], &big[..1024], "the value is the first 1 KiB");
        assert_eq!(r.header("mqtt.topic"), Some(topic));
        assert_eq!(r.header("mqtt.qos"), Some("1"));
        assert_eq!(r.header("route"), Some("telemetry"));
        let error = r.header("error").unwrap_or_default();
        assert!(
            error.contains(&format!("{size} bytes")) && error.contains("(1024 bytes)"),
            "{error}"
        );
    }
    assert_eq!(
        gw.all("telemetry")
            .iter()
            .map(|r| r.value_str())
            .collect::<Vec<_>>(),
        ["small after big"]
    );
    let text = gw.metrics();
    assert_eq!(
        sample(
            &text,
            "tributary_dead_letters_total{reason=\"payload_too_large\"}"
        ),
        Some(2.0)
    );
}
