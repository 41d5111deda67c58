//! Into a real Apache Kafka broker (KRaft, single node, started here): publisher (QoS 1,
//! 100-byte payloads, 100 topics) -> Mosquitto -> `tributary run` with `log.backend: kafka`
//! -> Kafka, beside two baselines measured in the same run:
//! - a bare rumqttc subscriber on the same Mosquitto with the same publisher (acks, discards):
//!   what the MQTT side alone allows;
//! - raw rdkafka: 100-byte records produced straight to the same broker with the sink's
//!   settings (acks=all, idempotent, lz4, linger 5 ms): the Kafka side's ceiling.
//!
//! Both deliveries run: `direct` (acked after acks=all) and `buffered` (acked at the local
//! buffer's fsync; rate to the ack and to the last record in Kafka). Then the drain: a backlog of
//! 1M records buffered while Kafka is stopped, and the time the forwarders take to ship it once
//! Kafka is back, beside raw rdkafka producing 1M records.
//!
//! `cargo bench --bench kafka` (needs `mosquitto`, Java 17 and the Kafka jars: `scripts/test`
//! installs them).

#[path = "common/load.rs"]
mod load;
#[path = "../tests/support/mod.rs"]
mod support;

use load::{bare_subscriber, peak_rss_kib, publish, PUBLISHERS, TOPICS};
use rdkafka::consumer::BaseConsumer;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::kafka::KafkaBroker;
use support::kafka_read::high_watermarks;
use support::{Gateway, Mosquitto};
use tributary::config::{Backend, Config, KafkaDelivery};
use tributary::record::Record;
use tributary::sink::buffered::BufferedSink;
use tributary::sink::Sink;

const MESSAGES: usize = 100_000;
const PARTITIONS: u32 = 12;
const BACKLOG: usize = 1_000_000;

/// A 100-byte payload.
fn payload(seq: usize) -> Vec<u8> {
    let mut p = format!("{seq:010}:").into_bytes();
    p.resize(100, b'x');
    p
}

/// Records in the buffer dir so far (each partition's end offset: shipped segments go, the end
/// stays).
fn buffered(dir: &std::path::Path) -> u64 {
    tributary::log::LogReader::open(dir)
        .ok()
        .and_then(|r| r.topics().ok())
        .map_or(0, |t| t.values().flatten().map(|p| p.end.0).sum())
}

/// `tributary run` into Kafka with `delivery`: messages/s from the first publish to the last
/// ack (buffered: all in the buffer; direct: all in Kafka) and to the last record in Kafka, and
/// the gateway's peak RSS in KiB.
async fn tributary_binary(
    broker: &Mosquitto,
    kafka: &KafkaBroker,
    delivery: &str,
) -> (f64, f64, u64) {
    let topic = format!("bench-{delivery}");
    let mut gw = Gateway::new(&format!(
        "mqtt: {{ url: \"{}\", client_id: bench-kafka-{delivery}, max_inflight: 1024 }}\n\
         log: {{ backend: kafka, kafka: {{ bootstrap_servers: \"{}\", delivery: {delivery}, buffer: {{ dir: DATA_DIR }} }} }}\n\
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
    let publisher = tokio::spawn(publish(broker.port, MESSAGES, None));
    let data = gw.data_dir();
    let buffered_mode = delivery == "buffered";
    let waiter = tokio::task::spawn_blocking(move || {
        let mut acked_at = None;
        loop {
            let in_kafka = high_watermarks(&consumer, &topic, PARTITIONS) >= MESSAGES as i64;
            if acked_at.is_none()
                && (in_kafka || (buffered_mode && buffered(&data) >= MESSAGES as u64))
            {
                acked_at = Some(start.elapsed());
            }
            if in_kafka {
                return (acked_at.unwrap_or(start.elapsed()), start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let (acked, delivered) = waiter.await.unwrap();
    publisher.await.unwrap();
    let rss_kib = peak_rss_kib(gw.pid().unwrap());
    assert!(gw.terminate().success());
    let rate = |t: Duration| MESSAGES as f64 / t.as_secs_f64();
    (rate(acked), rate(delivered), rss_kib)
}

/// A backlog of `BACKLOG` records buffered while Kafka is stopped, then shipped once it is back:
/// records/s of the drain.
async fn drain(kafka: &mut KafkaBroker) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::default();
    config.log.backend = Backend::Kafka;
    config.log.kafka.bootstrap_servers = kafka.bootstrap();
    config.log.kafka.delivery = KafkaDelivery::Buffered;
    config.log.kafka.buffer.dir = dir.path().to_path_buf();
    config.topics.default.partitions = PARTITIONS;
    kafka.stop();
    let sink = BufferedSink::open(&config).await.unwrap();
    let mut appends = Vec::new();
    for chunk in 0..BACKLOG / 1000 {
        let records: Vec<Record> = (0..1000)
            .map(|i| {
                let seq = chunk * 1000 + i;
                let key = format!("d{}", seq % TOPICS);
                Record {
                    route: Arc::from("bench"),
                    topic: "bench-drain".into(),
                    partition: tributary::route::partition::partition_for_key(
                        key.as_bytes(),
                        PARTITIONS,
                    ),
                    key: Some(key.into()),
                    value: payload(seq).into(),
                    headers: Vec::new(),
                    timestamp_ms: 0,
                    dead_letter: None,
                }
            })
            .collect();
        appends.push(sink.append(records));
    }
    for a in appends {
        a.await.unwrap();
    }
    kafka.start_again();
    let start = Instant::now();
    while sink.lag().iter().map(|l| l.records()).sum::<u64>() > 0 || sink.lag().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rate = BACKLOG as f64 / start.elapsed().as_secs_f64();
    sink.close().await.unwrap();
    rate
}

/// Raw rdkafka with the sink's settings: `count` records/s from the first send to the last
/// delivery.
async fn raw_rdkafka(kafka: &KafkaBroker, count: usize) -> f64 {
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
    let mut deliveries = Vec::with_capacity(count);
    for seq in 0..count {
        let key = format!("d{}", seq % TOPICS);
        let value = payload(seq);
        let mut record = FutureRecord::to("bench-raw").key(&key).payload(&value);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => break deliveries.push(delivery),
                Err((_, back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
    for d in deliveries {
        d.await.unwrap().unwrap();
    }
    count as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("into Kafka: {MESSAGES} QoS 1 messages, 100 bytes, {TOPICS} topics, {PUBLISHERS} publishers; one KRaft broker, {PARTITIONS} partitions");
        let mut kafka = KafkaBroker::start_with(&[
            ("num.partitions", "12"),
            ("auto.create.topics.enable", "true"),
        ]);
        let broker = Mosquitto::start();
        let bare = bare_subscriber(broker.port, MESSAGES).await;
        let raw = raw_rdkafka(&kafka, MESSAGES).await;
        let (direct, _, direct_rss) = tributary_binary(&broker, &kafka, "direct").await;
        let (buffered_acked, buffered_delivered, buffered_rss) =
            tributary_binary(&broker, &kafka, "buffered").await;
        println!("  bare rumqttc subscriber (acks, discards): {bare:>9.0} msgs/s   (baseline)");
        println!("  raw rdkafka produce, same settings:       {raw:>9.0} recs/s   (Kafka ceiling)");
        println!(
            "  tributary direct, acked after acks=all:   {direct:>9.0} msgs/s   ratio {:.2} of the subscriber (goal >= 0.9), {:.2} of raw rdkafka",
            direct / bare,
            direct / raw
        );
        println!(
            "  tributary buffered, acked at the fsync:   {buffered_acked:>9.0} msgs/s   ratio {:.2} of the subscriber; all in Kafka at {buffered_delivered:.0} msgs/s",
            buffered_acked / bare
        );
        println!(
            "  tributary peak RSS: direct {:.1} MiB, buffered {:.1} MiB",
            direct_rss as f64 / 1024.0,
            buffered_rss as f64 / 1024.0
        );
        let raw_backlog = raw_rdkafka(&kafka, BACKLOG).await;
        let drained = drain(&mut kafka).await;
        println!("  drain of a {BACKLOG}-record buffer backlog:  {drained:>9.0} recs/s   ratio {:.2} of raw rdkafka producing {BACKLOG} ({raw_backlog:.0} recs/s)", drained / raw_backlog);
        if let Some((rss, peak)) = kafka.rss_kib() {
            println!("  Kafka broker RSS: {:.0} MiB (peak {:.0} MiB)", rss as f64 / 1024.0, peak as f64 / 1024.0);
        }
    });
}
