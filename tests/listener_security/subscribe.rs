//! SUBSCRIBE is refused (the listener takes publishes only): MQTT 5 SUBACK 0x83 per filter with
//! a reason string, 3.1.1 0x80; the connection stays usable; mosquitto_sub is told no.

use crate::common::*;
use bytes::BytesMut;
use rumqttc::mqttbytes::{v4, QoS as QoS4};
use rumqttc::v5::mqttbytes::{v5, QoS as QoS5};
use std::time::Duration;

#[test]
fn subscribe_is_refused_and_the_connection_stays_usable() {
    let server = Server::start("");
    let port = server.port;

    // MQTT 5: two filters, two 0x83, and a reason string.
    let mut raw = Raw::connect(port, &Hello::v5("sub-5"));
    let mut buf = BytesMut::new();
    let mut subscribe = v5::Subscribe::new_many(
        [
            v5::Filter::new("devices/#", QoS5::AtLeastOnce),
            v5::Filter::new("commands/+", QoS5::AtMostOnce),
        ],
        None,
    );
    subscribe.pkid = 3;
    v5::Packet::Subscribe(subscribe)
        .write(&mut buf, None)
        .unwrap();
    raw.send(&buf);
    let suback = raw.packet("SUBACK");
    assert_eq!(suback.first, 0x90, "{suback:?}");
    assert_eq!(&suback.body[..2], &[0, 3], "packet id");
    assert_eq!(&suback.body[suback.body.len() - 2..], &[0x83, 0x83]);
    let mut wire = BytesMut::from(&suback.wire()[..]);
    let Ok(v5::Packet::SubAck(ack)) = v5::Packet::read(&mut wire, None) else {
        panic!("not a SUBACK: {suback:?}");
    };
    assert_eq!(
        ack.return_codes,
        [v5::SubscribeReasonCode::ImplementationSpecific; 2]
    );
    let why = ack
        .properties
        .and_then(|p| p.reason_string)
        .unwrap_or_default();
    assert!(why.contains("publishes only"), "reason string {why:?}");
    // Still usable: publish, ping, unsubscribe (MQTT 5: 0x11, no subscription existed).
    raw.publish("devices/sub/telemetry/t", "after-suback-5");
    raw.ping();
    let mut buf = BytesMut::new();
    let mut unsubscribe = v5::Unsubscribe::new("devices/#", None);
    unsubscribe.pkid = 4;
    v5::Packet::Unsubscribe(unsubscribe)
        .write(&mut buf, None)
        .unwrap();
    raw.send(&buf);
    let unsuback = raw.packet("UNSUBACK");
    assert_eq!(unsuback.wire(), vec![0xB0, 0x04, 0x00, 0x04, 0x00, 0x11]);
    raw.publish("devices/sub/telemetry/t", "after-unsuback-5");
    raw.disconnect();

    // 3.1.1: 0x80, exactly.
    let mut raw = Raw::connect(port, &Hello::v4("sub-4"));
    let mut buf = BytesMut::new();
    let mut subscribe = v4::Subscribe::new("devices/#", QoS4::AtLeastOnce);
    subscribe.pkid = 9;
    v4::Packet::Subscribe(subscribe)
        .write(&mut buf, 1 << 20)
        .unwrap();
    raw.send(&buf);
    assert_eq!(
        raw.packet("SUBACK").wire(),
        vec![0x90, 0x03, 0x00, 0x09, 0x80]
    );
    raw.publish("devices/sub/telemetry/t", "after-suback-4");
    raw.disconnect();

    // mosquitto_sub hears the refusal and ends instead of waiting for messages.
    for version in ["5", "311"] {
        let mut cmd = mosquitto_sub();
        cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
            .args([
                "-t",
                "devices/#",
                "-q",
                "1",
                "-i",
                &format!("mosquitto-sub-{version}"),
            ]);
        let out = run(&mut cmd, b"", Duration::from_secs(15));
        assert!(
            out.stderr.contains("All subscription requests were denied"),
            "{version}: {out:?}"
        );
    }
    assert_eq!(
        server.values("telemetry"),
        ["after-suback-4", "after-suback-5", "after-unsuback-5"]
    );
}
