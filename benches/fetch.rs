//! Fetch throughput: an rdkafka consumer reads 1M 100-byte records from the embedded log over
//! Tributary's Kafka listener, beside the same consumer reading the same records from
//! rdkafka's in-process mock cluster, in the same run.
//!
//! `cargo bench --bench fetch`. Goal: >= 1M records/s and >= 1x the mock cluster.

use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Message, Offset as KafkaOffset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary::config::{FsyncPolicy, TopicConfig, TopicsConfig};
use tributary::kafka_api::{KafkaApi, ServerOptions};
use tributary::log::offsets::GroupOffsets;
use tributary::log::{Log, LogOptions};
use tributary::record::Record;

const RECORDS: usize = 1_000_000;
/// Enough partitions that the mock cluster, which keeps about 46k messages per partition, holds
/// all of them.
const PARTITIONS: i32 = 24;
const TOPIC: &str = "bench";

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("{i:010}").into_bytes();
    v.resize(100, b'v');
    v
}

/// Reads every record of `TOPIC` from offset 0 with one rdkafka consumer (no group, assigned
/// partitions); returns records/s and the bytes of values read.
fn consume(bootstrap: &str) -> (f64, u64) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "fetch-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.max.bytes", "52428800")
        .set("max.partition.fetch.bytes", "10485760")
        .set("queued.max.messages.kbytes", "262144")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(TOPIC, p, KafkaOffset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let start = Instant::now();
    let (mut n, mut bytes) = (0usize, 0u64);
    while n < RECORDS {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                n += 1;
                bytes += m.payload().map_or(0, |p| p.len() as u64);
            }
            Some(Err(e)) => eprintln!("consume: {e}"),
            None => panic!("consume: stalled at {n} records"),
        }
    }
    (n as f64 / start.elapsed().as_secs_f64(), bytes)
}

fn main() {
    if let Ok(bootstrap) = std::env::var("FETCH_BENCH_BOOTSTRAP") {
        let (rate, _) = consume(&bootstrap);
        println!("{bootstrap}: {rate:.0} records/s");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("FETCH_BENCH_DIR");
    let mut topics = TopicsConfig::default();
    topics.topics.insert(
        TOPIC.into(),
        TopicConfig {
            partitions: PARTITIONS as u32,
        },
    );
    let options = LogOptions {
        dir: keep
            .clone()
            .map_or_else(|| dir.path().to_path_buf(), std::path::PathBuf::from),
        segment_bytes: 128 << 20,
        fsync: FsyncPolicy::Never,
        fsync_interval: Duration::from_millis(5),
        retention_time: None,
        retention_bytes: None,
        retention_check: Duration::from_secs(3600),
        topics,
    };
    println!("fetch throughput: {RECORDS} records of 100 bytes, {PARTITIONS} partitions, one rdkafka consumer (assign, from the beginning)");
    let (bootstrap, stop, server) = runtime.block_on(async {
        let log = Arc::new(Log::open(options).await.unwrap());
        // Written as the pipeline writes under load: many records per batch.
        for chunk in (0..RECORDS).collect::<Vec<_>>().chunks(500) {
            let p = (chunk[0] / 500) as u32 % PARTITIONS as u32;
            let records = chunk
                .iter()
                .map(|&i| Record {
                    route: Arc::from("bench"),
                    topic: TOPIC.into(),
                    partition: p,
                    key: Some(Bytes::from(format!("k{}", i % 100))),
                    value: Bytes::from(value(i)),
                    headers: Vec::new(),
                    timestamp_ms: 1_790_000_000_000,
                    dead_letter: None,
                })
                .collect();
            log.append(TOPIC, p, records).await.unwrap();
        }
        if keep.is_some() {
            Arc::into_inner(log).unwrap().close().await.unwrap();
            std::process::exit(0);
        }
        let offsets = Arc::new(GroupOffsets::open(dir.path()).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(
            KafkaApi::new(log, offsets, ServerOptions::default()).serve(listener, stop.clone()),
        );
        (addr.to_string(), stop, server)
    });
    let (tributary, bytes) = consume(&bootstrap);
    println!(
        "  tributary (embedded log):  {tributary:>10.0} records/s  {:>7.1} MB/s of values",
        tributary * bytes as f64 / RECORDS as f64 / 1e6
    );

    // The same records in rdkafka's mock cluster, then the same consumer.
    let mock = MockCluster::new(1).expect("mock cluster");
    mock.create_topic(TOPIC, PARTITIONS, 1).unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .set("linger.ms", "5")
        .set("batch.num.messages", "500")
        .set("queue.buffering.max.messages", "2000000")
        .create()
        .expect("producer");
    for i in 0..RECORDS {
        let (key, payload) = (format!("k{}", i % 100), value(i));
        let p = (i / 500) as i32 % PARTITIONS;
        let mut record = BaseRecord::to(TOPIC)
            .partition(p)
            .key(&key)
            .payload(&payload);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    let held: i64 = (0..PARTITIONS)
        .map(|p| {
            let (lo, hi) = producer
                .client()
                .fetch_watermarks(TOPIC, p, Duration::from_secs(5))
                .unwrap();
            assert_eq!(
                lo, 0,
                "the mock cluster dropped old records of partition {p}"
            );
            hi
        })
        .sum();
    assert_eq!(held, RECORDS as i64, "the mock cluster holds every record");
    let (mock_rate, _) = consume(&mock.bootstrap_servers());
    println!("  rdkafka mock cluster:      {mock_rate:>10.0} records/s   (baseline)");
    println!(
        "  ratio {:.2} (goal >= 1.0); goal >= 1,000,000 records/s: {}",
        tributary / mock_rate,
        if tributary >= 1e6 { "met" } else { "MISSED" }
    );
    stop.cancel();
    runtime.block_on(async {
        let _ = server.await;
    });
}
