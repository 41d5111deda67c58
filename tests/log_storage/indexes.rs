//! The offset and time indexes: rebuilt when missing or damaged, not trusted when their
//! entries lie, and time lookups finding the first record at or after a timestamp.

use crate::helpers::{
    append, await_unlocked, bounds, copy_dir, file_len, index_entries, indexed_fixture, numbered,
    options, read_all, read_from, read_one, scratch, seg_index, seg_log, seg_timeindex,
    segment_bases, snapshot, truncate, DamageFn, Rec, TOPIC,
};
use tributary::config::FsyncPolicy;
use tributary::log::partition::PartitionShared;
use tributary::log::{Log, LogReader, Offset};

#[tokio::test]
async fn missing_or_damaged_index_is_rebuilt() {
    let root = scratch();
    let pristine = root.path().join("pristine");
    // Three 64 KiB segments of ~500-byte batches: each sealed one has index entries.
    let log = Log::open(options(&pristine, 64 * 1024, FsyncPolicy::Never))
        .await
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..400u64 {
        let r = Rec {
            key: None,
            value: vec![(i % 251) as u8; 400 + (i % 100) as usize],
            headers: vec![],
            ts: 10_000 + i as i64 * 10 - (i % 5) as i64 * 13,
        };
        append(&log, std::slice::from_ref(&r)).await;
        expected.push(r);
    }
    log.close().await.unwrap();
    let bases = segment_bases(&pristine);
    assert!(bases.len() >= 3, "{bases:?}");
    let sealed = bases[1];
    let original_index = std::fs::read(seg_index(&pristine, sealed)).unwrap();
    let original_time = std::fs::read(seg_timeindex(&pristine, sealed)).unwrap();
    assert!(original_index.len() >= 8 * 10, "{}", original_index.len());
    assert!(original_time.len() >= 12 * 10, "{}", original_time.len());
    let sealed_bounds = bounds(&seg_log(&pristine, sealed));
    let check_reads = |p: &PartitionShared, what: &str| {
        assert_eq!(read_all(p), numbered(&expected, 0), "{what}");
        // Every offset of the damaged-index segment reads from its own batch.
        for x in &sealed_bounds {
            for o in [x.base, x.next - 1] {
                assert_eq!(
                    read_one(p, o).unwrap(),
                    expected[o as usize],
                    "{what}: offset {o}"
                );
            }
        }
        for ts in [
            i64::MIN,
            9_999,
            10_000,
            10_001,
            11_000,
            12_345,
            13_958,
            13_959,
            13_990,
            13_991,
            20_000,
        ] {
            let want = expected
                .iter()
                .position(|r| r.ts >= ts)
                .map(|i| Offset(i as u64));
            assert_eq!(p.offset_for_time(ts).unwrap(), want, "{what}: time {ts}");
        }
    };

    let damages: Vec<(&str, DamageFn)> = vec![
        (
            "index missing",
            Box::new(move |d| std::fs::remove_file(seg_index(d, sealed)).unwrap()),
        ),
        (
            "time index missing",
            Box::new(move |d| std::fs::remove_file(seg_timeindex(d, sealed)).unwrap()),
        ),
        (
            "both missing",
            Box::new(move |d| {
                std::fs::remove_file(seg_index(d, sealed)).unwrap();
                std::fs::remove_file(seg_timeindex(d, sealed)).unwrap();
            }),
        ),
        (
            "partial index entry",
            Box::new(move |d| {
                let p = seg_index(d, sealed);
                truncate(&p, file_len(&p) - 3)
            }),
        ),
        (
            "partial time entry",
            Box::new(move |d| {
                let p = seg_timeindex(d, sealed);
                truncate(&p, file_len(&p) - 1)
            }),
        ),
        (
            "index of 0xff",
            Box::new(move |d| {
                let p = seg_index(d, sealed);
                std::fs::write(&p, vec![0xff; file_len(&p) as usize]).unwrap()
            }),
        ),
        (
            "entries out of order",
            Box::new(move |d| {
                let p = seg_index(d, sealed);
                let mut bytes = std::fs::read(&p).unwrap();
                bytes[..16].rotate_left(8);
                std::fs::write(&p, bytes).unwrap()
            }),
        ),
        (
            "time entries out of order",
            Box::new(move |d| {
                let p = seg_timeindex(d, sealed);
                let mut bytes = std::fs::read(&p).unwrap();
                bytes[..24].rotate_left(12);
                std::fs::write(&p, bytes).unwrap()
            }),
        ),
        (
            "last entry's position past the log",
            Box::new(move |d| {
                let p = seg_index(d, sealed);
                let mut bytes = std::fs::read(&p).unwrap();
                let n = bytes.len();
                bytes[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
                std::fs::write(&p, bytes).unwrap()
            }),
        ),
    ];

    for (what, damage) in &damages {
        for clean in [true, false] {
            let dir = root.path().join("work");
            let _ = std::fs::remove_dir_all(&dir);
            copy_dir(&pristine, &dir);
            damage(&dir);
            if !clean {
                std::fs::remove_file(dir.join("@clean")).unwrap();
            }
            let what = format!("{what} (clean: {clean})");
            // Read-only: nothing rewritten, reads right all the same.
            let before = snapshot(&dir);
            let ro = LogReader::open(&dir).unwrap().partition(TOPIC, 0).unwrap();
            check_reads(&ro, &what);
            assert_eq!(ro.end_offset(), Offset(400));
            drop(ro);
            assert!(snapshot(&dir) == before, "{what}: the reader changed files");
            // The writer rebuilds the index files, byte for byte as first written.
            let log = Log::open(options(&dir, 64 * 1024, FsyncPolicy::Never))
                .await
                .unwrap();
            let p = log.partition(TOPIC, 0).unwrap();
            check_reads(&p, &what);
            assert_eq!(
                std::fs::read(seg_index(&dir, sealed)).unwrap(),
                original_index,
                "{what}"
            );
            assert_eq!(
                std::fs::read(seg_timeindex(&dir, sealed)).unwrap(),
                original_time,
                "{what}"
            );
            assert_eq!(
                file_len(&seg_log(&dir, sealed)),
                sealed_bounds.last().unwrap().end
            );
            log.close().await.unwrap();
        }
    }
}

#[tokio::test]
async fn index_entries_that_hold_up_but_lie_are_not_trusted() {
    // An index entry pointing at a real batch boundary, but the wrong one (a flipped byte in
    // a position or an offset): reads must still serve the right batches.
    let root = scratch();
    let pristine = root.path().join("pristine");
    let (expected, b) = indexed_fixture(&pristine).await;
    let entries = index_entries(&seg_index(&pristine, 0));
    assert!(entries.len() >= 3);
    let mut cases: Vec<(String, Vec<(u32, u32)>)> = Vec::new();
    // Entry 1's position moved to the batch before its own, and to a non-boundary.
    let (rel, pos) = entries[1];
    let i = b.iter().position(|x| x.start == u64::from(pos)).unwrap();
    assert_eq!(b[i].next - 1, u64::from(rel));
    let mut e = entries.clone();
    e[1].1 = b[i - 1].start as u32;
    cases.push(("position one batch early".into(), e));
    let mut e = entries.clone();
    e[1].1 = b[i].start as u32 + 5;
    cases.push(("position in the middle of a batch".into(), e));
    // Entry 1's offset says a later offset than its batch holds.
    let mut e = entries.clone();
    e[1].0 = rel + 1;
    cases.push(("offset one too high".into(), e));
    for (what, e) in cases {
        for clean in [true, false] {
            let dir = root.path().join("work");
            let _ = std::fs::remove_dir_all(&dir);
            copy_dir(&pristine, &dir);
            let bytes: Vec<u8> = e
                .iter()
                .flat_map(|(r, p)| r.to_be_bytes().into_iter().chain(p.to_be_bytes()))
                .collect();
            std::fs::write(seg_index(&dir, 0), bytes).unwrap();
            if !clean {
                std::fs::remove_file(dir.join("@clean")).unwrap();
            }
            let what = format!("{what} (clean: {clean})");
            let ro = LogReader::open(&dir).unwrap().partition(TOPIC, 0).unwrap();
            let log = Log::open(options(&dir, 1 << 20, FsyncPolicy::Never))
                .await
                .unwrap();
            let p = log.partition(TOPIC, 0).unwrap();
            for part in [&*p, &ro] {
                for o in 0..expected.len() as u64 {
                    let got =
                        read_from(part, o, 1).unwrap_or_else(|e| panic!("{what}: offset {o}: {e}"));
                    assert_eq!(
                        got,
                        numbered(&expected[o as usize..], o),
                        "{what}: offset {o}"
                    );
                }
            }
            log.close().await.unwrap();
        }
    }
}

#[tokio::test]
async fn offset_for_time_finds_the_first_record_at_or_after() {
    let root = scratch();
    let dir = root.path();
    // 8 KiB segments of ~300-byte batches (time index entries in each), timestamps that rise
    // overall but go back within every few records, with ties; multi-record batches.
    let log = Log::open(options(dir, 8 * 1024, FsyncPolicy::Never))
        .await
        .unwrap();
    let mut model = Vec::new();
    for i in 0..150i64 {
        let recs: Vec<Rec> = (0..1 + i % 3)
            .map(|j| Rec {
                key: None,
                value: vec![j as u8; 120],
                headers: vec![],
                ts: 5_000 + i * 10 - (i % 4) * 25 + j * 3,
            })
            .collect();
        append(&log, &recs).await;
        model.extend(recs);
    }
    assert!(segment_bases(dir).len() >= 4);
    assert!(!std::fs::read(seg_timeindex(dir, 0)).unwrap().is_empty());
    let mut queries: Vec<i64> = model
        .iter()
        .flat_map(|r| [r.ts - 1, r.ts, r.ts + 1])
        .collect();
    queries.extend([i64::MIN, 0, i64::MAX]);
    queries.sort_unstable();
    queries.dedup();
    let check = |p: &PartitionShared, what: &str| {
        for &ts in &queries {
            let want = model
                .iter()
                .position(|r| r.ts >= ts)
                .map(|i| Offset(i as u64));
            assert_eq!(p.offset_for_time(ts).unwrap(), want, "{what}: time {ts}");
        }
    };
    check(&log.partition(TOPIC, 0).unwrap(), "live");
    log.close().await.unwrap();
    let log = Log::open(options(dir, 8 * 1024, FsyncPolicy::Never))
        .await
        .unwrap();
    check(&log.partition(TOPIC, 0).unwrap(), "clean restart");
    drop(log);
    await_unlocked(&dir).await;
    let _ = std::fs::remove_file(dir.join("@clean"));
    for base in segment_bases(dir) {
        std::fs::remove_file(seg_timeindex(dir, base)).unwrap();
    }
    let log = Log::open(options(dir, 8 * 1024, FsyncPolicy::Never))
        .await
        .unwrap();
    check(&log.partition(TOPIC, 0).unwrap(), "time indexes rebuilt");
    check(
        &LogReader::open(dir).unwrap().partition(TOPIC, 0).unwrap(),
        "read-only",
    );
    log.close().await.unwrap();
}
