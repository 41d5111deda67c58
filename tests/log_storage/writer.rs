//! The single writer: one at a time (a dropped log holds the lock until its writers stop),
//! and the partition count it persists for each topic winning over the config.

use crate::helpers::{
    append, await_unlocked, bounds, numbered, options, read_all, read_from, read_one, scratch,
    seg_log, segment_bases, topics_config, Rec, TOPIC,
};
use std::collections::BTreeMap;
use std::time::Duration;
use tributary::config::{FsyncPolicy, TopicConfig};
use tributary::log::{Log, LogError, LogReader, Offset};

#[tokio::test]
async fn one_writer_at_a_time() {
    let root = scratch();
    let dir = root.path();
    let log = Log::open(options(dir, 4096, FsyncPolicy::Always))
        .await
        .unwrap();
    append(&log, &[Rec::small(1)]).await;
    for _ in 0..2 {
        match Log::open(options(dir, 4096, FsyncPolicy::Always)).await {
            Err(e @ LogError::Locked { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("another process is writing to this log"),
                    "{msg}"
                );
                assert!(msg.contains(&dir.display().to_string()), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }
    // Readers are welcome while it writes.
    let ro = LogReader::open(dir).unwrap().partition(TOPIC, 0).unwrap();
    assert_eq!(read_all(&ro), numbered(&[Rec::small(1)], 0));
    log.close().await.unwrap();
    // Closed: the next writer gets in, and after it crashes (dropped), the next one too.
    let log = Log::open(options(dir, 4096, FsyncPolicy::Always))
        .await
        .unwrap();
    drop(log);
    await_unlocked(&dir).await;
    let log = Log::open(options(dir, 4096, FsyncPolicy::Always))
        .await
        .unwrap();
    assert_eq!(
        read_all(&log.partition(TOPIC, 0).unwrap()),
        numbered(&[Rec::small(1)], 0)
    );
    log.close().await.unwrap();
}

#[tokio::test]
async fn persisted_partition_count_wins_over_the_config() {
    let root = scratch();
    let dir = root.path();
    let mut opts = options(dir, 4096, FsyncPolicy::Never);
    opts.topics = topics_config(3);
    let log = Log::open(opts.clone()).await.unwrap();
    let r = Rec::small(1);
    log.append("a", 2, vec![r.record("a", 2)]).await.unwrap();
    assert_eq!(
        log.partition_counts(),
        BTreeMap::from([("a".to_string(), 3)])
    );
    log.close().await.unwrap();
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("a/topic.json")).unwrap()).unwrap();
    assert_eq!(meta["partitions"], 3);
    for clean in [true, false] {
        if !clean {
            let _ = std::fs::remove_file(dir.join("@clean"));
        }
        // The config now says 5 by default and 7 for "a": "a" keeps its 3.
        let mut opts = opts.clone();
        opts.topics = topics_config(5);
        opts.topics
            .topics
            .insert("a".into(), TopicConfig { partitions: 7 });
        let log = Log::open(opts).await.unwrap();
        assert_eq!(log.partition_counts()["a"], 3);
        let err = log
            .append("a", 3, vec![r.record("a", 3)])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                LogError::NoSuchPartition {
                    partition: 3,
                    partitions: 3,
                    ..
                }
            ),
            "{err}"
        );
        assert!(log.partition("a", 3).is_none());
        let p = log.partition("a", 2).unwrap();
        assert_eq!(read_from(&p, 0, 100).unwrap(), vec![(0, r.clone())]);
        // A new topic takes the config's count.
        log.append("b", 4, vec![r.record("b", 4)]).await.unwrap();
        assert_eq!(log.partition_counts()["b"], 5);
        log.close().await.unwrap();
        let reader = LogReader::open(dir).unwrap();
        assert_eq!(
            reader.topic_names(),
            &BTreeMap::from([("a".to_string(), 3), ("b".to_string(), 5)])
        );
        assert!(matches!(
            reader.partition("a", 3),
            Err(LogError::NoSuchPartition { partitions: 3, .. })
        ));
        assert!(matches!(
            reader.partition("zz", 0),
            Err(LogError::UnknownTopic(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_log_keeps_the_lock_until_its_writers_stop() {
    // Appends are queued when made; a Log dropped without `close` leaves its writers writing
    // them. No other writer may open the log until they are done: two writers on the same
    // files would overwrite each other's batches, acknowledged ones included. On a real disk,
    // with batches too big to merge many at once, the old writer takes a while to finish.
    let root = tempfile::tempdir().unwrap();
    let dir = root.path();
    let opts = || options(dir, 4 << 20, FsyncPolicy::Always);
    let big = |i: u64| {
        let mut r = Rec::small(i);
        r.value = vec![i as u8; 300_000];
        r
    };
    let log = Log::open(opts()).await.unwrap();
    append(&log, &[big(0)]).await;
    let queued: Vec<_> = (1..60u64)
        .map(|i| log.append(TOPIC, 0, vec![big(i).record(TOPIC, 0)]))
        .collect();
    drop(log);
    // The next writer gets in only once every queued append is written.
    let mut refused = 0;
    let log = loop {
        match Log::open(opts()).await {
            Ok(log) => break log,
            Err(LogError::Locked { .. }) => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(1)).await
            }
            Err(e) => panic!("{e}"),
        }
    };
    let p = log.partition(TOPIC, 0).unwrap();
    assert_eq!(
        p.end_offset(),
        Offset(60),
        "opened after {refused} refusals"
    );
    for (i, f) in queued.into_iter().enumerate() {
        let i = i as u64 + 1;
        assert_eq!(f.await.unwrap(), Offset(i)..Offset(i + 1));
    }
    assert_eq!(append(&log, &[Rec::small(60)]).await, 60..61);
    let mut model: Vec<Rec> = (0..60).map(big).collect();
    model.push(Rec::small(60));
    for (o, r) in model.iter().enumerate() {
        assert_eq!(&read_one(&p, o as u64).unwrap(), r, "offset {o}");
    }
    drop(p);
    log.close().await.unwrap();
    for base in segment_bases(dir) {
        bounds(&seg_log(dir, base));
    }
}
