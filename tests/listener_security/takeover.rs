//! Client id takeover: a second CONNECT with a client id in use closes the first connection
//! (MQTT 5: DISCONNECT 0x8E, session taken over) and the second one works; other clients are
//! left alone.

use crate::common::*;

#[test]
fn a_second_connect_with_the_same_client_id_takes_over() {
    let server = Server::start("");
    let port = server.port;
    let mut bystander = Raw::connect(port, &Hello::v5("bystander"));
    // (first version, second version)
    for (first_v5, second_v5) in [(true, true), (false, false), (false, true), (true, false)] {
        let id = format!("device-{first_v5}-{second_v5}");
        let mut first = Raw::connect(port, &Hello::version(first_v5, &id));
        first.publish("devices/take/telemetry/t", &format!("{id}-first"));
        let mut second = Raw::connect(port, &Hello::version(second_v5, &id));
        if first_v5 {
            first.disconnected(0x8E, "the first connection, taken over");
        } else {
            first.closed(ANSWER, "the first connection, taken over");
        }
        second.publish("devices/take/telemetry/t", &format!("{id}-second"));
        second.ping();
        // The first one's late bytes go nowhere and do not disturb the second.
        first.try_send(&publish_bytes(
            first_v5,
            "devices/take/telemetry/t",
            "after-takeover",
            9,
            None,
        ));
        second.publish("devices/take/telemetry/t", &format!("{id}-second-again"));
        second.disconnect();
        bystander.ping();
    }
    bystander.publish("devices/take/telemetry/t", "bystander");
    let mut expected: Vec<String> = [(true, true), (false, false), (false, true), (true, false)]
        .iter()
        .flat_map(|(a, b)| {
            let id = format!("device-{a}-{b}");
            ["first", "second", "second-again"].map(|s| format!("{id}-{s}"))
        })
        .chain(["bystander".to_string()])
        .collect();
    expected.sort();
    assert_eq!(server.values("telemetry"), expected);
}

#[test]
fn empty_client_ids_are_assigned_and_never_take_over_each_other() {
    let server = Server::start("");
    let port = server.port;
    // 3.1.1: an empty client id needs clean session, else "identifier rejected" (2).
    let mut hello = Hello::v4("");
    hello.clean = false;
    let (mut raw, connack) = Raw::hello(port, &hello);
    assert_eq!(connack.wire(), vec![0x20, 2, 0, 2]);
    raw.closed(ANSWER, "empty client id without clean session");
    // MQTT 5: the server assigns one, in the CONNACK; two of them live side by side.
    let mut assigned = Vec::new();
    let mut conns = Vec::new();
    for _ in 0..2 {
        let (raw, connack) = Raw::hello(port, &Hello::v5(""));
        assert_eq!(connack_code(&connack), 0);
        let mut buf = bytes::BytesMut::from(&connack.wire()[..]);
        let Ok(rumqttc::v5::mqttbytes::v5::Packet::ConnAck(ack)) =
            rumqttc::v5::mqttbytes::v5::Packet::read(&mut buf, None)
        else {
            panic!("not a CONNACK: {connack:?}");
        };
        let id = ack.properties.and_then(|p| p.assigned_client_identifier);
        assigned.push(id.expect("an assigned client identifier"));
        conns.push(raw);
    }
    assert_ne!(assigned[0], assigned[1]);
    conns.push(Raw::connect(port, &Hello::v4("")));
    conns.push(Raw::connect(port, &Hello::v4("")));
    for (i, raw) in conns.iter_mut().enumerate() {
        raw.publish("devices/anon/telemetry/t", &format!("anon-{i}"));
    }
    assert_eq!(
        server.values("telemetry"),
        ["anon-0", "anon-1", "anon-2", "anon-3"]
    );
}
