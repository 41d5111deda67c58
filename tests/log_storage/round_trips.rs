//! Round trips: every record shape reads back exactly, a torn 1 MiB batch is cut off, empty
//! appends and bad partitions are refused, and reads return whole batches up to `max_bytes`.

use crate::helpers::{
    append, await_unlocked, bounds, build_log, check_recovery, copy_dir, file_len, numbered,
    options, read_all, read_from, scratch, seg_log, segment_bases, truncate, Rec, TOPIC,
};
use tributary::config::FsyncPolicy;
use tributary::log::batch;
use tributary::log::{Log, LogError, LogReader, Offset};

fn shapes() -> Vec<(&'static str, Vec<Rec>)> {
    let base = 1_700_000_000_000;
    let binary: Vec<u8> = (0..=255u8).collect();
    vec![
        (
            "null key",
            vec![Rec {
                key: None,
                value: b"v".to_vec(),
                headers: vec![],
                ts: base,
            }],
        ),
        (
            "empty key",
            vec![Rec {
                key: Some(vec![]),
                value: b"v".to_vec(),
                headers: vec![],
                ts: base + 1,
            }],
        ),
        (
            "empty value",
            vec![Rec {
                key: Some(b"k".to_vec()),
                value: vec![],
                headers: vec![],
                ts: base + 2,
            }],
        ),
        (
            "null key, empty value",
            vec![Rec {
                key: None,
                value: vec![],
                headers: vec![],
                ts: base + 3,
            }],
        ),
        (
            "many headers",
            vec![Rec {
                key: Some(b"k".to_vec()),
                value: b"with headers".to_vec(),
                headers: (0..300)
                    .map(|i| match i % 4 {
                        0 => (String::new(), Vec::new()),
                        1 => (format!("h-{i}"), vec![i as u8; i % 17]),
                        2 => ("dup".to_string(), b"same key again".to_vec()),
                        _ => (format!("ключ-{i}-☃"), binary.clone()),
                    })
                    .collect(),
                ts: base + 4,
            }],
        ),
        (
            "binary key and value",
            vec![Rec {
                key: Some(binary.clone()),
                value: binary.clone(),
                headers: vec![],
                ts: base + 5,
            }],
        ),
        (
            "negative timestamp",
            vec![Rec {
                key: None,
                value: b"old".to_vec(),
                headers: vec![],
                ts: -5,
            }],
        ),
        (
            "zero timestamp",
            vec![Rec {
                key: None,
                value: b"epoch".to_vec(),
                headers: vec![],
                ts: 0,
            }],
        ),
        (
            "many records in one append",
            (0..200)
                .map(|i| Rec {
                    key: (i % 2 == 0).then(|| vec![b'k', i as u8]),
                    value: vec![b'v'; i % 11],
                    headers: vec![("i".into(), vec![i as u8])],
                    // Not in order: the batch's base timestamp is the smallest.
                    ts: base + 1000 - (i as i64 % 13) * 7,
                })
                .collect(),
        ),
        (
            "1 MiB value",
            vec![Rec {
                key: Some(b"big".to_vec()),
                value: (0..1u32 << 20)
                    .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
                    .collect(),
                headers: vec![("size".into(), b"1MiB".to_vec())],
                ts: base + 6,
            }],
        ),
        (
            "after the big one",
            vec![Rec {
                key: Some(b"k".to_vec()),
                value: b"small again".to_vec(),
                headers: vec![],
                ts: base + 7,
            }],
        ),
    ]
}

#[tokio::test]
async fn every_record_shape_round_trips() {
    let dir = scratch();
    let dir = dir.path();
    let log = Log::open(options(dir, 4096, FsyncPolicy::Always))
        .await
        .unwrap();
    let mut expected = Vec::new();
    let mut big_offset = None;
    for (name, recs) in shapes() {
        let start = expected.len() as u64;
        assert_eq!(
            append(&log, &recs).await,
            start..start + recs.len() as u64,
            "{name}"
        );
        if name == "1 MiB value" {
            big_offset = Some(start);
        }
        // Reads back at once, exactly, from its first offset.
        let p = log.partition(TOPIC, 0).unwrap();
        assert_eq!(
            read_from(&p, start, 1).unwrap(),
            numbered(&recs, start),
            "{name}"
        );
        expected.extend(recs);
    }
    let big = big_offset.unwrap();
    let p = log.partition(TOPIC, 0).unwrap();
    assert_eq!(p.end_offset(), Offset(expected.len() as u64));
    assert_eq!(read_all(&p), numbered(&expected, 0));

    // The 1 MiB batch went into a segment of its own (it is larger than a segment), and a read
    // asking for 1 byte still gets all of it.
    assert!(segment_bases(dir).contains(&big));
    assert_eq!(bounds(&seg_log(dir, big)).len(), 1);
    let bytes = p.read(Offset(big), 1).unwrap();
    assert!(bytes.len() > 1 << 20);
    let batches: Vec<_> = batch::batches(&bytes).collect();
    assert_eq!(batches.len(), 1);
    log.close().await.unwrap();

    // Clean restart, unclean restart (every batch scanned, the 1 MiB one across scan chunks),
    // and read-only: the same records.
    let log = Log::open(options(dir, 4096, FsyncPolicy::Always))
        .await
        .unwrap();
    assert_eq!(
        read_all(&log.partition(TOPIC, 0).unwrap()),
        numbered(&expected, 0)
    );
    drop(log);
    await_unlocked(&dir).await;
    let _ = std::fs::remove_file(dir.join("@clean"));
    let log = Log::open(options(dir, 4096, FsyncPolicy::Always))
        .await
        .unwrap();
    let p = log.partition(TOPIC, 0).unwrap();
    assert_eq!(read_all(&p), numbered(&expected, 0));
    assert_eq!(p.end_offset(), Offset(expected.len() as u64));
    let ro = LogReader::open(dir).unwrap().partition(TOPIC, 0).unwrap();
    assert_eq!(read_all(&ro), numbered(&expected, 0));
    log.close().await.unwrap();
}

#[tokio::test]
async fn torn_one_mib_batch_is_cut_off() {
    let root = scratch();
    let pristine = root.path().join("pristine");
    let log = Log::open(options(&pristine, 4096, FsyncPolicy::Never))
        .await
        .unwrap();
    let small: Vec<Rec> = (0..5).map(Rec::small).collect();
    for r in &small {
        append(&log, std::slice::from_ref(r)).await;
    }
    let big = Rec {
        key: None,
        value: vec![0xa5; (1 << 20) + 100],
        headers: vec![],
        ts: 1,
    };
    assert_eq!(append(&log, std::slice::from_ref(&big)).await, 5..6);
    log.close().await.unwrap();
    std::fs::remove_file(pristine.join("@clean")).unwrap();
    let mut expected = small.clone();
    expected.push(big);
    // The big batch is alone in the last segment, which starts at offset 5.
    assert_eq!(segment_bases(&pristine), vec![0, 5]);
    let len = file_len(&seg_log(&pristine, 5));
    assert!(len > 1 << 20);

    let work = root.path().join("work");
    for cut in [len, len - 1, 1 << 20, (1 << 20) + 1, 61, 60, 12, 1, 0] {
        let _ = std::fs::remove_dir_all(&work);
        copy_dir(&pristine, &work);
        truncate(&seg_log(&work, 5), cut);
        let (keep_len, keep_next) = if cut == len { (len, 6) } else { (0, 5) };
        check_recovery(
            &work,
            5,
            keep_len,
            keep_next,
            &expected,
            &format!("cut at {cut}"),
        )
        .await;
    }
}

#[tokio::test]
async fn empty_append_and_bad_partition() {
    let dir = scratch();
    let log = Log::open(options(dir.path(), 4096, FsyncPolicy::Always))
        .await
        .unwrap();
    assert_eq!(append(&log, &[Rec::small(1), Rec::small(2)]).await, 0..2);
    // An empty append writes nothing and gets the empty range at the end.
    let r = log.append(TOPIC, 0, Vec::new()).await.unwrap();
    assert_eq!(r, Offset(2)..Offset(2));
    assert_eq!(bounds(&seg_log(dir.path(), 0)).len(), 1);
    let err = log
        .append(TOPIC, 1, vec![Rec::small(3).record(TOPIC, 1)])
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            LogError::NoSuchPartition {
                partition: 1,
                partitions: 1,
                ..
            }
        ),
        "{err}"
    );
    let p = log.partition(TOPIC, 0).unwrap();
    // Reads past the end are refused with the extent; at the end they are empty.
    assert!(p.read(Offset(2), 100).unwrap().is_empty());
    match p.read(Offset(3), 100) {
        Err(LogError::OffsetOutOfRange {
            offset, start, end, ..
        }) => {
            assert_eq!((offset, start, end), (Offset(3), Offset(0), Offset(2)))
        }
        other => panic!("{other:?}"),
    }
    log.close().await.unwrap();
}

#[tokio::test]
async fn reads_return_whole_batches_up_to_max_bytes() {
    let dir = scratch();
    let dir = dir.path();
    let expected = build_log(dir, 1 << 20, 30, 0).await;
    let b = bounds(&seg_log(dir, 0));
    assert_eq!(b.len(), 30);
    let log = Log::open(options(dir, 1 << 20, FsyncPolicy::Always))
        .await
        .unwrap();
    let p = log.partition(TOPIC, 0).unwrap();
    let file = std::fs::read(seg_log(dir, 0)).unwrap();
    for (i, first) in b.iter().enumerate() {
        for k in [1usize, 2, 5] {
            let last = (i + k).min(b.len()) - 1;
            let want = (b[last].end - first.start) as usize;
            // Exactly k batches when max_bytes is their size; one byte less gives k - 1 (at
            // least one); the bytes are the file's, as they are.
            for offset in first.base..first.next {
                let bytes = p.read(Offset(offset), want).unwrap();
                assert_eq!(
                    &bytes[..],
                    &file[first.start as usize..b[last].end as usize]
                );
                let fewer = p.read(Offset(offset), want - 1).unwrap();
                let fewer_end = if last == i { b[i].end } else { b[last - 1].end };
                assert_eq!(fewer.len() as u64, fewer_end - first.start);
            }
        }
    }
    assert_eq!(read_from(&p, 0, 0).unwrap(), numbered(&expected, 0));
    log.close().await.unwrap();
}
