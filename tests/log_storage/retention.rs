//! Retention by time and by size: whole old segments deleted, the newest kept within the limit.

use crate::helpers::{
    append, await_unlocked, build_log, copy_dir, file_len, numbered, options, read_all, scratch,
    seg_index, seg_log, seg_timeindex, segment_bases, Rec, TOPIC,
};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tributary::config::FsyncPolicy;
use tributary::log::partition::PartitionShared;
use tributary::log::{Log, LogError, LogReader, Offset};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Waits until `p` starts at `start`, then a few retention rounds more, and checks it still does.
async fn await_start(p: &PartitionShared, start: u64, check: Duration) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while p.start_offset() != Offset(start) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "start stays {} (want {start})",
            p.start_offset()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tokio::time::sleep(check * 4).await;
    assert_eq!(p.start_offset(), Offset(start));
}

/// Segment bases with their `.log` file sizes.
fn segment_sizes(dir: &Path) -> Vec<(u64, u64)> {
    segment_bases(dir)
        .into_iter()
        .map(|b| (b, file_len(&seg_log(dir, b))))
        .collect()
}

#[tokio::test]
async fn retention_by_time_deletes_whole_old_segments() {
    let root = scratch();
    let dir = root.path();
    let now = now_ms();
    let hour = 3_600_000;
    // 4 KiB segments; records 3 hours old, then 10 minutes old, then one old again (in a
    // segment that also holds new records), then new ones.
    let log = Log::open(options(dir, 4096, FsyncPolicy::Never))
        .await
        .unwrap();
    let mut model = Vec::new();
    for i in 0..220u64 {
        let age = match i {
            0..=99 => 3 * hour,
            100..=149 => hour / 6,
            150 => 5 * hour,
            _ => 0,
        };
        let mut r = Rec::small(i);
        r.ts = now - age;
        append(&log, std::slice::from_ref(&r)).await;
        model.push(r);
    }
    log.close().await.unwrap();
    let sizes = segment_sizes(dir);
    assert!(sizes.len() >= 5, "{sizes:?}");
    // Expected, from the model: leading sealed segments whose newest record is over an hour
    // old go; the first younger one stops it.
    let mut expected_start = 0;
    for (i, (base, _)) in sizes.iter().enumerate().take(sizes.len() - 1) {
        let end = sizes[i + 1].0;
        let newest = model[*base as usize..end as usize]
            .iter()
            .map(|r| r.ts)
            .max()
            .unwrap();
        if newest >= now - hour {
            break;
        }
        expected_start = end;
    }
    assert!(
        expected_start > 0 && expected_start < 100,
        "{expected_start}"
    );

    let check = Duration::from_millis(10);
    let mut opts = options(dir, 4096, FsyncPolicy::Never);
    opts.retention_time = Some(Duration::from_secs(3600));
    opts.retention_check = check;
    let log = Log::open(opts.clone()).await.unwrap();
    let p = log.partition(TOPIC, 0).unwrap();
    await_start(&p, expected_start, check).await;
    // Whole segments went, with their indexes; the rest is untouched.
    let left: Vec<_> = sizes
        .iter()
        .copied()
        .filter(|(b, _)| *b >= expected_start)
        .collect();
    assert_eq!(segment_sizes(dir), left);
    for (b, _) in sizes.iter().filter(|(b, _)| *b < expected_start) {
        assert!(!seg_index(dir, *b).exists() && !seg_timeindex(dir, *b).exists());
    }
    assert_eq!(
        read_all(&p),
        numbered(&model[expected_start as usize..], expected_start)
    );
    match p.read(Offset(expected_start - 1), 100) {
        Err(LogError::OffsetOutOfRange { start, end, .. }) => {
            assert_eq!((start, end), (Offset(expected_start), Offset(220)))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        p.offset_for_time(i64::MIN).unwrap(),
        Some(Offset(expected_start))
    );
    assert_eq!(append(&log, &[Rec::small(1)]).await, 220..221);
    model.push(Rec::small(1));
    log.close().await.unwrap();

    // Reopened (clean, and unclean with the indexes gone): the same start, indexes rebuilt.
    let log = Log::open(options(dir, 4096, FsyncPolicy::Never))
        .await
        .unwrap();
    assert_eq!(
        log.partition(TOPIC, 0).unwrap().start_offset(),
        Offset(expected_start)
    );
    drop(log);
    await_unlocked(&dir).await;
    let _ = std::fs::remove_file(dir.join("@clean"));
    for (b, _) in &left {
        std::fs::remove_file(seg_index(dir, *b)).unwrap();
    }
    let log = Log::open(options(dir, 4096, FsyncPolicy::Never))
        .await
        .unwrap();
    let p = log.partition(TOPIC, 0).unwrap();
    assert_eq!(p.start_offset(), Offset(expected_start));
    assert_eq!(
        read_all(&p),
        numbered(&model[expected_start as usize..], expected_start)
    );
    for (b, _) in &left {
        assert!(seg_index(dir, *b).exists(), "index of {b} rebuilt");
    }
    let ro = LogReader::open(dir).unwrap().partition(TOPIC, 0).unwrap();
    assert_eq!(ro.start_offset(), Offset(expected_start));
    assert_eq!(
        read_all(&ro),
        numbered(&model[expected_start as usize..], expected_start)
    );
    log.close().await.unwrap();

    // Everything old: every sealed segment goes, never the active one.
    opts.retention_time = Some(Duration::from_millis(1));
    let log = Log::open(opts).await.unwrap();
    let p = log.partition(TOPIC, 0).unwrap();
    let active = *segment_bases(dir).last().unwrap();
    await_start(&p, active, check).await;
    assert_eq!(segment_bases(dir), vec![active]);
    assert_eq!(read_all(&p), numbered(&model[active as usize..], active));
    assert_eq!(p.end_offset(), Offset(221));
    log.close().await.unwrap();
}

#[tokio::test]
async fn retention_by_size_keeps_the_newest_segments_within_the_limit() {
    let root = scratch();
    let pristine = root.path().join("pristine");
    let model = build_log(&pristine, 4096, 200, 0).await;
    let sizes = segment_sizes(&pristine);
    assert!(sizes.len() >= 5, "{sizes:?}");
    let total: u64 = sizes.iter().map(|(_, s)| s).sum();
    let n = sizes.len();
    // Limits around the size of the last three segments, tiny, and the whole log.
    let last3: u64 = sizes[n - 3..].iter().map(|(_, s)| s).sum();
    for limit in [last3, last3 + 1, last3 - 1, 1, total, total + 1] {
        // Kafka's rule, computed here: delete the oldest sealed segment while what is left
        // without it is still at least the limit.
        let mut left = total;
        let mut start_index = 0;
        while start_index < n - 1 && left - sizes[start_index].1 >= limit {
            left -= sizes[start_index].1;
            start_index += 1;
        }
        let expected_start = sizes[start_index].0;
        let dir = root.path().join(format!("limit-{limit}"));
        copy_dir(&pristine, &dir);
        let check = Duration::from_millis(10);
        let mut opts = options(&dir, 4096, FsyncPolicy::Never);
        opts.retention_bytes = Some(limit);
        opts.retention_check = check;
        let log = Log::open(opts).await.unwrap();
        let p = log.partition(TOPIC, 0).unwrap();
        await_start(&p, expected_start, check).await;
        assert_eq!(
            segment_sizes(&dir),
            sizes[start_index..].to_vec(),
            "limit {limit}"
        );
        assert_eq!(p.size_bytes(), left, "limit {limit}");
        assert_eq!(
            read_all(&p),
            numbered(&model[expected_start as usize..], expected_start)
        );
        log.close().await.unwrap();
    }
}
