//! Flow control on the listener: `max_inflight` is the receive maximum MQTT 5 clients are told
//! and held to; a 3.1.1 client that sends far more without waiting gets every PUBACK, in order;
//! and a connection whose publishes wait (over its in-flight limit, behind a slow fsync) still
//! has its PINGREQs answered, and loses nothing.

use crate::common::{paho_publish, Listener, Raw, Reply, Setup};
use std::time::{Duration, Instant};

const MAX_INFLIGHT: u16 = 8;

fn small_window() -> Listener {
    Listener::start(Setup {
        listener: ", max_inflight: 8",
        ..Setup::default()
    })
}

/// Values stored for `device`, in log order.
fn values(gw: &Listener, device: &str) -> Vec<String> {
    gw.all("telemetry")
        .into_iter()
        .filter(|r| r.key.as_deref() == Some(device.as_bytes()))
        .map(|r| r.value_str().to_string())
        .collect()
}

#[test]
fn mqtt5_clients_see_max_inflight_as_receive_maximum_and_keep_to_it() {
    let gw = small_window();
    // By hand.
    let (_raw, connack) = Raw::connect(gw.port, "raw-v5", true);
    assert!(
        matches!(
            connack,
            Reply::ConnAck {
                receive_max: Some(MAX_INFLIGHT),
                ..
            }
        ),
        "{connack:?}"
    );
    // paho-mqtt reads it too.
    let report = paho_publish(
        gw.port,
        &[
            "--version",
            "5",
            "--topic",
            "devices/paho/telemetry/x",
            "--prefix",
            "paho-",
        ],
    );
    assert_eq!(
        report["connack"]["receive_maximum"], MAX_INFLIGHT,
        "{report}"
    );
    // rumqttc asks for 100 in flight, is told 8, keeps to it: 500 QoS 1 all acked and stored,
    // the connection never refused.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        use rumqttc::v5::mqttbytes::v5::Packet;
        use rumqttc::v5::mqttbytes::QoS;
        use rumqttc::v5::{AsyncClient, Event, MqttOptions};
        let mut options = MqttOptions::new("rumqttc-window", "127.0.0.1", gw.port);
        options.set_outgoing_inflight_upper_limit(100);
        let (client, mut eventloop) = AsyncClient::new(options, 1000);
        let mut receive_max = None;
        let sender = tokio::spawn(async move {
            for i in 0..500 {
                client
                    .publish(
                        "devices/window/telemetry/x",
                        QoS::AtLeastOnce,
                        false,
                        format!("w{i}"),
                    )
                    .await
                    .unwrap();
            }
            client
        });
        let mut acked = 0;
        while acked < 500 {
            match tokio::time::timeout(Duration::from_secs(20), eventloop.poll())
                .await
                .expect("acks in time")
                .expect("the connection is kept")
            {
                Event::Incoming(Packet::ConnAck(ack)) => {
                    receive_max = ack.properties.and_then(|p| p.receive_max)
                }
                Event::Incoming(Packet::PubAck(_)) => acked += 1,
                Event::Incoming(Packet::Disconnect(d)) => panic!("disconnected: {d:?}"),
                _ => {}
            }
        }
        assert_eq!(receive_max, Some(MAX_INFLIGHT));
        let client = sender.await.unwrap();
        client.disconnect().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
    });
    let expected: Vec<String> = (0..500).map(|i| format!("w{i}")).collect();
    assert_eq!(values(&gw, "window"), expected);
}

/// An MQTT 5 client with more QoS 1 publishes unacked than the receive maximum it was given
/// is disconnected with 0x93 (Receive Maximum exceeded), as MQTT 5 §4.9 says.
#[test]
fn mqtt5_client_over_the_receive_maximum_is_disconnected_with_0x93() {
    let gw = small_window();
    let (mut c, _) = Raw::connect(gw.port, "greedy-v5", true);
    let mut burst = Vec::new();
    for pkid in 1..=MAX_INFLIGHT + 1 {
        burst.extend(c.publish("devices/greedy/telemetry/x", 1, pkid, false, b"x"));
    }
    // One write: the listener reads all nine before it could have acked any.
    c.write(&burst);
    let (closed, replies) = c.closed_within(Duration::from_secs(5));
    assert!(closed, "the connection is closed: {replies:?}");
    assert_eq!(
        replies.last(),
        Some(&Reply::Disconnect { reason: 0x93 }),
        "{replies:?}"
    );
}

/// A 3.1.1 client (no receive maximum to keep to) sends 1,000 QoS 1 without waiting: it gets
/// 1,000 PUBACKs, in the order it sent, and the log holds the 1,000 in that order.
#[test]
fn v311_client_sending_1000_without_waiting_gets_every_puback_in_order() {
    const N: u16 = 1000;
    let gw = small_window();
    let (mut c, _) = Raw::connect(gw.port, "burst-v311", false);
    let mut burst = Vec::new();
    for pkid in 1..=N {
        burst.extend(c.publish(
            "devices/burst/telemetry/x",
            1,
            pkid,
            false,
            format!("b{pkid}").as_bytes(),
        ));
    }
    let started = Instant::now();
    c.write(&burst);
    let mut acks = Vec::new();
    while acks.len() < N as usize {
        match c.read(Duration::from_secs(20)) {
            Some(Reply::PubAck { pkid, reason: 0 }) => acks.push(pkid),
            other => panic!("after {} PUBACKs: {other:?}", acks.len()),
        }
    }
    println!(
        "1,000 QoS 1 from a 3.1.1 client, max_inflight {MAX_INFLIGHT}: all PUBACKed in {:?}",
        started.elapsed()
    );
    assert_eq!(
        acks,
        (1..=N).collect::<Vec<_>>(),
        "PUBACKs in PUBLISH order"
    );
    let expected: Vec<String> = (1..=N).map(|i| format!("b{i}")).collect();
    assert_eq!(
        values(&gw, "burst"),
        expected,
        "stored, once each, in order"
    );
}

/// Appends wait for an fsync at most once a second, and a 3.1.1 connection may have 2
/// publishes in the pipeline: a burst of 8 takes seconds to ack. PINGREQs sent meanwhile are
/// answered at once, with most of the burst still unacked; then every PUBACK comes, in order.
#[test]
fn pingreq_is_answered_while_publishes_wait() {
    const BURST: u16 = 8;
    let gw = Listener::start(Setup {
        listener: ", max_inflight: 2",
        fsync_interval: "1s",
        ..Setup::default()
    });
    let (mut c, _) = Raw::connect(gw.port, "patient-v311", false);
    // The first fsync window opens at start: let it pass, so appends wait a whole interval.
    std::thread::sleep(Duration::from_millis(1100));
    let mut burst = Vec::new();
    for pkid in 1..=BURST {
        burst.extend(c.publish(
            "devices/patient/telemetry/x",
            1,
            pkid,
            false,
            format!("p{pkid}").as_bytes(),
        ));
    }
    c.write(&burst);
    let mut acks: Vec<u16> = Vec::new();
    let mut pings = Vec::new();
    for round in 0..2 {
        std::thread::sleep(Duration::from_millis(300));
        let sent = Instant::now();
        c.write(&Raw::PINGREQ);
        loop {
            match c.read(Duration::from_millis(800)) {
                Some(Reply::PubAck { pkid, reason: 0 }) => acks.push(pkid),
                Some(Reply::PingResp) => break,
                other => panic!("ping {round}: waiting for PINGRESP, got {other:?}"),
            }
        }
        let unacked = usize::from(BURST) - acks.len();
        pings.push((sent.elapsed(), unacked));
        assert!(
            unacked > 2,
            "ping {round}: answered with only {unacked} publishes unacked, not over max_inflight 2"
        );
    }
    while acks.len() < usize::from(BURST) {
        match c.read(Duration::from_secs(10)) {
            Some(Reply::PubAck { pkid, reason: 0 }) => acks.push(pkid),
            other => panic!("after {acks:?}: {other:?}"),
        }
    }
    println!("PINGRESP (after, unacked then) {pings:?}; PUBACKs {acks:?}");
    assert_eq!(acks, (1..=BURST).collect::<Vec<_>>());
    let expected: Vec<String> = (1..=BURST).map(|i| format!("p{i}")).collect();
    assert_eq!(values(&gw, "patient"), expected);
}
