//! The Kafka API listener with real clients only: rdkafka (librdkafka), kcat, confluent-kafka
//! and kafka-python read exactly the records the log holds (keys, headers, timestamps); an
//! rdkafka producer's batches, compressed or not, are stored as sent and served back byte for
//! byte; malformed, truncated, oversized and fuzzed frames close only their own connection;
//! idle connections close; connections past the limit are refused.
//!
//! Outside tools: kcat, mosquitto, and the Python clients confluent-kafka and kafka-python:
//! `scripts/test` installs them; a test whose tool is missing fails with the install command.

// The binary's allocator: a request declaring a 2^31-element array is reserved rather than
// aborting the process (src/alloc.rs), and the robustness tests below send such requests.
#[global_allocator]
static ALLOC: tributary::alloc::Allocator = tributary::alloc::Allocator;

mod support;

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header as KHeader, Headers, Message, OwnedHeaders, Timestamp};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset as KOffset, TopicPartitionList};
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tributary::config::{FsyncPolicy, TopicsConfig};
use tributary::kafka_api::{KafkaApi, ServerOptions};
use tributary::log::offsets::GroupOffsets;
use tributary::log::{batch, Log, LogOptions, Offset};
use tributary::record::{Header, Record};

/// Record timestamps start here (2023-11-14), far from "now", so nothing matches by accident.
const T0: i64 = 1_700_000_000_000;
/// How long one blocking client call may take.
const CALL: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The server, in process
// ---------------------------------------------------------------------------------------------

/// Panics raised outside this file (the server's code, its dependencies) while tests run: the
/// server's connection tasks catch them, so they would otherwise go unnoticed.
static LIBRARY_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let file = info.location().map(|l| l.file()).unwrap_or_default();
            if !file.ends_with("tests/kafka_api.rs") && !file.contains("tests/support") {
                LIBRARY_PANICS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(info.to_string());
            }
            previous(info);
        }));
    });
}

fn assert_no_library_panics() {
    let panics = LIBRARY_PANICS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        panics.is_empty(),
        "the server (or a library) panicked: {panics:#?}"
    );
}

/// A log in a temp dir and the Kafka listener over it on 127.0.0.1, port chosen by the OS.
struct Server {
    addr: SocketAddr,
    log: Arc<Log>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(options: ServerOptions) -> Server {
        Server::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), options).await
    }

    async fn start_on(listener: TcpListener, options: ServerOptions) -> Server {
        watch_panics();
        let dir = tempfile::tempdir().unwrap();
        let log_options = LogOptions {
            dir: dir.path().to_path_buf(),
            // Small segments: the datasets below span several, and reads cross them.
            segment_bytes: 4 << 10,
            fsync: FsyncPolicy::Interval,
            fsync_interval: Duration::from_millis(1),
            retention_time: None,
            retention_bytes: None,
            retention_check: Duration::from_secs(3600),
            topics: TopicsConfig::default(),
        };
        let log = Arc::new(Log::open(log_options).await.unwrap());
        let offsets = Arc::new(GroupOffsets::open(dir.path()).unwrap());
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            KafkaApi::new(log.clone(), offsets, options).serve(listener, stop.clone()),
        );
        Server {
            addr,
            log,
            stop,
            task,
            _dir: dir,
        }
    }

    fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// How many segment files a partition has on disk.
    fn segments(&self, topic: &str, partition: u32) -> usize {
        let dir = self._dir.path().join(topic).join(partition.to_string());
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "log")
            })
            .count()
    }

    fn assert_alive(&self) {
        assert!(!self.task.is_finished(), "the Kafka listener stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Runs blocking client code (librdkafka's synchronous calls, child processes) off the runtime,
/// so the in-process server keeps its worker threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

// ---------------------------------------------------------------------------------------------
// Records as a consumer sees them
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    partition: i32,
    offset: i64,
    /// CreateTime, milliseconds.
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Rec {
    fn from_message<M: Message>(m: &M) -> Rec {
        let timestamp = match m.timestamp() {
            Timestamp::CreateTime(t) => t,
            other => panic!("timestamp {other:?}: want CreateTime"),
        };
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Rec {
            partition: m.partition(),
            offset: m.offset(),
            timestamp,
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// What a consumer must see of `r` stored at `offset`.
    fn from_record(offset: i64, r: &Record) -> Rec {
        Rec {
            partition: r.partition as i32,
            offset,
            timestamp: r.timestamp_ms,
            key: r.key.as_ref().map(|k| k.to_vec()),
            value: Some(r.value.to_vec()),
            headers: r
                .headers
                .iter()
                .map(|h| (h.key.to_string(), Some(h.value.to_vec())))
                .collect(),
        }
    }

    fn from_decoded(partition: i32, r: batch::DecodedRecord) -> Rec {
        Rec {
            partition,
            offset: r.offset,
            timestamp: r.timestamp_ms,
            key: r.key.map(|k| k.to_vec()),
            value: r.value.map(|v| v.to_vec()),
            headers: r
                .headers
                .into_iter()
                .map(|h| (h.key, h.value.map(|v| v.to_vec())))
                .collect(),
        }
    }

    /// kcat `-f '%k=%s'`: a null key prints as nothing.
    fn kcat_line(&self) -> String {
        let text = |b: &Option<Vec<u8>>| String::from_utf8(b.clone().unwrap_or_default()).unwrap();
        format!("{}={}", text(&self.key), text(&self.value))
    }

    /// The line tests/python/consume.py hashes.
    fn canonical(&self) -> String {
        let hx = |b: &Option<Vec<u8>>| b.as_ref().map_or("-".to_string(), |b| hex(b));
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{}={}", hex(k.as_bytes()), hx(v)))
            .collect();
        format!(
            "{}|{}|{}|{}|{}|{}\n",
            self.partition,
            self.offset,
            self.timestamp,
            hx(&self.key),
            hx(&self.value),
            headers.join(",")
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn checksum(records: &[Rec]) -> String {
    let mut sorted = records.to_vec();
    sorted.sort();
    let mut h = Sha256::new();
    for r in &sorted {
        h.update(r.canonical().as_bytes());
    }
    hex(&h.finalize())
}

/// Record `i` of partition `p` of the test data. `text`: printable keys, values and headers
/// only (for kcat's text output); otherwise values and headers carry binary bytes too.
fn test_record(topic: &str, p: u32, i: usize, text: bool) -> Record {
    let key = (i % 7 != 3).then(|| Bytes::from(format!("device-{p}-{}", i % 5)));
    let mut value = if i % 11 == 5 {
        Vec::new()
    } else {
        format!(
            "{{\"p\":{p},\"i\":{i},\"pad\":\"{}\"}}",
            "x".repeat(i * 37 % 300)
        )
        .into_bytes()
    };
    if !text && i % 4 == 1 {
        value.extend_from_slice(&[0, 0xff, 0xfe, b'\n', 0x80]);
    }
    let mut headers = Vec::new();
    if !i.is_multiple_of(6) {
        headers.push(Header::new("mqtt.topic", format!("devices/{p}/telemetry")));
        headers.push(Header::new("seq", i.to_string()));
        // Kafka headers are a list: duplicate names stay, in order.
        headers.push(Header::new("dup", "first"));
        headers.push(Header::new("dup", "second"));
        if !text {
            headers.push(Header::new("bin", vec![0u8, 1, 2, 0xff]));
        }
        if i % 6 == 2 {
            headers.push(Header::new("empty", Bytes::new()));
        }
    }
    Record {
        route: "test".into(),
        topic: topic.into(),
        partition: p,
        key,
        value: value.into(),
        headers,
        timestamp_ms: timestamp(p, i),
        dead_letter: None,
    }
}

fn timestamp(p: u32, i: usize) -> i64 {
    T0 + i64::from(p) * 1_000_000 + i as i64 * 10
}

/// Creates `topic` and appends `per_partition` test records to each partition through
/// `Log::append`, in batches of 1, 2, 3, ... records; returns them as a consumer must see them.
async fn append_dataset(
    log: &Log,
    topic: &str,
    partitions: u32,
    per_partition: usize,
    text: bool,
) -> Vec<Rec> {
    assert!(
        log.create_topic(topic, partitions).unwrap(),
        "{topic} is new"
    );
    let mut expected = Vec::new();
    for p in 0..partitions {
        let mut i = 0;
        let mut size = 1;
        while i < per_partition {
            let records: Vec<Record> = (i..(i + size).min(per_partition))
                .map(|i| test_record(topic, p, i, text))
                .collect();
            let n = records.len();
            for (k, r) in records.iter().enumerate() {
                expected.push(Rec::from_record((i + k) as i64, r));
            }
            let range = log.append(topic, p, records).await.unwrap();
            assert_eq!(range, Offset(i as u64)..Offset((i + n) as u64));
            i += n;
            size = size % 6 + 1;
        }
    }
    expected
}

/// Every record stored in `topic`/`partition`, decoded from the log's own bytes, with each
/// stored batch's bytes.
fn stored_batches(log: &Log, topic: &str, partition: u32) -> Vec<(batch::BatchHeader, Vec<u8>)> {
    let part = log.partition(topic, partition).unwrap();
    part.batches(part.start_offset())
        .map(|b| {
            let b = b.unwrap();
            (b.header, b.bytes.to_vec())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// rdkafka helpers (blocking: call them inside `blocking`)
// ---------------------------------------------------------------------------------------------

/// A consumer that never joins a group: partitions are assigned by hand, nothing is committed.
/// (librdkafka's `assign` needs a `group.id` to exist, "Local: Unknown group" otherwise; with
/// `assign` alone it only looks the coordinator up, and never sends JoinGroup.)
fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "tributary-test-never-joined")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    config
}

fn base_consumer(bootstrap: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut config = consumer_config(bootstrap);
    config
        .set("client.id", "tributary-test")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100")
        .set("socket.timeout.ms", "10000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("rdkafka consumer")
}

fn assign(consumer: &BaseConsumer, topic: &str, offsets: &[(i32, KOffset)]) {
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in offsets {
        tpl.add_partition_offset(topic, p, o).unwrap();
    }
    consumer.assign(&tpl).unwrap();
}

/// Polls until every one of `partitions` assigned partitions has reported its end; returns the
/// records by partition and offset, checking that each partition's arrive in offset order.
fn read_to_end(consumer: &BaseConsumer, partitions: usize) -> Vec<Rec> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut at_end = HashSet::new();
    let mut records: Vec<Rec> = Vec::new();
    while at_end.len() < partitions {
        assert!(
            Instant::now() < deadline,
            "timed out: {} records, at the end of {at_end:?}",
            records.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let r = Rec::from_message(&m);
                at_end.remove(&r.partition);
                if let Some(last) = records.iter().rev().find(|l| l.partition == r.partition) {
                    assert!(
                        r.offset > last.offset,
                        "partition {} went from {} to {}",
                        r.partition,
                        last.offset,
                        r.offset
                    );
                }
                records.push(r);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("consume error: {e}"),
        }
    }
    records.sort();
    records
}

fn from(expected: &[Rec], starts: &[(i32, i64)]) -> Vec<Rec> {
    expected
        .iter()
        .filter(|r| {
            starts
                .iter()
                .any(|&(p, o)| r.partition == p && r.offset >= o)
        })
        .cloned()
        .collect()
}

/// Waits for a child process, killing it after `limit`.
fn run(mut command: Command, limit: Duration) -> std::process::Output {
    let what = format!("{command:?}");
    // Cargo points LD_LIBRARY_PATH at build outputs, rdkafka-sys's librdkafka.so.1 (no zstd)
    // among them: kcat and Python must load their own.
    let child = command
        .env_remove("LD_LIBRARY_PATH")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let id = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            support::signal_pid(id, libc::SIGKILL);
            return true;
        }
        false
    });
    let output = child.wait_with_output().unwrap();
    let _ = done_tx.send(());
    let killed = watchdog.join().unwrap();
    assert!(
        !killed,
        "{what} took over {limit:?}; stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn kcat(args: &[&str]) -> String {
    let mut command = Command::new(support::require("kcat", "apt-get install -y kcat"));
    command.args(args);
    let out = run(command, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kcat {args:?}: {}\n{stderr}",
        out.status
    );
    String::from_utf8(out.stdout).unwrap()
}

// ---------------------------------------------------------------------------------------------
// 1. rdkafka consumers, no group
// ---------------------------------------------------------------------------------------------

/// Metadata, watermarks, reading from the beginning and from explicit offsets (inside batches),
/// seeking to a time, and an out-of-range offset reset to the earliest, all exact.
#[tokio::test(flavor = "multi_thread")]
async fn rdkafka_reads_appended_records_exactly() {
    let server = Server::start(ServerOptions::default()).await;
    let expected = append_dataset(&server.log, "events", 3, 60, false).await;
    server.log.create_topic("empty", 2).unwrap();
    // The explicit starting offsets below each fall inside a stored batch, not at its start,
    // and every partition spans several segments.
    let starts = [(0, 2), (1, 33), (2, 59)];
    for (p, o) in starts {
        let batches = stored_batches(&server.log, "events", p as u32);
        assert!(
            batches
                .iter()
                .any(|(h, _)| h.base_offset < o && o <= h.last_offset()),
            "offset {o} of events/{p} starts a batch"
        );
        assert!(
            server.segments("events", p as u32) > 1,
            "events/{p}: one segment"
        );
    }
    let (bootstrap, port, want) = (server.bootstrap(), server.addr.port(), expected.clone());
    blocking(move || {
        let expected = want;
        let c = base_consumer(&bootstrap, &[("auto.offset.reset", "error")]);

        // Metadata: the one broker at the address the client used, every topic and partition.
        let md = c.fetch_metadata(None, CALL).unwrap();
        let brokers: Vec<_> = md
            .brokers()
            .iter()
            .map(|b| (b.id(), b.host().to_string(), b.port()))
            .collect();
        assert_eq!(brokers, [(0, "127.0.0.1".to_string(), i32::from(port))]);
        let mut topics: Vec<_> = md
            .topics()
            .iter()
            .map(|t| {
                assert_eq!(t.error(), None, "{}", t.name());
                let parts: Vec<_> = t
                    .partitions()
                    .iter()
                    .map(|p| {
                        (
                            p.id(),
                            p.leader(),
                            p.replicas().to_vec(),
                            p.isr().to_vec(),
                            p.error(),
                        )
                    })
                    .collect();
                (t.name().to_string(), parts)
            })
            .collect();
        topics.sort_by(|a, b| a.0.cmp(&b.0));
        let parts = |n: i32| {
            (0..n)
                .map(|p| (p, 0, vec![0], vec![0], None::<RDKafkaRespErr>))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            topics,
            [
                ("empty".to_string(), parts(2)),
                ("events".to_string(), parts(3))
            ]
        );
        let md = c.fetch_metadata(Some("no-such-topic"), CALL).unwrap();
        assert_eq!(md.topics().len(), 1);
        assert_eq!(
            md.topics()[0].error(),
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
        );

        for p in 0..3 {
            assert_eq!(
                c.fetch_watermarks("events", p, CALL).unwrap(),
                (0, 60),
                "events/{p}"
            );
        }
        assert_eq!(c.fetch_watermarks("empty", 1, CALL).unwrap(), (0, 0));

        // From the beginning (auto.offset.reset=earliest's starting point).
        assign(
            &c,
            "events",
            &[
                (0, KOffset::Beginning),
                (1, KOffset::Beginning),
                (2, KOffset::Beginning),
            ],
        );
        assert_eq!(read_to_end(&c, 3), expected);

        // Explicit offsets, each inside a stored batch: the server sends the whole batch, the
        // client drops what is below the offset.
        assign(&c, "events", &starts.map(|(p, o)| (p, KOffset::Offset(o))));
        assert_eq!(read_to_end(&c, 3), from(&expected, &starts));

        // An empty topic: at the end at once.
        assign(&c, "empty", &[(0, KOffset::Beginning), (1, KOffset::End)]);
        assert_eq!(read_to_end(&c, 2), Vec::<Rec>::new());

        // Seek to a time: the first record at or after it; past every record: the end (-1).
        let mut times = TopicPartitionList::new();
        times
            .add_partition_offset("events", 0, KOffset::Offset(timestamp(0, 17)))
            .unwrap();
        times
            .add_partition_offset("events", 1, KOffset::Offset(timestamp(1, 40) - 5))
            .unwrap();
        times
            .add_partition_offset("events", 2, KOffset::Offset(T0 + 1_000_000_000))
            .unwrap();
        let found = c.offsets_for_times(times, CALL).unwrap();
        let offset = |p| found.find_partition("events", p).unwrap().offset();
        assert_eq!(
            (offset(0), offset(1), offset(2)),
            (KOffset::Offset(17), KOffset::Offset(40), KOffset::End)
        );
        assign(
            &c,
            "events",
            &[(0, offset(0)), (1, offset(1)), (2, offset(2))],
        );
        assert_eq!(read_to_end(&c, 3), from(&expected, &[(0, 17), (1, 40)]));
    })
    .await;

    // Past the end with auto.offset.reset=earliest: OFFSET_OUT_OF_RANGE, then from the start.
    let bootstrap = server.bootstrap();
    blocking(move || {
        let c = base_consumer(&bootstrap, &[("auto.offset.reset", "earliest")]);
        assign(&c, "events", &[(1, KOffset::Offset(1000))]);
        assert_eq!(read_to_end(&c, 1), from(&expected, &[(1, 0)]));
        // ...and with "error", the client is told.
        let c = base_consumer(&bootstrap, &[("auto.offset.reset", "error")]);
        assign(&c, "events", &[(2, KOffset::Offset(1000))]);
        let deadline = Instant::now() + CALL;
        let error = loop {
            assert!(Instant::now() < deadline, "no out-of-range error");
            match c.poll(Duration::from_millis(100)) {
                Some(Err(e)) => break e,
                Some(Ok(m)) => panic!("record at {} from an out-of-range offset", m.offset()),
                None => {}
            }
        };
        assert_eq!(
            error,
            KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)
        );
    })
    .await;
    server.assert_alive();
    assert_no_library_panics();
}

/// A StreamConsumer waiting at the end of a partition gets new records as soon as they are
/// appended (the server's long poll wakes on the append; librdkafka waits up to 10 s).
#[tokio::test(flavor = "multi_thread")]
async fn stream_consumer_gets_new_records_at_once() {
    let server = Server::start(ServerOptions::default()).await;
    append_dataset(&server.log, "live", 1, 5, false).await;
    let consumer: StreamConsumer = consumer_config(&server.bootstrap())
        .set("fetch.wait.max.ms", "10000")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("live", 0, KOffset::Offset(5))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    // Let the consumer's first Fetch reach the server and park there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let more: Vec<Record> = (5..8).map(|i| test_record("live", 0, i, false)).collect();
    let appended = Instant::now();
    server.log.append("live", 0, more.clone()).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(8), consumer.recv())
            .await
            .expect("no record")
            .unwrap();
        got.push(Rec::from_message(&m));
    }
    let latency = appended.elapsed();
    assert!(
        latency < Duration::from_secs(3),
        "records came {latency:?} after the append: the long poll did not wake"
    );
    let want: Vec<Rec> = more
        .iter()
        .enumerate()
        .map(|(i, r)| Rec::from_record(5 + i as i64, r))
        .collect();
    assert_eq!(got, want);
    drop(consumer);
    // (On a new connection: the consumer's own is busy with its next parked Fetch.)
    let b = server.bootstrap();
    let watermarks = blocking(move || {
        base_consumer(&b, &[])
            .fetch_watermarks("live", 0, CALL)
            .unwrap()
    })
    .await;
    assert_eq!(watermarks, (0, 8));
    assert_no_library_panics();
}

// ---------------------------------------------------------------------------------------------
// Through the whole gateway: Mosquitto -> tributary run -> Kafka listener -> clients
// ---------------------------------------------------------------------------------------------

/// MQTT messages published to a real Mosquitto, stored by the real binary, read back over its
/// Kafka listener by rdkafka and kcat exactly as stored; a live consumer gets new ones.
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_to_kafka_clients_through_the_binary() {
    let broker = support::Mosquitto::start();
    let port = support::free_port();
    let yaml = format!(
        "mqtt: {{ url: \"{}\", client_id: gw-kafka, keep_alive: 5s }}\n\
         log: {{ embedded: {{ dir: DATA_DIR, fsync_interval: 2ms, kafka_listener: \"127.0.0.1:{port}\" }} }}\n\
         topics: {{ default: {{ partitions: 3 }} }}\n\
         http: {{ listen: null }}\n\
         routes:\n  - {{ name: telemetry, from: \"devices/{{device}}/telemetry/{{*rest}}\", to: telemetry, key: \"{{device}}\", headers: {{ unit: \"{{rest}}\" }} }}\n",
        broker.url()
    );
    let mut gw = support::Gateway::new(&yaml);
    gw.start();
    let published: Vec<(String, Vec<u8>)> = (0..10)
        .flat_map(|i| {
            (0..6).map(move |d| {
                (
                    format!("devices/d{d}/telemetry/temp"),
                    format!("d{d}:{i}").into_bytes(),
                )
            })
        })
        .collect();
    support::publish(broker.port, "kafka-pub", 1, published.clone()).await;
    let data = gw.data_dir();
    assert!(
        support::wait_until(Duration::from_secs(10), || support::count_records(
            &data,
            "telemetry"
        ) == 60),
        "{}",
        gw.log()
    );

    let stored = |gw: &support::Gateway| -> Vec<Rec> {
        let mut all: Vec<Rec> = gw
            .records("telemetry")
            .into_iter()
            .flat_map(|(p, records)| {
                records.into_iter().map(move |r| Rec {
                    partition: p as i32,
                    offset: r.offset as i64,
                    timestamp: r.timestamp_ms,
                    key: r.key.map(|k| k.to_vec()),
                    value: Some(r.value.to_vec()),
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k, Some(v.into_bytes())))
                        .collect(),
                })
            })
            .collect();
        all.sort();
        all
    };
    let on_disk = stored(&gw);
    assert_eq!(on_disk.len(), 60);
    let bootstrap = format!("127.0.0.1:{port}");

    let (b, want) = (bootstrap.clone(), on_disk.clone());
    let ends = blocking(move || {
        let c = base_consumer(&b, &[("auto.offset.reset", "earliest")]);
        let md = c.fetch_metadata(Some("telemetry"), CALL).unwrap();
        assert_eq!(md.topics()[0].partitions().len(), 3);
        assign(
            &c,
            "telemetry",
            &[
                (0, KOffset::Beginning),
                (1, KOffset::Beginning),
                (2, KOffset::Beginning),
            ],
        );
        let got = read_to_end(&c, 3);
        assert_eq!(got, want, "rdkafka reads what the gateway stored");
        // ...which is what was published: each message once, keyed by device, with headers.
        let mut values: Vec<String> = got
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
            .collect();
        values.sort();
        let mut sent: Vec<String> = (0..10)
            .flat_map(|i| (0..6).map(move |d| format!("d{d}:{i}")))
            .collect();
        sent.sort();
        assert_eq!(values, sent);
        for r in &got {
            let value = String::from_utf8(r.value.clone().unwrap()).unwrap();
            let device = value.split(':').next().unwrap();
            assert_eq!(r.key.as_deref(), Some(device.as_bytes()));
            let topic = format!("devices/{device}/telemetry/temp");
            let headers: Vec<(&str, Option<&[u8]>)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            assert_eq!(
                headers,
                [
                    ("mqtt.topic", Some(topic.as_bytes())),
                    ("mqtt.qos", Some(&b"1"[..])),
                    ("mqtt.retain", Some(&b"false"[..])),
                    ("unit", Some(&b"temp"[..])),
                ]
            );
        }
        (0..3)
            .map(|p| c.fetch_watermarks("telemetry", p, CALL).unwrap().1)
            .collect::<Vec<_>>()
    })
    .await;
    assert_eq!(ends.iter().sum::<i64>(), 60);

    // kcat: metadata, and every record per partition, in order.
    let (b, want) = (bootstrap.clone(), on_disk.clone());
    blocking(move || {
        let listing = kcat(&["-L", "-b", &b, "-t", "telemetry"]);
        assert!(
            listing.contains("topic \"telemetry\" with 3 partitions:"),
            "{listing}"
        );
        for p in 0..3 {
            let out = kcat(&[
                "-C",
                "-b",
                &b,
                "-t",
                "telemetry",
                "-p",
                &p.to_string(),
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                "%k=%s\n",
            ]);
            let lines: Vec<String> = want
                .iter()
                .filter(|r| r.partition == p)
                .map(Rec::kcat_line)
                .collect();
            assert_eq!(out.lines().collect::<Vec<_>>(), lines, "kcat partition {p}");
        }
    })
    .await;

    // A live consumer at the end of each partition gets the next messages as they arrive.
    let live: StreamConsumer = consumer_config(&bootstrap)
        .set("fetch.wait.max.ms", "5000")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, end) in ends.iter().enumerate() {
        tpl.add_partition_offset("telemetry", p as i32, KOffset::Offset(*end))
            .unwrap();
    }
    live.assign(&tpl).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let next: Vec<(String, Vec<u8>)> = (0..6)
        .map(|d| {
            (
                format!("devices/d{d}/telemetry/temp"),
                format!("d{d}:live").into_bytes(),
            )
        })
        .collect();
    support::publish(broker.port, "kafka-pub-live", 1, next).await;
    let mut got = Vec::new();
    while got.len() < 6 {
        let m = tokio::time::timeout(Duration::from_secs(10), live.recv())
            .await
            .expect("live records")
            .unwrap();
        got.push(Rec::from_message(&m));
    }
    got.sort();
    assert!(support::wait_until(
        Duration::from_secs(5),
        || support::count_records(&data, "telemetry") == 66
    ));
    let now_on_disk = stored(&gw);
    assert_eq!(
        got,
        now_on_disk[..]
            .iter()
            .filter(|r| r.value.as_deref().is_some_and(|v| v.ends_with(b":live")))
            .cloned()
            .collect::<Vec<_>>()
    );
    drop(live);
    assert!(gw.terminate().success(), "{}", gw.log());
    assert_no_library_panics();
}

// ---------------------------------------------------------------------------------------------
// 2. An rdkafka producer
// ---------------------------------------------------------------------------------------------

/// A TCP proxy that records the bytes going each way, per connection: what a real client sends
/// (to replay and mutate) and what the server answers (to find stored batches in it).
/// One proxied connection's bytes: (client to server, server to client).
type Captured = Arc<Mutex<(Vec<u8>, Vec<u8>)>>;

struct Proxy {
    addr: SocketAddr,
    connections: Arc<Mutex<Vec<Captured>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    fn start(listener: TcpListener, upstream: SocketAddr) -> Proxy {
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<Captured>>> = Default::default();
        let all = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let captured = Arc::new(Mutex::new((Vec::new(), Vec::new())));
                all.lock().unwrap().push(captured.clone());
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(Proxy::pipe(cr, sw, captured.clone(), true));
                tokio::spawn(Proxy::pipe(sr, cw, captured, false));
            }
        });
        Proxy {
            addr,
            connections,
            task,
        }
    }

    async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        captured: Captured,
        up: bool,
    ) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            {
                let mut c = captured.lock().unwrap();
                let side = if up { &mut c.0 } else { &mut c.1 };
                side.extend_from_slice(&buf[..n]);
            }
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }

    /// Every whole request clients sent, length prefix included.
    fn requests(&self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        for c in self.connections.lock().unwrap().iter() {
            let up = c.lock().unwrap().0.clone();
            let mut pos = 0;
            while pos + 4 <= up.len() {
                let len = i32::from_be_bytes(up[pos..pos + 4].try_into().unwrap()) as usize;
                if pos + 4 + len > up.len() {
                    break;
                }
                frames.push(up[pos..pos + 4 + len].to_vec());
                pos += 4 + len;
            }
        }
        frames
    }

    /// Everything the server sent, all connections end to end.
    fn responses(&self) -> Vec<u8> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .flat_map(|c| c.lock().unwrap().1.clone())
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the producer test sends as record `i`, to partition `i % 2` (its offset still unknown).
fn produced(codec: &str, i: usize) -> Rec {
    let key = (i % 5 != 4).then(|| format!("key-{i}").into_bytes());
    // A tombstone (null value) now and then; compressible values otherwise.
    let value = (i % 9 != 8)
        .then(|| format!("produced {codec} #{i} {}", "z".repeat(i * 13 % 300)).into_bytes());
    let headers = if i.is_multiple_of(3) {
        Vec::new()
    } else {
        vec![
            ("h1".to_string(), Some(format!("v{i}").into_bytes())),
            ("null".to_string(), None),
            ("h1".to_string(), Some(b"again".to_vec())),
        ]
    };
    Rec {
        partition: (i % 2) as i32,
        offset: -1,
        timestamp: T0 + 5_000_000 + i as i64,
        key,
        value,
        headers,
    }
}

/// Produces 40 records with each compression codec through an rdkafka FutureProducer (acks=all,
/// no idempotence) to topics made with rdkafka's AdminClient (CreateTopics), then checks the
/// offsets the producer was told, the records an rdkafka consumer reads, the batches stored
/// (uncompressed ones decoded; compressed ones kept compressed), and that the server sent the
/// stored batches byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn rdkafka_producer_round_trip_with_each_compression() {
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = proxy_listener.local_addr().unwrap().port();
    // Clients are told to come back through the proxy, so it sees every byte.
    let server = Server::start(ServerOptions {
        advertised: Some(("127.0.0.1".into(), proxy_port)),
        ..Default::default()
    })
    .await;
    let proxy = Proxy::start(proxy_listener, server.addr);
    let bootstrap = proxy.addr.to_string();

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .create()
        .unwrap();
    let options = AdminOptions::new().operation_timeout(Some(CALL));
    // The partition count is bounded as in the config (1 to 10,000).
    let too_many = admin
        .create_topics(
            &[NewTopic::new(
                "too-many",
                50_000,
                TopicReplication::Fixed(1),
            )],
            &options,
        )
        .await
        .unwrap();
    assert_eq!(
        too_many,
        [Err((
            "too-many".to_string(),
            RDKafkaErrorCode::InvalidPartitions
        ))]
    );
    assert!(server.log.partition("too-many", 0).is_none());

    let mut skipped = Vec::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let topic = format!("produced-{codec}");
        let made = admin
            .create_topics(
                &[NewTopic::new(&topic, 2, TopicReplication::Fixed(1))],
                &options,
            )
            .await
            .unwrap();
        assert_eq!(made, [Ok(topic.clone())]);
        let again = admin
            .create_topics(
                &[NewTopic::new(&topic, 2, TopicReplication::Fixed(1))],
                &options,
            )
            .await
            .unwrap();
        assert_eq!(
            again,
            [Err((topic.clone(), RDKafkaErrorCode::TopicAlreadyExists))]
        );

        let producer: FutureProducer = match ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "false")
            .set("compression.type", codec)
            .set("linger.ms", "20")
            .create()
        {
            Ok(p) => p,
            Err(e) => {
                // rdkafka's librdkafka is built without libzstd unless the crate's "zstd"
                // feature is on; zstd is covered by kcat (kcat_produces_zstd_batches).
                eprintln!("rdkafka cannot produce {codec} here ({e}); skipped for this client");
                skipped.push(codec);
                continue;
            }
        };
        let n = 40;
        let mut deliveries = Vec::new();
        for i in 0..n {
            let r = produced(codec, i);
            let mut record = FutureRecord::<[u8], [u8]>::to(&topic)
                .partition(r.partition)
                .timestamp(r.timestamp);
            if let Some(k) = &r.key {
                record = record.key(k.as_slice());
            }
            if let Some(v) = &r.value {
                record = record.payload(v.as_slice());
            }
            if !r.headers.is_empty() {
                let mut h = OwnedHeaders::new();
                for (k, v) in &r.headers {
                    h = h.insert(KHeader {
                        key: k.as_str(),
                        value: v.as_deref(),
                    });
                }
                record = record.headers(h);
            }
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e).unwrap());
        }
        let mut expected = Vec::new();
        let mut next = [0i64; 2];
        for (i, d) in deliveries.into_iter().enumerate() {
            let d = tokio::time::timeout(CALL, d)
                .await
                .expect("delivery")
                .unwrap()
                .map_err(|(e, _)| e)
                .unwrap();
            let r = produced(codec, i);
            let p = r.partition as usize;
            assert_eq!(
                (d.partition, d.offset),
                (r.partition, next[p]),
                "{codec} record {i}: the offset the producer was told"
            );
            next[p] += 1;
            expected.push(Rec {
                offset: d.offset,
                ..r
            });
        }
        expected.sort();

        let (b, t, want) = (bootstrap.clone(), topic.clone(), expected.clone());
        blocking(move || {
            let c = base_consumer(&b, &[]);
            assign(&c, &t, &[(0, KOffset::Beginning), (1, KOffset::Beginning)]);
            assert_eq!(
                read_to_end(&c, 2),
                want,
                "{t}: rdkafka reads back what was produced"
            );
        })
        .await;

        // In the log: the producer's batches as they were sent.
        let served = proxy.responses();
        for p in 0..2u32 {
            let batches = stored_batches(&server.log, &topic, p);
            assert!(!batches.is_empty());
            let mut count = 0;
            for (h, bytes) in &batches {
                assert_eq!(
                    h.compression().as_str(),
                    codec,
                    "{topic}/{p}: stored as the producer compressed it"
                );
                assert!(
                    contains(&served, bytes),
                    "{topic}/{p}: the stored batch at {} was not served byte for byte",
                    h.base_offset
                );
                count += h.record_count as usize;
                match batch::decode(bytes) {
                    Ok(decoded) => {
                        assert_eq!(codec, "none");
                        for r in decoded.records {
                            let r = Rec::from_decoded(p as i32, r);
                            assert!(
                                expected.contains(&r),
                                "{topic}/{p}: stored {r:?} was not produced"
                            );
                        }
                    }
                    Err(batch::BatchError::Compressed(c)) => assert_eq!(c.as_str(), codec),
                    Err(e) => panic!("{topic}/{p}: {e}"),
                }
            }
            assert_eq!(
                count,
                expected.iter().filter(|r| r.partition == p as i32).count()
            );
        }
    }
    assert!(
        skipped.iter().all(|c| *c == "zstd"),
        "only zstd may be missing from rdkafka's build: {skipped:?}"
    );
    server.assert_alive();
    assert_no_library_panics();
}

/// zstd batches from kcat's librdkafka (built with zstd) are stored compressed and read back.
#[tokio::test(flavor = "multi_thread")]
async fn kcat_produces_zstd_batches() {
    let server = Server::start(ServerOptions::default()).await;
    server.log.create_topic("zstd", 1).unwrap();
    let bootstrap = server.bootstrap();
    let lines: Vec<String> = (0..30)
        .map(|i| format!("k{i}=zstd value {i} {}", "q".repeat(i * 7)))
        .collect();
    let input = lines.join("\n") + "\n";
    let b = bootstrap.clone();
    let out = blocking(move || {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), input).unwrap();
        let out = kcat(&[
            "-P",
            "-b",
            &b,
            "-t",
            "zstd",
            "-p",
            "0",
            "-K",
            "=",
            "-z",
            "zstd",
            "-X",
            "acks=all",
            "-l",
            file.path().to_str().unwrap(),
        ]);
        assert_eq!(out, "");
        kcat(&[
            "-C",
            "-b",
            &b,
            "-t",
            "zstd",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%k=%s\n",
        ])
    })
    .await;
    assert_eq!(out.lines().collect::<Vec<_>>(), lines);
    let batches = stored_batches(&server.log, "zstd", 0);
    assert!(!batches.is_empty());
    for (h, _) in &batches {
        assert_eq!(h.compression(), batch::Compression::Zstd);
    }
    assert_eq!(batches.iter().map(|(h, _)| h.record_count).sum::<i32>(), 30);
    assert_no_library_panics();
}

// ---------------------------------------------------------------------------------------------
// 3. kcat
// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn kcat_lists_and_consumes_exact_records() {
    let server = Server::start(ServerOptions::default()).await;
    let expected = append_dataset(&server.log, "kcat", 2, 25, true).await;
    let (bootstrap, port) = (server.bootstrap(), server.addr.port());
    blocking(move || {
        let listing = kcat(&["-L", "-b", &bootstrap]);
        let want = format!(
            " 1 brokers:\n  broker 0 at 127.0.0.1:{port} (controller)\n 1 topics:\n  topic \"kcat\" with 2 partitions:\n    partition 0, leader 0, replicas: 0, isrs: 0\n    partition 1, leader 0, replicas: 0, isrs: 0\n"
        );
        assert!(listing.ends_with(&want), "kcat -L:\n{listing}");

        // The whole topic (partitions interleave, so compare sorted)...
        let out = kcat(&["-C", "-b", &bootstrap, "-t", "kcat", "-o", "beginning", "-e", "-q", "-f", "%k=%s\n"]);
        let mut got: Vec<&str> = out.lines().collect();
        got.sort_unstable();
        let mut want: Vec<String> = expected.iter().map(Rec::kcat_line).collect();
        want.sort();
        assert_eq!(got, want);

        // ...each partition in order, with offsets, timestamps and headers...
        for p in 0..2 {
            let out = kcat(&["-C", "-b", &bootstrap, "-t", "kcat", "-p", &p.to_string(), "-o", "beginning", "-e", "-q", "-f", "%p:%o:%T:%k=%s|%h\n"]);
            let want: Vec<String> = expected
                .iter()
                .filter(|r| r.partition == p)
                .map(|r| {
                    let headers: Vec<String> = r.headers.iter().map(|(k, v)| format!("{k}={}", String::from_utf8(v.clone().unwrap()).unwrap())).collect();
                    format!("{}:{}:{}:{}|{}", r.partition, r.offset, r.timestamp, r.kcat_line(), headers.join(","))
                })
                .collect();
            assert_eq!(out.lines().collect::<Vec<_>>(), want, "partition {p}");
        }

        // ...from an offset, and from a time.
        let out = kcat(&["-C", "-b", &bootstrap, "-t", "kcat", "-p", "1", "-o", "7", "-e", "-q", "-f", "%o\n"]);
        assert_eq!(out, (7..25).map(|o| format!("{o}\n")).collect::<String>());
        let at = format!("s@{}", timestamp(0, 12) - 3);
        let out = kcat(&["-C", "-b", &bootstrap, "-t", "kcat", "-p", "0", "-o", &at, "-e", "-q", "-f", "%o\n"]);
        assert_eq!(out, (12..25).map(|o| format!("{o}\n")).collect::<String>());
    })
    .await;
    server.assert_alive();
    assert_no_library_panics();
}

// ---------------------------------------------------------------------------------------------
// 4. Python clients
// ---------------------------------------------------------------------------------------------

/// Runs tests/python/consume.py with `client` (confluent or kafka-python).
fn python_consume(client: &str, bootstrap: &str, topic: &str) -> (Vec<Rec>, usize, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/consume.py");
    // TRIBUTARY_PYTHON: another interpreter (a virtualenv with other client versions).
    let python = support::require_python(match client {
        "confluent" => &[("confluent_kafka", "confluent-kafka")],
        "kafka-python" => &[("kafka", "kafka-python")],
        other => panic!("no Python client {other}"),
    });
    let mut command = Command::new(python);
    command.args([script, client, bootstrap, topic]);
    let out = run(command, Duration::from_secs(45));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "consume.py {client}: {}\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.pop().expect("a summary line");
    let bytes = |v: &serde_json::Value| v.as_str().map(unhex);
    let records = lines
        .iter()
        .map(|r| Rec {
            partition: r["p"].as_i64().unwrap() as i32,
            offset: r["o"].as_i64().unwrap(),
            timestamp: r["ts"].as_i64().unwrap(),
            key: bytes(&r["key"]),
            value: bytes(&r["value"]),
            headers: r["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| (h[0].as_str().unwrap().to_string(), bytes(&h[1])))
                .collect(),
        })
        .collect();
    (
        records,
        summary["count"].as_u64().unwrap() as usize,
        summary["sha256"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn python_clients_read_the_same_records() {
    let server = Server::start(ServerOptions::default()).await;
    let expected = append_dataset(&server.log, "events", 3, 40, false).await;
    let sum = checksum(&expected);
    for client in ["confluent", "kafka-python"] {
        let b = server.bootstrap();
        let (records, count, sha) = blocking(move || python_consume(client, &b, "events")).await;
        assert_eq!(count, expected.len(), "{client}: count");
        assert_eq!(sha, sum, "{client}: checksum");
        assert_eq!(records, expected, "{client}: records");
    }
    server.assert_alive();
    assert_no_library_panics();
}

// ---------------------------------------------------------------------------------------------
// 5. Robustness: raw frames over TCP
// ---------------------------------------------------------------------------------------------

/// A request with header v1 (api key, version, correlation id, client id), which every
/// non-flexible version uses; length prefix included.
fn request(api_key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(api_key.to_be_bytes());
    f.extend(version.to_be_bytes());
    f.extend(correlation.to_be_bytes());
    let client = b"raw-test";
    f.extend((client.len() as i16).to_be_bytes());
    f.extend(client);
    f.extend(body);
    prefixed(f)
}

/// Header v2 (flexible versions): v1 and an empty tagged-field section.
fn request_flexible(api_key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut f = request(api_key, version, correlation, &[0]);
    f.extend(body);
    let len = (f.len() - 4) as i32;
    f[..4].copy_from_slice(&len.to_be_bytes());
    f
}

fn prefixed(body: Vec<u8>) -> Vec<u8> {
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend(body);
    f
}

const API_VERSIONS: i16 = 18;
const METADATA: i16 = 3;

/// Sends `frame` and reads one response frame (without its length prefix); None if the server
/// closed the connection instead.
async fn round_trip(conn: &mut TcpStream, frame: &[u8]) -> Option<Vec<u8>> {
    conn.write_all(frame).await.ok()?;
    read_frame(conn).await
}

async fn read_frame(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    tokio::time::timeout(CALL, conn.read_exact(&mut len))
        .await
        .expect("no answer and not closed")
        .ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    tokio::time::timeout(CALL, conn.read_exact(&mut body))
        .await
        .expect("response cut short")
        .ok()?;
    Some(body)
}

/// ApiVersions v0 answered with the same correlation id and error 0.
async fn api_versions_ok(conn: &mut TcpStream, correlation: i32) -> bool {
    match round_trip(conn, &request(API_VERSIONS, 0, correlation, &[])).await {
        Some(r) => {
            assert_eq!(i32::from_be_bytes(r[..4].try_into().unwrap()), correlation);
            assert_eq!(
                i16::from_be_bytes(r[4..6].try_into().unwrap()),
                0,
                "error code"
            );
            true
        }
        None => false,
    }
}

/// The server closes the connection without answering, within `limit`.
async fn expect_closed(conn: &mut TcpStream, what: &str, limit: Duration) {
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(limit, conn.read(&mut buf)).await {
        Err(_) => panic!("{what}: the connection is still open after {limit:?}"),
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => panic!("{what}: the server answered {n} bytes instead of closing"),
        Ok(Err(e)) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
            "{what}: {e}"
        ),
    }
}

/// Metadata through rdkafka on a new connection: the server still serves real clients.
async fn rdkafka_still_served(bootstrap: String, topic: &'static str) {
    blocking(move || {
        let c = base_consumer(&bootstrap, &[]);
        let md = c.fetch_metadata(Some(topic), CALL).unwrap();
        assert_eq!(md.topics()[0].error(), None);
        assert!(!md.topics()[0].partitions().is_empty());
    })
    .await;
}

/// A small deterministic PRNG (xorshift64*), so a failing run can be repeated from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_frames_close_only_their_connection() {
    let server = Server::start(ServerOptions {
        idle_timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    append_dataset(&server.log, "events", 1, 5, true).await;
    let mut rng = Rng(0x7215_b0a7_5eed);
    let metadata_header = request(METADATA, 4, 9, &[]);
    let with_body = |mut f: Vec<u8>, body: &[u8]| {
        f.extend(body);
        let len = (f.len() - 4) as i32;
        f[..4].copy_from_slice(&len.to_be_bytes());
        f
    };
    let mut random = rng.bytes(4096);
    random[..4].copy_from_slice(&0x5a5a_5a5au32.to_be_bytes());
    let mut small_random = prefixed(rng.bytes(40));
    small_random[4..6].copy_from_slice(&0x7777u16.to_be_bytes()); // no such API
    let mut truncated = 100i32.to_be_bytes().to_vec();
    truncated.extend(&request(METADATA, 1, 1, &[0, 0, 0, 0])[4..]);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("random bytes", random, false),
        ("a frame of random bytes", small_random, false),
        ("a truncated frame, then EOF", truncated, true),
        (
            "length 0x7fffffff",
            with_body(0x7fff_ffffi32.to_be_bytes().to_vec(), &rng.bytes(64)),
            false,
        ),
        (
            "negative length",
            [0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4].to_vec(),
            false,
        ),
        (
            "length shorter than any header",
            [0, 0, 0, 3, 0, 18, 0].to_vec(),
            false,
        ),
        (
            "Metadata v4 promising 5 topics and holding none",
            with_body(metadata_header.clone(), &[0, 0, 0, 5]),
            false,
        ),
        (
            "Metadata v4 with a garbage body",
            with_body(metadata_header.clone(), &[0, 0, 0, 1, 0x7f, 0xff, b'a']),
            false,
        ),
        (
            "Fetch v4 with a 3-byte body",
            request(1, 4, 1, &[1, 2, 3]),
            false,
        ),
        ("an unknown API key", request(0x7fff, 0, 1, &[]), false),
        (
            "an API not offered (DeleteTopics)",
            request(20, 1, 1, &[0, 0, 0, 0, 0, 0, 0, 0]),
            false,
        ),
        (
            "a version not offered (Metadata v99)",
            request_flexible(METADATA, 99, 1, &[0]),
            false,
        ),
        (
            "a header version that does not parse (client id length -5)",
            prefixed(vec![0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xfb]),
            false,
        ),
        (
            "Metadata v0 declaring 2^31-1 topics",
            request(METADATA, 0, 1, &[0x7f, 0xff, 0xff, 0xff, 0, 1, b'a']),
            false,
        ),
        (
            "Produce v3 declaring 2^31-1 topics",
            request(
                0,
                3,
                1,
                &[
                    0xff, 0xff, 0xff, 0xff, 0, 0, 0x3a, 0x98, 0x7f, 0xff, 0xff, 0xff, 0, 1,
                ],
            ),
            false,
        ),
        (
            "Metadata v9 declaring 2^32-2 topics (compact)",
            request_flexible(METADATA, 9, 1, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0]),
            false,
        ),
        // replica -1, max wait 100, min bytes 1, max bytes 1, isolation 0, session 0, epoch -1.
        (
            "Fetch v12 declaring 2^32-2 topics (compact)",
            request_flexible(
                1,
                12,
                1,
                &[
                    0xff, 0xff, 0xff, 0xff, 0, 0, 0, 100, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0,
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f,
                ],
            ),
            false,
        ),
    ];
    for (what, bytes, eof) in cases {
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        // The server may close before it has read everything; a failed write is fine.
        let _ = conn.write_all(&bytes).await;
        if eof {
            let _ = conn.shutdown().await;
        }
        expect_closed(&mut conn, what, Duration::from_secs(3)).await;
        // Another connection is served meanwhile.
        let mut other = TcpStream::connect(server.addr).await.unwrap();
        assert!(api_versions_ok(&mut other, 42).await, "after {what}");
    }

    // A valid request is answered, and garbage after it on the same connection closes it.
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    assert!(api_versions_ok(&mut conn, 1).await);
    let _ = conn.write_all(&request(0x7fff, 0, 2, &[])).await;
    expect_closed(
        &mut conn,
        "garbage after a valid request",
        Duration::from_secs(3),
    )
    .await;

    // An ApiVersions version the server does not speak: a v0 answer, error 35 and the list.
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let r = round_trip(&mut conn, &request_flexible(API_VERSIONS, 99, 7, &[0]))
        .await
        .expect("an answer");
    assert_eq!(i32::from_be_bytes(r[..4].try_into().unwrap()), 7);
    assert_eq!(
        i16::from_be_bytes(r[4..6].try_into().unwrap()),
        35,
        "UNSUPPORTED_VERSION"
    );
    let n = i32::from_be_bytes(r[6..10].try_into().unwrap());
    assert!(n > 5, "{n} APIs listed");
    assert_eq!(r.len(), 10 + n as usize * 6, "a v0 body");
    assert!(
        api_versions_ok(&mut conn, 8).await,
        "and the connection goes on"
    );

    rdkafka_still_served(server.bootstrap(), "events").await;
    server.assert_alive();
    assert_no_library_panics();
}

/// A Produce v3 request for one partition holding `batches`, acks=all.
fn produce_request(correlation: i32, topic: &str, partition: i32, batches: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend((-1i16).to_be_bytes()); // no transactional id
    body.extend((-1i16).to_be_bytes()); // acks=all
    body.extend(10_000i32.to_be_bytes());
    body.extend(1i32.to_be_bytes());
    body.extend((topic.len() as i16).to_be_bytes());
    body.extend(topic.as_bytes());
    body.extend(1i32.to_be_bytes());
    body.extend(partition.to_be_bytes());
    body.extend((batches.len() as i32).to_be_bytes());
    body.extend(batches);
    request(0, 3, correlation, &body)
}

/// The error code of the one partition in a Produce v3 response, and its base offset.
fn produce_answer(r: &[u8], topic: &str) -> (i16, i64) {
    let at = 4 + 4 + 2 + topic.len() + 4 + 4;
    (
        i16::from_be_bytes(r[at..at + 2].try_into().unwrap()),
        i64::from_be_bytes(r[at + 2..at + 10].try_into().unwrap()),
    )
}

/// A producer's batch whose offset range disagrees with its record count (CRC-valid) is
/// refused, as Kafka refuses it: stored, it would move the partition's offsets on by up to 2^31
/// with a single record. The same request with the batch as encoded is stored.
#[tokio::test(flavor = "multi_thread")]
async fn produce_refuses_a_batch_whose_offsets_and_count_disagree() {
    let server = Server::start(ServerOptions::default()).await;
    append_dataset(&server.log, "events", 1, 3, true).await;
    let mut good = Vec::new();
    batch::encode(&mut good, 0, &[test_record("events", 0, 3, true)]).unwrap();
    // lastOffsetDelta (bytes 23..27) from 0 to 2^31 - 1, and the CRC-32C (17..21) made right.
    let mut bad = good.clone();
    bad[23..27].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&bad[21..]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    batch::validate(&bad).expect("a CRC-valid batch");

    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let r = round_trip(&mut conn, &produce_request(1, "events", 0, &bad))
        .await
        .expect("an answer");
    let (error, _) = produce_answer(&r, "events");
    assert_eq!(error, 87, "INVALID_RECORD");
    assert_eq!(
        server.log.partition("events", 0).unwrap().end_offset(),
        Offset(3)
    );

    let r = round_trip(&mut conn, &produce_request(2, "events", 0, &good))
        .await
        .expect("an answer");
    assert_eq!(produce_answer(&r, "events"), (0, 3));
    let b = server.bootstrap();
    let watermarks = blocking(move || {
        base_consumer(&b, &[])
            .fetch_watermarks("events", 0, CALL)
            .unwrap()
    })
    .await;
    assert_eq!(watermarks, (0, 4));
    assert_no_library_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_closed() {
    let idle = Duration::from_millis(400);
    let server = Server::start(ServerOptions {
        idle_timeout: idle,
        ..Default::default()
    })
    .await;
    let limit = Duration::from_secs(3);

    // Silent from the start.
    let started = Instant::now();
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    expect_closed(&mut conn, "a silent connection", limit).await;
    assert!(
        started.elapsed() >= idle - Duration::from_millis(50),
        "closed after {:?}, before the idle timeout",
        started.elapsed()
    );

    // Silent after a request.
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    assert!(api_versions_ok(&mut conn, 1).await);
    expect_closed(&mut conn, "silent after a request", limit).await;

    // Silent in the middle of a frame: the length came, the body never does.
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let frame = request(API_VERSIONS, 0, 1, &[]);
    conn.write_all(&frame[..frame.len() - 3]).await.unwrap();
    expect_closed(&mut conn, "stalled in the middle of a frame", limit).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(&100i32.to_be_bytes()).await.unwrap();
    expect_closed(&mut conn, "stalled after a length prefix", limit).await;

    // A busy connection stays open past the idle timeout.
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let mut correlation = 0;
    while started.elapsed() < idle * 3 {
        correlation += 1;
        assert!(
            api_versions_ok(&mut conn, correlation).await,
            "request {correlation} of a busy connection"
        );
        tokio::time::sleep(idle / 4).await;
    }
    server.assert_alive();
    assert_no_library_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_limit_are_refused() {
    let server = Server::start(ServerOptions {
        max_connections: 2,
        ..Default::default()
    })
    .await;
    let mut a = TcpStream::connect(server.addr).await.unwrap();
    let mut b = TcpStream::connect(server.addr).await.unwrap();
    assert!(api_versions_ok(&mut a, 1).await);
    assert!(api_versions_ok(&mut b, 1).await);
    // The third is accepted by the kernel, then closed by the server without an answer.
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    let _ = c.write_all(&request(API_VERSIONS, 0, 3, &[])).await;
    expect_closed(&mut c, "a third connection", Duration::from_secs(3)).await;
    // The two still work; once one closes, a new connection is served.
    assert!(api_versions_ok(&mut a, 2).await);
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut d = TcpStream::connect(server.addr).await.unwrap();
        if api_versions_ok(&mut d, 4).await {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(api_versions_ok(&mut a, 3).await);
    server.assert_alive();
    assert_no_library_panics();
}

// ---------------------------------------------------------------------------------------------
// 6. Fuzzing with mutated real requests
// ---------------------------------------------------------------------------------------------

/// A mutated copy of `frame` (length prefix included).
fn mutate(frame: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut f = frame.to_vec();
    let body = f.len() - 4;
    let fix = |f: &mut Vec<u8>| {
        let len = (f.len() - 4) as i32;
        f[..4].copy_from_slice(&len.to_be_bytes());
    };
    match rng.below(11) {
        // Flip a few bytes.
        0 | 1 => {
            for _ in 0..1 + rng.below(8) {
                let i = 4 + rng.below(body);
                f[i] ^= 1 << rng.below(8);
            }
        }
        // Cut short, length fixed.
        2 => {
            f.truncate(4 + rng.below(body));
            fix(&mut f);
        }
        // Cut short, length as it was: the connection then ends mid-frame.
        3 => f.truncate(4 + rng.below(body)),
        // Extra bytes at the end.
        4 => {
            let n = 1 + rng.below(64);
            f.extend(rng.bytes(n));
            fix(&mut f);
        }
        // A 32-bit field somewhere set to an extreme: array counts, lengths, offsets.
        5 => {
            if body >= 4 {
                let v: u32 = [0x7fff_ffff, 0xffff_ffff, 0x8000_0000, 0x0001_0000, 0][rng.below(5)];
                let i = 4 + rng.below(body - 3);
                f[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
        }
        // A 16-bit field set to an extreme: string lengths, versions, error codes.
        6 => {
            if body >= 2 {
                let v: u16 = [0x7fff, 0xffff, 0x8000, 0xfffe][rng.below(4)];
                let i = 4 + rng.below(body - 1);
                f[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
        }
        // A huge unsigned varint (compact arrays and strings in flexible versions).
        7 => {
            let i = 4 + rng.below(body);
            let huge = [0xff, 0xff, 0xff, 0xff, 0x0f];
            let end = (i + huge.len()).min(f.len());
            f[i..end].copy_from_slice(&huge[..end - i]);
        }
        // Another version of the same API.
        8 => {
            let v = rng.below(20) as i16 - 2;
            f[6..8].copy_from_slice(&v.to_be_bytes());
        }
        // Random bytes behind a real API key and version.
        9 => {
            let n = rng.below(200);
            f.truncate(8);
            f.extend(rng.bytes(n));
            fix(&mut f);
        }
        // Another API key (not CreateTopics: a decodable one could create a topic of up to
        // 10,000 partitions, each with open files, and run the process out of descriptors).
        _ => {
            let mut key = rng.below(80) as i16;
            if key == 19 {
                key = 0x7fff;
            }
            f[4..6].copy_from_slice(&key.to_be_bytes());
        }
    }
    f
}

#[derive(Debug, Default)]
struct FuzzStats {
    connections: usize,
    frames: usize,
    answered: usize,
    closed: usize,
    still_open: usize,
}

async fn fuzz_worker(
    addr: SocketAddr,
    corpus: Arc<Vec<Vec<u8>>>,
    seed: u64,
    until: Instant,
) -> FuzzStats {
    let mut rng = Rng(seed | 1);
    let mut stats = FuzzStats::default();
    let mut buf = vec![0u8; 64 << 10];
    while Instant::now() < until {
        let mut conn = TcpStream::connect(addr)
            .await
            .expect("the server refused a connection while being fuzzed");
        stats.connections += 1;
        let mut bytes = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let base = &corpus[rng.below(corpus.len())];
            if rng.below(4) == 0 {
                bytes.extend_from_slice(base);
            } else {
                bytes.extend(mutate(base, &mut rng));
            }
            stats.frames += 1;
        }
        let _ = conn.write_all(&bytes).await;
        if rng.below(3) == 0 {
            let _ = conn.shutdown().await;
        }
        loop {
            match tokio::time::timeout(Duration::from_millis(120), conn.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    stats.closed += 1;
                    break;
                }
                Ok(Ok(_)) => stats.answered += 1,
                Err(_) => {
                    stats.still_open += 1;
                    break;
                }
            }
        }
    }
    stats
}

/// Real requests captured from rdkafka (through a recording proxy), mutated and replayed for a
/// few seconds (TRIBUTARY_FUZZ_SECS, default 3; TRIBUTARY_FUZZ_SEED repeats a run): the server
/// neither panics nor stops, the log stays readable, and a real client is served afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn fuzzed_requests_do_not_take_the_server_down() {
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = proxy_listener.local_addr().unwrap().port();
    let server = Server::start(ServerOptions {
        advertised: Some(("127.0.0.1".into(), proxy_port)),
        ..Default::default()
    })
    .await;
    let proxy = Proxy::start(proxy_listener, server.addr);
    let original = append_dataset(&server.log, "fuzz", 2, 12, false).await;

    // Capture: what librdkafka sends to look up metadata, list offsets, fetch and produce.
    let bootstrap = proxy.addr.to_string();
    let b = bootstrap.clone();
    let want = original.clone();
    blocking(move || {
        let c = base_consumer(&b, &[]);
        c.fetch_metadata(None, CALL).unwrap();
        c.fetch_watermarks("fuzz", 1, CALL).unwrap();
        let mut times = TopicPartitionList::new();
        times
            .add_partition_offset("fuzz", 0, KOffset::Offset(timestamp(0, 3)))
            .unwrap();
        c.offsets_for_times(times, CALL).unwrap();
        assign(
            &c,
            "fuzz",
            &[(0, KOffset::Beginning), (1, KOffset::Offset(4))],
        );
        assert_eq!(read_to_end(&c, 2), from(&want, &[(0, 0), (1, 4)]));
    })
    .await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .create()
        .unwrap();
    let delivered = producer
        .send(
            FutureRecord::to("fuzz")
                .partition(0)
                .key("k")
                .payload("produced")
                .timestamp(T0),
            CALL,
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!((delivered.partition, delivered.offset), (0, 12));
    drop(producer);
    let mut corpus = proxy.requests();
    // Seeds for the cargo-fuzz target (fuzz/): frames without their length prefix.
    if let Ok(dir) = std::env::var("TRIBUTARY_WRITE_FUZZ_CORPUS") {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, frame) in corpus.iter().enumerate() {
            std::fs::write(format!("{dir}/rdkafka-{i}"), &frame[4..]).unwrap();
        }
    }
    corpus.push(request(API_VERSIONS, 0, 1, &[]));
    corpus.push(request(
        METADATA,
        0,
        1,
        &[0, 0, 0, 1, 0, 4, b'f', b'u', b'z', b'z'],
    ));
    let mut apis: Vec<(i16, i16)> = corpus
        .iter()
        .map(|f| {
            (
                i16::from_be_bytes([f[4], f[5]]),
                i16::from_be_bytes([f[6], f[7]]),
            )
        })
        .collect();
    apis.sort_unstable();
    apis.dedup();
    for api in [0, 1, 2, 3, 18] {
        assert!(
            apis.iter().any(|(a, _)| *a == api),
            "API {api} captured: {apis:?}"
        );
    }
    assert!(
        !apis.iter().any(|(a, _)| *a == 19),
        "no CreateTopics in the corpus"
    );

    let secs: u64 = std::env::var("TRIBUTARY_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("TRIBUTARY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("fuzzing for {secs} s with TRIBUTARY_FUZZ_SEED={seed}; corpus: {} requests, (api, version) {apis:?}", corpus.len());
    let corpus = Arc::new(corpus);
    let until = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            tokio::spawn(fuzz_worker(
                server.addr,
                corpus.clone(),
                seed.wrapping_add(w.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                until,
            ))
        })
        .collect();
    let mut total = FuzzStats::default();
    for w in workers {
        let s = w.await.unwrap();
        total.connections += s.connections;
        total.frames += s.frames;
        total.answered += s.answered;
        total.closed += s.closed;
        total.still_open += s.still_open;
    }
    eprintln!("fuzz (seed {seed}): {total:?}");
    assert!(
        total.connections > 50,
        "too few runs to mean anything: {total:?}"
    );
    assert!(total.answered > 0 && total.closed > 0, "{total:?}");

    server.assert_alive();
    assert_no_library_panics();
    // Still serving, and the log still reads back: the records from before, then whatever
    // well-formed Produce requests appended (each batch checked by the client's CRC check).
    let want = original.clone();
    let b = server.bootstrap();
    blocking(move || {
        let c = base_consumer(&b, &[("check.crcs", "true")]);
        c.fetch_metadata(None, CALL).unwrap();
        assign(
            &c,
            "fuzz",
            &[(0, KOffset::Beginning), (1, KOffset::Beginning)],
        );
        let got = read_to_end(&c, 2);
        for p in 0..2 {
            let got: Vec<&Rec> = got.iter().filter(|r| r.partition == p).collect();
            let want: Vec<&Rec> = want.iter().filter(|r| r.partition == p).collect();
            assert_eq!(
                &got[..want.len()],
                &want[..],
                "partition {p} starts with the records from before"
            );
        }
    })
    .await;
    server.assert_alive();
    drop(proxy);
    assert_no_library_panics();
}
