//! QoS 2 on the listener: each message stored exactly once. paho-mqtt (MQTT 5 and 3.1.1)
//! publishing many; and by hand, a PUBLISH sent again with DUP before PUBREL, on the same
//! connection and after a reconnect into a persistent session.

use crate::common::{paho_publish, Listener, Raw, Reply, Setup};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

/// The values stored for `device` (key), in log order.
fn values(gw: &Listener, device: &str) -> Vec<String> {
    gw.all("telemetry")
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(device.as_bytes()))
        .map(|r| r.value_str().to_string())
        .collect()
}

#[test]
fn paho_qos2_messages_are_each_stored_once() {
    const N: usize = 500;
    let gw = Listener::start(Setup::default());
    for version in ["5", "311"] {
        let device = format!("paho-q2-v{version}");
        let report = paho_publish(
            gw.port,
            &[
                "--version",
                version,
                "--qos",
                "2",
                "--count",
                &N.to_string(),
                "--topic",
                &format!("devices/{device}/telemetry/q2"),
                "--client-id",
                &device,
            ],
        );
        println!("paho MQTT {version}, QoS 2: {report}");
        assert_eq!(report["completed"], N, "{report}");
        if version == "5" {
            assert_eq!(report["reason_codes"]["0"], N, "PUBCOMP success: {report}");
        }
        let expected: Vec<String> = (0..N).map(|i| format!("m{i}")).collect();
        assert_eq!(
            values(&gw, &device),
            expected,
            "MQTT {version}: each QoS 2 message once, in order"
        );
    }
}

/// PUBLISH (QoS 2) → PUBREC; the same PUBLISH again with DUP → PUBREC again, not stored again;
/// PUBREL → PUBCOMP; then the packet id is free: a new message with it is stored.
#[test]
fn qos2_publish_resent_with_dup_before_pubrel_is_stored_once() {
    let gw = Listener::start(Setup::default());
    for v5 in [true, false] {
        let device = format!("dup-{}", if v5 { "v5" } else { "v311" });
        let topic = format!("devices/{device}/telemetry/q2");
        let (mut c, _) = Raw::connect(gw.port, &device, v5);
        let first = c.publish(&topic, 2, 10, false, b"first");
        c.write(&first);
        assert_eq!(
            c.read(WAIT),
            Some(Reply::PubRec {
                pkid: 10,
                reason: 0
            })
        );
        c.write(&c.publish(&topic, 2, 10, true, b"first"));
        assert_eq!(
            c.read(WAIT),
            Some(Reply::PubRec {
                pkid: 10,
                reason: 0
            }),
            "a PUBLISH sent again before PUBREL is answered with PUBREC again"
        );
        // Nothing more comes for it: no PUBACK, no second record.
        assert_eq!(c.read(Duration::from_millis(300)), None);
        c.write(&Raw::pubrel(10));
        assert_eq!(
            c.read(WAIT),
            Some(Reply::PubComp {
                pkid: 10,
                reason: 0
            })
        );
        // After PUBCOMP the id names a new message.
        c.write(&c.publish(&topic, 2, 10, false, b"second"));
        assert_eq!(
            c.read(WAIT),
            Some(Reply::PubRec {
                pkid: 10,
                reason: 0
            })
        );
        c.write(&Raw::pubrel(10));
        assert_eq!(
            c.read(WAIT),
            Some(Reply::PubComp {
                pkid: 10,
                reason: 0
            })
        );
        c.write(&Raw::DISCONNECT);
        assert_eq!(
            values(&gw, &device),
            ["first", "second"],
            "v5={v5}: the resent PUBLISH is not stored again"
        );
    }
}

/// The same PUBLISH twice back to back (the second with DUP), before any PUBREC: stored once,
/// and (MQTT 5 §4.3.3, 3.1.1 §4.3.3: "until it has received the corresponding PUBREL packet,
/// the receiver MUST acknowledge any subsequent PUBLISH packet with the same Packet Identifier
/// by sending a PUBREC") a PUBREC for each.
#[test]
fn qos2_duplicate_sent_before_the_pubrec_is_stored_once_and_answered() {
    let gw = Listener::start(Setup::default());
    for v5 in [true, false] {
        let device = format!("early-dup-{}", if v5 { "v5" } else { "v311" });
        let topic = format!("devices/{device}/telemetry/q2");
        let (mut c, _) = Raw::connect(gw.port, &device, v5);
        let mut both = c.publish(&topic, 2, 7, false, b"once");
        both.extend(c.publish(&topic, 2, 7, true, b"once"));
        c.write(&both);
        let mut replies = Vec::new();
        while let Some(reply) = c.read(Duration::from_secs(3)) {
            replies.push(reply);
        }
        assert_eq!(
            values(&gw, &device),
            ["once"],
            "v5={v5}: stored once ({replies:?})"
        );
        assert_eq!(
            replies,
            [
                Reply::PubRec { pkid: 7, reason: 0 },
                Reply::PubRec { pkid: 7, reason: 0 }
            ],
            "v5={v5}: a PUBREC for each of the two PUBLISHes"
        );
        c.write(&Raw::pubrel(7));
        assert_eq!(c.read(WAIT), Some(Reply::PubComp { pkid: 7, reason: 0 }));
    }
}

/// A persistent session (MQTT 5, clean start false, session expiry 300 s): the device got the
/// PUBREC, lost its connection before sending PUBREL, reconnects and sends the PUBLISH again
/// with DUP, as MQTT requires: PUBREC again, stored once, PUBREL → PUBCOMP.
#[test]
fn qos2_publish_resent_after_reconnect_is_stored_once() {
    let gw = Listener::start(Setup::default());
    let device = "resume-q2";
    let topic = format!("devices/{device}/telemetry/q2");
    let (mut c, _) = Raw::connect_with(gw.port, device, true, true, 300);
    c.write(&c.publish(&topic, 2, 42, false, b"kept"));
    assert_eq!(
        c.read(WAIT),
        Some(Reply::PubRec {
            pkid: 42,
            reason: 0
        })
    );
    drop(c);
    // The listener notices the close and keeps the session; a reconnect soon after takes it.
    std::thread::sleep(Duration::from_millis(200));
    let (mut c, connack) = Raw::connect_with(gw.port, device, true, false, 300);
    assert_eq!(
        c.session_present(),
        Some(true),
        "the session is resumed: {connack:?}"
    );
    c.write(&c.publish(&topic, 2, 42, true, b"kept"));
    assert_eq!(
        c.read(WAIT),
        Some(Reply::PubRec {
            pkid: 42,
            reason: 0
        })
    );
    c.write(&Raw::pubrel(42));
    assert_eq!(
        c.read(WAIT),
        Some(Reply::PubComp {
            pkid: 42,
            reason: 0
        })
    );
    assert_eq!(values(&gw, device), ["kept"]);
}

/// The same, but the connection drops after the PUBLISH and before its PUBREC: the message
/// may or may not be stored by then, and the device sends it again after reconnecting into
/// its session. QoS 2 promises it is stored once either way (MQTT 5 §4.3.3: the receiver
/// stores the packet id before onward delivery and "MUST NOT cause duplicate messages to be
/// delivered to any onward recipients"). A slow fsync keeps the first copy in flight while
/// the connection drops.
#[test]
fn qos2_publish_resent_after_a_drop_before_pubrec_is_stored_once() {
    let gw = Listener::start(Setup {
        fsync_interval: "300ms",
        ..Setup::default()
    });
    let device = "drop-before-pubrec";
    let topic = format!("devices/{device}/telemetry/q2");
    // Let the first fsync window pass, so the next append waits for the next one.
    let (mut c, _) = Raw::connect_with(gw.port, device, true, true, 300);
    c.write(&c.publish(&topic, 2, 1, false, b"warm-up"));
    assert_eq!(c.read(WAIT), Some(Reply::PubRec { pkid: 1, reason: 0 }));
    c.write(&Raw::pubrel(1));
    assert_eq!(c.read(WAIT), Some(Reply::PubComp { pkid: 1, reason: 0 }));
    c.write(&c.publish(&topic, 2, 2, false, b"exactly-once"));
    std::thread::sleep(Duration::from_millis(20));
    drop(c);
    std::thread::sleep(Duration::from_millis(50));
    let (mut c, _) = Raw::connect_with(gw.port, device, true, false, 300);
    assert_eq!(c.session_present(), Some(true));
    c.write(&c.publish(&topic, 2, 2, true, b"exactly-once"));
    assert_eq!(c.read(WAIT), Some(Reply::PubRec { pkid: 2, reason: 0 }));
    c.write(&Raw::pubrel(2));
    assert_eq!(c.read(WAIT), Some(Reply::PubComp { pkid: 2, reason: 0 }));
    // Both copies, if there are two, are stored by now (PUBREC waited for the second).
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        values(&gw, device),
        ["warm-up", "exactly-once"],
        "the QoS 2 message resent after the drop is stored once"
    );
}
