//! The listener's metrics on `/metrics`: `tributary_listener_connections` follows connections
//! opening and closing (cleanly, abruptly, refused), and the `face="listener"` counters count
//! exactly the messages received and acked.

use crate::common::{sample, Listener, Raw, Reply, Setup};
use crate::support;
use std::net::Shutdown;
use std::time::Duration;

const CONNECTIONS: &str = "tributary_listener_connections";
const RECEIVED: &str = "tributary_messages_received_total{face=\"listener\"}";
const ACKED: &str = "tributary_messages_acked_total{face=\"listener\"}";

/// Waits until `name` reads `value` (metrics follow events by a moment); the last reading.
fn settles(gw: &Listener, name: &str, value: f64) -> Option<f64> {
    support::wait_until(Duration::from_secs(5), || {
        sample(&gw.metrics(), name) == Some(value)
    });
    sample(&gw.metrics(), name)
}

#[test]
fn listener_metrics_count_connections_and_messages() {
    let gw = Listener::start(Setup {
        http: true,
        ..Setup::default()
    });
    let text = gw.metrics();
    for name in [CONNECTIONS, RECEIVED, ACKED] {
        assert_eq!(sample(&text, name), Some(0.0), "{name} at start");
    }

    let (mut a, _) = Raw::connect(gw.port, "metrics-a", false);
    let (mut b, _) = Raw::connect(gw.port, "metrics-b", true);
    let (mut c, _) = Raw::connect(gw.port, "metrics-c", true);
    assert_eq!(settles(&gw, CONNECTIONS, 3.0), Some(3.0));
    // A CONNECT refused (3.1.1, empty client id without clean session) is no connection.
    let mut refused = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    {
        use std::io::{Read, Write};
        let mut out = bytes::BytesMut::new();
        let mut connect = rumqttc::mqttbytes::v4::Connect::new("");
        connect.clean_session = false;
        rumqttc::mqttbytes::v4::Packet::Connect(connect)
            .write(&mut out, 1 << 20)
            .unwrap();
        refused.write_all(&out).unwrap();
        let mut connack = [0u8; 4];
        refused
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        refused.read_exact(&mut connack).unwrap();
        assert_eq!(connack, [0x20, 2, 0, 2], "identifier rejected");
    }

    // a (3.1.1): 10 QoS 0 then 10 QoS 1; b (5): 5 QoS 2; c (5): 4 QoS 1 and 1 QoS 0 unrouted.
    let mut bytes = Vec::new();
    for i in 0..10 {
        bytes.extend(a.publish(
            "devices/m/telemetry/q0",
            0,
            0,
            false,
            format!("a0-{i}").as_bytes(),
        ));
    }
    for pkid in 1..=10 {
        bytes.extend(a.publish("devices/m/telemetry/q1", 1, pkid, false, b"a1"));
    }
    a.write(&bytes);
    for pkid in 1..=10 {
        assert_eq!(
            a.read(Duration::from_secs(10)),
            Some(Reply::PubAck { pkid, reason: 0 })
        );
    }
    for pkid in 1..=5 {
        b.write(&b.publish("devices/m/telemetry/q2", 2, pkid, false, b"b2"));
        assert_eq!(
            b.read(Duration::from_secs(10)),
            Some(Reply::PubRec { pkid, reason: 0 })
        );
        b.write(&Raw::pubrel(pkid));
        assert_eq!(
            b.read(Duration::from_secs(10)),
            Some(Reply::PubComp { pkid, reason: 0 })
        );
    }
    let mut bytes = c.publish("elsewhere/x", 0, 0, false, b"unrouted");
    for pkid in 1..=4 {
        bytes.extend(c.publish("elsewhere/y", 1, pkid, false, b"unrouted"));
    }
    c.write(&bytes);
    for pkid in 1..=4 {
        assert_eq!(
            c.read(Duration::from_secs(10)),
            Some(Reply::PubAck { pkid, reason: 0 })
        );
    }
    let messages = 10.0 + 10.0 + 5.0 + 1.0 + 4.0;
    assert_eq!(settles(&gw, RECEIVED, messages), Some(messages));
    assert_eq!(settles(&gw, ACKED, messages), Some(messages));
    let text = gw.metrics();
    assert_eq!(
        sample(&text, "tributary_messages_unrouted_total"),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &text,
            "tributary_records_appended_total{topic=\"telemetry\"}"
        ),
        Some(25.0)
    );
    assert_eq!(sample(&text, "tributary_inflight_messages"), Some(0.0));
    assert_eq!(
        sample(&text, "tributary_messages_received_total{face=\"client\"}").unwrap_or(0.0),
        0.0,
        "nothing counted for the client face"
    );
    assert_eq!(
        sample(&text, CONNECTIONS),
        Some(3.0),
        "the refused one never counted"
    );

    // Leaving: DISCONNECT, a socket closed without one, and a reset.
    a.write(&Raw::DISCONNECT);
    assert_eq!(settles(&gw, CONNECTIONS, 2.0), Some(2.0));
    b.stream.shutdown(Shutdown::Both).unwrap();
    assert_eq!(settles(&gw, CONNECTIONS, 1.0), Some(1.0));
    drop(c);
    drop(refused);
    assert_eq!(settles(&gw, CONNECTIONS, 0.0), Some(0.0));
    // 100 connections at once, then none.
    let many: Vec<Raw> = (0..100)
        .map(|i| Raw::connect(gw.port, &format!("many-{i}"), i % 2 == 0).0)
        .collect();
    assert_eq!(settles(&gw, CONNECTIONS, 100.0), Some(100.0));
    drop(many);
    assert_eq!(settles(&gw, CONNECTIONS, 0.0), Some(0.0));
    let text = gw.metrics();
    assert_eq!(sample(&text, RECEIVED), Some(messages), "no message more");
}
