//! The reference Java client, `org.apache.kafka:kafka-clients` 4.1 (tests/java/ClientSuite.java),
//! against Tributary's Kafka listener and against a real Apache Kafka broker: one scenario, its
//! expected behaviour written once (the `check_*` functions below), asserted on both targets.
//!
//! The scenario: admin (createTopics, describeTopics, listTopics, describeCluster), a default
//! producer (idempotent, acks=all) sending keyed records with explicit timestamps, a consumer
//! group of two members (the first consumes part and commits, the second joins, the rebalance
//! splits the partitions, both consume the rest and commit), a new member resuming from the
//! committed offsets, `offsetsForTimes`, `seekToBeginning`, and the group seen by the admin.
//! Besides what the clients observe: the stored batches carry the producer's id and dense
//! sequences (idempotence in effect), no connection was closed by the broker (the client's own
//! log) nor by the listener (the gateway's log), and every request the client sent was answered;
//! APIs the broker does not offer are refused by the client itself, each one it can do without.
//!
//!
//! The Python clients (confluent-kafka and kafka-python, tests/python/group_resume.py) run a
//! smaller scenario on both targets the same way: create a topic, produce keyed records, read
//! them in a group, commit half, resume from there.
//!
//! Outside tools: a JDK 17+ (`javac`, `java`), the Kafka jars (`scripts/kafka-jars`) and the two
//! Python clients, which `scripts/test` installs; a missing one fails the test with the command
//! that installs it.

mod support;

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::ops::Range;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use support::kafka::{self, KafkaBroker};
use support::Gateway;
use tributary::log::batch;
use tributary::route::partition::partition_for_key;

// The scenario's constants, as in ClientSuite.java.
const PARTITIONS: u32 = 3;
/// Records of the first produce step, then of produce_more.
const FIRST: usize = 60;
const MORE: usize = 12;
/// Record i has key "key-(i % KEYS)", value "value-i" and timestamp base + i * STEP_MS.
const KEYS: usize = 12;
const STEP_MS: i64 = 1000;
/// The whole Java program (about 15 s on either target when the machine is idle).
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);
const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java/ClientSuite.java");
const LOG4J: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java/log4j2.properties");
const PYTHON_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/group_resume.py");
/// Records group_resume.py produces (keys and timestamps as ClientSuite's).
const PYTHON_RECORDS: usize = 30;

#[test]
fn java_client_suite_on_the_embedded_listener() {
    scenario(&Target::embedded());
}

#[test]
fn java_client_suite_on_a_real_kafka_broker() {
    scenario(&Target::Kafka(KafkaBroker::shared()));
}

#[test]
fn python_clients_on_the_embedded_listener() {
    python_scenario(&Target::embedded());
}

#[test]
fn python_clients_on_a_real_kafka_broker() {
    python_scenario(&Target::Kafka(KafkaBroker::shared()));
}

/// Runs ClientSuite on `target` and asserts everything it observed.
fn scenario(target: &Target) {
    let base = base_timestamp();
    let prefix = format!("java-{}-{}", target.name(), std::process::id());
    let topic = format!("{prefix}-events");
    let group = format!("{prefix}-group");
    let run = run_suite(target, &prefix, base);
    eprintln!(
        "ClientSuite on {}: {:.1} s; requests sent (API, version): {}; refused by the client \
         itself (not offered): {}",
        target.name(),
        run.took.as_secs_f64(),
        fmt_set(&run.wire.sent_versions()),
        fmt_set(&run.wire.refused()),
    );
    let _context = OnPanic(|| run.context(target));
    let model = Model::new(base, FIRST, MORE);

    check_admin(run.step("admin"), &topic);
    check_produce(run.step("produce"), &model, 0..FIRST);
    check_group_first(run.step("group_first"), &model);
    check_group_second(run.step("group_second"), &model);
    check_produce(run.step("produce_more"), &model, FIRST..FIRST + MORE);
    check_resume(run.step("resume"), &model);
    check_offsets_for_times(run.step("offsets_for_times"), &model);
    check_seek_to_beginning(run.step("seek_to_beginning"), &model);
    check_group_admin(run.step("group_admin"), &model, &group);
    check_stored_batches(target, &topic, &model);
    if let Err(e) = check_connections(&run, target) {
        panic!("{e}");
    }
}

/// Runs tests/python/group_resume.py with each Python client on `target` and asserts what it
/// observed.
fn python_scenario(target: &Target) {
    let python = support::require_python(&[
        ("confluent_kafka", "confluent-kafka"),
        ("kafka", "kafka-python"),
    ]);
    for client in ["confluent", "kafka-python"] {
        let base = base_timestamp();
        let prefix = format!("py-{client}-{}-{}", target.name(), std::process::id());
        let (topic, group) = (format!("{prefix}-events"), format!("{prefix}-group"));
        let mut cmd = Command::new(&python);
        cmd.arg(PYTHON_SCRIPT)
            .args([client, &target.bootstrap(), &topic, &group])
            .arg(base.to_string())
            // Cargo's LD_LIBRARY_PATH leads to rdkafka-sys's librdkafka: confluent-kafka loads
            // its own.
            .env_remove("LD_LIBRARY_PATH");
        let started = Instant::now();
        let out = run(cmd, Duration::from_secs(180));
        let took = started.elapsed();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "group_resume.py {client} on {} failed ({}) after {took:?}\nstdout:\n{stdout}\nstderr:\n{stderr}\n{} log (tail):\n{}",
            target.name(),
            out.status,
            target.name(),
            target.log_tail()
        );
        eprintln!(
            "group_resume.py {client} on {}: {:.1} s",
            target.name(),
            took.as_secs_f64()
        );
        let _context = OnPanic(|| format!("{client} stderr:\n{stderr}"));
        let steps = steps(&stdout, "group_resume.py");
        let step = |name: &str| {
            steps
                .get(name)
                .unwrap_or_else(|| panic!("group_resume.py printed no {name} step:\n{stdout}"))
        };
        let model = Model::new(base, PYTHON_RECORDS, 0);
        check_python(client, &step, &model, &topic);
        check_stored_offsets(target, &topic, &model);
    }
    let complaints = target.server_complaints();
    assert!(
        complaints.is_empty(),
        "the Kafka listener complained:\n{}",
        complaints.join("\n")
    );
}

// --- the expected behaviour ---------------------------------------------------------------

/// A record as the scenario sends it, and where it must be stored: the partition is the Java
/// client's default for a keyed record (murmur2 of the key), the offset the next one of that
/// partition (the producer sends in order, and idempotence keeps retries from duplicating).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    i: usize,
    key: String,
    value: String,
    timestamp: i64,
    partition: u32,
    offset: i64,
}

/// A record as a consumer gets it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Got {
    partition: u32,
    offset: i64,
    key: String,
    value: String,
    timestamp: i64,
}

impl Sent {
    fn got(&self) -> Got {
        Got {
            partition: self.partition,
            offset: self.offset,
            key: self.key.clone(),
            value: self.value.clone(),
            timestamp: self.timestamp,
        }
    }
}

struct Model {
    base: i64,
    /// Every record of both produce steps, in send order.
    sent: Vec<Sent>,
    /// Records per partition after the first produce step, and after both.
    first: [i64; PARTITIONS as usize],
    total: [i64; PARTITIONS as usize],
}

impl Model {
    /// `first` records, then `more`.
    fn new(base: i64, first_records: usize, more: usize) -> Model {
        let mut next = [0i64; PARTITIONS as usize];
        let mut first = next;
        let sent = (0..first_records + more)
            .map(|i| {
                if i == first_records {
                    first = next;
                }
                let key = format!("key-{}", i % KEYS);
                let partition = partition_for_key(key.as_bytes(), PARTITIONS);
                let offset = next[partition as usize];
                next[partition as usize] += 1;
                Sent {
                    i,
                    value: format!("value-{i}"),
                    timestamp: base + i as i64 * STEP_MS,
                    key,
                    partition,
                    offset,
                }
            })
            .collect();
        if more == 0 {
            first = next;
        }
        // The scenario needs records in every partition, two at least (a half to commit).
        assert!(
            first.iter().all(|&n| n >= 2),
            "keys spread badly: {first:?}"
        );
        Model {
            base,
            sent,
            first,
            total: next,
        }
    }

    fn timestamp(&self, i: usize) -> i64 {
        self.base + i as i64 * STEP_MS
    }

    /// What member A commits: half of each partition's first records.
    fn half(&self) -> [i64; PARTITIONS as usize] {
        self.first.map(|n| n / 2)
    }

    /// The records of `partition` at `offsets`, in order.
    fn records(&self, partition: u32, offsets: Range<i64>) -> Vec<Got> {
        self.sent
            .iter()
            .filter(|s| s.partition == partition && offsets.contains(&s.offset))
            .map(Sent::got)
            .collect()
    }

    /// Per partition, from `from[p]` to `to[p]`.
    fn ranges(&self, from: [i64; 3], to: [i64; 3]) -> BTreeMap<u32, Vec<Got>> {
        (0..PARTITIONS)
            .map(|p| (p, self.records(p, from[p as usize]..to[p as usize])))
            .collect()
    }
}

fn check_admin(v: &Value, topic: &str) {
    assert_eq!(v["topic"], topic);
    assert_eq!(v["created_partitions"], PARTITIONS, "{v}");
    assert_eq!(v["created_replication"], 1, "{v}");
    assert_eq!(v["create_again"], "TopicExistsException", "{v}");
    assert_eq!(v["described_name"], topic);
    assert_eq!(v["internal"], false);
    assert_eq!(v["listed"], true, "listTopics lists the new topic");
    // One broker: it leads every partition, the only replica, in sync, and the controller.
    let nodes = v["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{v}");
    let node = &nodes[0];
    assert_eq!(&v["controller"], node, "{v}");
    let partitions: Vec<Value> = (0..PARTITIONS)
        .map(|p| json!({"partition": p, "leader": node, "replicas": [node], "isr": [node]}))
        .collect();
    assert_eq!(v["partitions"], json!(partitions), "{v}");
    assert!(
        v["cluster_id"].as_str().is_some_and(|id| !id.is_empty()),
        "{v}"
    );
}

/// A default producer is idempotent with acks=all; each send lands where [`Model`] says, with
/// the record's own timestamp (CreateTime).
fn check_produce(v: &Value, model: &Model, records: Range<usize>) {
    assert_eq!(v["idempotence"], true, "enable.idempotence in effect");
    assert!(
        v["acks"] == "-1" || v["acks"] == "all",
        "acks=all: {}",
        v["acks"]
    );
    let got: Vec<(Sent, i64)> = list(&v["records"])
        .iter()
        .map(|r| {
            (
                Sent {
                    i: r["i"].as_u64().unwrap() as usize,
                    key: str_of(&r["key"]),
                    value: str_of(&r["value"]),
                    timestamp: r["timestamp"].as_i64().unwrap(),
                    partition: r["partition"].as_u64().unwrap() as u32,
                    offset: r["offset"].as_i64().unwrap(),
                },
                r["metadata_timestamp"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(Sent, i64)> = model.sent[records]
        .iter()
        .map(|s| (s.clone(), s.timestamp))
        .collect();
    assert_eq!(
        got, want,
        "every send: murmur2 partition, the next offset of it, once"
    );
}

/// Member A alone owns every partition, reads each from offset 0 (at least half of it, in
/// order, each record once) and commits exactly half.
fn check_group_first(v: &Value, model: &Model) {
    let half = model.half();
    assert_eq!(v["assignment"], json!([0, 1, 2]), "{}", v["rebalances"]);
    assert_eq!(v["rebalances"], json!([{"assigned": [0, 1, 2]}]));
    assert!(v["generation"].as_i64().unwrap() >= 1);
    let got = by_partition(&v["records"]);
    let read: Vec<i64> = (0..PARTITIONS)
        .map(|p| got.get(&p).map_or(0, |r| r.len() as i64))
        .collect();
    assert!(
        read.iter().zip(half).all(|(&n, h)| n >= h),
        "member A read {read:?}, at least {half:?}"
    );
    let read: [i64; 3] = read.try_into().unwrap();
    assert_eq!(got, model.ranges([0; 3], read), "member A's records");
    assert_eq!(v["committed"], offsets_json(half));
}

/// Member B joins: one eager rebalance (the default assignors, range first, and the classic
/// protocol): A gives up everything and gets partitions 0 and 1, B partition 2 (range orders the
/// members by id, which starts with the client id). Each reads the rest of its partitions from
/// the committed half, nobody reads a partition it does not own, each record is read once.
fn check_group_second(v: &Value, model: &Model) {
    let first_generation = v["first_generation"].as_i64().unwrap();
    let generations = &v["generations"];
    assert_eq!(generations["a"], generations["b"], "{v}");
    assert!(generations["a"].as_i64().unwrap() > first_generation, "{v}");
    assert_eq!(
        v["assignments"],
        json!({"a": [0, 1], "b": [2]}),
        "{}",
        v["rebalances"]
    );
    assert_eq!(
        v["rebalances"],
        json!({
            "a": [{"assigned": [0, 1, 2]}, {"revoked": [0, 1, 2]}, {"assigned": [0, 1]}, {"revoked": [0, 1]}],
            "b": [{"assigned": [2]}, {"revoked": [2]}],
        })
    );
    let half = model.half();
    let a = by_partition(&v["records"]["a"]);
    let b = by_partition(&v["records"]["b"]);
    let want = model.ranges(half, model.first);
    let only = |want: &BTreeMap<u32, Vec<Got>>, ps: &[u32]| -> BTreeMap<u32, Vec<Got>> {
        want.iter()
            .filter(|(p, r)| ps.contains(p) && !r.is_empty())
            .map(|(p, r)| (*p, r.clone()))
            .collect()
    };
    assert_eq!(a, only(&want, &[0, 1]), "member A's records");
    assert_eq!(b, only(&want, &[2]), "member B's records");
    assert_eq!(v["committed"], offsets_json(model.first));
}

/// Member C, after both others left: the whole group's partitions, starting at the committed
/// offsets: exactly the records produced since, none before.
fn check_resume(v: &Value, model: &Model) {
    assert_eq!(v["committed_before"], offsets_json(model.first));
    assert_eq!(v["assignment"], json!([0, 1, 2]));
    assert_eq!(v["rebalances"], json!([{"assigned": [0, 1, 2]}]));
    let got = by_partition(&v["records"]);
    let want: BTreeMap<u32, Vec<Got>> = model
        .ranges(model.first, model.total)
        .into_iter()
        .filter(|(_, r)| !r.is_empty())
        .collect();
    assert_eq!(got, want, "member C reads exactly the uncommitted records");
    assert_eq!(got.values().map(Vec::len).sum::<usize>(), MORE);
    assert_eq!(v["committed_after"], offsets_json(model.total));
}

/// offsetsForTimes: per partition the first record at or after the target, with that record's
/// timestamp; null past the last record.
fn check_offsets_for_times(v: &Value, model: &Model) {
    let last = model.timestamp(FIRST + MORE - 1);
    let targets = [
        model.base - 60_000,
        model.timestamp(0),
        model.timestamp(30) + STEP_MS / 2,
        model.timestamp(45),
        last,
        last + 1,
    ];
    let results = list(&v["results"]);
    assert_eq!(
        results
            .iter()
            .map(|r| r["target"].clone())
            .collect::<Vec<_>>(),
        targets.map(|t| json!(t)),
    );
    for (result, target) in results.iter().zip(targets) {
        let want: BTreeMap<String, Value> = (0..PARTITIONS)
            .map(|p| {
                let hit = model
                    .sent
                    .iter()
                    .find(|s| s.partition == p && s.timestamp >= target)
                    .map_or(
                        Value::Null,
                        |s| json!({"offset": s.offset, "timestamp": s.timestamp}),
                    );
                (p.to_string(), hit)
            })
            .collect();
        assert_eq!(result["found"], json!(want), "offsetsForTimes({target})");
    }
    assert_eq!(v["beginning"], offsets_json([0; 3]));
    assert_eq!(v["end"], offsets_json(model.total));
}

fn check_seek_to_beginning(v: &Value, model: &Model) {
    assert_eq!(
        by_partition(&v["records"]),
        model.ranges([0; 3], model.total),
        "everything again, in order"
    );
}

fn check_group_admin(v: &Value, model: &Model, group: &str) {
    assert_eq!(v["group_id"], group);
    assert_eq!(v["committed"], offsets_json(model.total));
    assert_eq!(v["state"], "Empty", "{v}");
    assert_eq!(v["members"], 0);
}

/// The Python scenario: every record where [`Model`] says; a member reads them all in order
/// and commits half of each partition; the next member reads exactly the other half.
fn check_python<'a>(client: &str, step: &dyn Fn(&str) -> &'a Value, model: &Model, topic: &str) {
    assert_eq!(step("create")["topic"], topic);
    let sent: Vec<Sent> = list(&step("produce")["records"])
        .iter()
        .map(|r| Sent {
            i: r["i"].as_u64().unwrap() as usize,
            key: str_of(&r["key"]),
            value: str_of(&r["value"]),
            timestamp: r["timestamp"].as_i64().unwrap(),
            partition: r["partition"].as_u64().unwrap() as u32,
            offset: r["offset"].as_i64().unwrap(),
        })
        .collect();
    assert_eq!(
        sent, model.sent,
        "{client}: murmur2 partitions, dense offsets"
    );
    let half = model.half();
    let first = step("first");
    assert_eq!(
        by_partition(&first["records"]),
        model.ranges([0; 3], model.total),
        "{client}: the first member reads everything, in order, once"
    );
    assert_eq!(first["committed"], offsets_json(half), "{client}");
    let resume = step("resume");
    assert_eq!(
        by_partition(&resume["records"]),
        model.ranges(half, model.total),
        "{client}: the next member resumes at the committed offsets"
    );
    assert_eq!(resume["committed"], offsets_json(model.total), "{client}");
}

/// Idempotence on the broker's side: every stored batch of the topic carries the one producer's
/// id and epoch, and its base sequence is the number of that producer's records before it in
/// the partition.
fn check_stored_batches(target: &Target, topic: &str, model: &Model) {
    let mut producers = BTreeSet::new();
    for p in 0..PARTITIONS {
        let mut records = 0i64;
        for h in stored_batches(target, topic, p) {
            assert!(h.producer_id >= 0 && h.producer_epoch >= 0, "{h:?}");
            assert_eq!(i64::from(h.base_sequence), records, "{h:?}");
            producers.insert((h.producer_id, h.producer_epoch));
            records += i64::from(h.record_count);
        }
        assert_eq!(records, model.total[p as usize], "partition {p} on disk");
    }
    assert_eq!(producers.len(), 1, "one producer: {producers:?}");
}

/// Each record stored once: the partitions hold exactly the records sent, no more.
fn check_stored_offsets(target: &Target, topic: &str, model: &Model) {
    for p in 0..PARTITIONS {
        let records: i64 = stored_batches(target, topic, p)
            .iter()
            .map(|h| i64::from(h.record_count))
            .sum();
        assert_eq!(records, model.total[p as usize], "partition {p} on disk");
    }
}

/// The headers of a partition's stored batches, checked to be data batches at dense offsets
/// from 0. Both targets store Kafka's segment format: read the files.
fn stored_batches(target: &Target, topic: &str, partition: u32) -> Vec<batch::BatchHeader> {
    let mut next = 0i64;
    let mut headers = Vec::new();
    for file in target.segment_files(topic, partition) {
        let bytes = std::fs::read(&file).unwrap();
        for b in batch::batches(&bytes) {
            let (h, _) = b.unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(!h.is_control(), "{}: a control batch", file.display());
            assert_eq!(h.base_offset, next, "{}", file.display());
            next += i64::from(h.record_count);
            headers.push(h);
        }
    }
    headers
}

/// Nothing closed a connection under a client, and every request got its answer.
fn check_connections(run: &Run, target: &Target) -> Result<(), String> {
    let dropped = run.wire.lines("disconnected");
    if !dropped.is_empty() {
        return Err(format!(
            "the broker closed client connections:\n{}",
            dropped.join("\n")
        ));
    }
    // A fetch may still be long-polling when its consumer closes.
    let unanswered: Vec<(String, String)> = run
        .wire
        .unanswered()
        .into_iter()
        .filter(|(_, api)| api != "FETCH")
        .collect();
    if !unanswered.is_empty() {
        return Err(format!("requests without a response: {unanswered:?}"));
    }
    // What the client leaves out when the broker does not offer it: the admin falls back to
    // Metadata (describeCluster, describeTopics) and DescribeGroups (describeConsumerGroups);
    // telemetry is optional.
    let optional = [
        "DescribeCluster",
        "DescribeTopicPartitions",
        "ConsumerGroupDescribe",
        "GetTelemetrySubscriptions",
    ];
    let refused: Vec<String> = run
        .wire
        .refused()
        .into_iter()
        .filter(|api| !optional.contains(&api.as_str()))
        .collect();
    if !refused.is_empty() {
        return Err(format!(
            "the client found APIs it needs not offered: {refused:?}"
        ));
    }
    let warnings: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| {
            l.starts_with("ERROR")
                || [
                    "disconnected",
                    "Unexpected error",
                    "could not be established",
                    "DisconnectException",
                    "NETWORK_EXCEPTION",
                ]
                .iter()
                .any(|w| l.contains(w))
        })
        .collect();
    if !warnings.is_empty() {
        return Err(format!(
            "the clients logged connection trouble:\n{}",
            warnings.join("\n")
        ));
    }
    let complaints = target.server_complaints();
    if !complaints.is_empty() {
        return Err(format!(
            "the Kafka listener complained:\n{}",
            complaints.join("\n")
        ));
    }
    Ok(())
}

// --- targets ------------------------------------------------------------------------------

enum Target {
    /// `tributary run` with its MQTT listener face and the embedded log's Kafka listener.
    Embedded {
        gateway: Gateway,
        port: u16,
    },
    Kafka(&'static KafkaBroker),
}

impl Target {
    fn embedded() -> Target {
        let port = support::free_port();
        let mut gateway = Gateway::new(&format!(
            "listener: {{ listen: \"127.0.0.1:{}\" }}\n\
             log: {{ embedded: {{ dir: DATA_DIR, fsync_interval: 2ms, kafka_listener: \"127.0.0.1:{port}\" }} }}\n\
             topics: {{ default: {{ partitions: 3 }} }}\n\
             http: {{ listen: null }}\n\
             routes: [{{ from: \"devices/{{device}}/telemetry\", to: telemetry }}]\n",
            support::free_port()
        ));
        gateway.spawn();
        let up = support::wait_until(Duration::from_secs(20), || {
            gateway.log().contains("Kafka API listening")
        });
        assert!(up, "the Kafka listener did not start:\n{}", gateway.log());
        Target::Embedded { gateway, port }
    }

    fn name(&self) -> &'static str {
        match self {
            Target::Embedded { .. } => "embedded",
            Target::Kafka(_) => "kafka",
        }
    }

    fn bootstrap(&self) -> String {
        match self {
            Target::Embedded { port, .. } => format!("127.0.0.1:{port}"),
            Target::Kafka(broker) => broker.bootstrap(),
        }
    }

    /// The segment files of a partition, in offset order.
    fn segment_files(&self, topic: &str, partition: u32) -> Vec<PathBuf> {
        let dir = match self {
            Target::Embedded { gateway, .. } => {
                gateway.data_dir().join(topic).join(partition.to_string())
            }
            Target::Kafka(broker) => broker
                .dir()
                .join("data")
                .join(format!("{topic}-{partition}")),
        };
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        // Named by base offset, zero-padded to 20 digits on both.
        files.sort();
        files
    }

    /// Warnings and errors of the Kafka listener (a connection it closed, a request it could
    /// not answer). A real broker's log is its own business.
    fn server_complaints(&self) -> Vec<String> {
        match self {
            Target::Embedded { gateway, .. } => gateway
                .log()
                .lines()
                .filter(|l| {
                    l.contains("Kafka connection closed")
                        || (l.contains("kafka_api")
                            && (l.contains(" WARN ") || l.contains(" ERROR ")))
                })
                .map(String::from)
                .collect(),
            Target::Kafka(_) => Vec::new(),
        }
    }

    /// The last lines of the server's log, for a failure message.
    fn log_tail(&self) -> String {
        let log = match self {
            Target::Embedded { gateway, .. } => gateway.log(),
            Target::Kafka(broker) => broker.log(),
        };
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

// --- running the Java program -------------------------------------------------------------

struct Run {
    steps: BTreeMap<String, Value>,
    stdout: String,
    stderr: String,
    wire: Wire,
    took: Duration,
}

impl Run {
    fn step(&self, name: &str) -> &Value {
        self.steps
            .get(name)
            .unwrap_or_else(|| panic!("ClientSuite printed no {name} step:\n{}", self.stdout))
    }

    fn context(&self, target: &Target) -> String {
        format!(
            "ClientSuite stderr:\n{}\n{} log (tail):\n{}",
            self.stderr,
            target.name(),
            target.log_tail()
        )
    }
}

fn run_suite(target: &Target, prefix: &str, base: i64) -> Run {
    let classes = suite_classes();
    let dir = tempfile::tempdir().unwrap();
    let wire = dir.path().join("wire.log");
    let log4j = format!("-Dlog4j2.configurationFile={LOG4J}");
    let wire_opt = format!("-Dclientsuite.wire={}", wire.display());
    let mut cmd = kafka::java_program(
        &["-Xmx256m", "-XX:TieredStopAtLevel=1", &log4j, &wire_opt],
        &classes,
        "ClientSuite",
    );
    cmd.arg(target.bootstrap())
        .arg(prefix)
        .arg(base.to_string());
    let started = Instant::now();
    let out = run(cmd, SUITE_TIMEOUT);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "ClientSuite on {} failed ({}) after {took:?}\nstdout:\n{stdout}\nstderr:\n{stderr}\n{} log (tail):\n{}",
        target.name(),
        out.status,
        target.name(),
        target.log_tail()
    );
    let steps = steps(&stdout, "ClientSuite");
    Run {
        steps,
        stdout,
        stderr,
        wire: Wire(std::fs::read_to_string(&wire).unwrap_or_default()),
        took,
    }
}

/// Runs `cmd` to its end with stdout and stderr captured; killed after `limit` (and when this
/// test process dies).
fn run(mut cmd: Command, limit: Duration) -> Output {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run java (a JDK 17+ is needed): {e}"));
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let stdout = pipe(Box::new(child.stdout.take().unwrap()));
    let stderr = pipe(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let status = child.wait().unwrap();
            eprintln!("ClientSuite did not finish within {limit:?}; killed");
            break status;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// ClientSuite.java compiled into target/java-classes/<hash of the source>/, once per source:
/// the first test process to need it compiles (under a file lock, into a temp dir renamed into
/// place), the others wait and reuse it.
fn suite_classes() -> PathBuf {
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES.get_or_init(compile_suite).clone()
}

fn compile_suite() -> PathBuf {
    let source = std::fs::read(SOURCE).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/java-classes");
    let dir = root.join(format!("{:016x}", fnv1a(&source)));
    let done = |dir: &Path| dir.join("ClientSuite.class").is_file();
    if done(&dir) {
        return dir;
    }
    std::fs::create_dir_all(&root).unwrap();
    let lock = std::fs::File::create(root.join(".lock")).unwrap();
    // SAFETY: flock(2) on a file descriptor this function owns; released when `lock` drops.
    let locked = unsafe {
        use std::os::fd::AsRawFd;
        libc::flock(lock.as_raw_fd(), libc::LOCK_EX)
    };
    assert_eq!(locked, 0, "flock: {}", std::io::Error::last_os_error());
    if done(&dir) {
        return dir;
    }
    let javac = kafka::jdk_tool("javac");
    let javac = if javac.is_absolute() {
        javac
    } else {
        support::require(
            "javac",
            "apt-get install -y openjdk-17-jdk-headless (a JDK 17+, not only the JRE)",
        )
    };
    let tmp = root.join(format!(".tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();
    let out = Command::new(&javac)
        .args(["-Xlint:all", "-encoding", "UTF-8", "-d"])
        .arg(&tmp)
        .arg("-cp")
        .arg(format!("{}/*", KafkaBroker::jars().display()))
        .arg(SOURCE)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", javac.display()));
    assert!(
        out.status.success(),
        "javac {SOURCE} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &dir).unwrap();
    dir
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// What the Java clients logged about the wire (see tests/java/log4j2.properties).
struct Wire(String);

impl Wire {
    fn lines(&self, containing: &str) -> Vec<&str> {
        self.0.lines().filter(|l| l.contains(containing)).collect()
    }

    /// `(client id, correlation id)` and the API of every request sent, from a line's
    /// `RequestHeader(apiKey=API, apiVersion=N, clientId=ID, correlationId=N`.
    fn requests(&self, marker: &str) -> BTreeMap<(String, String), (String, String)> {
        self.lines(marker)
            .into_iter()
            .filter_map(|l| {
                let header = l.split("RequestHeader(").nth(1)?;
                let field = |name: &str| {
                    header
                        .split(", ")
                        .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                        .map(|v| v.trim_end_matches(')').to_string())
                };
                Some((
                    (field("clientId")?, field("correlationId")?),
                    (field("apiKey")?, field("apiVersion")?),
                ))
            })
            .collect()
    }

    /// Every `(API, version)` sent.
    fn sent_versions(&self) -> BTreeSet<String> {
        self.requests("Sending ")
            .into_values()
            .map(|(api, v)| format!("{api} v{v}"))
            .collect()
    }

    /// Requests sent without a response logged: `((client id, correlation id), API)`.
    fn unanswered(&self) -> Vec<(String, String)> {
        let answered = self.requests("Received ");
        self.requests("Sending ")
            .into_iter()
            .filter(|(id, _)| !answered.contains_key(id))
            .map(|((client, correlation), (api, _))| (format!("{client}#{correlation}"), api))
            .collect()
    }

    /// The APIs the client did not send because the broker does not offer them
    /// ("Version mismatch when attempting to send DescribeClusterRequestData(...").
    fn refused(&self) -> BTreeSet<String> {
        self.lines("Version mismatch when attempting to send ")
            .into_iter()
            .filter_map(|l| {
                let rest = l.split("attempting to send ").nth(1)?;
                let name = rest.split(['(', ' ']).next()?;
                Some(name.trim_end_matches("RequestData").to_string())
            })
            .collect()
    }
}

// --- helpers ------------------------------------------------------------------------------

/// The first record's timestamp: explicit timestamps, a little in the past (far from a real
/// broker's retention and its message.timestamp.*.max.ms bounds), in whole seconds.
fn base_timestamp() -> i64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    (now_ms - 600_000) / 1000 * 1000
}

/// The `{"step": NAME, ...}` lines a program printed, by name.
fn steps(stdout: &str, program: &str) -> BTreeMap<String, Value> {
    stdout
        .lines()
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{program} printed {l:?}: {e}"));
            (v["step"].as_str().unwrap().to_string(), v)
        })
        .collect()
}

/// Prints what its closure says if the test fails while it is alive.
struct OnPanic<F: Fn() -> String>(F);

impl<F: Fn() -> String> Drop for OnPanic<F> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", (self.0)());
        }
    }
}

fn list(v: &Value) -> &Vec<Value> {
    v.as_array().unwrap_or_else(|| panic!("not a list: {v}"))
}

fn str_of(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// Records as ClientSuite prints them, by partition in the order received; each must be a
/// CreateTime record.
fn by_partition(v: &Value) -> BTreeMap<u32, Vec<Got>> {
    let mut out: BTreeMap<u32, Vec<Got>> = BTreeMap::new();
    for r in list(v) {
        if let Some(kind) = r.get("timestamp_type") {
            assert_eq!(kind, "CreateTime", "{r}");
        }
        let got = Got {
            partition: r["partition"].as_u64().unwrap() as u32,
            offset: r["offset"].as_i64().unwrap(),
            key: str_of(&r["key"]),
            value: str_of(&r["value"]),
            timestamp: r["timestamp"].as_i64().unwrap(),
        };
        out.entry(got.partition).or_default().push(got);
    }
    out
}

/// `{"0": o0, "1": o1, "2": o2}`, as ClientSuite prints offsets by partition.
fn offsets_json(offsets: [i64; 3]) -> Value {
    json!({"0": offsets[0], "1": offsets[1], "2": offsets[2]})
}

fn fmt_set(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}
