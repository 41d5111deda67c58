//! Shared by the storage tests: the record model (`Rec`), log options and segment paths,
//! batch boundaries walked from the `.log` files, reads decoded back into records, file
//! damage, and the fixtures and recovery check that several test modules build on.

use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tributary::config::{FsyncPolicy, TopicConfig, TopicsConfig};
use tributary::log::batch;
use tributary::log::partition::PartitionShared;
use tributary::log::{Log, LogError, LogOptions, Offset};
use tributary::record::{Header, Record};

pub(crate) const TOPIC: &str = "t";

/// A record as appended, to compare with what reads back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rec {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Vec<u8>,
    pub(crate) headers: Vec<(String, Vec<u8>)>,
    pub(crate) ts: i64,
}

impl Rec {
    pub(crate) fn small(i: u64) -> Rec {
        Rec {
            key: match i % 3 {
                0 => None,
                _ => Some(format!("k{i}").into_bytes()),
            },
            value: format!("v{i}-{}", "x".repeat((i % 7) as usize)).into_bytes(),
            headers: match i % 4 {
                0 => vec![("h".into(), i.to_string().into_bytes())],
                _ => Vec::new(),
            },
            ts: 1_700_000_000_000 + i as i64,
        }
    }

    pub(crate) fn record(&self, topic: &str, partition: u32) -> Record {
        Record {
            route: Arc::from("test"),
            topic: topic.into(),
            partition,
            key: self.key.clone().map(Bytes::from),
            value: Bytes::from(self.value.clone()),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| Header::new(k.clone(), v.clone()))
                .collect(),
            timestamp_ms: self.ts,
            dead_letter: None,
        }
    }

    pub(crate) fn from_decoded(d: &batch::DecodedRecord) -> Rec {
        Rec {
            key: d.key.as_ref().map(|k| k.to_vec()),
            value: d
                .value
                .as_ref()
                .expect("the log never stores a null value")
                .to_vec(),
            headers: d
                .headers
                .iter()
                .map(|h| {
                    let v = h.value.as_ref().expect("header values are never null here");
                    (h.key.clone(), v.to_vec())
                })
                .collect(),
            ts: d.timestamp_ms,
        }
    }
}

pub(crate) fn topics_config(partitions: u32) -> TopicsConfig {
    TopicsConfig {
        default: TopicConfig { partitions },
        topics: BTreeMap::new(),
    }
}

pub(crate) fn options(dir: &Path, segment_bytes: u64, fsync: FsyncPolicy) -> LogOptions {
    LogOptions {
        dir: dir.to_path_buf(),
        segment_bytes,
        fsync,
        fsync_interval: Duration::from_millis(1),
        retention_time: None,
        retention_bytes: None,
        retention_check: Duration::from_secs(3600),
        topics: topics_config(1),
    }
}

fn part_dir(dir: &Path) -> PathBuf {
    dir.join(TOPIC).join("0")
}

pub(crate) fn seg_log(dir: &Path, base: u64) -> PathBuf {
    part_dir(dir).join(format!("{base:020}.log"))
}

pub(crate) fn seg_index(dir: &Path, base: u64) -> PathBuf {
    part_dir(dir).join(format!("{base:020}.index"))
}

pub(crate) fn seg_timeindex(dir: &Path, base: u64) -> PathBuf {
    part_dir(dir).join(format!("{base:020}.timeindex"))
}

/// Base offsets of the `.log` files in the partition directory, from the file names.
pub(crate) fn segment_bases(dir: &Path) -> Vec<u64> {
    let mut bases: Vec<u64> = std::fs::read_dir(part_dir(dir))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.strip_suffix(".log").map(|b| b.parse().unwrap())
        })
        .collect();
    bases.sort_unstable();
    bases
}

/// One batch of a `.log` file, found by walking the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bound {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) base: u64,
    pub(crate) next: u64,
}

/// Walks a `.log` file that must be wholly valid and returns its batches' boundaries.
pub(crate) fn bounds(path: &Path) -> Vec<Bound> {
    let bytes = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut pos = 0u64;
    for item in batch::batches(&bytes) {
        let (h, whole) = item.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let end = pos + whole.len() as u64;
        out.push(Bound {
            start: pos,
            end,
            base: h.base_offset as u64,
            next: h.next_offset() as u64,
        });
        pos = end;
    }
    assert_eq!(pos, bytes.len() as u64, "{}", path.display());
    out
}

/// Damage done to a copy of a log directory.
pub(crate) type DamageFn = Box<dyn Fn(&Path)>;

pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Every record of a partition from `from`, decoded, reading `max_bytes` at a time, checking
/// that offsets follow on without gaps. (What each read serves is checked by `check_read`.)
pub(crate) fn read_from(
    p: &PartitionShared,
    from: u64,
    max_bytes: usize,
) -> Result<Vec<(u64, Rec)>, LogError> {
    let mut out = Vec::new();
    for r in p.records(Offset(from)).read_bytes(max_bytes) {
        let r = r?;
        let o = r.offset as u64;
        assert_eq!(o, from + out.len() as u64, "offsets follow on");
        out.push((o, Rec::from_decoded(&r)));
    }
    Ok(out)
}

/// `n` records from `from`, reading one batch at a time: stops before reading past them.
pub(crate) fn read_n(p: &PartitionShared, from: u64, n: u64) -> Result<Vec<(u64, Rec)>, LogError> {
    p.records(Offset(from))
        .read_bytes(1)
        .take(n as usize)
        .map(|r| r.map(|r| (r.offset as u64, Rec::from_decoded(&r))))
        .collect()
}

/// The record at `offset`, from one read of one batch.
pub(crate) fn read_one(p: &PartitionShared, offset: u64) -> Result<Rec, LogError> {
    let (o, r) = read_n(p, offset, 1)?.pop().expect("not at the end");
    assert_eq!(o, offset, "the batch holds the offset");
    Ok(r)
}

pub(crate) fn read_all(p: &PartitionShared) -> Vec<(u64, Rec)> {
    read_from(p, p.start_offset().0, 64 * 1024).unwrap()
}

/// `expected` numbered from `first`.
pub(crate) fn numbered(expected: &[Rec], first: u64) -> Vec<(u64, Rec)> {
    expected
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, r)| (first + i as u64, r))
        .collect()
}

pub(crate) async fn append(log: &Log, recs: &[Rec]) -> std::ops::Range<u64> {
    let records = recs.iter().map(|r| r.record(TOPIC, 0)).collect();
    let r = log.append(TOPIC, 0, records).await.unwrap();
    r.start.0..r.end.0
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Every file under `dir` with its contents and modification time.
pub(crate) fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let meta = entry.metadata().unwrap();
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                out.insert(
                    entry.path(),
                    (
                        std::fs::read(entry.path()).unwrap(),
                        meta.modified().unwrap(),
                    ),
                );
            }
        }
    }
    out
}

pub(crate) fn flip(path: &Path, position: u64, mask: u8) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[position as usize] ^= mask;
    std::fs::write(path, bytes).unwrap();
}

pub(crate) fn truncate(path: &Path, len: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// A temporary directory, in memory when the machine has /dev/shm: the crash tests reopen the
/// log hundreds of times, and fsyncs there cost nothing.
pub(crate) fn scratch() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::Builder::new()
            .prefix("log-storage-")
            .tempdir_in(shm)
        {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Waits until no writer holds the log's lock. A `Log` dropped without `close` is a crash as
/// far as its files know, but its writer tasks still write what was queued before they stop,
/// and the lock holds until they have.
pub(crate) async fn await_unlocked(dir: impl AsRef<Path>) {
    let lock = std::fs::File::options()
        .write(true)
        .open(dir.as_ref().join("@lock"))
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while lock.try_lock().is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writer lock is never let go"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    lock.unlock().unwrap();
}

pub(crate) fn is_corrupt_in(e: &LogError, file: &Path) -> bool {
    matches!(e, LogError::Corrupt { path, .. } if path == file)
        && e.to_string().contains(&file.display().to_string())
}

/// Writes `n` small appends (each one batch of one or two records, values padded by `pad`) to a log with
/// `segment_bytes` segments, closes it and returns the records in offset order.
pub(crate) async fn build_log(dir: &Path, segment_bytes: u64, n: u64, pad: usize) -> Vec<Rec> {
    let log = Log::open(options(dir, segment_bytes, FsyncPolicy::Never))
        .await
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..n {
        let recs: Vec<Rec> = (0..1 + i % 2)
            .map(|j| {
                let mut r = Rec::small(i * 10 + j);
                r.value.extend(std::iter::repeat_n(b'p', pad));
                r
            })
            .collect();
        let range = append(&log, &recs).await;
        assert_eq!(
            range,
            expected.len() as u64..(expected.len() + recs.len()) as u64
        );
        expected.extend(recs);
    }
    log.close().await.unwrap();
    expected
}

/// Opens the damaged log in `dir` (unclean unless `@clean` is there), and checks that exactly
/// the records before `keep_next` survive, the active segment was cut to `keep_len`, the sealed
/// segments are untouched, and appends continue at `keep_next`.
pub(crate) async fn check_recovery(
    dir: &Path,
    active: u64,
    keep_len: u64,
    keep_next: u64,
    expected: &[Rec],
    what: &str,
) {
    let sealed: Vec<(u64, u64)> = segment_bases(dir)
        .into_iter()
        .filter(|b| *b != active)
        .map(|b| (b, file_len(&seg_log(dir, b))))
        .collect();
    let log = Log::open(options(dir, 4096, FsyncPolicy::Never))
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(
        file_len(&seg_log(dir, active)),
        keep_len,
        "{what}: active segment cut to the last valid batch"
    );
    for (b, len) in sealed {
        assert_eq!(
            file_len(&seg_log(dir, b)),
            len,
            "{what}: sealed segment {b} untouched"
        );
    }
    let p = log.partition(TOPIC, 0).unwrap();
    assert_eq!(p.end_offset(), Offset(keep_next), "{what}");
    let got = read_all(&p);
    assert_eq!(got, numbered(&expected[..keep_next as usize], 0), "{what}");
    let extra = Rec::small(999_999);
    assert_eq!(
        append(&log, std::slice::from_ref(&extra)).await,
        keep_next..keep_next + 1,
        "{what}"
    );
    assert_eq!(
        read_from(&p, keep_next, 1).unwrap(),
        vec![(keep_next, extra.clone())],
        "{what}"
    );
    assert_eq!(p.end_offset(), Offset(keep_next + 1), "{what}");
    drop(p);
    log.close().await.unwrap();
    // And it all holds after a clean restart.
    let log = Log::open(options(dir, 4096, FsyncPolicy::Never))
        .await
        .unwrap();
    let p = log.partition(TOPIC, 0).unwrap();
    assert_eq!(p.end_offset(), Offset(keep_next + 1), "{what}");
    assert_eq!(read_one(&p, keep_next).unwrap(), extra, "{what}");
    if keep_next > 0 {
        assert_eq!(
            read_one(&p, keep_next - 1).unwrap(),
            expected[keep_next as usize - 1],
            "{what}"
        );
    }
    drop(p);
    log.close().await.unwrap();
}

/// The pristine log of the crash tests: 4 KiB segments, small batches, and the boundaries of
/// the active segment's batches.
pub(crate) async fn crash_fixture(root: &Path) -> (PathBuf, Vec<Rec>, u64, Vec<Bound>) {
    let pristine = root.join("pristine");
    let expected = build_log(&pristine, 4096, 150, 0).await;
    std::fs::remove_file(pristine.join("@clean")).unwrap();
    let bases = segment_bases(&pristine);
    assert!(bases.len() >= 3, "several segments: {bases:?}");
    let active = *bases.last().unwrap();
    let b = bounds(&seg_log(&pristine, active));
    assert!(b.len() >= 4, "{b:?}");
    assert_eq!(b.last().unwrap().next, expected.len() as u64);
    assert_eq!(b[0].base, active);
    // The sealed segments hold exactly the offsets before `active`, in order.
    let mut next = 0;
    for base in &bases[..bases.len() - 1] {
        for x in bounds(&seg_log(&pristine, *base)) {
            assert_eq!(x.base, next);
            next = x.next;
        }
    }
    assert_eq!(next, active);
    (pristine, expected, active, b)
}

/// A log whose active segment is large enough to have offset index entries: 22 KiB of 1 KiB
/// batches in one 1 MiB segment.
pub(crate) async fn indexed_fixture(dir: &Path) -> (Vec<Rec>, Vec<Bound>) {
    let log = Log::open(options(dir, 1 << 20, FsyncPolicy::Never))
        .await
        .unwrap();
    let mut expected = Vec::new();
    for i in 0..22u64 {
        let r = Rec {
            key: Some(i.to_be_bytes().to_vec()),
            value: vec![i as u8; 1000],
            headers: vec![],
            ts: 1000 + i as i64,
        };
        assert_eq!(append(&log, std::slice::from_ref(&r)).await, i..i + 1);
        expected.push(r);
    }
    log.close().await.unwrap();
    let b = bounds(&seg_log(dir, 0));
    assert_eq!(b.len(), 22);
    (expected, b)
}

/// The offset index entries of a segment: (relative offset, position).
pub(crate) fn index_entries(path: &Path) -> Vec<(u32, u32)> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(8)
        .map(|c| {
            (
                u32::from_be_bytes(c[..4].try_into().unwrap()),
                u32::from_be_bytes(c[4..].try_into().unwrap()),
            )
        })
        .collect()
}
