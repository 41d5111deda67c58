//! One suite, every sink: each scenario runs against each backend (the embedded log, and a real
//! Apache Kafka broker through the Kafka sink). A sink passes when every record it reports
//! stored reads back exactly, in order per partition, with the offsets it reported.

mod support;

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tributary::config::{
    Backend as LogBackend, Config, FsyncPolicy, KafkaConfig, KafkaDelivery, TopicConfig,
    TopicsConfig,
};
use tributary::log::{Log, LogOptions, Offset};
use tributary::record::{Header, Record};
use tributary::sink::buffered::BufferedSink;
use tributary::sink::embedded::EmbeddedSink;
use tributary::sink::kafka::KafkaSink;
use tributary::sink::Sink;

/// A record as read back from a backend.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    offset: u64,
    key: Option<Bytes>,
    value: Bytes,
    headers: Vec<(String, Bytes)>,
    timestamp_ms: i64,
}

trait Backend {
    type S: Sink + Clone;
    /// The name this backend gives the scenario's topic `name` (a shared Kafka broker needs
    /// names of its own for each scenario).
    fn topic(&self, name: &str) -> String {
        name.to_string()
    }
    /// Opens the sink on this backend's storage (again, after `close`).
    async fn open(&self) -> Self::S;
    /// Every record of a partition, in offset order.
    async fn read_back(&self, sink: &Self::S, topic: &str, partition: u32) -> Vec<Stored>;
}

/// Topic `three` has 3 partitions, every other 4.
fn topics(three: &str) -> TopicsConfig {
    let mut t = TopicsConfig::default();
    t.topics.insert(three.into(), TopicConfig { partitions: 3 });
    t
}

fn record(
    topic: &str,
    partition: u32,
    key: Option<&str>,
    value: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Record {
    Record {
        route: Arc::from("conformance"),
        topic: topic.into(),
        partition,
        key: key.map(|k| Bytes::from(k.to_string())),
        value: value.into(),
        headers: headers
            .iter()
            .map(|(k, v)| Header::new(k.to_string(), v.to_string()))
            .collect(),
        timestamp_ms: 1_750_000_000_000,
        dead_letter: None,
    }
}

fn stored(r: &Record, offset: u64) -> Stored {
    Stored {
        offset,
        key: r.key.clone(),
        value: r.value.clone(),
        headers: r
            .headers
            .iter()
            .map(|h| (h.key.to_string(), h.value.clone()))
            .collect(),
        timestamp_ms: r.timestamp_ms,
    }
}

/// Records of every shape land with the offsets reported, and read back exactly.
async fn delivers_every_shape<B: Backend>(b: &B) {
    let sink = b.open().await;
    let (three, other) = (b.topic("three"), b.topic("other"));
    let many: Vec<(String, String)> = (0..50)
        .map(|i| (format!("h{i}"), format!("v{i}")))
        .collect();
    let many: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let records = vec![
        record(&three, 0, None, "null key", &[]),
        record(&three, 0, Some("k"), "", &[("a", "1")]),
        record(&three, 1, Some(""), "empty key", &many),
        record(&other, 2, Some("big"), vec![7u8; 1 << 20], &[]),
        record(
            &three,
            0,
            Some("k2"),
            "third in partition 0",
            &[("dup", "1"), ("dup", "2")],
        ),
    ];
    let offsets = sink.append(records.clone()).await.unwrap();
    assert_eq!(
        offsets,
        [Offset(0), Offset(1), Offset(0), Offset(0), Offset(2)]
    );
    let mut expected: BTreeMap<(String, u32), Vec<Stored>> = BTreeMap::new();
    for (r, o) in records.iter().zip(&offsets) {
        expected
            .entry((r.topic.clone(), r.partition))
            .or_default()
            .push(stored(r, o.0));
    }
    for ((topic, partition), want) in expected {
        assert_eq!(
            b.read_back(&sink, &topic, partition).await,
            want,
            "{topic}/{partition}"
        );
    }
    assert_eq!(sink.append(Vec::new()).await.unwrap(), Vec::<Offset>::new());
    sink.close().await.unwrap();
}

/// Concurrent appenders: nothing lost, nothing doubled, each appender's order kept.
async fn concurrent_appends_keep_order<B: Backend>(b: &B) {
    let sink = b.open().await;
    let three = b.topic("three");
    let mut tasks = Vec::new();
    for t in 0..8u32 {
        let sink = sink.clone();
        let three = three.clone();
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..200u32 {
                let r = record(
                    &three,
                    t % 3,
                    Some(&format!("t{t}")),
                    format!("{t}:{i}"),
                    &[],
                );
                offsets.push(sink.append(vec![r]).await.unwrap()[0]);
            }
            offsets
        }));
    }
    let mut reported = Vec::new();
    for t in tasks {
        let offsets = t.await.unwrap();
        assert!(
            offsets.windows(2).all(|w| w[0] < w[1]),
            "one appender's offsets increase"
        );
        reported.extend(offsets);
    }
    let mut total = 0;
    for p in 0..3 {
        let records = b.read_back(&sink, &three, p).await;
        total += records.len();
        let mut last: BTreeMap<String, i64> = BTreeMap::new();
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as u64, "offsets are dense");
            let text = std::str::from_utf8(&r.value).unwrap();
            let (t, n) = text.split_once(':').unwrap();
            let n: i64 = n.parse().unwrap();
            let prev = last.insert(t.to_string(), n).unwrap_or(-1);
            assert_eq!(n, prev + 1, "appender {t} in order, no gap, no duplicate");
        }
    }
    assert_eq!(total, 8 * 200);
    assert_eq!(reported.len(), 1600);
    sink.close().await.unwrap();
}

/// What was reported stored is there after the sink closes and opens again; offsets go on.
async fn survives_reopen<B: Backend>(b: &B) {
    let sink = b.open().await;
    let reopen = b.topic("reopen");
    let first: Vec<Record> = (0..10)
        .map(|i| record(&reopen, 0, Some("k"), format!("a{i}"), &[]))
        .collect();
    sink.append(first.clone()).await.unwrap();
    sink.close().await.unwrap();
    let sink = b.open().await;
    let offsets = sink
        .append(vec![record(&reopen, 0, Some("k"), "after", &[])])
        .await
        .unwrap();
    assert_eq!(offsets, [Offset(10)]);
    let back = b.read_back(&sink, &reopen, 0).await;
    assert_eq!(back.len(), 11);
    assert_eq!(
        back[..10],
        first
            .iter()
            .enumerate()
            .map(|(i, r)| stored(r, i as u64))
            .collect::<Vec<_>>()[..]
    );
    assert_eq!(back[10].value, "after");
    sink.close().await.unwrap();
}

/// A partition that does not exist is refused, not retried forever, and harms nothing else.
async fn refuses_missing_partition<B: Backend>(b: &B) {
    let sink = b.open().await;
    let three = b.topic("three");
    // The topic exists first (the router only ever asks for partitions it was told of).
    sink.append(vec![record(&three, 0, None, "w", &[])])
        .await
        .unwrap();
    let err = sink
        .append(vec![record(&three, 7, None, "x", &[])])
        .await
        .unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    assert!(err.to_string().contains("partition 7"), "{err}");
    assert_eq!(
        sink.append(vec![record(&three, 2, None, "y", &[])])
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(sink.partition_counts().await.unwrap().get(&three), Some(&3));
    sink.close().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// The embedded log
// ---------------------------------------------------------------------------------------------

struct Embedded {
    dir: tempfile::TempDir,
}

impl Embedded {
    fn new() -> Self {
        Embedded {
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl Backend for Embedded {
    type S = EmbeddedSink;

    async fn open(&self) -> EmbeddedSink {
        let options = LogOptions {
            dir: self.dir.path().to_path_buf(),
            segment_bytes: 256 * 1024,
            fsync: FsyncPolicy::Interval,
            fsync_interval: Duration::from_millis(2),
            retention_time: None,
            retention_bytes: None,
            retention_check: Duration::from_secs(3600),
            topics: topics("three"),
        };
        EmbeddedSink::new(Arc::new(Log::open(options).await.unwrap()))
    }

    async fn read_back(&self, sink: &EmbeddedSink, topic: &str, partition: u32) -> Vec<Stored> {
        let part = sink.log().partition(topic, partition).unwrap();
        part.records(Offset(0))
            .map(|r| {
                let r = r.unwrap();
                Stored {
                    offset: r.offset as u64,
                    key: r.key,
                    value: r.value.unwrap_or_default(),
                    headers: r
                        .headers
                        .into_iter()
                        .map(|h| (h.key, h.value.unwrap_or_default()))
                        .collect(),
                    timestamp_ms: r.timestamp_ms,
                }
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_delivers_every_shape() {
    delivers_every_shape(&Embedded::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_concurrent_appends_keep_order() {
    concurrent_appends_keep_order(&Embedded::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_survives_reopen() {
    survives_reopen(&Embedded::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_refuses_missing_partition() {
    refuses_missing_partition(&Embedded::new()).await;
}

// ---------------------------------------------------------------------------------------------
// A real Apache Kafka broker, through the Kafka sink
// ---------------------------------------------------------------------------------------------

/// One broker for the whole binary; each scenario gets topics of its own.
struct Kafka {
    bootstrap: String,
    suffix: u32,
}

impl Kafka {
    fn new() -> Self {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        Kafka {
            bootstrap: support::kafka::KafkaBroker::shared().bootstrap(),
            suffix: std::process::id() * 100 + NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

impl Backend for Kafka {
    type S = KafkaSink;

    fn topic(&self, name: &str) -> String {
        format!("{name}-{}", self.suffix)
    }

    async fn open(&self) -> KafkaSink {
        let mut config = KafkaConfig {
            bootstrap_servers: self.bootstrap.clone(),
            ..Default::default()
        };
        // The 1 MiB record of `delivers_every_shape` is over librdkafka's default 1,000,000.
        config
            .properties
            .insert("message.max.bytes".into(), "2000000".into());
        KafkaSink::open(&config, &topics(&self.topic("three")), &[])
            .await
            .unwrap()
    }

    async fn read_back(&self, _: &KafkaSink, topic: &str, partition: u32) -> Vec<Stored> {
        let (bootstrap, topic) = (self.bootstrap.clone(), topic.to_string());
        tokio::task::spawn_blocking(move || read_partition(&bootstrap, &topic, partition))
            .await
            .unwrap()
    }
}

/// Every record of one partition, read with a librdkafka consumer up to the high watermark.
fn read_partition(bootstrap: &str, topic: &str, partition: u32) -> Vec<Stored> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "conformance-read-back")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let (_, high) = consumer
        .fetch_watermarks(topic, partition as i32, timeout)
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    assignment
        .add_partition_offset(topic, partition as i32, rdkafka::Offset::Beginning)
        .unwrap();
    consumer.assign(&assignment).unwrap();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (out.len() as i64) < high {
        assert!(
            std::time::Instant::now() < deadline,
            "{topic}/{partition}: read {} of {high}",
            out.len()
        );
        let Some(message) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = message.unwrap();
        out.push(Stored {
            offset: m.offset() as u64,
            key: m.key().map(Bytes::copy_from_slice),
            value: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_string(),
                                Bytes::copy_from_slice(h.value.unwrap_or_default()),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            timestamp_ms: m.timestamp().to_millis().unwrap_or(-1),
        });
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_delivers_every_shape() {
    delivers_every_shape(&Kafka::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_concurrent_appends_keep_order() {
    concurrent_appends_keep_order(&Kafka::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_survives_reopen() {
    survives_reopen(&Kafka::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_refuses_missing_partition() {
    refuses_missing_partition(&Kafka::new()).await;
}

// ---------------------------------------------------------------------------------------------
// Buffered delivery: a local buffer, forwarded to the real Kafka broker
// ---------------------------------------------------------------------------------------------

/// Records are acked from the local buffer; they read back from Kafka once forwarded, with the
/// offsets the buffer reported (fresh topics, and a clean close ships what it holds).
struct Buffered {
    kafka: Kafka,
    dir: tempfile::TempDir,
}

impl Buffered {
    fn new() -> Self {
        Buffered {
            kafka: Kafka::new(),
            dir: tempfile::tempdir().unwrap(),
        }
    }
}

impl Backend for Buffered {
    type S = BufferedSink;

    fn topic(&self, name: &str) -> String {
        self.kafka.topic(name)
    }

    async fn open(&self) -> BufferedSink {
        let mut config = Config::default();
        config.log.backend = LogBackend::Kafka;
        config.log.embedded.fsync = FsyncPolicy::Interval;
        config.log.kafka.bootstrap_servers = self.kafka.bootstrap.clone();
        config.log.kafka.delivery = KafkaDelivery::Buffered;
        config.log.kafka.buffer.dir = self.dir.path().to_path_buf();
        config
            .log
            .kafka
            .properties
            .insert("message.max.bytes".into(), "2000000".into());
        config.topics = topics(&self.topic("three"));
        BufferedSink::open(&config).await.unwrap()
    }

    async fn read_back(&self, sink: &BufferedSink, topic: &str, partition: u32) -> Vec<Stored> {
        let forwarded = |sink: &BufferedSink| {
            sink.lag()
                .iter()
                .find(|l| l.topic == topic && l.partition == partition)
                .is_none_or(|l| l.records() == 0)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !forwarded(sink) {
            assert!(
                std::time::Instant::now() < deadline,
                "{topic}/{partition} not forwarded: {:?}",
                sink.lag()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (bootstrap, topic) = (self.kafka.bootstrap.clone(), topic.to_string());
        tokio::task::spawn_blocking(move || read_partition(&bootstrap, &topic, partition))
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_delivers_every_shape() {
    delivers_every_shape(&Buffered::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_concurrent_appends_keep_order() {
    concurrent_appends_keep_order(&Buffered::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_survives_reopen() {
    survives_reopen(&Buffered::new()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_refuses_missing_partition() {
    refuses_missing_partition(&Buffered::new()).await;
}
