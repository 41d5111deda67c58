//! Keep-alive: a client silent for 1.5 keep-alive periods is cut off (MQTT 5: DISCONNECT 0x8D
//! first); PINGREQ gets PINGRESP and keeps the connection.

use crate::common::*;
use std::time::{Duration, Instant};

/// Within ~1.5 s of the last packet (1.5 x 1 s), with room for a loaded machine.
const EARLIEST: Duration = Duration::from_millis(1300);
const LATEST: Duration = Duration::from_millis(2600);

#[test]
fn a_silent_client_is_disconnected_after_one_and_a_half_keep_alives() {
    let server = Server::start("");
    let port = server.port;
    let v4 = std::thread::spawn(move || {
        let mut raw = Raw::connect(port, &Hello::v4("silent-4").keep_alive(1));
        let start = Instant::now();
        raw.closed(Duration::from_secs(5), "silent 3.1.1 client");
        start.elapsed()
    });
    let mut raw = Raw::connect(port, &Hello::v5("silent-5").keep_alive(1));
    let start = Instant::now();
    let disconnect = raw.packet("DISCONNECT");
    let after = start.elapsed();
    assert_eq!(
        disconnect.wire(),
        vec![0xE0, 0x02, 0x8D, 0x00],
        "keep alive timeout"
    );
    raw.closed(ANSWER, "after DISCONNECT 0x8D");
    assert!(
        (EARLIEST..=LATEST).contains(&after),
        "MQTT 5: DISCONNECT after {after:?}"
    );
    let after = v4.join().unwrap();
    assert!(
        (EARLIEST..=LATEST).contains(&after),
        "3.1.1: closed after {after:?}"
    );
}

#[test]
fn pingreq_is_answered_and_keeps_the_connection_open() {
    let server = Server::start("");
    let port = server.port;
    let v4 = std::thread::spawn(move || {
        let mut raw = Raw::connect(port, &Hello::v4("pinger-4").keep_alive(1));
        for _ in 0..8 {
            std::thread::sleep(Duration::from_millis(500));
            raw.ping();
        }
        raw.publish("devices/pinger/telemetry/t", "pinger-4");
        raw.disconnect();
    });
    let mut raw = Raw::connect(port, &Hello::v5("pinger-5").keep_alive(1));
    // Four seconds (2.7 keep-alive timeouts) alive on pings alone.
    for _ in 0..8 {
        raw.quiet(Duration::from_millis(500), "between pings");
        raw.ping();
    }
    raw.publish("devices/pinger/telemetry/t", "pinger-5");
    // Then silence: cut off again.
    let start = Instant::now();
    let disconnect = raw.packet("DISCONNECT");
    assert_eq!(disconnect.wire(), vec![0xE0, 0x02, 0x8D, 0x00]);
    assert!(start.elapsed() <= LATEST, "{:?}", start.elapsed());
    raw.closed(ANSWER, "after DISCONNECT 0x8D");
    v4.join().unwrap();
    assert_eq!(server.values("telemetry"), ["pinger-4", "pinger-5"]);
}
