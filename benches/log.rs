//! Embedded log throughput, read speed, recovery time and memory, beside plain-file baselines
//! measured in the same run.
//!
//! `cargo bench --bench log` (about 2 minutes on 2 cores). Needs a few GiB free in the temp
//! dir (checked: the recovery case shrinks to 256 MiB under 5 GiB free, and says so).
//!
//! 1. Appends: 100-byte and 1 KiB values under each fsync policy, 4 partitions, driven as the
//!    pipeline drives the log: many tasks on a multi-thread runtime, each awaiting
//!    `log.append(topic, task % 4, records)` in a loop. "single": 256 tasks (and 4096 for
//!    `interval`, 100 B), one record per append; "batched": 64 tasks, 100 records per append.
//!    Each case: `ROUNDS` rounds of (log for `RUN`, then its baseline); the best of each side.
//!    Baseline: the batches the log wrote, read back in order, their sizes written again with
//!    plain `write()` into one file on one thread (same bytes, same chunks), with `fdatasync`
//!    (what the log calls): `always` after each write that ends where one of the log's fsyncs
//!    ended (seen as a move of the partition's end offset), `interval` after a write once 5 ms
//!    passed since the previous one started and once at the end, `never` not at all. A
//!    baseline stops after `BASELINE_CAP`; its rate is then over what it wrote.
//! 2. Sequential reads of whole partitions with `PartitionShared::read` (1 MiB per call): raw
//!    batches (headers walked) and decoded records (`batch::decode`), beside plain `read()` of
//!    the same segment files.
//! 3. Recovery of a ~1 GiB partition (128 MiB segments, 1 KiB values): `Log::open` after a
//!    clean close, and after a simulated crash (`@clean` deleted, half a batch appended to the
//!    active segment), page cache warm and dropped (`dd iflag=nocache`), beside a plain read
//!    of the active segment.
//! 4. Peak RSS (VmHWM).
//!
//! The filesystem is synced (`sync -f`) before each timed part so none pays for another's
//! writeback. Figures on a shared machine move a lot between runs: compare within a run.

use bytes::Bytes;
use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tributary::config::{FsyncPolicy, TopicConfig, TopicsConfig};
use tributary::log::batch::{self, BatchHeader};
use tributary::log::partition::PartitionShared;
use tributary::log::{Log, LogOptions, Offset};
use tributary::record::Record;

const TOPIC: &str = "bench";
const PARTITIONS: u32 = 4;
const SEGMENT_BYTES: u64 = 128 << 20;
const INTERVAL: Duration = Duration::from_millis(5);
/// How long each append case runs.
const RUN: Duration = Duration::from_millis(1500);
/// The most time a baseline gets to write the log's bytes again.
const BASELINE_CAP: Duration = Duration::from_secs(2);
/// Rounds of each append case (log, then baseline); the best of each is printed.
const ROUNDS: usize = 2;
const SINGLE_TASKS: usize = 256;
const BATCHED_TASKS: usize = 64;
/// In-flight appends that keep `interval` busy: 4096 in flight / 5 ms is about 800k appends/s.
const MANY_TASKS: usize = 4096;
/// Appenders for the wide interval rows: about 100k records in flight.
const WIDE_TASKS: usize = 1024;
const BATCH_RECORDS: usize = 100;
/// Bytes per `PartitionShared::read` call (Kafka's default `max.partition.fetch.bytes`).
const READ_BYTES: usize = 1 << 20;
const TS_BASE: i64 = 1_700_000_000_000;
const MB: f64 = 1e6;
const MIB: u64 = 1 << 20;

fn options(dir: &Path, fsync: FsyncPolicy, segment_bytes: u64) -> LogOptions {
    LogOptions {
        dir: dir.to_path_buf(),
        segment_bytes,
        fsync,
        fsync_interval: INTERVAL,
        retention_time: None,
        retention_bytes: None,
        retention_check: Duration::from_secs(3600),
        topics: TopicsConfig {
            default: TopicConfig {
                partitions: PARTITIONS,
            },
            topics: Default::default(),
        },
    }
}

/// A record as the router makes one: an 11-byte device key, the value, no headers.
fn record(route: &Arc<str>, key: &Bytes, value: &Bytes, ts: i64) -> Record {
    Record {
        route: route.clone(),
        topic: TOPIC.into(),
        partition: 0,
        key: Some(key.clone()),
        value: value.clone(),
        headers: Vec::new(),
        timestamp_ms: ts,
        dead_letter: None,
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn status_field(name: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(name))
                .map(|l| l[name.len()..].trim().to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// Free bytes on the filesystem holding `dir`, from `df`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(dir)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let kib: u64 = text
        .lines()
        .nth(1)?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Drops a file's pages from the page cache (`posix_fadvise(DONTNEED)`, as `dd iflag=nocache`
/// does it); only clean pages go, so fsync first.
fn drop_cache(dir: &Path) -> bool {
    let mut ok = true;
    for entry in walk(dir) {
        let status = std::process::Command::new("dd")
            .arg(format!("if={}", entry.display()))
            .args(["iflag=nocache", "count=0", "status=none"])
            .status();
        ok &= status.is_ok_and(|s| s.success());
    }
    ok
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

struct AppendRun {
    records: u64,
    appends: u64,
    /// Sum of every append's time from call to answer.
    latency: Duration,
    elapsed: Duration,
    /// Every batch written during the run, partition after partition, each with whether an
    /// fsync (seen as the end offset moving) covered the log up to its end.
    batches: Vec<Chunk>,
    /// End-offset moves seen by a subscriber of each partition: every fsync under `always`
    /// and `interval` (moves closer together than the subscriber runs merge into one).
    publishes: u64,
    /// Times the end offset was behind an acknowledged append right after the appenders
    /// finished.
    stale: u64,
}

#[derive(Clone, Copy)]
struct Chunk {
    len: u32,
    /// An fsync of the log covered everything up to the end of this batch.
    synced: bool,
}

impl AppendRun {
    fn bytes(&self) -> u64 {
        self.batches.iter().map(|c| u64::from(c.len)).sum()
    }
}

/// Batches of a partition from `from`, read back in order, marked where a publish in
/// `published` (sorted end offsets) ended; returns the records read.
fn read_back(p: &PartitionShared, from: u64, published: &[u64], out: &mut Vec<Chunk>) -> u64 {
    let mut offset = from;
    let mut records = 0u64;
    let mut marks = published.iter().peekable();
    loop {
        let bytes = p.read(Offset(offset), READ_BYTES).expect("read back");
        if bytes.is_empty() {
            return records;
        }
        let mut pos = 0;
        while pos < bytes.len() {
            let h = BatchHeader::parse(&bytes[pos..]).expect("batch header");
            records += h.record_count as u64;
            pos += h.total_len();
            offset = h.next_offset() as u64;
            let mut synced = false;
            while marks.next_if(|&&m| m <= offset).is_some() {
                synced = true;
            }
            out.push(Chunk {
                len: h.total_len() as u32,
                synced,
            });
        }
    }
}

/// Runs `tasks` appenders, each appending `per_append` records of `value_len`-byte values in a
/// loop to partition `task % PARTITIONS`, for `RUN`. Returns the log still open.
async fn append_run(
    dir: &Path,
    fsync: FsyncPolicy,
    value_len: usize,
    tasks: usize,
    per_append: usize,
) -> (AppendRun, Arc<Log>) {
    let log = Arc::new(
        Log::open(options(dir, fsync, SEGMENT_BYTES))
            .await
            .expect("open log"),
    );
    let route: Arc<str> = Arc::from("bench");
    let value = Bytes::from(vec![b'v'; value_len]);
    let key = Bytes::from_static(b"device-0042");
    // Create the topic and its partitions before the clock starts.
    let mut from = Vec::new();
    for p in 0..PARTITIONS {
        let r = log
            .append(TOPIC, p, vec![record(&route, &key, &value, TS_BASE)])
            .await
            .expect("warm-up append");
        from.push(r.end.0);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = CancellationToken::new();
    let mut watchers = Vec::new();
    for p in 0..PARTITIONS {
        let mut end = log.partition(TOPIC, p).expect("partition").subscribe();
        let done = done.clone();
        watchers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            loop {
                tokio::select! {
                    biased;
                    changed = end.changed() => match changed {
                        Ok(()) => seen.push(*end.borrow_and_update()),
                        Err(_) => break,
                    },
                    _ = done.cancelled() => break,
                }
            }
            seen
        }));
    }
    let clock = Arc::new(AtomicI64::new(TS_BASE));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let (log, stop, clock) = (log.clone(), stop.clone(), clock.clone());
        let (route, key, value) = (route.clone(), key.clone(), value.clone());
        handles.push(tokio::spawn(async move {
            let partition = t as u32 % PARTITIONS;
            let (mut records, mut appends, mut latency, mut end) = (0u64, 0u64, Duration::ZERO, 0);
            while !stop.load(Ordering::Relaxed) {
                let ts = clock.fetch_add(1, Ordering::Relaxed);
                let batch = (0..per_append)
                    .map(|_| record(&route, &key, &value, ts))
                    .collect();
                let sent = Instant::now();
                let r = log.append(TOPIC, partition, batch).await.expect("append");
                latency += sent.elapsed();
                records += r.end.0 - r.start.0;
                appends += 1;
                end = r.end.0;
            }
            (partition, records, appends, latency, end)
        }));
    }
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    let (mut records, mut appends, mut latency) = (0, 0, Duration::ZERO);
    let mut acked = vec![0u64; PARTITIONS as usize];
    for h in handles {
        let (p, r, a, l, end) = h.await.expect("appender");
        records += r;
        appends += a;
        latency += l;
        acked[p as usize] = acked[p as usize].max(end);
    }
    let elapsed = start.elapsed();
    let mut stale = 0;
    for (p, &acked) in (0..PARTITIONS).zip(&acked) {
        let part = log.partition(TOPIC, p).expect("partition");
        if part.end_offset().0 < acked {
            stale += 1;
            while part.end_offset().0 < acked {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }
    tokio::task::yield_now().await;
    done.cancel();
    let mut batches = Vec::new();
    let (mut read, mut publishes) = (0, 0);
    for ((p, &from), watcher) in (0..PARTITIONS).zip(&from).zip(watchers) {
        let seen = watcher.await.expect("watcher");
        publishes += seen.len() as u64;
        let part = log.partition(TOPIC, p).expect("partition");
        read += read_back(&part, from, &seen, &mut batches);
    }
    assert_eq!(read, records, "every acknowledged record reads back");
    (
        AppendRun {
            records,
            appends,
            latency,
            elapsed,
            batches,
            publishes,
            stale,
        },
        log,
    )
}

#[derive(Clone, Copy)]
enum BaselineSync {
    /// fdatasync after each write that ends where an fsync of the log ended.
    LogGroups,
    /// fdatasync when this long has passed since the last one started, and at the end.
    Every(Duration),
    None,
}

/// Writes `chunks` (sizes) one after another into a new plain file in `dir`, fdatasyncing as
/// `sync` says; stops early after `BASELINE_CAP`. Returns bytes written, fdatasyncs and the
/// time taken.
fn baseline(dir: &Path, chunks: &[Chunk], sync: BaselineSync) -> (u64, u64, Duration) {
    let path = dir.join("baseline.dat");
    let mut file = File::create(&path).expect("baseline file");
    let buf = vec![0xa5u8; chunks.iter().map(|c| c.len).max().unwrap_or(0) as usize];
    let (mut bytes, mut syncs) = (0u64, 0u64);
    let start = Instant::now();
    let mut last_sync = start;
    for (i, c) in chunks.iter().enumerate() {
        file.write_all(&buf[..c.len as usize])
            .expect("baseline write");
        bytes += u64::from(c.len);
        let last = i + 1 == chunks.len() || start.elapsed() >= BASELINE_CAP;
        let now = match sync {
            BaselineSync::LogGroups => c.synced || last,
            BaselineSync::Every(d) => last || last_sync.elapsed() >= d,
            BaselineSync::None => false,
        };
        if now {
            last_sync = Instant::now();
            file.sync_data().expect("fdatasync");
            syncs += 1;
        }
        if last {
            break;
        }
    }
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path).expect("remove baseline file");
    (bytes, syncs, elapsed)
}

/// Writes back every dirty page of the filesystem holding `dir` and waits a moment, so one
/// measurement does not pay for the writeback (or the discards of deleted files) of another.
fn settle(dir: &Path) {
    let _ = std::process::Command::new("sync")
        .arg("-f")
        .arg(dir)
        .status();
    std::thread::sleep(Duration::from_millis(200));
}

fn policy_name(p: FsyncPolicy) -> &'static str {
    match p {
        FsyncPolicy::Always => "always",
        FsyncPolicy::Interval => "interval",
        FsyncPolicy::Never => "never",
    }
}

struct ReadFigures {
    records: u64,
    bytes: u64,
    batches: u64,
    elapsed: Duration,
}

impl ReadFigures {
    fn line(&self, what: &str) -> String {
        let s = self.elapsed.as_secs_f64();
        format!(
            "  {what:<34} {:>12.0} records/s  {:>8.1} MB/s  ({} records, {:.1} MB in {} batches, {:.3} s)",
            self.records as f64 / s,
            self.bytes as f64 / MB / s,
            self.records,
            self.bytes as f64 / MB,
            self.batches,
            s
        )
    }
}

/// Reads the partition from offset 0 to its end; raw: walks batch headers only.
fn read_raw(p: &PartitionShared) -> ReadFigures {
    let start = Instant::now();
    let (mut offset, mut records, mut bytes, mut batches) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let got = p.read(Offset(offset), READ_BYTES).expect("read");
        if got.is_empty() {
            break;
        }
        bytes += got.len() as u64;
        let mut pos = 0;
        while pos < got.len() {
            let h = BatchHeader::parse(&got[pos..]).expect("batch header");
            records += h.record_count as u64;
            batches += 1;
            pos += h.total_len();
            offset = h.next_offset() as u64;
        }
        black_box(&got);
    }
    ReadFigures {
        records,
        bytes,
        batches,
        elapsed: start.elapsed(),
    }
}

/// Reads the partition from offset 0 to its end with `PartitionShared::batches`, every batch
/// decoded into records.
fn read_decoded(p: &PartitionShared) -> ReadFigures {
    let start = Instant::now();
    let (mut records, mut bytes, mut batches) = (0u64, 0u64, 0u64);
    for stored in p.batches(Offset(0)).read_bytes(READ_BYTES) {
        let stored = stored.expect("read");
        let decoded = stored.decode().expect("decode");
        bytes += stored.bytes.len() as u64;
        batches += 1;
        records += decoded.records.len() as u64;
        black_box(decoded);
    }
    ReadFigures {
        records,
        bytes,
        batches,
        elapsed: start.elapsed(),
    }
}

/// Baseline for reads: the partition's segment files read in order with plain `read()` into
/// one reused 1 MiB buffer, nothing checked. `records` is left to the caller.
fn plain_read(partition_dir: &Path) -> ReadFigures {
    use std::io::Read;
    let mut files: Vec<PathBuf> = walk(partition_dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    let mut buf = vec![0u8; READ_BYTES];
    let start = Instant::now();
    let (mut bytes, mut reads) = (0u64, 0u64);
    for path in files {
        let mut f = File::open(&path).expect("segment");
        loop {
            let n = f.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            bytes += n as u64;
            reads += 1;
            black_box(&buf[..n]);
        }
    }
    ReadFigures {
        records: 0,
        bytes,
        batches: reads,
        elapsed: start.elapsed(),
    }
}

impl ReadFigures {
    /// A baseline line: MB/s, records/s at `like`'s bytes per record, and `like` over it.
    fn baseline_line(&self, what: &str, like: &ReadFigures) -> String {
        let s = self.elapsed.as_secs_f64();
        let mbs = self.bytes as f64 / MB / s;
        let like_mbs = like.bytes as f64 / MB / like.elapsed.as_secs_f64();
        format!(
            "  {what:<34} {:>12.0} records/s  {mbs:>8.1} MB/s  ({:.1} MB in {:.3} s; log/baseline {:.2}x)",
            mbs * MB * like.records as f64 / like.bytes as f64,
            self.bytes as f64 / MB,
            s,
            like_mbs / mbs
        )
    }
}

/// Reads one file with plain `read()`, 1 MiB at a time; the time taken.
fn read_file(path: &Path) -> Duration {
    use std::io::Read;
    let mut buf = vec![0u8; READ_BYTES];
    let start = Instant::now();
    let mut f = File::open(path).expect("file");
    while f.read(&mut buf).expect("read") > 0 {
        black_box(&buf);
    }
    start.elapsed()
}

fn best(n: usize, mut f: impl FnMut() -> ReadFigures) -> ReadFigures {
    let mut best = f();
    for _ in 1..n {
        let r = f();
        if r.elapsed < best.elapsed {
            best = r;
        }
    }
    best
}

/// A log kept open after its append case, for the read figures.
struct Kept {
    label: &'static str,
    log: Arc<Log>,
    _dir: tempfile::TempDir,
}

/// User + system CPU time of the whole process so far (every thread, live or exited).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) closed by ')'.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here, in clock ticks
    // (USER_HZ, 100 on Linux).
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn appends(rt: &Runtime, tmp: &Path) -> Vec<Kept> {
    println!("== 1. append throughput ==");
    println!(
        "  {PARTITIONS} partitions, {} MiB segments, fsync_interval {} ms; each case: {ROUNDS} rounds of (log {:.1} s, then its baseline), best of each",
        SEGMENT_BYTES / MIB,
        INTERVAL.as_millis(),
        RUN.as_secs_f64()
    );
    println!("  single:  <tasks> tasks, each awaiting log.append(topic, task % {PARTITIONS}, vec![record]) in a loop");
    println!("  batched: <tasks> tasks, each awaiting log.append(topic, task % {PARTITIONS}, <{BATCH_RECORDS} records>) in a loop");
    println!("  records: 11-byte key, no headers, the value; only acknowledged records count");
    println!("  MB/s: on-disk batch bytes (1 MB = 10^6 B); batch B, rec/b: mean bytes and records per batch written");
    println!("  syncs/s: end-offset moves seen by a subscriber, i.e. the log's fsyncs (a lower bound); ack ms: mean");
    println!("    append latency; cpu us: process CPU microseconds (user+sys, all threads) per record in the log run");
    println!("  closed loop: records/s <= records in flight / ack latency (tasks x records per append / ack ms)");
    println!("  baseline: the log's batches read back, their sizes written again in order with plain write() into one");
    println!(
        "    file (same bytes, same chunks), on one thread, fdatasync as the log's policy would:"
    );
    println!("    always: fdatasync after the write that ends where one of the log's fsyncs ended (same groups);");
    println!(
        "    interval: fdatasync after a write once >= {} ms passed since the last one started, and at the end;",
        INTERVAL.as_millis()
    );
    println!(
        "    never: no fdatasync. Capped at {:.1} s (the rate is then over what it wrote). Filesystem synced before each.",
        BASELINE_CAP.as_secs_f64()
    );
    println!("  goals: interval >= 0.80x baseline; >= 500,000 records/s with 100-byte values");
    println!(
        "  {:<8} {:<7} {:>5} {:>5} {:>10} {:>7} {:>7} {:>5} {:>7} {:>6} {:>6} | {:>7} {:>10} {:>7} {:>5} | {:>6}  goal",
        "policy",
        "mode",
        "value",
        "tasks",
        "records/s",
        "MB/s",
        "batch B",
        "rec/b",
        "syncs/s",
        "ack ms",
        "cpu us",
        "MB/s",
        "records/s",
        "syncs/s",
        "s",
        "ratio"
    );
    let mut cases = Vec::new();
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval,
        FsyncPolicy::Never,
    ] {
        for value_len in [100usize, 1024] {
            cases.push((policy, value_len, "single", SINGLE_TASKS, 1));
            if policy == FsyncPolicy::Interval && value_len == 100 {
                cases.push((policy, value_len, "single", MANY_TASKS, 1));
            }
            cases.push((policy, value_len, "batched", BATCHED_TASKS, BATCH_RECORDS));
            if policy == FsyncPolicy::Interval {
                // Enough in flight that the fsync window, not the appenders, sets the pace:
                // how the pipeline drives the log under load with many messages in flight.
                cases.push((policy, value_len, "batched", WIDE_TASKS, BATCH_RECORDS));
            }
        }
    }
    let mut kept = Vec::new();
    let mut stale = 0;
    for (policy, value_len, mode, tasks, per_append) in cases {
        let sync = match policy {
            FsyncPolicy::Always => BaselineSync::LogGroups,
            FsyncPolicy::Interval => BaselineSync::Every(INTERVAL),
            FsyncPolicy::Never => BaselineSync::None,
        };
        let keep = match (policy, value_len, mode) {
            (FsyncPolicy::Never, 100, "batched") => Some("never/batched/100B"),
            (FsyncPolicy::Never, 100, "single") => Some("never/single/100B"),
            _ => None,
        };
        // Best of the rounds: the log's by records/s, the baseline's by MB/s.
        let mut best_run: Option<(AppendRun, Duration)> = None;
        let mut best_base: Option<(u64, u64, Duration)> = None;
        for round in 0..ROUNDS {
            settle(tmp);
            let dir = tempfile::tempdir_in(tmp).expect("temp dir");
            let cpu = cpu_time();
            let (run, log) =
                rt.block_on(append_run(dir.path(), policy, value_len, tasks, per_append));
            let cpu = cpu_time().saturating_sub(cpu);
            stale += run.stale;
            let log = if keep.is_some() && round + 1 == ROUNDS {
                Some(log)
            } else {
                let log = Arc::into_inner(log).expect("appenders done");
                rt.block_on(log.close()).expect("close");
                None
            };
            settle(tmp);
            let base = baseline(dir.path(), &run.batches, sync);
            if best_base.is_none_or(|b| rate(b.0, b.2) < rate(base.0, base.2)) {
                best_base = Some(base);
            }
            if best_run
                .as_ref()
                .is_none_or(|(b, _)| rate(b.records, b.elapsed) < rate(run.records, run.elapsed))
            {
                best_run = Some((run, cpu));
            }
            match (log, keep) {
                (Some(log), Some(label)) => kept.push(Kept {
                    label,
                    log,
                    _dir: dir,
                }),
                _ => drop(dir),
            }
        }
        let ((run, cpu), (base_bytes, base_syncs, base_time)) =
            (best_run.expect("rounds"), best_base.expect("rounds"));
        let secs = run.elapsed.as_secs_f64();
        let records_per_s = rate(run.records, run.elapsed);
        let mbs = rate(run.bytes(), run.elapsed) / MB;
        let bytes_per_record = run.bytes() as f64 / run.records as f64;
        let base_secs = base_time.as_secs_f64();
        let base_mbs = rate(base_bytes, base_time) / MB;
        let ratio = mbs / base_mbs;
        let mut goals = Vec::new();
        if policy == FsyncPolicy::Interval {
            goals.push(if ratio >= 0.8 {
                "ratio ok"
            } else {
                "ratio MISS"
            });
        }
        if value_len == 100 {
            goals.push(if records_per_s >= 500_000.0 {
                "500k ok"
            } else {
                "500k MISS"
            });
        }
        let syncs = |n: u64, s: f64| {
            if policy == FsyncPolicy::Never {
                "-".to_string()
            } else {
                format!("{:.0}", n as f64 / s)
            }
        };
        println!(
            "  {:<8} {:<7} {:>5} {:>5} {:>10.0} {:>7.1} {:>7.0} {:>5.1} {:>7} {:>6.2} {:>6.2} | {:>7.1} {:>10.0} {:>7} {:>5.2} | {:>5.2}x  {}",
            policy_name(policy),
            mode,
            format!("{value_len}B"),
            tasks,
            records_per_s,
            mbs,
            run.bytes() as f64 / run.batches.len() as f64,
            run.records as f64 / run.batches.len() as f64,
            syncs(run.publishes, secs),
            run.latency.as_secs_f64() * 1e3 / run.appends as f64,
            cpu.as_secs_f64() * 1e6 / run.records as f64,
            base_mbs,
            base_mbs * MB / bytes_per_record,
            syncs(base_syncs, base_secs),
            base_secs,
            ratio,
            goals.join(", ")
        );
    }
    if stale > 0 {
        println!("  NOTE: {stale} times a partition's end offset was behind an acknowledged append after the appenders finished");
    }
    println!("  load average after appends: {}", load());
    kept
}

fn rate(n: u64, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn reads_small(rt: &Runtime, kept: Vec<Kept>) {
    for Kept { label, log, _dir } in kept {
        let part = log.partition(TOPIC, 0).expect("partition");
        println!("== 2. sequential reads: partition 0 of the {label} run (page cache warm, best of 3) ==");
        println!("  baseline: the partition's segment files read in order with plain read(), 1 MiB at a time, unchecked");
        let raw = best(3, || read_raw(&part));
        let decoded = best(3, || read_decoded(&part));
        println!(
            "  {:.1} records ({:.0} bytes) per batch on average, {READ_BYTES} bytes per PartitionShared::read",
            raw.records as f64 / raw.batches as f64,
            raw.bytes as f64 / raw.batches as f64
        );
        let base = best(3, || plain_read(&part.dir));
        println!("{}", raw.line("raw batches (headers walked):"));
        println!("{}", decoded.line("decoded records (batch::decode):"));
        println!(
            "{}",
            base.baseline_line("baseline, plain read() of the files:", &raw)
        );
        drop(part);
        let log = Arc::into_inner(log).expect("no other holders");
        rt.block_on(log.close()).expect("close");
    }
}

/// Appends `total` bytes (about) of 1 KiB-value records to partition 0, fsync never, from 8
/// tasks. Returns the highest acknowledged end offset, the end offset read right after the
/// last acknowledgement, and the time taken.
async fn build(dir: &Path, segment_bytes: u64, total: u64) -> (u64, u64, Duration) {
    let log = Arc::new(
        Log::open(options(dir, FsyncPolicy::Never, segment_bytes))
            .await
            .expect("open"),
    );
    let route: Arc<str> = Arc::from("bench");
    let value = Bytes::from(vec![b'v'; 1024]);
    let key = Bytes::from_static(b"device-0042");
    let clock = Arc::new(AtomicI64::new(TS_BASE));
    let start = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..8 {
        let (log, clock) = (log.clone(), clock.clone());
        let (route, key, value) = (route.clone(), key.clone(), value.clone());
        handles.push(tokio::spawn(async move {
            let mut end = 0;
            loop {
                let done = log.partition(TOPIC, 0).map_or(0, |p| p.size_bytes());
                if done >= total {
                    return end;
                }
                let ts = clock.fetch_add(1, Ordering::Relaxed);
                let batch = (0..BATCH_RECORDS)
                    .map(|_| record(&route, &key, &value, ts))
                    .collect();
                end = end.max(log.append(TOPIC, 0, batch).await.expect("append").end.0);
            }
        }));
    }
    let mut acked = 0;
    for h in handles {
        acked = acked.max(h.await.expect("builder"));
    }
    let seen = log.partition(TOPIC, 0).expect("partition").end_offset().0;
    let log = Arc::into_inner(log).expect("builders done");
    log.close().await.expect("close");
    (acked, seen, start.elapsed())
}

/// The active (last) segment's file in a partition directory.
fn active_segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("partition dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment")
}

/// Simulates a crash: no `@clean` marker, and half a batch at the end of the active segment.
fn crash(log_dir: &Path, end: u64) -> u64 {
    let _ = std::fs::remove_file(log_dir.join("@clean"));
    let route: Arc<str> = Arc::from("bench");
    let key = Bytes::from_static(b"device-0042");
    let value = Bytes::from(vec![b'v'; 1024]);
    let records: Vec<Record> = (0..BATCH_RECORDS)
        .map(|_| record(&route, &key, &value, TS_BASE))
        .collect();
    let mut buf = Vec::new();
    batch::encode(&mut buf, end as i64, records.iter()).expect("encode");
    let torn = &buf[..buf.len() / 2];
    let mut f = File::options()
        .append(true)
        .open(active_segment(&log_dir.join(TOPIC).join("0")))
        .expect("active segment");
    f.write_all(torn).expect("torn write");
    f.sync_all().expect("fsync torn");
    torn.len() as u64
}

/// Times `Log::open` and checks the partition's end.
fn time_open(rt: &Runtime, dir: &Path, segment_bytes: u64, end: u64) -> Duration {
    settle(dir);
    let start = Instant::now();
    let log = rt
        .block_on(Log::open(options(dir, FsyncPolicy::Never, segment_bytes)))
        .expect("reopen");
    let took = start.elapsed();
    assert_eq!(
        log.partition(TOPIC, 0).expect("partition").end_offset().0,
        end,
        "recovered end offset"
    );
    rt.block_on(log.close()).expect("close");
    took
}

fn recovery(rt: &Runtime, tmp: &Path) {
    let free = free_bytes(tmp);
    let (total, segment_bytes, note) = match free {
        Some(f) if f >= 5 << 30 => (1u64 << 30, SEGMENT_BYTES, String::new()),
        _ => (
            256 * MIB,
            32 * MIB,
            format!(
                " (SCALED DOWN: {} free under {}, under 5 GiB)",
                free.map_or("unknown".into(), |f| format!(
                    "{:.1} GiB",
                    f as f64 / (1u64 << 30) as f64
                )),
                tmp.display()
            ),
        ),
    };
    println!(
        "== 3. recovery: one partition of ~{} MiB, {} MiB segments, 1 KiB values, {BATCH_RECORDS} records per append{note} ==",
        total / MIB,
        segment_bytes / MIB
    );
    let dir = tempfile::tempdir_in(tmp).expect("temp dir");
    settle(tmp);
    let (records, seen, took) =
        rt.block_on(build(dir.path(), segment_bytes, total - segment_bytes / 16));
    if seen != records {
        println!("  NOTE: right after the last acknowledgement the end offset read {seen}, the acknowledged end {records}");
    }
    let part_dir = dir.path().join(TOPIC).join("0");
    let data: u64 = walk(&part_dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| p.metadata().map_or(0, |m| m.len()))
        .sum();
    let segments = walk(&part_dir)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .count();
    let active = active_segment(&part_dir).metadata().map_or(0, |m| m.len());
    println!(
        "  built: {records} records, {:.1} MiB of segments ({segments} segments, active one {:.1} MiB) in {:.2} s ({:.0} MB/s, fsync never)",
        data as f64 / MIB as f64,
        active as f64 / MIB as f64,
        took.as_secs_f64(),
        data as f64 / MB / took.as_secs_f64()
    );
    let clean_warm = time_open(rt, dir.path(), segment_bytes, records);
    let torn = crash(dir.path(), records);
    let crash_warm = time_open(rt, dir.path(), segment_bytes, records);
    let after = active_segment(&part_dir).metadata().map_or(0, |m| m.len());
    assert_eq!(after, active, "the torn tail was cut off");
    let cold = drop_cache(dir.path());
    let clean_cold = time_open(rt, dir.path(), segment_bytes, records);
    let mut crash_cold = Vec::new();
    let mut cold = cold;
    for _ in 0..2 {
        crash(dir.path(), records);
        cold &= drop_cache(dir.path());
        crash_cold.push(time_open(rt, dir.path(), segment_bytes, records));
    }
    // Baseline: what recovery must at least do, read the active segment once.
    let active_path = active_segment(&part_dir);
    settle(tmp);
    cold &= drop_cache(dir.path());
    let base_cold = read_file(&active_path);
    let base_warm = read_file(&active_path);
    let cold_note = if cold {
        ""
    } else {
        " (dd failed: cache NOT dropped)"
    };
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!("  baseline: the active segment file read once with plain read(), 1 MiB at a time");
    println!(
        "  Log::open after a clean close, page cache warm:         {:>9.1} ms",
        ms(clean_warm)
    );
    println!(
        "  Log::open after a crash, page cache warm:               {:>9.1} ms  (scans the {:.1} MiB active segment; {torn} torn bytes cut; baseline {:.1} ms)",
        ms(crash_warm),
        active as f64 / MIB as f64,
        ms(base_warm)
    );
    println!(
        "  Log::open after a clean close, page cache dropped:      {:>9.1} ms{cold_note}",
        ms(clean_cold)
    );
    println!(
        "  Log::open after a crash, page cache dropped:            {:>9.1} ms, again {:.1} ms{cold_note} (baseline {:.1} ms)",
        ms(crash_cold[0]),
        ms(crash_cold[1]),
        ms(base_cold)
    );

    // 2 (continued): the whole big partition, read sequentially.
    println!(
        "== 2. sequential reads: the whole {:.0} MiB partition, 1 KiB values (warm: one pass each) ==",
        data as f64 / MIB as f64
    );
    println!(
        "  baseline: the segment files read in order with plain read(), 1 MiB at a time, unchecked"
    );
    let log = rt
        .block_on(Log::open(options(
            dir.path(),
            FsyncPolicy::Never,
            segment_bytes,
        )))
        .expect("open");
    let part = log.partition(TOPIC, 0).expect("partition");
    // Cold reads alternate, best of 2 each: the first read from disk of freshly written data is
    // slower on this machine whichever way it is read, so neither side gets it alone.
    let mut dropped = true;
    let (mut cold, mut base_cold) = (None::<ReadFigures>, None::<ReadFigures>);
    for _ in 0..2 {
        settle(tmp);
        dropped &= drop_cache(dir.path());
        let log_read = read_raw(&part);
        if cold.as_ref().is_none_or(|c| c.elapsed > log_read.elapsed) {
            cold = Some(log_read);
        }
        settle(tmp);
        dropped &= drop_cache(dir.path());
        let plain = plain_read(&part.dir);
        if base_cold.as_ref().is_none_or(|c| c.elapsed > plain.elapsed) {
            base_cold = Some(plain);
        }
    }
    let (cold, base_cold) = (cold.expect("rounds"), base_cold.expect("rounds"));
    let warm = read_raw(&part);
    let base_warm = plain_read(&part.dir);
    let decoded = read_decoded(&part);
    println!(
        "  {:.1} records per batch on average, {READ_BYTES} bytes per PartitionShared::read",
        warm.records as f64 / warm.batches as f64
    );
    println!(
        "{}",
        cold.line(if dropped {
            "raw batches, cache dropped (best of 2):"
        } else {
            "raw batches (cache NOT dropped):"
        })
    );
    println!(
        "{}",
        base_cold.baseline_line(
            if dropped {
                "baseline, cache dropped (best of 2):"
            } else {
                "baseline (cache NOT dropped):"
            },
            &cold
        )
    );
    println!("{}", warm.line("raw batches, page cache warm:"));
    println!("{}", decoded.line("decoded records, page cache warm:"));
    println!(
        "{}",
        base_warm.baseline_line("baseline, plain read(), cache warm:", &warm)
    );
    let start = Instant::now();
    let mut found = 0;
    for i in 0..1000 {
        let ts = TS_BASE + (records / BATCH_RECORDS as u64) as i64 * i / 1000;
        found += part.offset_for_time(ts).expect("offset_for_time").is_some() as u64;
    }
    println!(
        "  offset_for_time, 1000 timestamps spread over the partition: {:.1} us each ({found} found)",
        start.elapsed().as_secs_f64() * 1e6 / 1000.0
    );
    drop(part);
    rt.block_on(log.close()).expect("close");
    drop(dir);
}

fn main() {
    let started = Instant::now();
    let tmp = std::env::temp_dir();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "log bench: {} CPUs, tokio multi-thread runtime with default workers, temp dir {}, {} free; load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        tmp.display(),
        free_bytes(&tmp).map_or("?".into(), |f| format!("{:.1} GiB", f as f64 / (1u64 << 30) as f64)),
        load()
    );
    let kept = appends(&rt, &tmp);
    reads_small(&rt, kept);
    recovery(&rt, &tmp);
    println!("== 4. memory ==");
    println!(
        "  peak RSS (VmHWM): {}   current RSS (VmRSS): {}",
        status_field("VmHWM:"),
        status_field("VmRSS:")
    );
    println!(
        "total bench time {:.1} s; load average at the end {}",
        started.elapsed().as_secs_f64(),
        load()
    );
}
