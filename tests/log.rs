//! The embedded log end to end: append, durability, read back, restart.

use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tributary::config::{FsyncPolicy, TopicsConfig};
use tributary::log::batch;
use tributary::log::{Log, LogOptions, LogReader, Offset};
use tributary::record::{Header, Record};

fn options(dir: &std::path::Path, fsync: FsyncPolicy) -> LogOptions {
    LogOptions {
        dir: dir.to_path_buf(),
        segment_bytes: 16 * 1024,
        fsync,
        fsync_interval: Duration::from_millis(2),
        retention_time: None,
        retention_bytes: None,
        retention_check: Duration::from_secs(3600),
        topics: TopicsConfig::default(),
    }
}

fn record(i: u64) -> Record {
    Record {
        route: Arc::from("test"),
        topic: "t".into(),
        partition: 0,
        key: Some(Bytes::from(format!("k{i}"))),
        value: Bytes::from(format!("value-{i}-{}", "x".repeat((i % 50) as usize))),
        headers: vec![Header::new("n", i.to_string())],
        timestamp_ms: 1_700_000_000_000 + i as i64,
        dead_letter: None,
    }
}

/// Every record of a partition from `from`, decoded.
fn read_all(
    p: &tributary::log::partition::PartitionShared,
    from: u64,
) -> Vec<batch::DecodedRecord> {
    p.records(Offset(from))
        .read_bytes(64 * 1024)
        .collect::<Result<_, _>>()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_read_back_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval,
        FsyncPolicy::Never,
    ] {
        let _ = std::fs::remove_dir_all(dir.path());
        let log = Arc::new(Log::open(options(dir.path(), fsync)).await.unwrap());
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..250u64 {
                    let n = w * 1000 + i;
                    let r = log
                        .append("t", (w % 2) as u32, vec![record(n)])
                        .await
                        .unwrap();
                    assert_eq!(r.end.0, r.start.0 + 1);
                    got.push((r.start, n));
                }
                got
            }));
        }
        let mut written = Vec::new();
        for t in tasks {
            written.extend(t.await.unwrap());
        }
        let p0 = log.partition("t", 0).unwrap();
        assert_eq!(p0.end_offset(), Offset(500), "{fsync:?}");
        let log = Arc::into_inner(log).unwrap();
        log.close().await.unwrap();

        // Reopened by a writer (clean shutdown) and read-only: the same records.
        let log = Log::open(options(dir.path(), fsync)).await.unwrap();
        for p in 0..2u32 {
            let part = log.partition("t", p).unwrap();
            let records = read_all(&part, 0);
            assert_eq!(records.len(), 500);
            for (i, r) in records.iter().enumerate() {
                assert_eq!(r.offset, i as i64);
            }
            // Every append's offset holds what was appended.
            for (offset, n) in written.iter().filter(|(_, n)| (n / 1000) % 2 == p as u64) {
                let r = &records[offset.0 as usize];
                let expected = record(*n);
                assert_eq!(r.key.as_deref(), expected.key.as_deref());
                assert_eq!(r.value.as_deref(), Some(&expected.value[..]));
                assert_eq!(r.timestamp_ms, expected.timestamp_ms);
                assert_eq!(r.headers[0].key, "n");
            }
            let ro = LogReader::open(dir.path())
                .unwrap()
                .partition("t", p)
                .unwrap();
            assert_eq!(read_all(&ro, 0).len(), 500);
        }
        let segments = std::fs::read_dir(dir.path().join("t/0"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("log".as_ref()))
            .count();
        assert!(segments >= 3, "segments rolled: {segments}");
        log.close().await.unwrap();
    }
}

#[tokio::test]
async fn second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(options(dir.path(), FsyncPolicy::Always))
        .await
        .unwrap();
    let err = Log::open(options(dir.path(), FsyncPolicy::Always))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("another process is writing to this log"),
        "{err}"
    );
    log.close().await.unwrap();
}

#[tokio::test]
async fn produced_batches_get_offsets_and_no_leader_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let log = Log::open(options(dir.path(), FsyncPolicy::Always))
        .await
        .unwrap();
    log.append("t", 0, vec![record(0), record(1)])
        .await
        .unwrap();
    // A producer's batch: base offset 0 and its own leader epoch, both outside the CRC.
    let mut produced = Vec::new();
    batch::encode(&mut produced, 0, [record(2), record(3), record(4)].iter()).unwrap();
    produced[12..16].copy_from_slice(&7i32.to_be_bytes());
    let range = log
        .append_batches("t", 0, Bytes::from(produced.clone()))
        .await
        .unwrap();
    assert_eq!(range, Offset(2)..Offset(5));
    let stored = log
        .partition("t", 0)
        .unwrap()
        .batches(Offset(2))
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(stored.header.base_offset, 2);
    assert_eq!(stored.header.partition_leader_epoch, -1);
    assert_eq!(stored.bytes[16..], produced[16..], "the rest byte for byte");
    let values: Vec<_> = stored
        .decode()
        .unwrap()
        .records
        .into_iter()
        .map(|r| (r.offset, r.value.unwrap()))
        .collect();
    assert_eq!(
        values,
        [
            (2, record(2).value),
            (3, record(3).value),
            (4, record(4).value)
        ]
    );
    log.close().await.unwrap();
}
