//! Consumer groups over the Kafka listener with rdkafka (librdkafka): subscribe, commit,
//! resume after a restart, and partitions split between members and taken over when one leaves.

use bytes::Bytes;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::{ClientConfig, Message};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tributary::config::{FsyncPolicy, TopicConfig, TopicsConfig};
use tributary::kafka_api::groups::CoordinatorOptions;
use tributary::kafka_api::{KafkaApi, ServerOptions};
use tributary::log::offsets::GroupOffsets;
use tributary::log::{Log, LogOptions};
use tributary::record::{Header, Record};

const TOPIC: &str = "events";
const PARTITIONS: u32 = 4;

/// A log with `per_partition` records in each of `PARTITIONS` partitions, served on a free
/// port; the server stops when the token is cancelled.
async fn serve(
    dir: &std::path::Path,
    per_partition: usize,
) -> (String, Arc<Log>, CancellationToken) {
    let mut topics = TopicsConfig::default();
    topics.topics.insert(
        TOPIC.into(),
        TopicConfig {
            partitions: PARTITIONS,
        },
    );
    let options = LogOptions {
        dir: dir.to_path_buf(),
        segment_bytes: 1 << 20,
        fsync: FsyncPolicy::Interval,
        fsync_interval: Duration::from_millis(2),
        retention_time: None,
        retention_bytes: None,
        retention_check: Duration::from_secs(3600),
        topics,
    };
    let log = Arc::new(Log::open(options).await.unwrap());
    append(&log, 0, per_partition).await;
    let offsets = Arc::new(GroupOffsets::open(dir).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let stop = CancellationToken::new();
    let group = CoordinatorOptions {
        initial_rebalance_delay: Duration::from_millis(200),
        ..Default::default()
    };
    let api = KafkaApi::new(
        log.clone(),
        offsets,
        ServerOptions {
            group,
            ..Default::default()
        },
    );
    tokio::spawn(api.serve(listener, stop.clone()));
    (addr, log, stop)
}

/// Appends records `from..from + n` to every partition; values are "p:i".
async fn append(log: &Log, from: usize, n: usize) {
    for p in 0..PARTITIONS {
        let records = (from..from + n)
            .map(|i| Record {
                route: Arc::from("t"),
                topic: TOPIC.into(),
                partition: p,
                key: Some(Bytes::from(format!("k{i}"))),
                value: Bytes::from(format!("{p}:{i}")),
                headers: vec![Header::new("n", i.to_string())],
                timestamp_ms: 1_790_000_000_000 + i as i64,
                dead_letter: None,
            })
            .collect();
        log.append(TOPIC, p, records).await.unwrap();
    }
}

fn consumer(bootstrap: &str, group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .unwrap()
}

/// Receives until `n` records have arrived (or `limit` passes); returns (partition, value).
async fn receive(c: &StreamConsumer, n: usize, limit: Duration) -> Vec<(i32, String)> {
    let deadline = Instant::now() + limit;
    let mut got = Vec::new();
    while got.len() < n && Instant::now() < deadline {
        if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), c.recv()).await {
            got.push((
                m.partition(),
                String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
            ));
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commits_and_resumes_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (bootstrap, log, stop) = serve(dir.path(), 25).await;
    let c = consumer(&bootstrap, "billing");
    c.subscribe(&[TOPIC]).unwrap();
    let first = receive(&c, 100, Duration::from_secs(30)).await;
    assert_eq!(first.len(), 100, "every record, from the earliest");
    let per: BTreeMap<i32, Vec<String>> = first.iter().fold(BTreeMap::new(), |mut m, (p, v)| {
        m.entry(*p).or_default().push(v.clone());
        m
    });
    for (p, values) in &per {
        let expected: Vec<String> = (0..25).map(|i| format!("{p}:{i}")).collect();
        assert_eq!(values, &expected, "partition {p} in offset order");
    }
    c.commit_consumer_state(CommitMode::Sync).unwrap();
    drop(c);
    // Committed offsets are durable: in the store on disk.
    let store = GroupOffsets::open_read_only(dir.path()).unwrap();
    for p in 0..PARTITIONS {
        assert_eq!(
            store.fetch("billing", TOPIC, p).map(|c| c.offset),
            Some(25),
            "partition {p}"
        );
    }

    append(&log, 25, 5).await;
    let c = consumer(&bootstrap, "billing");
    c.subscribe(&[TOPIC]).unwrap();
    let second = receive(&c, 20, Duration::from_secs(30)).await;
    let mut values: Vec<String> = second.iter().map(|(_, v)| v.clone()).collect();
    values.sort();
    let mut expected: Vec<String> = (0..PARTITIONS)
        .flat_map(|p| (25..30).map(move |i| format!("{p}:{i}")))
        .collect();
    expected.sort();
    assert_eq!(
        values, expected,
        "resumed at the committed offsets: only the new records"
    );
    assert!(
        receive(&c, 1, Duration::from_secs(2)).await.is_empty(),
        "nothing more"
    );
    drop(c);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_split_partitions_and_one_takes_over_when_the_other_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let (bootstrap, log, stop) = serve(dir.path(), 10).await;
    let a = consumer(&bootstrap, "split");
    let b = consumer(&bootstrap, "split");
    a.subscribe(&[TOPIC]).unwrap();
    b.subscribe(&[TOPIC]).unwrap();
    // Both receive until the 40 records are split between them.
    let (ra, rb) = tokio::join!(
        receive(&a, 40, Duration::from_secs(20)),
        receive(&b, 40, Duration::from_secs(20))
    );
    let pa: BTreeSet<i32> = ra.iter().map(|(p, _)| *p).collect();
    let pb: BTreeSet<i32> = rb.iter().map(|(p, _)| *p).collect();
    assert_eq!(ra.len() + rb.len(), 40, "each record once between them");
    assert!(
        pa.is_disjoint(&pb),
        "no partition is read by both: {pa:?} {pb:?}"
    );
    assert_eq!(pa.len(), 2, "a has two partitions: {pa:?}");
    assert_eq!(pb.len(), 2, "b has two partitions: {pb:?}");
    a.commit_consumer_state(CommitMode::Sync).unwrap();
    b.commit_consumer_state(CommitMode::Sync).unwrap();

    // b leaves; a takes over all four partitions and reads what is new in each.
    b.unsubscribe();
    drop(b);
    append(&log, 10, 3).await;
    // a may see its own partitions' new records twice: read before the rebalance and not yet
    // committed, they are delivered again from the committed offset (at-least-once).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after: BTreeSet<(i32, String)> = BTreeSet::new();
    while after.len() < 12 && Instant::now() < deadline {
        after.extend(receive(&a, 1, Duration::from_millis(500)).await);
    }
    let partitions: BTreeSet<i32> = after.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        partitions,
        (0..PARTITIONS as i32).collect(),
        "a now reads every partition"
    );
    let values: BTreeSet<String> = after.iter().map(|(_, v)| v.clone()).collect();
    let expected: BTreeSet<String> = (0..PARTITIONS)
        .flat_map(|p| (10..13).map(move |i| format!("{p}:{i}")))
        .collect();
    assert_eq!(
        values, expected,
        "b's partitions resume from b's committed offsets"
    );
    drop(a);
    stop.cancel();
}
