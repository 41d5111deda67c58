//! Wills: a connection that ends without DISCONNECT (dropped socket, keep-alive timeout, MQTT
//! 5 DISCONNECT 0x04) has its will stored as a record on the topic its route names; a normal
//! DISCONNECT has none; an MQTT 5 will delay is cancelled by a reconnect within it.

use crate::common::*;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn will(device: &str) -> (String, String, String) {
    (
        device.to_string(),
        format!("devices/{device}/status"),
        format!("{device}-offline"),
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[test]
fn a_will_is_stored_on_an_unclean_end_and_not_after_disconnect() {
    let server = Server::start("");
    let port = server.port;
    let hello = |v5: bool, device: &str| {
        let (_, topic, payload) = will(device);
        Hello::version(v5, device).will(&topic, &payload, 0)
    };
    // Socket dropped without DISCONNECT, either version: will.
    Raw::connect(port, &hello(false, "dropped4")).drop_socket();
    Raw::connect(port, &hello(true, "dropped5")).drop_socket();
    // Normal DISCONNECT, either version: no will. (MQTT 5 with no reason code, and with
    // reason 0x00 and property length 0.)
    Raw::connect(port, &hello(false, "clean4")).disconnect();
    Raw::connect(port, &hello(true, "clean5")).disconnect();
    let mut raw = Raw::connect(port, &hello(true, "clean5-reason"));
    raw.send(&[0xE0, 0x02, 0x00, 0x00]);
    raw.closed(ANSWER, "DISCONNECT 0x00 with property length 0");
    // MQTT 5 DISCONNECT 0x04, "disconnect with will message" (property length 0): will.
    let mut raw = Raw::connect(port, &hello(true, "withwill"));
    raw.send(&[0xE0, 0x02, 0x04, 0x00]);
    raw.closed(ANSWER, "DISCONNECT 0x04");
    // Cut off for silence: will.
    let mut raw = Raw::connect(port, &hello(true, "silent").keep_alive(1));
    raw.disconnected(0x8D, "keep-alive timeout");
    // Closed for a protocol error: will.
    let mut raw = Raw::connect(port, &hello(false, "broken"));
    raw.send(&[0x00, 0x00]);
    raw.closed(ANSWER, "reserved packet type");

    // The clean ones ended first: had they left a will it would be stored before these.
    server.wait_values("status", 5);
    std::thread::sleep(Duration::from_millis(500));
    let mut expected: Vec<_> = ["broken", "dropped4", "dropped5", "silent", "withwill"]
        .map(will)
        .to_vec();
    expected.sort();
    assert_eq!(server.stored("status"), expected);
    assert!(server.values("telemetry").is_empty());
}

#[test]
fn a_reconnect_within_the_will_delay_cancels_the_will() {
    let server = Server::start("");
    let port = server.port;
    let delayed = |device: &str, delay: u32| {
        let (_, topic, payload) = will(device);
        Hello::v5(device).session(60).will(&topic, &payload, delay)
    };
    let back = delayed("back", 2);
    let gone = delayed("gone", 1);
    // A 30 s delay, but no session to outlive the connection: the will goes at once.
    let (_, topic, payload) = will("nosession");
    let nosession = Hello::v5("nosession").will(&topic, &payload, 30);
    let conns = [&back, &gone, &nosession].map(|h| Raw::connect(port, h));
    let dropped_at = now_ms();
    let start = Instant::now();
    for raw in conns {
        raw.drop_socket();
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut returned = Raw::connect(port, &back);

    server.wait_values("status", 2);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        server.stored("status"),
        [will("gone"), will("nosession")],
        "{}",
        server.gw.log()
    );
    let records: Vec<_> = server
        .gw
        .records("status")
        .into_values()
        .flatten()
        .collect();
    let gone_at = records
        .iter()
        .find(|r| r.value_str() == "gone-offline")
        .unwrap()
        .timestamp_ms;
    assert!(
        gone_at >= dropped_at + 950,
        "gone's will stored {} ms after the drop, before its 1 s delay",
        gone_at - dropped_at
    );
    let nosession_at = records
        .iter()
        .find(|r| r.value_str() == "nosession-offline")
        .unwrap()
        .timestamp_ms;
    assert!(
        nosession_at < dropped_at + 3000,
        "{}",
        nosession_at - dropped_at
    );

    // back's 2 s delay is over: it came back in time, so no will.
    std::thread::sleep(Duration::from_secs(3).saturating_sub(start.elapsed()));
    returned.publish("devices/back/telemetry/t", "back-again");
    returned.disconnect();
    // A will after all that, to be sure nothing else is on its way.
    let (_, topic, payload) = will("last");
    Raw::connect(port, &Hello::v5("last").will(&topic, &payload, 0)).drop_socket();
    server.wait_values("status", 3);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        server.stored("status"),
        [will("gone"), will("last"), will("nosession")]
    );
    assert_eq!(server.values("telemetry"), ["back-again"]);
}

/// paho-mqtt with a will, ending with DISCONNECT reason "Normal disconnection" and no properties.
const PAHO_DISCONNECT: &str = r#"
import sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="paho", protocol=mqtt.MQTTv5)
c.will_set("devices/paho/status", "paho-offline", qos=1)
connected = []
c.on_connect = lambda client, userdata, flags, reason, properties: connected.append(reason.value)
c.connect("127.0.0.1", int(sys.argv[1]))
deadline = time.time() + 10
while not connected and time.time() < deadline:
    c.loop(0.1)
assert connected == [0], connected
c.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Normal disconnection"))
for _ in range(5):
    c.loop(0.1)
"#;

/// MQTT 5 (3.14.2.2.1): "If the Remaining Length is less than 2, a value of 0 is used" for the
/// property length, so a DISCONNECT may be just its reason code (paho-mqtt sends it so when
/// given a reason code and no properties). Normal (0x00): no will; 0x04: the will.
#[test]
fn a_disconnect_of_just_a_reason_code_is_read_as_sent() {
    let server = Server::start("");
    let port = server.port;
    let hello = |device: &str| {
        let (_, topic, payload) = will(device);
        Hello::v5(device).will(&topic, &payload, 0)
    };
    let mut raw = Raw::connect(port, &hello("normal"));
    raw.send(&[0xE0, 0x01, 0x00]);
    raw.closed(ANSWER, "DISCONNECT 0x00 without property length: no answer");
    let mut raw = Raw::connect(port, &hello("withwill"));
    raw.send(&[0xE0, 0x01, 0x04]);
    raw.closed(ANSWER, "DISCONNECT 0x04 without property length: no answer");
    // paho-mqtt sends this form when given a reason code (here 0x00) and no properties.
    let python = crate::support::require_python(&[("paho.mqtt", "paho-mqtt")]);
    let mut cmd = std::process::Command::new(python);
    cmd.args(["-c", PAHO_DISCONNECT, &port.to_string()])
        .env_remove("LD_LIBRARY_PATH");
    let out = run(&mut cmd, b"", Duration::from_secs(30));
    assert!(out.status.success(), "paho: {out:?}");
    server.wait_values("status", 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.stored("status"), [will("withwill")]);
}

/// A will topic is a topic name: no wildcards (MQTT 4.7). A CONNECT with one is refused
/// and no will record can carry a wildcard topic.
#[test]
fn a_will_topic_with_a_wildcard_is_refused() {
    let server = Server::start("");
    let port = server.port;
    for (v5, topic) in [
        (false, "devices/+/status"),
        (true, "devices/+/status"),
        (false, "devices/#"),
        (true, "devices/x/status/#"),
    ] {
        let hello = Hello::version(v5, "wild-will").will(topic, "wild-offline", 0);
        let mut raw = Raw::open(port, v5);
        raw.send(&hello.bytes());
        match raw.next(ANSWER) {
            // Refused at CONNECT (any failure code), or closed.
            Next::Packet(f) if f.first == 0x20 => {
                assert_ne!(connack_code(&f), 0, "{topic}: CONNACK success");
                raw.closed(ANSWER, topic);
            }
            Next::Closed(_) => {}
            other => panic!("{topic}: {other:?}"),
        }
    }
    // A will stored after those, so any of theirs would be stored by now.
    let (_, topic, payload) = will("tame");
    Raw::connect(port, &Hello::v4("tame").will(&topic, &payload, 0)).drop_socket();
    server.wait_values("status", 1);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.stored("status"), [will("tame")]);
}
