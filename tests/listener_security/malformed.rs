//! Malformed input: random bytes, truncated packets, a second CONNECT, a PUBLISH to a wildcard
//! topic, a bad protocol level, an oversized packet, a server-only packet, and silence instead
//! of CONNECT. Each closes its own connection (MQTT 5 with the DISCONNECT reason first), while
//! a client connected before goes on publishing and every one of its messages is stored.

use crate::common::*;
use std::net::Shutdown;
use std::time::{Duration, Instant};

/// One misbehaving connection; returns after asserting how the server closed it.
type Case = fn(u16, &mut Rng);

fn random_bytes_before_connect(port: u16, rng: &mut Rng) {
    for round in 0..16 {
        // A whole packet in the bytes (a length that promised more would only be waited for):
        // any type but CONNECT in half the rounds, a CONNECT with a random body in the others.
        let mut bytes = rng.bytes(64);
        if round % 2 == 0 {
            if bytes[0] >> 4 == 1 {
                bytes[0] ^= 0x40;
            }
        } else {
            bytes[0] = 0x10;
        }
        bytes[1] &= 0x1F; // a body of at most 31 of the 62 bytes after the header
        let mut raw = Raw::open(port, false);
        raw.send(&bytes);
        let answer = raw.bytes_until_closed(ANSWER);
        // At most "unacceptable protocol version", when the random level byte is not 4 or 5.
        assert!(
            answer.is_empty() || answer == [0x20, 2, 0, 1],
            "round {round} {bytes:?}: answered {answer:?}"
        );
    }
}

fn random_bytes_after_connect(port: u16, rng: &mut Rng) {
    for round in 0..8 {
        let v5 = round % 2 == 0;
        let mut raw = Raw::connect(port, &Hello::version(v5, &format!("random-{round}")));
        let mut bytes = rng.bytes(64);
        bytes[0] &= 0x0F; // packet type 0 is reserved: never valid
        bytes[1] &= 0x1F; // a body of at most 31 of the 62 bytes after the header
        raw.send(&bytes);
        if v5 {
            raw.disconnected(0x81, "random bytes after CONNECT (malformed packet)");
        } else {
            raw.closed(ANSWER, &format!("random bytes after CONNECT: {bytes:?}"));
        }
    }
}

fn truncated_connect(port: u16, _: &mut Rng) {
    for v5 in [false, true] {
        // The remaining length ends 5 bytes early, inside the client id.
        let mut hello = Hello::version(v5, "truncated-connect-id").bytes();
        assert!(hello[1] < 0x80);
        hello[1] -= 5;
        hello.truncate(hello.len() - 5);
        let mut raw = Raw::open(port, v5);
        raw.send(&hello);
        let answer = raw.bytes_until_closed(ANSWER);
        assert!(answer.is_empty(), "v5 {v5}: answered {answer:?}");
    }
}

fn truncated_publish(port: u16, _: &mut Rng) {
    for v5 in [false, true] {
        let mut raw = Raw::connect(port, &Hello::version(v5, "truncated-publish"));
        // QoS 1 PUBLISH whose topic length (200) runs past the packet's 6 bytes.
        raw.send(&[0x32, 0x06, 0x00, 0xC8, b'd', b'e', 0x00, 0x01]);
        if v5 {
            raw.disconnected(0x81, "truncated PUBLISH");
        } else {
            raw.closed(ANSWER, "truncated PUBLISH");
        }
    }
}

fn half_a_connect_then_eof(port: u16, _: &mut Rng) {
    let hello = Hello::v5("half").bytes();
    let mut raw = Raw::open(port, true);
    raw.send(&hello[..hello.len() / 2]);
    raw.stream.shutdown(Shutdown::Write).unwrap();
    // Closed at once, not at the CONNECT timeout.
    raw.closed(Duration::from_secs(2), "half a CONNECT, then EOF");
}

fn second_connect(port: u16, _: &mut Rng) {
    for v5 in [false, true] {
        let hello = Hello::version(v5, "twice");
        let mut raw = Raw::connect(port, &hello);
        raw.send(&hello.bytes());
        if v5 {
            raw.disconnected(0x82, "a second CONNECT (protocol error)");
        } else {
            raw.closed(ANSWER, "a second CONNECT");
        }
    }
}

fn wildcard_topic(port: u16, _: &mut Rng) {
    for (v5, topic, pkid) in [
        (true, "devices/+/telemetry/x", 1),
        (true, "devices/x/telemetry/#", 0),
        (false, "devices/x/telemetry/#", 1),
        (false, "devices/+/telemetry/x", 0),
    ] {
        let mut raw = Raw::connect(port, &Hello::version(v5, "wildcard"));
        raw.send(&publish_bytes(v5, topic, "wildcard", pkid, None));
        if v5 {
            raw.disconnected(0x90, topic);
        } else {
            raw.closed(ANSWER, topic);
        }
    }
}

fn bad_protocol_level(port: u16, _: &mut Rng) {
    let mut cases: Vec<Vec<u8>> = [0u8, 3, 6, 255]
        .iter()
        .map(|&level| {
            let mut hello = Hello::v4("level").bytes();
            assert_eq!(&hello[2..9], b"\x00\x04MQTT\x04");
            hello[8] = level;
            hello
        })
        .collect();
    // MQTT 3.1: protocol name "MQIsdp", level 3.
    let mut mqisdp = vec![0x10, 0];
    mqisdp.extend(b"\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x02id");
    mqisdp[1] = (mqisdp.len() - 2) as u8;
    cases.push(mqisdp);
    for hello in cases {
        let mut raw = Raw::open(port, false);
        raw.send(&hello);
        let answer = raw.bytes_until_closed(ANSWER);
        assert_eq!(
            answer,
            [0x20, 2, 0, 1],
            "{hello:?}: CONNACK unacceptable protocol version, then the close"
        );
    }
}

fn invalid_qos(port: u16, _: &mut Rng) {
    for v5 in [false, true] {
        let mut raw = Raw::connect(port, &Hello::version(v5, "qos3"));
        let mut publish = publish_bytes(v5, "devices/q/telemetry/x", "qos3", 1, None);
        publish[0] |= 0x06; // QoS 3
        raw.send(&publish);
        if v5 {
            raw.disconnected(0x81, "QoS 3");
        } else {
            raw.closed(ANSWER, "QoS 3");
        }
    }
}

fn oversized_packet(port: u16, _: &mut Rng) {
    for v5 in [false, true] {
        let mut raw = Raw::connect(port, &Hello::version(v5, "huge"));
        // A PUBLISH announcing 256 MiB, over the maximum packet size (1 MiB payload + room).
        raw.send(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, b'x']);
        if v5 {
            raw.disconnected(0x95, "a packet over the maximum packet size");
        } else {
            raw.closed(ANSWER, "a packet over the maximum packet size");
        }
    }
}

fn server_only_packet(port: u16, _: &mut Rng) {
    for v5 in [false, true] {
        let mut raw = Raw::connect(port, &Hello::version(v5, "connack"));
        // A well-formed CONNACK (MQTT 5: with property length 0).
        if v5 {
            raw.send(&[0x20, 0x03, 0x00, 0x00, 0x00]);
        } else {
            raw.send(&[0x20, 0x02, 0x00, 0x00]);
        }
        if v5 {
            raw.disconnected(0x82, "a CONNACK from the client");
        } else {
            raw.closed(ANSWER, "a CONNACK from the client");
        }
    }
}

#[test]
fn malformed_input_closes_only_its_own_connection() {
    let mut server = Server::start("");
    let port = server.port;
    // Silence instead of CONNECT, and a CONNECT that stops halfway: both closed at the
    // 10 s CONNECT timeout; waited for beside the other cases.
    let silent = std::thread::spawn(move || {
        let mut quiet = Raw::open(port, false);
        let mut partial = Raw::open(port, true);
        let hello = Hello::v5("stalled").bytes();
        partial.send(&hello[..hello.len() / 2]);
        let start = Instant::now();
        quiet.closed(Duration::from_secs(12), "no CONNECT within 10 s");
        let quiet_closed = start.elapsed();
        let left = Duration::from_secs(12).saturating_sub(start.elapsed());
        partial.closed(left, "half a CONNECT and no more within 10 s");
        (quiet_closed, start.elapsed())
    });

    let mut witness = Raw::connect(port, &Hello::v5("witness"));
    let mut sent = Vec::new();
    let mut rng = Rng::new(0x7121_b0a7_5eed);
    let cases: [(&str, Case); 11] = [
        ("random bytes before CONNECT", random_bytes_before_connect),
        ("random bytes after CONNECT", random_bytes_after_connect),
        ("truncated CONNECT", truncated_connect),
        ("truncated PUBLISH", truncated_publish),
        ("half a CONNECT then EOF", half_a_connect_then_eof),
        ("second CONNECT", second_connect),
        ("PUBLISH to a wildcard topic", wildcard_topic),
        ("bad protocol level", bad_protocol_level),
        ("QoS 3", invalid_qos),
        ("oversized packet", oversized_packet),
        ("server-only packet", server_only_packet),
    ];
    for (i, (what, case)) in cases.iter().enumerate() {
        case(port, &mut rng);
        let payload = format!("witness-{i:02} after {what}");
        witness.publish("devices/witness/telemetry/t", &payload);
        sent.push(payload);
    }

    let (quiet_closed, both_closed) = silent.join().unwrap();
    assert!(
        quiet_closed >= Duration::from_millis(9500),
        "closed after {quiet_closed:?}, before the 10 s CONNECT timeout"
    );
    assert!(both_closed <= Duration::from_secs(12), "{both_closed:?}");
    witness.publish("devices/witness/telemetry/t", "witness-last");
    sent.push("witness-last".into());
    witness.disconnect();

    // Only the witness's messages are stored (no wildcard or truncated publish), and the
    // process takes new clients.
    sent.sort();
    assert_eq!(server.values("telemetry"), sent);
    let mut raw = Raw::connect(port, &Hello::v4("after-all"));
    raw.publish("devices/after/telemetry/t", "after-all");
    raw.disconnect();
    assert_eq!(server.values("telemetry").len(), sent.len() + 1);
    server.assert_running();
}
