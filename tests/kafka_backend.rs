//! The Kafka cluster backend end to end: a real Mosquitto, the `tributary` binary with
//! `log.backend: kafka`, and a real Apache Kafka broker (KRaft, started by the tests). Counts
//! of lost and duplicated records are exact; a key's partition is checked against murmur2.

mod support;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use support::kafka::KafkaBroker;
use support::{Gateway, Mosquitto};
use tributary::route::partition::partition_for_key;

const DEVICES: usize = 20;
const PARTITIONS: u32 = 6;

/// A record read back from Kafka.
#[derive(Debug)]
struct Read {
    partition: u32,
    key: String,
    value: String,
    headers: BTreeMap<String, String>,
    timestamp_ms: i64,
}

/// A gateway config bridging `broker` to the Kafka at `bootstrap`, topic `topic`.
fn config(broker: &Mosquitto, client_id: &str, bootstrap: &str, topic: &str) -> String {
    format!(
        "mqtt: {{ url: \"{}\", client_id: {client_id}, keep_alive: 5s, max_inflight: 200 }}\n\
         log: {{ backend: kafka, kafka: {{ bootstrap_servers: \"{bootstrap}\" }} }}\n\
         topics: {{ {topic}: {{ partitions: {PARTITIONS} }} }}\n\
         http: {{ listen: null }}\n\
         routes:\n  - {{ name: telemetry, from: \"devices/{{device}}/telemetry\", to: {topic}, key: \"{{device}}\", headers: {{ source: gw }} }}\n",
        broker.url()
    )
}

/// Messages `device:seq`, seq 0..n, spread over the devices in turn.
fn messages(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|seq| {
            let device = seq % DEVICES;
            (
                format!("devices/d{device}/telemetry"),
                format!("{device}:{seq}").into_bytes(),
            )
        })
        .collect()
}

/// Publishes `messages` in `chunks`, pausing between them so the stream lasts a while.
async fn publish_paced(
    port: u16,
    messages: Vec<(String, Vec<u8>)>,
    chunks: usize,
    pause: Duration,
) {
    let size = messages.len().div_ceil(chunks);
    for (i, chunk) in messages.chunks(size).enumerate() {
        support::publish(port, &format!("kafka-pub-{i}"), 1, chunk.to_vec()).await;
        tokio::time::sleep(pause).await;
    }
}

/// Reads `topic` until it holds at least `want` records and nothing more arrives for a while.
fn read_topic(bootstrap: &str, topic: &str, want: usize, limit: Duration) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("kafka-backend-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS as i32 {
        assignment
            .add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut quiet_since = Instant::now();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                quiet_since = Instant::now();
                out.push(Read {
                    partition: m.partition() as u32,
                    key: String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                    value: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| {
                                    let value = h.value.unwrap_or_default();
                                    (
                                        h.key.to_string(),
                                        String::from_utf8_lossy(value).into_owned(),
                                    )
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
                });
            }
            Some(Err(e)) => println!("consumer: {e}"),
            None if out.len() >= want && quiet_since.elapsed() > Duration::from_secs(3) => break,
            None => {}
        }
    }
    out
}

/// Records in `topic` now: the sum of its partitions' high watermarks.
fn in_kafka(bootstrap: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    (0..PARTITIONS as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map_or(0, |(_, high)| high)
        })
        .sum()
}

/// Exact counts for messages 0..n: lost, duplicated, and order per device (first copies).
struct Tally {
    lost: Vec<usize>,
    duplicates: usize,
    disorder: usize,
}

fn tally(records: &[Read], n: usize) -> Tally {
    let mut copies = vec![0usize; n];
    let mut by_partition: BTreeMap<u32, Vec<&Read>> = BTreeMap::new();
    for r in records {
        by_partition.entry(r.partition).or_default().push(r);
    }
    let mut disorder = 0;
    for records in by_partition.values() {
        let mut last: BTreeMap<&str, usize> = BTreeMap::new();
        for r in records {
            let (_, seq) = r.value.split_once(':').expect("device:seq");
            let seq: usize = seq.parse().unwrap();
            copies[seq] += 1;
            if copies[seq] == 1 {
                if let Some(prev) = last.insert(&r.key, seq) {
                    disorder += usize::from(prev > seq);
                }
            }
        }
    }
    Tally {
        lost: (0..n).filter(|&s| copies[s] == 0).collect(),
        duplicates: copies.iter().map(|&c| c.saturating_sub(1)).sum(),
        disorder,
    }
}

/// Every record is where murmur2 puts its key, with the gateway's headers and a timestamp
/// from this run.
fn check_shape(records: &[Read], started_ms: i64) {
    for r in records {
        let (device, _) = r.value.split_once(':').unwrap();
        assert_eq!(r.key, format!("d{device}"));
        assert_eq!(
            r.partition,
            partition_for_key(r.key.as_bytes(), PARTITIONS),
            "{r:?}"
        );
        assert_eq!(
            r.headers.get("mqtt.topic"),
            Some(&format!("devices/d{device}/telemetry"))
        );
        assert_eq!(r.headers.get("mqtt.qos").map(String::as_str), Some("1"));
        assert_eq!(r.headers.get("source").map(String::as_str), Some("gw"));
        let now = tributary::message::now_ms();
        assert!((started_ms..=now).contains(&r.timestamp_ms), "{r:?}");
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_into_kafka_across_two_sigkills() {
    const N: usize = 20_000;
    let started_ms = tributary::message::now_ms();
    let kafka = KafkaBroker::shared();
    let broker = Mosquitto::start();
    let topic = unique("telemetry-kills");
    let mut gw = Gateway::new(&config(
        &broker,
        "gw-kafka-kills",
        &kafka.bootstrap(),
        &topic,
    ));
    gw.start();
    let port = broker.port;
    // A steady stream, so each kill lands with messages in flight.
    let messages = messages(N);
    let publisher = tokio::spawn(publish_paced(port, messages, 40, Duration::from_millis(20)));
    for kill in 1..=2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (bootstrap, t) = (kafka.bootstrap(), topic.clone());
        let stored = tokio::task::spawn_blocking(move || in_kafka(&bootstrap, &t))
            .await
            .unwrap();
        println!("SIGKILL {kill} with {stored} of {N} records in Kafka");
        assert!(stored < N as i64, "the kill lands mid-stream");
        gw.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        gw.start();
    }
    publisher.await.unwrap();
    let bootstrap = kafka.bootstrap();
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, &topic, N, Duration::from_secs(90))
    })
    .await
    .unwrap();
    let t = tally(&records, N);
    println!(
        "two SIGKILLs: {} records; lost {}; duplicates {}; order violations {}",
        records.len(),
        t.lost.len(),
        t.duplicates,
        t.disorder
    );
    assert_eq!(t.lost, Vec::<usize>::new(), "lost:\n{}", gw.log());
    assert_eq!(t.disorder, 0);
    check_shape(&records, started_ms);
    let status = gw.terminate();
    assert!(status.success(), "{status:?}\n{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_outage_of_ten_seconds_loses_nothing() {
    const N: usize = 2_000;
    let started_ms = tributary::message::now_ms();
    let mut kafka = KafkaBroker::start();
    let broker = Mosquitto::start();
    let topic = unique("telemetry-outage");
    let mut gw = Gateway::new(&config(
        &broker,
        "gw-kafka-outage",
        &kafka.bootstrap(),
        &topic,
    ));
    gw.start();
    let publisher = tokio::spawn(publish_paced(
        broker.port,
        messages(N),
        20,
        Duration::from_millis(500),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    kafka.stop();
    println!("Kafka stopped");
    tokio::time::sleep(Duration::from_secs(10)).await;
    kafka.start_again();
    println!("Kafka started again");
    publisher.await.unwrap();
    let bootstrap = kafka.bootstrap();
    let reader = topic.clone();
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, &reader, N, Duration::from_secs(120))
    })
    .await
    .unwrap();
    let t = tally(&records, N);
    println!(
        "10 s outage: {} records; lost {}; duplicates {}; order violations {}",
        records.len(),
        t.lost.len(),
        t.duplicates,
        t.disorder
    );
    assert_eq!(t.lost, Vec::<usize>::new(), "lost:\n{}", gw.log());
    assert_eq!(t.disorder, 0, "per-key order");
    check_shape(&records, started_ms);
    assert!(
        gw.pid().is_some(),
        "the gateway recovered by itself, without a restart"
    );
    let status = gw.terminate();
    assert!(status.success(), "{status:?}\n{}", gw.log());
}
