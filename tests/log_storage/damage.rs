//! Damaged sealed segments: reported with their path on read, never served, never a panic;
//! and random damage (proptest) never serves a wrong record.

use crate::helpers::{
    append, bounds, build_log, check_recovery, copy_dir, file_len, flip, index_entries,
    is_corrupt_in, numbered, options, read_from, read_n, read_one, scratch, seg_index, seg_log,
    seg_timeindex, segment_bases, snapshot, truncate, Rec, TOPIC,
};
use proptest::prelude::*;
use std::path::Path;
use std::sync::Arc;
use tributary::config::FsyncPolicy;
use tributary::log::batch;
use tributary::log::partition::PartitionShared;
use tributary::log::{Log, LogError, LogReader, Offset};

#[tokio::test]
async fn damaged_sealed_segment_is_reported_on_read() {
    // 4 KiB segments: no index entries, so opening scans the sealed segments whole and finds
    // the damage there.
    let root = scratch();
    let pristine = root.path().join("pristine");
    let expected = build_log(&pristine, 4096, 150, 0).await;
    let bases = segment_bases(&pristine);
    assert!(bases.len() >= 4, "{bases:?}");
    let b = bounds(&seg_log(&pristine, bases[1]));
    assert!(b.len() >= 5);
    check_damaged_sealed(
        root.path(),
        &pristine,
        &expected,
        4096,
        bases[1],
        b.len() / 2,
    )
    .await;
}

#[tokio::test]
async fn damaged_sealed_segment_before_its_last_index_entry_is_reported_on_read() {
    // 64 KiB segments with index entries: damage before the last one is not scanned on open
    // (clean or not, a sealed segment is trusted up to its last index entry); reads find it.
    let root = scratch();
    let pristine = root.path().join("pristine");
    let expected = build_log(&pristine, 64 * 1024, 400, 400).await;
    let bases = segment_bases(&pristine);
    assert!(bases.len() >= 3, "{bases:?}");
    let sealed = bases[1];
    let b = bounds(&seg_log(&pristine, sealed));
    let entries = index_entries(&seg_index(&pristine, sealed));
    assert!(entries.len() >= 4, "{entries:?}");
    // The batch an index entry points at, and one between entries.
    let at_entry = b
        .iter()
        .position(|x| x.start == u64::from(entries[1].1))
        .unwrap();
    assert_eq!(b[at_entry].next - 1, sealed + u64::from(entries[1].0));
    let between = at_entry + 2;
    assert!(b[between].end < u64::from(entries[2].1));
    for k in [at_entry, between] {
        check_damaged_sealed(root.path(), &pristine, &expected, 64 * 1024, sealed, k).await;
    }
}

#[tokio::test]
async fn sealed_segment_cut_short_is_reported_on_read() {
    // A sealed segment that lost its tail, even cut exactly at a batch boundary (so every
    // batch left checks out): the log opens, serves what is there, and reports the rest.
    let root = scratch();
    let pristine = root.path().join("pristine");
    let expected = build_log(&pristine, 4096, 150, 0).await;
    let bases = segment_bases(&pristine);
    let (sealed, next) = (bases[1], bases[2]);
    let b = bounds(&seg_log(&pristine, sealed));
    let k = b.len() - 3;
    for (what, cut) in [
        ("at a batch boundary", b[k].start),
        ("inside a batch", b[k].start + 20),
        ("to nothing", 0),
    ] {
        for clean in [true, false] {
            let dir = root.path().join("work");
            let _ = std::fs::remove_dir_all(&dir);
            copy_dir(&pristine, &dir);
            truncate(&seg_log(&dir, sealed), cut);
            if !clean {
                std::fs::remove_file(dir.join("@clean")).unwrap();
            }
            let what = format!("cut {what} (clean: {clean})");
            let reader = LogReader::open(&dir).unwrap().partition(TOPIC, 0).unwrap();
            let log = Log::open(options(&dir, 4096, FsyncPolicy::Never))
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let p = log.partition(TOPIC, 0).unwrap();
            let lost = if cut == 0 { sealed } else { b[k].base };
            for p in [&*p, &reader] {
                assert_eq!(p.end_offset(), Offset(expected.len() as u64), "{what}");
                for o in [lost, next - 1] {
                    let err = p.read(Offset(o), 100).unwrap_err();
                    assert!(is_corrupt_in(&err, &seg_log(&dir, sealed)), "{what}: {err}");
                }
                if lost > 0 {
                    assert_eq!(
                        read_one(p, lost - 1).unwrap(),
                        expected[lost as usize - 1],
                        "{what}"
                    );
                }
                assert_eq!(
                    read_from(p, next, 100).unwrap(),
                    numbered(&expected[next as usize..], next),
                    "{what}"
                );
            }
            assert_eq!(
                file_len(&seg_log(&dir, sealed)),
                cut,
                "{what}: never cut further"
            );
            let end = expected.len() as u64;
            assert_eq!(append(&log, &[Rec::small(3)]).await, end..end + 1, "{what}");
            drop(p);
            log.close().await.unwrap();
        }
    }
}

/// Damages batch `k` of the sealed segment `sealed` in several ways and checks that the log
/// (clean and unclean restarts) and the read-only reader open it, report that batch on read
/// naming the file, serve everything else exactly or report it, and keep taking appends.
async fn check_damaged_sealed(
    root: &Path,
    pristine: &Path,
    expected: &[Rec],
    segment_bytes: u64,
    sealed: u64,
    k: usize,
) {
    let bases = segment_bases(pristine);
    let later = bases[bases.iter().position(|b| *b == sealed).unwrap() + 1];
    let b = bounds(&seg_log(pristine, sealed));
    let damaged = b[k];
    let end = expected.len() as u64;
    // (what, position in the file, mask)
    let cases = [
        ("record byte", damaged.start + 70, 0x01u8),
        ("last byte", damaged.end - 1, 0x80),
        ("crc", damaged.start + 18, 0x01),
        ("length", damaged.start + 11, 0x04),
        ("length, high byte", damaged.start + 8, 0x01),
        ("magic", damaged.start + 16, 0x03),
        ("base offset", damaged.start + 7, 0x01),
        ("base offset, high byte", damaged.start + 2, 0x01),
        ("last offset delta", damaged.start + 26, 0x01),
    ];
    for (what, position, mask) in cases {
        for mode in ["clean", "unclean", "read-only"] {
            let dir = root.join("work");
            let _ = std::fs::remove_dir_all(&dir);
            copy_dir(pristine, &dir);
            flip(&seg_log(&dir, sealed), position, mask);
            let what = format!("batch {k} of segment {sealed}: {what} ({mode})");
            if mode == "unclean" {
                std::fs::remove_file(dir.join("@clean")).unwrap();
            }
            let before = snapshot(&dir);
            let mut log = None;
            let p: Arc<PartitionShared> = if mode == "read-only" {
                Arc::new(LogReader::open(&dir).unwrap().partition(TOPIC, 0).unwrap())
            } else {
                let l = Log::open(options(&dir, segment_bytes, FsyncPolicy::Never))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{what}: a damaged sealed segment must not stop the log: {e}")
                    });
                let p = l.partition(TOPIC, 0).unwrap();
                log = Some(l);
                p
            };
            let file = seg_log(&dir, sealed);
            // A sealed segment is never cut.
            assert_eq!(file_len(&file), b.last().unwrap().end, "{what}");
            assert_eq!(p.end_offset(), Offset(end), "{what}");
            // Every offset of the damaged batch is reported, naming the file.
            for o in damaged.base..damaged.next {
                let err = p.read(Offset(o), 1).unwrap_err();
                assert!(is_corrupt_in(&err, &file), "{what}: offset {o}: {err}");
            }
            // Reading through it from the start stops with the same report.
            let err = read_from(&p, 0, 1).unwrap_err();
            assert!(is_corrupt_in(&err, &file), "{what}: {err}");
            // Everything before it reads back exactly, batch by batch.
            assert_eq!(
                read_n(&p, 0, damaged.base).unwrap(),
                numbered(&expected[..damaged.base as usize], 0),
                "{what}"
            );
            // The batches after it in the same segment read back exactly, or are reported: never
            // wrong records.
            for x in &b[k + 1..] {
                match read_n(&p, x.base, x.next - x.base) {
                    Ok(recs) => assert_eq!(
                        recs,
                        numbered(&expected[x.base as usize..x.next as usize], x.base),
                        "{what}"
                    ),
                    Err(e) => assert!(is_corrupt_in(&e, &file), "{what}: offset {}: {e}", x.base),
                }
            }
            // Later segments read back exactly.
            assert_eq!(
                read_from(&p, later, 100).unwrap(),
                numbered(&expected[later as usize..], later),
                "{what}"
            );
            drop(p);
            if let Some(log) = log {
                // The log keeps taking appends at its end.
                assert_eq!(append(&log, &[Rec::small(7)]).await, end..end + 1, "{what}");
                log.close().await.unwrap();
            } else {
                assert!(snapshot(&dir) == before, "{what}: the reader changed files");
            }
        }
    }
}

#[tokio::test]
async fn base_offset_of_the_last_indexed_batch_is_checked_on_open() {
    // The base offset is outside the CRC. When the last index entry's batch is the last batch
    // of the segment, a clean open scans only that batch: its offsets must still be checked,
    // or the log would go on at a wrong offset (duplicates or a gap).
    let root = scratch();
    let pristine = root.path().join("pristine");
    let log = Log::open(options(&pristine, 1 << 20, FsyncPolicy::Never))
        .await
        .unwrap();
    let mut expected = Vec::new();
    let mut i = 0u64;
    // 1 KiB batches until the last batch is the one the last index entry points at.
    loop {
        let r = Rec {
            key: None,
            value: vec![i as u8; 1000],
            headers: vec![],
            ts: i as i64,
        };
        append(&log, std::slice::from_ref(&r)).await;
        expected.push(r);
        i += 1;
        let entries = index_entries(&seg_index(&pristine, 0));
        let b = bounds(&seg_log(&pristine, 0));
        if i > 8
            && entries
                .last()
                .is_some_and(|e| u64::from(e.1) == b.last().unwrap().start)
        {
            break;
        }
    }
    log.close().await.unwrap();
    let b = bounds(&seg_log(&pristine, 0));
    let last = *b.last().unwrap();
    for (byte, mask) in [(7u64, 0x01u8), (7, 0x04), (6, 0x01), (0, 0x80), (3, 0x10)] {
        for clean in [true, false] {
            let dir = root.path().join("work");
            let _ = std::fs::remove_dir_all(&dir);
            copy_dir(&pristine, &dir);
            flip(&seg_log(&dir, 0), last.start + byte, mask);
            if !clean {
                std::fs::remove_file(dir.join("@clean")).unwrap();
            }
            let what = format!("base offset byte {byte} ^ {mask:#04x} (clean: {clean})");
            check_recovery(&dir, 0, last.start, last.base, &expected, &what).await;
        }
    }
    // And as the last batch of a sealed segment: it must not stop the log.
    let dir = root.path().join("sealed");
    copy_dir(&pristine, &dir);
    {
        let log = Log::open(options(&dir, 1 << 20, FsyncPolicy::Never))
            .await
            .unwrap();
        // A batch too big for the segment's room rolls a new one.
        let big = Rec {
            key: None,
            value: vec![1; 1 << 20],
            headers: vec![],
            ts: 0,
        };
        let n = expected.len() as u64;
        assert_eq!(append(&log, std::slice::from_ref(&big)).await, n..n + 1);
        expected.push(big);
        log.close().await.unwrap();
    }
    assert_eq!(segment_bases(&dir), vec![0, expected.len() as u64 - 1]);
    flip(&seg_log(&dir, 0), last.start + 7, 0x01);
    let log = Log::open(options(&dir, 1 << 20, FsyncPolicy::Never))
        .await
        .unwrap();
    let p = log.partition(TOPIC, 0).unwrap();
    assert_eq!(p.end_offset(), Offset(expected.len() as u64));
    let err = p.read(Offset(last.base), 1).unwrap_err();
    assert!(is_corrupt_in(&err, &seg_log(&dir, 0)), "{err}");
    assert_eq!(
        read_from(&p, 0, 1).unwrap_err().to_string(),
        err.to_string()
    );
    let n = expected.len() as u64;
    assert_eq!(read_one(&p, n - 1).unwrap(), expected[n as usize - 1]);
    assert_eq!(append(&log, &[Rec::small(1)]).await, n..n + 1);
    log.close().await.unwrap();
}

#[derive(Debug, Clone)]
enum Damage {
    /// XOR `mask` into a byte of a batch: of its header, or anywhere in it.
    Batch {
        segment: prop::sample::Index,
        batch: prop::sample::Index,
        header: bool,
        byte: prop::sample::Index,
        mask: u8,
    },
    /// XOR `mask` into a byte of an index file.
    Index {
        segment: prop::sample::Index,
        time: bool,
        byte: prop::sample::Index,
        mask: u8,
    },
    /// Cut a segment short.
    Truncate {
        segment: prop::sample::Index,
        at: prop::sample::Index,
    },
}

fn damage_strategy() -> impl Strategy<Value = Damage> {
    use prop::sample::Index;
    prop_oneof![
        6 => (any::<Index>(), any::<Index>(), any::<bool>(), any::<Index>(), 1..=255u8)
            .prop_map(|(segment, batch, header, byte, mask)| Damage::Batch { segment, batch, header, byte, mask }),
        2 => (any::<Index>(), any::<bool>(), any::<Index>(), 1..=255u8)
            .prop_map(|(segment, time, byte, mask)| Damage::Index { segment, time, byte, mask }),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(segment, at)| Damage::Truncate { segment, at }),
    ]
}

/// Applies `damage` to the log in `dir`; returns the damaged segment's base.
fn apply(dir: &Path, damage: &Damage) -> u64 {
    let bases = segment_bases(dir);
    match damage {
        Damage::Batch {
            segment,
            batch,
            header,
            byte,
            mask,
        } => {
            let base = *segment.get(&bases);
            let path = seg_log(dir, base);
            // Bounds of the file as it is (earlier damage may have cut it): walk what is valid.
            let bytes = std::fs::read(&path).unwrap();
            let mut starts = vec![0usize];
            for (h, _) in batch::batches(&bytes).map_while(Result::ok) {
                starts.push(starts.last().unwrap() + h.total_len());
            }
            if bytes.is_empty() {
                return base;
            }
            let i = batch.index(starts.len());
            let start = starts[i].min(bytes.len() - 1);
            let end = starts.get(i + 1).copied().unwrap_or(bytes.len());
            let within = if *header {
                byte.index(61)
            } else {
                byte.index((end - start).max(1))
            };
            flip(&path, (start + within).min(bytes.len() - 1) as u64, *mask);
            base
        }
        Damage::Index {
            segment,
            time,
            byte,
            mask,
        } => {
            let base = *segment.get(&bases);
            let path = if *time {
                seg_timeindex(dir, base)
            } else {
                seg_index(dir, base)
            };
            let len = file_len(&path);
            if len > 0 {
                flip(&path, byte.index(len as usize) as u64, *mask);
            }
            base
        }
        Damage::Truncate { segment, at } => {
            let base = *segment.get(&bases);
            let path = seg_log(dir, base);
            truncate(&path, at.index(file_len(&path) as usize + 1) as u64);
            base
        }
    }
}

/// Reads every offset of `p` one by one, and walks it in long reads: each record served must
/// be the one appended at its offset; anything else must be a `Corrupt` error naming a segment
/// file.
fn check_never_wrong(p: &PartitionShared, dir: &Path, expected: &[Rec], what: &str) {
    let (start, end) = (p.start_offset().0, p.end_offset().0);
    assert!(end <= expected.len() as u64, "{what}: end {end}");
    let check = |o: u64, max_bytes: usize| -> Option<u64> {
        match p.read(Offset(o), max_bytes) {
            Ok(bytes) => {
                assert!(
                    !bytes.is_empty(),
                    "{what}: offset {o} below the end reads nothing"
                );
                let mut next: Option<i64> = None;
                for item in batch::batches(&bytes) {
                    let (h, whole) =
                        item.unwrap_or_else(|e| panic!("{what}: served a bad batch at {o}: {e}"));
                    match next {
                        Some(n) => {
                            assert_eq!(h.base_offset, n, "{what}: served batches do not follow on")
                        }
                        None => assert!(
                            h.base_offset as u64 <= o && o <= h.last_offset() as u64,
                            "{what}: read at {o} got {h:?}"
                        ),
                    }
                    next = Some(h.next_offset());
                    let decoded = batch::decode(whole).unwrap_or_else(|e| panic!("{what}: {e}"));
                    for r in &decoded.records {
                        let x = r.offset as usize;
                        assert!(x < expected.len(), "{what}: offset {x} was never written");
                        assert_eq!(
                            Rec::from_decoded(r),
                            expected[x],
                            "{what}: wrong record at {x}"
                        );
                    }
                }
                next.map(|n| n as u64)
            }
            Err(e) => {
                let ok = matches!(&e, LogError::Corrupt { path, .. } if path.starts_with(dir) && path.extension() == Some("log".as_ref()));
                assert!(ok, "{what}: offset {o}: {e}");
                None
            }
        }
    };
    for o in start..end {
        check(o, 1);
    }
    let mut o = start;
    while o < end {
        o = check(o, 4096).unwrap_or(o + 1);
    }
    // Time lookups never fail but on damage, and never point past the end.
    for ts in [i64::MIN, 0, 1_700_000_000_000, 1_700_000_000_500, i64::MAX] {
        match p.offset_for_time(ts) {
            Ok(Some(o)) => assert!(o.0 < end, "{what}"),
            Ok(None) => {}
            Err(e) => assert!(matches!(e, LogError::Corrupt { .. }), "{what}: {e}"),
        }
    }
}

#[test]
fn random_damage_never_serves_a_wrong_record() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // One pristine log for every case: 16 KiB segments with index entries.
    let fixture = scratch();
    let pristine = fixture.path().join("pristine");
    let expected = rt.block_on(build_log(&pristine, 16 * 1024, 160, 150));
    assert!(segment_bases(&pristine).len() >= 3);
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    let cases = (
        prop::collection::vec(damage_strategy(), 1..4),
        any::<bool>(),
    );
    let result = runner.run(&cases, |(damages, clean)| {
        let root = scratch();
        rt.block_on(async {
            let dir = root.path().join("work");
            copy_dir(&pristine, &dir);
            if !clean {
                std::fs::remove_file(dir.join("@clean")).unwrap();
            }
            let mut damaged = Vec::new();
            for d in &damages {
                damaged.push(apply(&dir, d));
            }
            let what = format!("{damages:?} (clean: {clean})");
            let ro = LogReader::open(&dir).unwrap().partition(TOPIC, 0).unwrap();
            check_never_wrong(&ro, &dir, &expected, &format!("read-only: {what}"));
            drop(ro);
            let log = Log::open(options(&dir, 16 * 1024, FsyncPolicy::Never))
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let p = log.partition(TOPIC, 0).unwrap();
            check_never_wrong(&p, &dir, &expected, &what);
            // Only damage in the active segment can shorten the log.
            let active = *segment_bases(&dir).last().unwrap();
            if !damaged.contains(&active) {
                assert_eq!(p.end_offset(), Offset(expected.len() as u64), "{what}");
            }
            let end = p.end_offset().0;
            assert_eq!(append(&log, &[Rec::small(5)]).await, end..end + 1, "{what}");
            assert_eq!(read_one(&p, end).unwrap(), Rec::small(5), "{what}");
            log.close().await.unwrap();
        });
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
