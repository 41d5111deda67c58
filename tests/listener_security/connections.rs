//! Many connections: a thousand idle ones stay (the `tributary_listener_connections` gauge says
//! 1000) while others still publish; `max_connections` refuses the one over the limit with
//! "quota exceeded" (3.1.1: "server unavailable") and takes new ones once a slot is free.

use crate::common::*;
use crate::support;

const IDLE: usize = 1000;

#[test]
fn a_thousand_idle_connections_stay_and_a_new_client_still_publishes() {
    let server = Server::start_with_http("");
    let gauge = "tributary_listener_connections";
    assert_eq!(server.metric(gauge), Some(0.0));
    // Open them all first, then read every CONNACK (half 3.1.1, half MQTT 5).
    let mut idle: Vec<Raw> = (0..IDLE)
        .map(|i| {
            let hello = Hello::version(i % 2 == 1, &format!("idle-{i}")).keep_alive(60);
            let mut raw = Raw::open(server.port, hello.v5);
            raw.send(&hello.bytes());
            raw
        })
        .collect();
    for (i, raw) in idle.iter_mut().enumerate() {
        let connack = raw.packet(&format!("CONNACK of idle-{i}"));
        assert_eq!(connack_code(&connack), 0, "idle-{i}: {connack:?}");
    }
    let at = |n: f64| support::wait_until(ANSWER, || server.metric(gauge) == Some(n));
    assert!(at(IDLE as f64), "{gauge} = {:?}", server.metric(gauge));

    // Newcomers still get in and are stored while the thousand wait.
    let out = pub_one(
        server.port,
        "5",
        "devices/new/telemetry/t",
        "newcomer-mosquitto",
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let mut raw = Raw::connect(server.port, &Hello::v5("newcomer-raw"));
    raw.publish("devices/new/telemetry/t", "newcomer-raw");
    assert!(
        at(IDLE as f64 + 1.0),
        "{gauge} = {:?}",
        server.metric(gauge)
    );
    raw.disconnect();
    assert_eq!(
        server.values("telemetry"),
        ["newcomer-mosquitto", "newcomer-raw"]
    );
    assert!(at(IDLE as f64), "{gauge} = {:?}", server.metric(gauge));

    // Every idle connection is still there and answers.
    for raw in &mut idle {
        raw.send(&[0xC0, 0x00]);
    }
    for (i, raw) in idle.iter_mut().enumerate() {
        let resp = raw.packet(&format!("PINGRESP of idle-{i}"));
        assert_eq!(resp.wire(), vec![0xD0, 0x00], "idle-{i}");
    }
    drop(idle);
    assert!(
        at(0.0),
        "{gauge} = {:?} after the idle ones left",
        server.metric(gauge)
    );
}

#[test]
fn max_connections_refuses_the_one_over_with_quota_exceeded() {
    let mut server = Server::start(", max_connections: 5");
    let port = server.port;
    let mut held: Vec<Raw> = (0..5)
        .map(|i| Raw::connect(port, &Hello::version(i % 2 == 0, &format!("held-{i}"))))
        .collect();
    // The sixth: MQTT 5 reason 0x97 (quota exceeded), 3.1.1 code 3 (server unavailable).
    for (v5, code) in [(true, 0x97), (false, 3)] {
        let (mut raw, connack) = Raw::hello(port, &Hello::version(v5, "sixth"));
        assert_eq!(connack_code(&connack), code, "v5 {v5}: {connack:?}");
        if !v5 {
            assert_eq!(connack.wire(), vec![0x20, 2, 0, 3]);
        }
        raw.closed(ANSWER, "the sixth connection");
    }
    let out = pub_one(
        port,
        "5",
        "devices/sixth/telemetry/t",
        "sixth-mosquitto",
        &[],
    );
    assert!(!out.status.success(), "{out:?}");
    // The five are untouched.
    for (i, raw) in held.iter_mut().enumerate() {
        raw.publish("devices/held/telemetry/t", &format!("held-{i}"));
    }
    // One leaves: its slot is free again.
    held.pop().unwrap().disconnect();
    let mut next = None;
    let got_in = support::wait_until(ANSWER, || {
        let (raw, connack) = Raw::hello(port, &Hello::v5("after"));
        let ok = connack_code(&connack) == 0;
        if ok {
            next = Some(raw);
        }
        ok
    });
    assert!(got_in, "no connection after one of five left");
    next.unwrap().publish("devices/after/telemetry/t", "after");
    assert_eq!(
        server.values("telemetry"),
        ["after", "held-0", "held-1", "held-2", "held-3", "held-4"]
    );
    server.assert_running();
}
