//! Into a real Apache Kafka broker (KRaft, single node, started here): publisher (QoS 1,
//! 100-byte payloads, 100 topics) -> Mosquitto -> `tributary run` with `log.backend: kafka`
//! -> Kafka, beside two baselines measured in the same run:
//! - a bare rumqttc subscriber on the same Mosquitto with the same publisher (acks, discards):
//!   what the MQTT side alone allows;
//! - raw rdkafka: the same number of 100-byte records produced straight to the same broker with
//!   the sink's settings (acks=all, idempotent, lz4, linger 5 ms): the Kafka side's ceiling.
//!
//! `cargo bench --bench kafka` (needs `mosquitto`, Java 17 and the Kafka jars: `scripts/test`
//! installs them).

#[path = "../tests/support/mod.rs"]
mod support;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::time::{Duration, Instant};
use support::kafka::KafkaBroker;
use support::{Gateway, Mosquitto};

const MESSAGES: usize = 100_000;
const TOPICS: usize = 100;
const PUBLISHERS: usize = 4;
const PARTITIONS: u32 = 12;

fn payload(seq: usize) -> Vec<u8> {
    let mut p = format!("{seq:010}:").into_bytes();
    p.resize(100, b'x');
    p
}

/// Publishes `count` QoS 1 messages over `PUBLISHERS` connections as fast as the broker acks.
async fn publish(port: u16, count: usize, tag: &str) {
    let mut tasks = Vec::new();
    for p in 0..PUBLISHERS {
        let id = format!("bench-kafka-pub-{tag}-{p}");
        tasks.push(tokio::spawn(async move {
            let mut options = MqttOptions::new(id, "127.0.0.1", port);
            options.set_outgoing_inflight_upper_limit(500);
            let (client, mut eventloop) = AsyncClient::new(options, 1000);
            let mine: Vec<usize> = (p..count).step_by(PUBLISHERS).collect();
            let total = mine.len();
            let sender = tokio::spawn(async move {
                for seq in mine {
                    let topic = format!("devices/d{}/telemetry", seq % TOPICS);
                    client
                        .publish(topic, QoS::AtLeastOnce, false, payload(seq))
                        .await
                        .unwrap();
                }
                client
            });
            let mut acked = 0;
            while acked < total {
                if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await.unwrap() {
                    acked += 1;
                }
            }
            let _ = sender.await.unwrap().disconnect().await;
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// A rumqttc subscriber that acks and discards: messages/s.
async fn bare_subscriber(broker: &Mosquitto) -> f64 {
    let port = broker.port;
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let subscriber = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut options = MqttOptions::new("bench-kafka-bare", "127.0.0.1", port);
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
            while got < MESSAGES {
                if let Event::Incoming(Packet::Publish(_)) = eventloop.poll().await.unwrap() {
                    got += 1;
                }
            }
            Instant::now()
        })
    });
    let start = subscribed.await.unwrap();
    let publisher = tokio::spawn(publish(port, MESSAGES, "bare"));
    let end = tokio::task::spawn_blocking(move || subscriber.join().unwrap())
        .await
        .unwrap();
    publisher.await.unwrap();
    MESSAGES as f64 / (end - start).as_secs_f64()
}

/// Records in `topic` now: the sum of its partitions' high watermarks.
fn in_kafka(consumer: &BaseConsumer, topic: &str) -> i64 {
    (0..PARTITIONS as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map_or(0, |(_, high)| high)
        })
        .sum()
}

/// `tributary run` into Kafka: messages/s from the first publish to the last record in Kafka,
/// and the gateway's peak RSS in KiB.
async fn tributary_binary(broker: &Mosquitto, kafka: &KafkaBroker) -> (f64, u64) {
    let topic = "bench-telemetry";
    let mut gw = Gateway::new(&format!(
        "mqtt: {{ url: \"{}\", client_id: bench-kafka-gw, max_inflight: 1024 }}\n\
         log: {{ backend: kafka, kafka: {{ bootstrap_servers: \"{}\" }} }}\n\
         topics: {{ {topic}: {{ partitions: {PARTITIONS} }} }}\n\
         http: {{ listen: null }}\n\
         routes:\n  - {{ name: telemetry, from: \"devices/{{device}}/telemetry\", to: {topic}, key: \"{{device}}\" }}\n",
        broker.url(),
        kafka.bootstrap()
    ));
    gw.start();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .create()
        .unwrap();
    let start = Instant::now();
    let publisher = tokio::spawn(publish(broker.port, MESSAGES, "gw"));
    let consumer = tokio::task::spawn_blocking(move || {
        while in_kafka(&consumer, topic) < MESSAGES as i64 {
            std::thread::sleep(Duration::from_millis(20));
        }
    });
    consumer.await.unwrap();
    let rate = MESSAGES as f64 / start.elapsed().as_secs_f64();
    publisher.await.unwrap();
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", gw.pid().unwrap())).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    assert!(gw.terminate().success());
    (rate, rss_kib)
}

/// Raw rdkafka with the sink's settings: records/s from the first send to the last delivery.
async fn raw_rdkafka(kafka: &KafkaBroker) -> f64 {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka.bootstrap())
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("compression.type", "lz4")
        .set("linger.ms", "5")
        .set("partitioner", "murmur2_random")
        .create()
        .unwrap();
    let start = Instant::now();
    let mut deliveries = Vec::with_capacity(MESSAGES);
    for seq in 0..MESSAGES {
        let key = format!("d{}", seq % TOPICS);
        let value = payload(seq);
        let record = FutureRecord::to("bench-raw").key(&key).payload(&value);
        deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }
    MESSAGES as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("into Kafka: {MESSAGES} QoS 1 messages, 100 bytes, {TOPICS} topics, {PUBLISHERS} publishers; one KRaft broker, {PARTITIONS} partitions");
        let kafka = KafkaBroker::start_with(&[("num.partitions", "12")]);
        let broker = Mosquitto::start();
        let bare = bare_subscriber(&broker).await;
        let raw = raw_rdkafka(&kafka).await;
        let (tributary, rss_kib) = tributary_binary(&broker, &kafka).await;
        println!("  bare rumqttc subscriber (acks, discards): {bare:>9.0} msgs/s   (baseline)");
        println!("  raw rdkafka produce, same settings:       {raw:>9.0} recs/s   (Kafka ceiling)");
        println!(
            "  tributary -> Kafka, acked after acks=all:  {tributary:>9.0} msgs/s   ratio {:.2} of the subscriber (goal >= 0.9), {:.2} of raw rdkafka",
            tributary / bare,
            tributary / raw
        );
        println!("  tributary peak RSS: {:.1} MiB", rss_kib as f64 / 1024.0);
        if let Some((rss, peak)) = kafka.rss_kib() {
            println!("  Kafka broker RSS: {:.0} MiB (peak {:.0} MiB)", rss as f64 / 1024.0, peak as f64 / 1024.0);
        }
    });
}
