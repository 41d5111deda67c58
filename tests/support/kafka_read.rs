//! Reading a topic back from Kafka in tests, and counting exactly what arrived: lost,
//! duplicated, and out of order per key. The messages are `device:seq`, seq 0..n, spread over
//! `DEVICES` devices in turn, published to `devices/d<device>/telemetry`.
#![allow(dead_code)]

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub const DEVICES: usize = 20;

/// A record read back from Kafka.
#[derive(Debug)]
pub struct Read {
    pub partition: u32,
    pub key: String,
    pub value: String,
    pub headers: BTreeMap<String, String>,
    pub timestamp_ms: i64,
}

/// Messages `device:seq`, seq 0..n, spread over the devices in turn.
pub fn messages(n: usize) -> Vec<(String, Vec<u8>)> {
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
pub async fn publish_paced(
    port: u16,
    messages: Vec<(String, Vec<u8>)>,
    chunks: usize,
    pause: Duration,
) {
    let size = messages.len().div_ceil(chunks);
    for (i, chunk) in messages.chunks(size).enumerate() {
        super::publish(port, &format!("kafka-pub-{i}"), 1, chunk.to_vec()).await;
        tokio::time::sleep(pause).await;
    }
}

/// Reads `topic` (partitions 0..`partitions`) until it holds at least `want` records and nothing more arrives for a while.
pub fn read_topic(
    bootstrap: &str,
    topic: &str,
    partitions: u32,
    want: usize,
    limit: Duration,
) -> Vec<Read> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", format!("kafka-backend-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions as i32 {
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
pub fn in_kafka(bootstrap: &str, topic: &str, partitions: u32) -> i64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    high_watermarks(&consumer, topic, partitions)
}

/// As [`in_kafka`], through a consumer the caller keeps (for polling).
pub fn high_watermarks(consumer: &BaseConsumer, topic: &str, partitions: u32) -> i64 {
    (0..partitions as i32)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map_or(0, |(_, high)| high)
        })
        .sum()
}

/// Reads `topic` (as [`read_topic`], off the async threads) until it holds messages 0..n, then
/// counts them and prints the counts under `label`.
pub async fn read_and_count(
    bootstrap: String,
    topic: String,
    partitions: u32,
    n: usize,
    label: &str,
) -> (Vec<Read>, Tally) {
    let records = tokio::task::spawn_blocking(move || {
        read_topic(&bootstrap, &topic, partitions, n, Duration::from_secs(120))
    })
    .await
    .unwrap();
    let t = tally(&records, n);
    println!(
        "{label}: {} records; lost {}; duplicates {}; order violations {}",
        records.len(),
        t.lost.len(),
        t.duplicates,
        t.disorder
    );
    (records, t)
}

/// Exact counts for messages 0..n: lost, duplicated, and order per device (first copies).
pub struct Tally {
    pub lost: Vec<usize>,
    pub duplicates: usize,
    pub disorder: usize,
}

pub fn tally(records: &[Read], n: usize) -> Tally {
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
