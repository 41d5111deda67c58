//! The read-only reader (`LogReader`): it changes nothing, stops at an incomplete batch, and
//! sees a prefix of what a live writer writes.

use crate::helpers::{
    append, copy_dir, crash_fixture, flip, numbered, options, read_all, scratch, seg_index,
    seg_log, seg_timeindex, segment_bases, snapshot, truncate, DamageFn, Rec, TOPIC,
};
use std::path::Path;
use tributary::config::FsyncPolicy;
use tributary::log::{Log, LogReader, Offset};

#[tokio::test]
async fn reader_changes_nothing_and_stops_at_an_incomplete_batch() {
    let root = scratch();
    let (pristine, expected, active, b) = crash_fixture(root.path()).await;
    let dir = root.path().join("work");
    let last = b[b.len() - 1];
    // Cut inside the last batch (a write in progress, or torn), or garbage after it.
    let cases: Vec<(String, DamageFn, u64)> = vec![
        ("as written".into(), Box::new(|_: &Path| {}), last.next),
        (
            "cut in the header".into(),
            Box::new(move |d: &Path| truncate(&seg_log(d, active), last.start + 30)),
            last.base,
        ),
        (
            "cut in the records".into(),
            Box::new(move |d: &Path| truncate(&seg_log(d, active), last.end - 1)),
            last.base,
        ),
        (
            "cut after 5 bytes".into(),
            Box::new(move |d: &Path| truncate(&seg_log(d, active), last.start + 5)),
            last.base,
        ),
        (
            "zeros after".into(),
            Box::new(move |d: &Path| {
                let p = seg_log(d, active);
                let mut bytes = std::fs::read(&p).unwrap();
                bytes.extend([0u8; 100]);
                std::fs::write(&p, bytes).unwrap();
            }),
            last.next,
        ),
        (
            "last batch corrupt".into(),
            Box::new(move |d: &Path| flip(&seg_log(d, active), last.end - 2, 0x20)),
            last.base,
        ),
        (
            "indexes gone".into(),
            Box::new(move |d: &Path| {
                for base in segment_bases(d) {
                    std::fs::remove_file(seg_index(d, base)).unwrap();
                    std::fs::remove_file(seg_timeindex(d, base)).unwrap();
                }
            }),
            last.next,
        ),
    ];
    for (what, damage, end) in cases {
        let _ = std::fs::remove_dir_all(&dir);
        copy_dir(&pristine, &dir);
        damage(&dir);
        let before = snapshot(&dir);
        let reader = LogReader::open(&dir).unwrap();
        let p = reader.partition(TOPIC, 0).unwrap();
        assert_eq!(p.end_offset(), Offset(end), "{what}");
        assert_eq!(
            read_all(&p),
            numbered(&expected[..end as usize], 0),
            "{what}"
        );
        assert!(p.read(Offset(end), 100).unwrap().is_empty());
        let topics = reader.topics().unwrap();
        assert_eq!(topics[TOPIC][0].end, Offset(end));
        assert_eq!(topics[TOPIC][0].start, Offset(0));
        drop(p);
        drop(reader);
        assert!(snapshot(&dir) == before, "{what}: the reader changed files");
    }
    // No log directory: an error, and nothing created.
    let missing = root.path().join("missing");
    assert!(LogReader::open(&missing).is_err());
    assert!(!missing.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_sees_a_prefix_while_the_writer_writes() {
    let root = scratch();
    let dir = root.path().to_path_buf();
    let log = Log::open(options(&dir, 4096, FsyncPolicy::Never))
        .await
        .unwrap();
    let model: Vec<Rec> = (0..400u64)
        .map(|i| {
            let mut r = Rec::small(i);
            r.value
                .extend(std::iter::repeat_n(b'z', (i % 5) as usize * 40));
            r
        })
        .collect();
    append(&log, &model[..1]).await;
    let writer = {
        let model = model.clone();
        tokio::spawn(async move {
            for r in &model[1..] {
                append(&log, std::slice::from_ref(r)).await;
            }
            log
        })
    };
    let mut seen = 0;
    let mut rounds = 0;
    while seen < model.len() {
        let dir = dir.clone();
        let got = tokio::task::spawn_blocking(move || {
            let p = LogReader::open(&dir).unwrap().partition(TOPIC, 0).unwrap();
            read_all(&p)
        })
        .await
        .unwrap();
        // Always a prefix of what was appended, exactly, never shrinking.
        assert!(got.len() >= seen);
        assert_eq!(got, numbered(&model[..got.len()], 0));
        seen = got.len();
        rounds += 1;
        assert!(rounds < 100_000);
    }
    let log = writer.await.unwrap();
    log.close().await.unwrap();
}
