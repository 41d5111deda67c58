//! Following the tail: subscriptions see every durable append, concurrent appends are readable
//! once acknowledged, and readers never run ahead of the end offset.

use crate::helpers::{
    append, numbered, options, read_from, read_one, scratch, segment_bases, Rec, TOPIC,
};
use std::sync::Arc;
use std::time::Duration;
use tributary::config::FsyncPolicy;
use tributary::log::batch;
use tributary::log::{Log, Offset};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribe_follows_every_durable_append() {
    for fsync in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval,
        FsyncPolicy::Never,
    ] {
        let root = scratch();
        let dir = root.path();
        let log = Log::open(options(dir, 4096, fsync)).await.unwrap();
        assert_eq!(append(&log, &[Rec::small(0)]).await, 0..1);
        let p = log.partition(TOPIC, 0).unwrap();
        let mut rx = p.subscribe();
        assert_eq!(*rx.borrow_and_update(), 1);
        // A follower that only wakes on the watch: it must see every record, in order.
        let follower = {
            let p = p.clone();
            let mut rx = p.subscribe();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut next = 1u64;
                while next < 301 {
                    rx.changed().await.unwrap();
                    let end = *rx.borrow_and_update();
                    assert!(end <= p.end_offset().0);
                    got.extend(
                        read_from(&p, next, 4096)
                            .unwrap()
                            .into_iter()
                            .filter(|(o, _)| *o < end),
                    );
                    next = end;
                }
                got
            })
        };
        let mut model = vec![Rec::small(0)];
        for i in 1..301u64 {
            let r = Rec::small(i);
            assert_eq!(
                append(&log, std::slice::from_ref(&r)).await,
                i..i + 1,
                "{fsync:?}"
            );
            model.push(r);
            // Each durable append moves the watch, and by the time it resolves.
            assert!(rx.has_changed().unwrap(), "{fsync:?}: append {i}");
            assert_eq!(*rx.borrow_and_update(), i + 1, "{fsync:?}");
            assert_eq!(p.end_offset(), Offset(i + 1));
        }
        let got = tokio::time::timeout(Duration::from_secs(10), follower)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, numbered(&model[1..], 1), "{fsync:?}");
        assert!(
            segment_bases(dir).len() >= 3,
            "the follower crossed segment rolls"
        );
        // Nothing moves it without an append.
        assert!(!rx.has_changed().unwrap());
        log.close().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_readable_when_acked() {
    // Read-your-writes from other threads: when an append resolves, its records are readable.
    for fsync in [FsyncPolicy::Always, FsyncPolicy::Never] {
        let root = scratch();
        let log = Arc::new(Log::open(options(root.path(), 4096, fsync)).await.unwrap());
        append(&log, &[Rec::small(0)]).await;
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..100u64 {
                    let r = Rec::small(w * 1000 + i);
                    let range = append(&log, std::slice::from_ref(&r)).await;
                    let p = log.partition(TOPIC, 0).unwrap();
                    assert!(p.end_offset().0 >= range.end, "{fsync:?}");
                    assert_eq!(read_one(&p, range.start).unwrap(), r, "{fsync:?}");
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let log = Arc::into_inner(log).unwrap();
        assert_eq!(log.partition(TOPIC, 0).unwrap().end_offset(), Offset(401));
        log.close().await.unwrap();
    }
}

#[test]
fn readers_never_run_ahead_of_the_end_offset() {
    // A segment's bytes become readable a moment before the partition's end offset moves past
    // them. Reads must not serve records at or past the end offset they checked against: a
    // reader (a Kafka consumer) that got them asks for an offset past the end next, and is
    // refused as out of range. Readers on two threads follow a fast writer at the tail.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let root = scratch();
    let log = rt
        .block_on(Log::open(options(root.path(), 1024, FsyncPolicy::Never)))
        .unwrap();
    rt.block_on(append(&log, &[Rec::small(0)]));
    let p = log.partition(TOPIC, 0).unwrap();
    let total = 10_000u64;
    let writer = rt.spawn(async move {
        for i in 1..total {
            let r = Rec {
                key: None,
                value: vec![i as u8],
                headers: vec![],
                ts: 0,
            };
            append(&log, std::slice::from_ref(&r)).await;
        }
        log
    });
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut next = 0u64;
                while next < total {
                    let bytes = match p.read(Offset(next), 1 << 20) {
                        Ok(bytes) => bytes,
                        Err(e) => panic!("read at {next} (end {}): {e}", p.end_offset()),
                    };
                    let end_after = p.end_offset().0;
                    for item in batch::batches(&bytes) {
                        let (h, _) = item.unwrap();
                        assert_eq!(h.base_offset as u64, next);
                        assert!(
                            (h.base_offset as u64) < end_after,
                            "served offset {} past the end {end_after}",
                            h.base_offset
                        );
                        next = h.next_offset() as u64;
                    }
                }
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    let log = rt.block_on(writer).unwrap();
    rt.block_on(log.close()).unwrap();
}
