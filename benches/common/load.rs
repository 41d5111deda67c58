//! The MQTT load both end-to-end benchmarks use: QoS 1 publishers of 100-byte payloads over
//! `TOPICS` device topics, and the bare rumqttc subscriber that is their baseline.
#![allow(dead_code)]

use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::time::{Duration, Instant};

pub const TOPICS: usize = 100;
pub const PUBLISHERS: usize = 4;

pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64
}

/// A 100-byte payload starting with the publish time in microseconds.
pub fn payload(seq: usize) -> Vec<u8> {
    let mut p = format!("{:020}:{seq:010}:", now_us()).into_bytes();
    p.resize(100, b'x');
    p
}

/// Publishes `count` QoS 1 messages over `PUBLISHERS` connections, at most `rate` per second
/// overall (`None`: as fast as the broker acks). Returns when every one is acked.
pub async fn publish(port: u16, count: usize, rate: Option<u64>) {
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        tasks.push(tokio::spawn(async move {
            let mut options =
                MqttOptions::new(format!("bench-pub-{p}-{}", now_us()), "127.0.0.1", port);
            options.set_outgoing_inflight_upper_limit(500);
            let (client, mut eventloop) = AsyncClient::new(options, 1000);
            let mine = (p..count).step_by(PUBLISHERS).count();
            let sender = tokio::spawn(async move {
                let start = Instant::now();
                for (i, seq) in (p..count).step_by(PUBLISHERS).enumerate() {
                    if let Some(rate) = rate {
                        let due = start
                            + Duration::from_secs_f64(i as f64 * PUBLISHERS as f64 / rate as f64);
                        tokio::time::sleep_until(due.into()).await;
                    }
                    client
                        .publish(
                            format!("devices/d{}/telemetry", seq % TOPICS),
                            QoS::AtLeastOnce,
                            false,
                            payload(seq),
                        )
                        .await
                        .unwrap();
                }
                client
            });
            let mut acked = 0;
            while acked < mine {
                if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                    acked += 1;
                }
            }
            let client = sender.await.unwrap();
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_millis(100), eventloop.poll()).await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// The bare subscriber: QoS 1, rumqttc acks each message as it is read. Returns messages/s
/// from the first publish to the last message received. It runs on a thread and runtime of
/// its own, as Tributary runs in a process of its own, so the publishers do not share its
/// runtime.
pub async fn bare_subscriber(port: u16, messages: usize) -> f64 {
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let subscriber = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut options = MqttOptions::new("bench-bare", "127.0.0.1", port);
            options.set_receive_maximum(Some(1024));
            let (client, mut eventloop) = AsyncClient::new(options, 1000);
            client
                .subscribe("devices/+/telemetry", QoS::AtLeastOnce)
                .await
                .unwrap();
            loop {
                if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await.unwrap() {
                    break;
                }
            }
            let _ = subscribed_tx.send(Instant::now());
            let mut got = 0;
            while got < messages {
                if let Event::Incoming(Packet::Publish(_)) = eventloop.poll().await.unwrap() {
                    got += 1;
                }
            }
            Instant::now()
        })
    });
    let start = subscribed.await.unwrap();
    let publisher = tokio::spawn(publish(port, messages, None));
    let end = tokio::task::spawn_blocking(move || subscriber.join().unwrap())
        .await
        .unwrap();
    publisher.await.unwrap();
    messages as f64 / (end - start).as_secs_f64()
}

/// The peak resident memory (VmHWM) of process `pid`, in KiB; 0 if it cannot be read.
pub fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}
