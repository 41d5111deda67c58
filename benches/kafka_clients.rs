//! Kafka clients against the embedded log's Kafka listener, beside a real Apache Kafka broker,
//! in the same run.
//!
//! Targets: `tributary run` (the release binary, a process of its own, fresh each round with its
//! own temp dir; embedded log with the default fsync policy, `interval` every 5 ms, so a Produce
//! is answered once its batches are fdatasynced; `log.embedded.kafka_listener` and the MQTT
//! `listener` on free loopback ports) and one Apache Kafka 4.1 KRaft broker (combined
//! broker+controller, started here from `target/kafka-jars`, full JIT, `-Xmx1g` as Kafka's own
//! scripts; its defaults otherwise: no fsync of its own, an acks=all write is answered once in
//! the page cache of its one replica). Kafka gets an untimed warm-up (200k records produced and
//! fetched) so its JIT has compiled the hot paths before round 1.
//!
//! Each round makes a fresh topic of 12 partitions on each target (CreateTopics through
//! rdkafka's AdminClient, on both) and, for each target in turn (the order alternates between
//! rounds, so drift on a shared machine hits both alike):
//! - Produce: `BENCH_RECORDS` records (default 1,000,000), 100-byte values, no key, partition
//!   `seq % 12` (round-robin, chosen by the bench), from one rdkafka `BaseProducer` with
//!   `enable.idempotence=true` (so acks=all, at most 5 requests in flight per connection) and
//!   `linger.ms=5`, librdkafka's defaults otherwise (`batch.num.messages` 10000, `batch.size`
//!   1,000,000, `message.max.bytes` 1,000,000, no compression). Timed from the first send to
//!   the last delivery report (`flush`); every report must be a success.
//! - Fetch: one rdkafka `BaseConsumer` assigned all 12 partitions from the beginning (no group
//!   coordination, no commits; `statistics.interval.ms=100` for the counts below, nothing
//!   else set), librdkafka's fetch defaults (`fetch.max.bytes` 52428800,
//!   `max.partition.fetch.bytes` 1048576, `fetch.min.bytes` 1, `fetch.wait.max.ms` 500,
//!   `queued.min.messages` 100000, `queued.max.messages.kbytes` 65536, `fetch.queue.backoff.ms`
//!   1000). Timed from the assign to the last record. Every record is checked so that a broken
//!   fetch cannot look fast: per partition the offsets come 0, 1, 2, ... up to the high
//!   watermark (each read exactly once, the count per partition equals its high watermark),
//!   every value is 100 bytes, and every sequence number 0..N is seen exactly once.
//! - Fetch again, the same way, with `fetch.queue.backoff.ms=10`: with the defaults, once the
//!   consumer's queue is over 64 MiB (1M records are ~110 MB) librdkafka stops fetching those
//!   partitions for a whole second, and whether the queue crosses that line (a race between
//!   the responses coming in and the consumer draining them) decides the default figure more
//!   than the server's speed does: it splits into ~0.4-0.6M or ~1.2-1.8M records/s, for
//!   either server, from round to round. This pass compares the servers without that stall.
//!
//! Printed: each round's records/s and MB/s (of values, 10^6 bytes) for both targets, then the
//! medians and the ratio listener/Kafka; the CPU time (user + system, from /proc/<pid>/stat) of
//! the gateway and of the Kafka JVM per million records, and of the bench process (the rdkafka
//! client); for the fetches, the consumer's Fetch requests and their mean response size (from
//! librdkafka's statistics, read after the timed part); the gateway's peak RSS (VmHWM, max of
//! the rounds) and the JVM's RSS and peak.
//!
//! Baseline: the real Kafka broker, with the same client and settings. Goal: fetch >= 1x Kafka.
//! Produce is reported beside it (the listener's answer waits for an fsync, Kafka's does not).
//!
//! `cargo bench --bench kafka_clients` (needs Java 17 and the Kafka jars: `scripts/test`
//! installs them). `BENCH_RECORDS` and `BENCH_ROUNDS` (default 3) change the sizes;
//! `BENCH_PRODUCER_CONFIG` and `BENCH_CONSUMER_CONFIG` (`key=value,key=value`) add client
//! settings, for both targets alike; `TRIBUTARY_KAFKA_JVM_OPTS` replaces the broker's JVM
//! options. Under a minute (the build aside).

#[path = "../tests/support/mod.rs"]
mod support;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext, Message, Offset, TopicPartitionList};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::kafka::KafkaBroker;
use support::Gateway;

const PARTITIONS: i32 = 12;
const VALUE_BYTES: usize = 100;
/// The second fetch pass: librdkafka stops fetching a partition for `fetch.queue.backoff.ms`
/// (default 1000) whenever its local queue is over `queued.max.messages.kbytes` (64 MiB; 1M
/// records are ~110 MB), which can stall a consumer that is far behind for whole seconds.
const SHORT_BACKOFF: &[(&str, &str)] = &[("fetch.queue.backoff.ms", "10")];
/// Records the Kafka broker's untimed warm-up produces and fetches.
const WARM_UP: usize = 200_000;

fn env_or(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

/// `key=value,key=value` pairs from the environment variable `name`: extra client settings.
fn extra_config(name: &str) -> Vec<(String, String)> {
    std::env::var(name)
        .unwrap_or_default()
        .split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("{name}: {kv:?} is not key=value"));
            (k.trim().to_string(), v.trim().to_string())
        })
        .collect()
}

/// The value of record `seq`: its sequence number in 10 digits, padded to 100 bytes.
fn value(seq: usize) -> [u8; VALUE_BYTES] {
    let mut v = [b'x'; VALUE_BYTES];
    v[..10].copy_from_slice(format!("{seq:010}").as_bytes());
    v
}

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// A `kB` line of /proc/<pid>/status (`VmRSS:`, `VmHWM:`), in KiB.
fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Counts the producer's delivery reports.
#[derive(Default)]
struct Deliveries {
    ok: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap();
                if first.is_none() {
                    *first = Some(e.to_string());
                }
            }
        }
    }
}

/// A consumer's Fetch requests and received bytes (all its broker connections), from
/// librdkafka's statistics.
#[derive(Clone, Copy, Default)]
struct FetchCounts {
    fetches: i64,
    received: i64,
}

/// Keeps the consumer's latest statistics.
#[derive(Default)]
struct FetchStats {
    latest: Mutex<(u64, FetchCounts)>,
}

impl FetchStats {
    fn latest(&self) -> (u64, FetchCounts) {
        *self.latest.lock().unwrap()
    }
}

impl ClientContext for FetchStats {
    fn stats_raw(&self, statistics: &[u8]) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(statistics) else {
            return;
        };
        let mut counts = FetchCounts::default();
        for b in v["brokers"]
            .as_object()
            .into_iter()
            .flat_map(|b| b.values())
        {
            counts.fetches += b["req"]["Fetch"].as_i64().unwrap_or(0);
            counts.received += b["rxbytes"].as_i64().unwrap_or(0);
        }
        let mut latest = self.latest.lock().unwrap();
        *latest = (latest.0 + 1, counts);
    }
}

impl ConsumerContext for FetchStats {}

/// One side of the comparison: where its clients connect and the pid whose CPU is counted.
struct Target<'a> {
    bootstrap: &'a str,
    pid: u32,
}

/// A timed phase: records/s, and the CPU seconds of the server and of the bench process
/// (the rdkafka client) per million records; for a fetch, the Fetch requests the consumer sent
/// and the bytes it received.
#[derive(Clone, Copy)]
struct Phase {
    rate: f64,
    server_cpu: f64,
    client_cpu: f64,
    fetches: f64,
    received: f64,
}

impl Phase {
    fn measure(
        target: &Target,
        records: usize,
        work: impl FnOnce() -> (Duration, FetchCounts),
    ) -> Phase {
        let me = std::process::id();
        let (server_before, client_before) = (cpu_seconds(target.pid), cpu_seconds(me));
        let (took, counts) = work();
        let per_million = 1e6 / records as f64;
        Phase {
            rate: records as f64 / took.as_secs_f64(),
            server_cpu: (cpu_seconds(target.pid) - server_before) * per_million,
            client_cpu: (cpu_seconds(me) - client_before) * per_million,
            fetches: counts.fetches as f64,
            received: counts.received as f64,
        }
    }

    fn mb(&self) -> f64 {
        self.rate * VALUE_BYTES as f64 / 1e6
    }
}

/// Creates `topic` with `PARTITIONS` partitions (replication factor 1) and waits until every
/// partition has a leader in the metadata.
fn create_topic(rt: &tokio::runtime::Runtime, bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = rt
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
            &options,
        ))
        .unwrap_or_else(|e| panic!("{bootstrap}: CreateTopics {topic}: {e}"));
    for r in results {
        if let Err((name, code)) = r {
            panic!("{bootstrap}: CreateTopics {name}: {code:?}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let md = admin
            .inner()
            .fetch_metadata(Some(topic), Duration::from_secs(5));
        let ready = md.as_ref().is_ok_and(|md| {
            md.topics().iter().any(|t| {
                t.name() == topic
                    && t.error().is_none()
                    && t.partitions().len() == PARTITIONS as usize
                    && t.partitions()
                        .iter()
                        .all(|p| p.leader() >= 0 && p.error().is_none())
            })
        });
        if ready {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{bootstrap}: topic {topic} has no leaders after 30 s: {:?}",
            md.map(|md| md.topics().len())
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn delete_topic(rt: &tokio::runtime::Runtime, bootstrap: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let _ = rt.block_on(admin.delete_topics(&[topic], &options));
}

/// Produces records 0..`records` to `topic` (partition seq % 12) with the idempotent producer;
/// the time from the first send to the last delivery report.
fn produce(bootstrap: &str, topic: &str, records: usize) -> Duration {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    config.extend(extra_config("BENCH_PRODUCER_CONFIG"));
    let producer: BaseProducer<Deliveries> = config
        .create_with_context(Deliveries::default())
        .expect("producer");
    // Connected, with the topic's metadata, before the clock starts.
    producer
        .client()
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{bootstrap}: metadata: {e}"));
    let start = Instant::now();
    for seq in 0..records {
        let v = value(seq);
        let mut record = BaseRecord::<(), [u8]>::to(topic)
            .partition(seq as i32 % PARTITIONS)
            .payload(&v[..]);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => panic!("{bootstrap}: send: {e}"),
            }
        }
        if seq % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .unwrap_or_else(|e| panic!("{bootstrap}: flush: {e}"));
    let took = start.elapsed();
    let ctx = producer.context();
    let (ok, failed) = (
        ctx.ok.load(Ordering::Relaxed),
        ctx.failed.load(Ordering::Relaxed),
    );
    assert!(
        ok == records as u64 && failed == 0,
        "{bootstrap}: {ok} of {records} delivered, {failed} failed (first: {:?})",
        ctx.first_error.lock().unwrap()
    );
    took
}

/// Reads every record of `topic` from the beginning with one consumer, checking each is read
/// exactly once; the time from the assign to the last record.
fn consume(
    bootstrap: &str,
    topic: &str,
    records: usize,
    settings: &[(&str, &str)],
) -> (Duration, FetchCounts) {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kafka-clients-bench")
        .set("enable.auto.commit", "false");
    // For the Fetch requests and bytes received, read once the records are in (untimed).
    config.set("statistics.interval.ms", "100");
    for (k, v) in settings {
        config.set(*k, *v);
    }
    config.extend(extra_config("BENCH_CONSUMER_CONFIG"));
    let consumer: BaseConsumer<FetchStats> = config
        .create_with_context(FetchStats::default())
        .expect("consumer");
    let high: Vec<i64> = (0..PARTITIONS)
        .map(|p| {
            let (low, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap_or_else(|e| panic!("{bootstrap}: watermarks of {topic}/{p}: {e}"));
            assert_eq!(low, 0, "{bootstrap}: {topic}/{p} starts at {low}");
            high
        })
        .collect();
    assert_eq!(
        high.iter().sum::<i64>(),
        records as i64,
        "{bootstrap}: high watermarks {high:?}"
    );
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    let mut next = vec![0i64; PARTITIONS as usize];
    let mut seen = vec![false; records];
    let mut n = 0usize;
    let start = Instant::now();
    consumer.assign(&tpl).unwrap();
    while n < records {
        match consumer.poll(Duration::from_secs(10)) {
            Some(Ok(m)) => {
                let p = m.partition() as usize;
                assert_eq!(
                    m.offset(),
                    next[p],
                    "{bootstrap}: {topic}/{p}: offset {} read where {} was due",
                    m.offset(),
                    next[p]
                );
                next[p] += 1;
                let v = m.payload().unwrap_or_default();
                assert_eq!(v.len(), VALUE_BYTES, "{bootstrap}: a value of {}", v.len());
                let seq: usize = std::str::from_utf8(&v[..10])
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or_else(|| panic!("{bootstrap}: value {:?}", &v[..10]));
                assert!(
                    seq < records && !seen[seq],
                    "{bootstrap}: record {seq} read twice (or out of range)"
                );
                seen[seq] = true;
                n += 1;
            }
            Some(Err(e)) => eprintln!("{bootstrap}: consume: {e}"),
            None => panic!("{bootstrap}: consume stalled at {n} of {records}: {next:?}"),
        }
    }
    let took = start.elapsed();
    assert_eq!(next, high, "{bootstrap}: records read per partition");
    // Statistics made after the last record: two more reports.
    let (reports, _) = consumer.context().latest();
    let deadline = Instant::now() + Duration::from_secs(2);
    while consumer.context().latest().0 < reports + 2 && Instant::now() < deadline {
        assert!(consumer.poll(Duration::from_millis(50)).is_none());
    }
    (took, consumer.context().latest().1)
}

/// A fresh `tributary run`: the MQTT listener and the Kafka listener on free loopback ports,
/// the embedded log in its own temp dir (fsync interval, 5 ms: the default); its Kafka
/// bootstrap address.
fn gateway(topic: &str) -> (Gateway, String) {
    let mqtt = support::free_port();
    let kafka = support::free_port();
    let mut gw = Gateway::new(&format!(
        "listener: {{ listen: \"127.0.0.1:{mqtt}\" }}\n\
         log: {{ embedded: {{ dir: DATA_DIR, kafka_listener: \"127.0.0.1:{kafka}\" }} }}\n\
         topics: {{ default: {{ partitions: {PARTITIONS} }}, {topic}: {{ partitions: {PARTITIONS} }} }}\n\
         http: {{ listen: null }}\n\
         routes:\n  - {{ name: telemetry, from: \"devices/{{device}}/telemetry\", to: telemetry, key: \"{{device}}\" }}\n"
    ));
    gw.spawn();
    let ok = support::wait_until(Duration::from_secs(15), || {
        let log = gw.log();
        log.contains("Kafka API listening") && log.contains("MQTT listener accepting")
    });
    assert!(ok, "the gateway did not start listening:\n{}", gw.log());
    (gw, format!("127.0.0.1:{kafka}"))
}

/// What each round prints, and the run's figure for it.
type PhaseOf = fn(&Run) -> Phase;
const PHASES: [(&str, PhaseOf); 3] = [
    ("produce (idempotent, acks=all)", |r| r.produce),
    ("fetch (default settings)", |r| r.fetch),
    ("fetch (fetch.queue.backoff.ms=10)", |r| r.fetch_short),
];

/// One phase's figures: listener, Kafka, ratio; CPU per million records of each server and
/// of the client.
fn print_phase(label: &str, l: &Phase, k: &Phase) {
    println!(
        "    {label:<34} listener {:>8.0} rec/s {:>6.1} MB/s | Kafka {:>8.0} rec/s {:>6.1} MB/s | ratio {:.2}",
        l.rate,
        l.mb(),
        k.rate,
        k.mb(),
        l.rate / k.rate
    );
    println!(
        "    {:<34} CPU s per 1M records: gateway {:.2} vs Kafka JVM {:.2}; rdkafka client {:.2} vs {:.2}",
        "", l.server_cpu, k.server_cpu, l.client_cpu, k.client_cpu
    );
    if l.fetches > 0.0 && k.fetches > 0.0 {
        println!(
            "    {:<34} Fetch requests: listener {:.0} ({:.0} KB each), Kafka {:.0} ({:.0} KB each)",
            "",
            l.fetches,
            l.received / l.fetches / 1e3,
            k.fetches,
            k.received / k.fetches / 1e3
        );
    }
}

/// One round's figures for one target.
struct Run {
    produce: Phase,
    fetch: Phase,
    /// The same fetch with [`SHORT_BACKOFF`].
    fetch_short: Phase,
}

fn run(rt: &tokio::runtime::Runtime, target: &Target, topic: &str, records: usize) -> Run {
    create_topic(rt, target.bootstrap, topic);
    let produce = Phase::measure(target, records, || {
        (
            produce(target.bootstrap, topic, records),
            FetchCounts::default(),
        )
    });
    let fetch = Phase::measure(target, records, || {
        consume(target.bootstrap, topic, records, &[])
    });
    let fetch_short = Phase::measure(target, records, || {
        consume(target.bootstrap, topic, records, SHORT_BACKOFF)
    });
    Run {
        produce,
        fetch,
        fetch_short,
    }
}

fn main() {
    let records = env_or("BENCH_RECORDS", 1_000_000);
    let rounds = env_or("BENCH_ROUNDS", 3).max(1);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "Kafka clients: {records} records of {VALUE_BYTES} bytes (no key, partition seq % {PARTITIONS}), {PARTITIONS} partitions, {rounds} rounds alternated; \
         idempotent rdkafka producer (linger.ms 5, default batching), one rdkafka consumer (assign from the beginning; default fetch settings, then fetch.queue.backoff.ms=10); \
         `tributary run` (release binary, own process, fresh each round, fsync interval 5 ms) vs Apache Kafka 4.1 (one KRaft node, no fsync)"
    );
    let mut kafka = if std::env::var_os("TRIBUTARY_KAFKA_JVM_OPTS").is_some() {
        KafkaBroker::start()
    } else {
        KafkaBroker::start_with_jvm(&[], &["-Xmx1g"])
    };
    let kafka_bootstrap = kafka.bootstrap();
    let kafka_target = Target {
        bootstrap: &kafka_bootstrap,
        pid: kafka.pid().expect("the Kafka broker runs"),
    };
    println!(
        "  Kafka broker started in {:.1} s; warm-up ({WARM_UP} records produced and fetched, untimed)",
        kafka.start_took.as_secs_f64()
    );
    let warm = run(&rt, &kafka_target, "warm-up", WARM_UP);
    delete_topic(&rt, &kafka_bootstrap, "warm-up");
    println!(
        "  warm-up: Kafka produce {:.0} records/s, fetch {:.0} and {:.0} records/s",
        warm.produce.rate, warm.fetch.rate, warm.fetch_short.rate
    );

    let (mut listener, mut baseline) = (Vec::new(), Vec::new());
    let mut gateway_peak_kib = 0;
    for round in 1..=rounds {
        let topic = format!("bench-{round}");
        let mut listener_run = None;
        let mut kafka_run = None;
        let listener_first = round % 2 == 1;
        for listener_turn in [listener_first, !listener_first] {
            if listener_turn {
                let (mut gw, bootstrap) = gateway(&topic);
                let pid = gw.pid().unwrap();
                let target = Target {
                    bootstrap: &bootstrap,
                    pid,
                };
                listener_run = Some(run(&rt, &target, &topic, records));
                let peak = status_kib(pid, "VmHWM:");
                gateway_peak_kib = gateway_peak_kib.max(peak);
                assert!(gw.terminate().success(), "gateway:\n{}", gw.log());
                println!("  round {round}: listener peak RSS {:.1} MiB", mib(peak));
            } else {
                kafka_run = Some(run(&rt, &kafka_target, &topic, records));
                delete_topic(&rt, &kafka_bootstrap, &topic);
            }
        }
        let (l, k) = (listener_run.unwrap(), kafka_run.unwrap());
        println!(
            "  round {round} ({} first):",
            if listener_first { "listener" } else { "Kafka" }
        );
        for (label, phase) in PHASES {
            print_phase(label, &phase(&l), &phase(&k));
        }
        listener.push(l);
        baseline.push(k);
    }

    println!("  medians of {rounds} rounds:");
    let medians = |runs: &[Run], phase: PhaseOf| {
        let of =
            |f: fn(&Phase) -> f64| median(&runs.iter().map(|r| f(&phase(r))).collect::<Vec<_>>());
        Phase {
            rate: of(|p| p.rate),
            server_cpu: of(|p| p.server_cpu),
            client_cpu: of(|p| p.client_cpu),
            fetches: of(|p| p.fetches),
            received: of(|p| p.received),
        }
    };
    for (label, phase) in PHASES {
        let (l, k) = (medians(&listener, phase), medians(&baseline, phase));
        print_phase(label, &l, &k);
        if label.starts_with("fetch") {
            println!(
                "      goal fetch >= 1.0x Kafka: {}",
                if l.rate >= k.rate { "met" } else { "MISSED" }
            );
        }
    }
    let (kafka_rss, kafka_peak) = kafka.rss_kib().unwrap_or_default();
    println!(
        "    peak RSS: gateway {:.1} MiB (max of rounds); Kafka JVM {:.1} MiB now, {:.1} MiB peak",
        mib(gateway_peak_kib),
        mib(kafka_rss),
        mib(kafka_peak)
    );
    println!("    every fetch read each record exactly once (offsets 0..high watermark per partition, every sequence number once)");
    kafka.stop();
}
