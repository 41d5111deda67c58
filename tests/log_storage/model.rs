//! Random appends and reads (proptest) checked against a model of what was appended.

use crate::helpers::{
    await_unlocked, bounds, numbered, options, read_all, scratch, seg_log, segment_bases, Rec,
    TOPIC,
};
use proptest::prelude::*;
use tributary::config::FsyncPolicy;
use tributary::log::batch;
use tributary::log::partition::PartitionShared;
use tributary::log::{Log, LogReader, Offset};

#[derive(Debug, Clone)]
enum Op {
    Append(Vec<Rec>),
    Read {
        at: prop::sample::Index,
        max_bytes: usize,
    },
    Time(i64),
    Reopen {
        clean: bool,
    },
    ReadOnly,
}

fn rec_strategy() -> impl Strategy<Value = Rec> {
    let bytes = |max| prop::collection::vec(any::<u8>(), 0..max);
    (
        prop::option::of(bytes(16)),
        prop_oneof![4 => bytes(200), 1 => bytes(3000)],
        prop::collection::vec(("[a-zé]{0,6}", bytes(10)), 0..4),
        // Few distinct, unordered timestamps: ties and going back in time.
        0..300i64,
    )
        .prop_map(|(key, value, headers, ts)| Rec {
            key,
            value,
            headers,
            ts,
        })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => prop::collection::vec(rec_strategy(), 0..6).prop_map(Op::Append),
        3 => (any::<prop::sample::Index>(), prop_oneof![Just(0usize), 1..2000usize, Just(1 << 20)])
            .prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        2 => (-5..310i64).prop_map(Op::Time),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
        1 => Just(Op::ReadOnly),
    ]
}

/// Checks a read at `offset` against the model: whole valid batches, starting with the one
/// that holds `offset`, no more than `max_bytes` unless one batch is more, records exact.
fn check_read(p: &PartitionShared, model: &[Rec], offset: u64, max_bytes: usize) {
    let bytes = p.read(Offset(offset), max_bytes).unwrap();
    if offset == model.len() as u64 {
        assert!(bytes.is_empty());
        return;
    }
    let mut next = None;
    let mut first_len = 0;
    for item in batch::batches(&bytes) {
        let (h, whole) = item.unwrap();
        match next {
            None => {
                assert!(h.base_offset as u64 <= offset && offset <= h.last_offset() as u64);
                first_len = whole.len();
            }
            Some(n) => assert_eq!(h.base_offset, n),
        }
        next = Some(h.next_offset());
        for r in batch::decode(whole).unwrap().records {
            assert_eq!(
                Rec::from_decoded(&r),
                model[r.offset as usize],
                "offset {}",
                r.offset
            );
        }
    }
    assert!(first_len > 0);
    assert!(
        bytes.len() <= max_bytes.max(first_len),
        "{} bytes for max {max_bytes}",
        bytes.len()
    );
}

fn check_time(p: &PartitionShared, model: &[Rec], ts: i64) {
    let want = model
        .iter()
        .position(|r| r.ts >= ts)
        .map(|i| Offset(i as u64));
    assert_eq!(p.offset_for_time(ts).unwrap(), want, "time {ts}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn random_appends_and_reads_match_a_model(
        segment_bytes in prop_oneof![Just(1024u64), Just(4096), Just(16 * 1024)],
        fsync in prop_oneof![Just(FsyncPolicy::Always), Just(FsyncPolicy::Interval), Just(FsyncPolicy::Never)],
        ops in prop::collection::vec(op_strategy(), 1..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let root = scratch();
        let dir = root.path();
        rt.block_on(async {
            let mut log = Log::open(options(dir, segment_bytes, fsync)).await.unwrap();
            let mut model: Vec<Rec> = Vec::new();
            for op in &ops {
                match op {
                    Op::Append(recs) => {
                        let n = model.len() as u64;
                        let records = recs.iter().map(|r| r.record(TOPIC, 0)).collect();
                        let r = log.append(TOPIC, 0, records).await.unwrap();
                        assert_eq!(r, Offset(n)..Offset(n + recs.len() as u64));
                        model.extend(recs.iter().cloned());
                        if let Some(p) = log.partition(TOPIC, 0) {
                            // Readable as soon as the append resolves.
                            assert_eq!(p.end_offset(), Offset(model.len() as u64));
                        }
                    }
                    Op::Read { at, max_bytes } => {
                        if let Some(p) = log.partition(TOPIC, 0) {
                            check_read(&p, &model, at.index(model.len() + 1) as u64, *max_bytes);
                        }
                    }
                    Op::Time(ts) => {
                        if let Some(p) = log.partition(TOPIC, 0) {
                            check_time(&p, &model, *ts);
                        }
                    }
                    Op::Reopen { clean } => {
                        if *clean {
                            log.close().await.unwrap();
                        } else {
                            drop(log);
                            await_unlocked(&dir).await;
                            let _ = std::fs::remove_file(dir.join("@clean"));
                        }
                        log = Log::open(options(dir, segment_bytes, fsync)).await.unwrap();
                        if let Some(p) = log.partition(TOPIC, 0) {
                            assert_eq!(p.end_offset(), Offset(model.len() as u64));
                        }
                    }
                    Op::ReadOnly => {
                        if let Ok(reader) = LogReader::open(dir) {
                            if let Ok(p) = reader.partition(TOPIC, 0) {
                                assert_eq!(read_all(&p), numbered(&model, 0));
                            }
                        }
                    }
                }
            }
            if let Some(p) = log.partition(TOPIC, 0) {
                assert_eq!(read_all(&p), numbered(&model, 0));
                for ts in [-1, 0, 1, 100, 150, 299, 300] {
                    check_time(&p, &model, ts);
                }
            }
            log.close().await.unwrap();
            // On disk: every segment wholly valid, named by its first offset, following on.
            if !model.is_empty() {
                let mut next = 0;
                for base in segment_bases(dir) {
                    assert_eq!(base, next);
                    for b in bounds(&seg_log(dir, base)) {
                        assert_eq!(b.base, next);
                        next = b.next;
                    }
                }
                assert_eq!(next, model.len() as u64);
                let p = LogReader::open(dir).unwrap().partition(TOPIC, 0).unwrap();
                assert_eq!(read_all(&p), numbered(&model, 0));
                for ts in [-1, 0, 150, 300] {
                    check_time(&p, &model, ts);
                }
            }
        });
    }
}
