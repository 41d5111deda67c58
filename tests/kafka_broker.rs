//! The real Apache Kafka broker of the tests (tests/support/kafka.rs): topics, keyed records
//! placed as the Java client places them, durability across a broker restart.

mod support;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::kafka::KafkaBroker;
use tributary::route::partition::partition_for_key;

const PARTITIONS: i32 = 3;

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn create_topic(bootstrap: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap();
    let results = block_on(admin.create_topics(
        &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))
    .unwrap();
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
    }
}

/// A delivered record: key, partition, offset.
type Delivered = (String, i32, i64);

/// Collects every delivery report: the record or the error.
#[derive(Default)]
struct Reports(Mutex<Vec<Result<Delivered, String>>>);

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let report = match result {
            Ok(m) => Ok((
                String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(),
                m.partition(),
                m.offset(),
            )),
            Err((e, m)) => Err(format!("{:?}: {e}", m.key().map(String::from_utf8_lossy))),
        };
        self.0.lock().unwrap().push(report);
    }
}

/// Produces `records` with librdkafka's Java-compatible partitioner (no explicit partition),
/// acks=all and idempotence on; returns the delivery reports.
fn produce(bootstrap: &str, topic: &str, records: &[(String, String)]) -> Vec<Delivered> {
    let producer: BaseProducer<Reports> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        .create_with_context(Reports::default())
        .unwrap();
    for (key, value) in records {
        let mut record = BaseRecord::to(topic).key(key).payload(value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(_), r)) => {
                    producer.poll(Duration::from_millis(10));
                    record = r;
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let reports = std::mem::take(&mut *producer.context().0.lock().unwrap());
    reports
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("delivery failed: {e}")))
        .collect()
}

/// Reads `count` records of every partition from the beginning: per partition, in offset order,
/// (offset, key, value).
fn consume(bootstrap: &str, topic: &str, count: usize) -> Vec<Vec<(i64, String, String)>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kafka-broker-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = vec![Vec::new(); PARTITIONS as usize];
    let mut seen = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen < count {
        assert!(
            Instant::now() < deadline,
            "read {seen} of {count} records: {out:?}"
        );
        let Some(m) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let m = m.unwrap();
        let text = |b: Option<&[u8]>| String::from_utf8(b.unwrap().to_vec()).unwrap();
        out[m.partition() as usize].push((m.offset(), text(m.key()), text(m.payload())));
        seen += 1;
    }
    // Nothing more than what was produced.
    assert!(consumer.poll(Duration::from_millis(300)).is_none());
    out
}

/// The records as the broker must hold them: per partition, in production order, the
/// partition chosen as the Java client chooses it (murmur2(key) & 0x7fffffff % partitions).
fn expected(records: &[(String, String)]) -> Vec<Vec<(i64, String, String)>> {
    let mut out = vec![Vec::new(); PARTITIONS as usize];
    for (key, value) in records {
        let p = partition_for_key(key.as_bytes(), PARTITIONS as u32) as usize;
        let offset = out[p].len() as i64;
        out[p].push((offset, key.clone(), value.clone()));
    }
    out
}

/// A broker of its own: a topic of 3 partitions, 100 keyed records in the Java client's
/// partitions, read back exactly; stopped and started again, the same records are still there
/// and the broker takes more.
#[test]
fn records_placed_as_java_places_them_survive_a_restart() {
    let t0 = Instant::now();
    let mut broker = KafkaBroker::start();
    let started = t0.elapsed();
    let first_start = broker.start_took;
    let bootstrap = broker.bootstrap();
    let topic = "readings";
    create_topic(&bootstrap, topic, PARTITIONS);

    let records: Vec<(String, String)> = (0..100)
        .map(|i| (format!("device-{}", i % 20), format!("reading-{i}")))
        .collect();
    let reports = produce(&bootstrap, topic, &records);
    assert_eq!(reports.len(), records.len());
    for (key, partition, _) in &reports {
        assert_eq!(
            *partition as u32,
            partition_for_key(key.as_bytes(), PARTITIONS as u32),
            "librdkafka's murmur2_random put {key} elsewhere than the Java client would"
        );
    }
    let want = expected(&records);
    assert!(
        want.iter().all(|p| !p.is_empty()),
        "20 keys fill 3 partitions"
    );
    assert_eq!(consume(&bootstrap, topic, records.len()), want);
    let rss = broker.rss_kib();

    let t1 = Instant::now();
    broker.stop();
    let stopped = t1.elapsed();
    assert!(!broker.is_running());
    let t2 = Instant::now();
    broker.start_again();
    let restarted = t2.elapsed();
    assert_eq!(broker.bootstrap(), bootstrap, "same port after a restart");
    assert_eq!(consume(&bootstrap, topic, records.len()), want);

    // And it takes more after the restart: offsets go on where they were.
    let more: Vec<(String, String)> = (100..110)
        .map(|i| (format!("device-{}", i % 20), format!("reading-{i}")))
        .collect();
    produce(&bootstrap, topic, &more);
    let all: Vec<_> = records.iter().chain(&more).cloned().collect();
    assert_eq!(consume(&bootstrap, topic, all.len()), expected(&all));

    eprintln!(
        "kafka broker: started in {started:?} (format {:?}, start {:?}), stopped in {stopped:?}, started again in \
         {restarted:?}; RSS after 100 records (now, peak KiB): {rss:?}, at the end: {:?}",
        broker.format_took,
        first_start,
        broker.rss_kib()
    );
    broker.kill();
    assert!(!broker.is_running());
    assert!(broker.log().contains("Kafka Server started"));
}

/// `KafkaBroker::shared()` starts one broker for the whole test binary, whatever the thread.
#[test]
fn the_shared_broker_is_started_once() {
    let a = std::thread::spawn(|| KafkaBroker::shared().bootstrap());
    let b = std::thread::spawn(|| KafkaBroker::shared().bootstrap());
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_eq!(a, b);
    assert_eq!(a, KafkaBroker::shared().bootstrap());
    create_topic(&a, "shared", 1);
    let records = vec![("k".to_string(), "v".to_string())];
    assert_eq!(produce(&a, "shared", &records), vec![("k".into(), 0, 0)]);
}
