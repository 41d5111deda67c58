//! MQTT 5 topic aliases: CONNACK offers 1024; an alias set with a topic names it on later
//! publishes with an empty topic (stored under the full topic); an alias never set closes the
//! connection (protocol error 0x82) and one out of 1..=1024 closes it with 0x94.

use crate::common::*;
use bytes::BytesMut;
use rumqttc::v5::mqttbytes::v5;

#[test]
fn an_alias_set_then_used_is_stored_under_the_full_topic() {
    let server = Server::start("");
    let mut raw = Raw::open(server.port, true);
    raw.send(&Hello::v5("aliases").bytes());
    let connack = raw.packet("CONNACK");
    let mut buf = BytesMut::from(&connack.wire()[..]);
    let Ok(v5::Packet::ConnAck(ack)) = v5::Packet::read(&mut buf, None) else {
        panic!("not a CONNACK: {connack:?}");
    };
    assert_eq!(ack.code, v5::ConnectReturnCode::Success);
    let properties = ack.properties.expect("CONNACK properties");
    assert_eq!(properties.topic_alias_max, Some(1024));

    let mut send = |topic: &str, payload: &str, alias: u16| {
        let pkid = raw.pkid();
        raw.send(&publish_bytes(true, topic, payload, pkid, Some(alias)));
        raw.puback(pkid, payload);
    };
    send("devices/one/telemetry/a", "set-5", 5);
    send("", "used-5", 5);
    send("devices/max/telemetry/b", "set-1024", 1024);
    send("", "used-1024", 1024);
    // Set again: the alias now names the new topic.
    send("devices/two/telemetry/c", "reset-5", 5);
    send("", "reused-5", 5);
    send("", "used-1024-again", 1024);
    raw.disconnect();
    let one = ("one", "devices/one/telemetry/a");
    let max = ("max", "devices/max/telemetry/b");
    let two = ("two", "devices/two/telemetry/c");
    let mut expected: Vec<(String, String, String)> = [
        (one, "set-5"),
        (one, "used-5"),
        (max, "set-1024"),
        (max, "used-1024"),
        (two, "reset-5"),
        (two, "reused-5"),
        (max, "used-1024-again"),
    ]
    .iter()
    .map(|((key, topic), value)| (key.to_string(), topic.to_string(), value.to_string()))
    .collect();
    expected.sort();
    assert_eq!(server.stored("telemetry"), expected);
}

#[test]
fn an_alias_never_set_or_out_of_range_closes_the_connection() {
    let server = Server::start("");
    let port = server.port;
    // (what, topic, alias, QoS 1?, reason)
    let cases = [
        ("alias 7 never set", "", 7, true, 0x82),
        ("alias 7 never set, QoS 0", "", 7, false, 0x82),
        (
            "alias 1025 over the maximum",
            "devices/x/telemetry/t",
            1025,
            true,
            0x94,
        ),
        ("alias 0", "devices/x/telemetry/t", 0, true, 0x94),
        ("alias 65535, never set", "", 65535, true, 0x94),
    ];
    for (what, topic, alias, qos1, reason) in cases {
        let mut raw = Raw::connect(port, &Hello::v5("bad-alias"));
        let pkid = if qos1 { 1 } else { 0 };
        raw.send(&publish_bytes(true, topic, what, pkid, Some(alias)));
        raw.disconnected(reason, what);
    }
    // Aliases belong to their connection: one set on another is unknown here.
    let mut setter = Raw::connect(port, &Hello::v5("setter"));
    let pkid = setter.pkid();
    setter.send(&publish_bytes(
        true,
        "devices/s/telemetry/t",
        "setter",
        pkid,
        Some(3),
    ));
    setter.puback(pkid, "setter");
    let mut other = Raw::connect(port, &Hello::v5("other"));
    other.send(&publish_bytes(true, "", "other", 1, Some(3)));
    other.disconnected(0x82, "an alias set on another connection");
    // The setter is unaffected and its alias still works.
    let pkid = setter.pkid();
    setter.send(&publish_bytes(true, "", "setter-again", pkid, Some(3)));
    setter.puback(pkid, "setter-again");
    setter.disconnect();
    assert_eq!(server.values("telemetry"), ["setter", "setter-again"]);
}
