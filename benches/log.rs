//! Embedded log throughput, read speed, recovery time and memory, beside plain-file baselines
//! measured in the same run.
//!
//! `cargo bench --bench log`. Needs a few GiB free under /tmp (checked; scaled down if not).
//!
//! 1. Appends: 100-byte and 1 KiB values under each fsync policy, 4 partitions, driven as the
//!    pipeline drives the log: many tasks on a multi-thread runtime, each awaiting
//!    `log.append(topic, partition, records)` in a loop. "single" mode: 256 tasks, one record
//!    per append. "batched" mode: 64 tasks, 100 records per append. Each case runs for
//!    `RUN` once (the machine is shared and small; one run keeps the whole bench short).
//!    Baseline: the batches the log actually wrote (their sizes read back from the log, in
//!    order) are written again as plain `write` calls of the same sizes into one plain file,
//!    with `fdatasync` (what the log calls): after every write (`always`), when 5 ms have
//!    passed since the previous fdatasync started and once at the end (`interval`), or never
//!    (`never`). The baseline stops after `BASELINE_CAP` if it has not written all the bytes.
//! 2. Sequential reads of a whole partition with `PartitionShared::read` (1 MiB at a time):
//!    raw batches (headers walked, nothing decoded) and decoded records (`batch::decode`).
//! 3. Recovery of a ~1 GiB partition (128 MiB segments, 1 KiB values): `Log::open` after a
//!    clean close, and after a simulated crash (`@clean` deleted, half a batch torn off at the
//!    end of the active segment), with the page cache warm and dropped.
//! 4. Peak RSS (VmHWM).

use bytes::Bytes;
use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;
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
const RUN: Duration = Duration::from_secs(2);
/// The most time a baseline gets to write the log's bytes again.
const BASELINE_CAP: Duration = Duration::from_secs(3);
const SINGLE_TASKS: usize = 256;
const BATCHED_TASKS: usize = 64;
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

/// Sizes and record counts of the batches of a partition from `from`, read back in order.
fn batch_sizes(p: &PartitionShared, from: u64, sizes: &mut Vec<u32>) -> u64 {
    let mut offset = from;
    let mut records = 0u64;
    loop {
        let bytes = p.read(Offset(offset), READ_BYTES).expect("read back");
        if bytes.is_empty() {
            return records;
        }
        let mut pos = 0;
        while pos < bytes.len() {
            let h = BatchHeader::parse(&bytes[pos..]).expect("batch header");
            sizes.push(h.total_len() as u32);
            records += h.record_count as u64;
            pos += h.total_len();
            offset = h.next_offset() as u64;
        }
    }
}

struct AppendRun {
    records: u64,
    appends: u64,
    /// Sum of every append's time from call to answer.
    latency: Duration,
    elapsed: Duration,
    /// Every batch written during the run, in order per partition.
    batches: Vec<u32>,
}

impl AppendRun {
    fn bytes(&self) -> u64 {
        self.batches.iter().map(|&b| u64::from(b)).sum()
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
    let clock = Arc::new(AtomicI64::new(TS_BASE));
    let start = Instant::now();
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let (log, stop, clock) = (log.clone(), stop.clone(), clock.clone());
        let (route, key, value) = (route.clone(), key.clone(), value.clone());
        handles.push(tokio::spawn(async move {
            let partition = t as u32 % PARTITIONS;
            let (mut records, mut appends, mut latency) = (0u64, 0u64, Duration::ZERO);
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
            }
            (records, appends, latency)
        }));
    }
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    let (mut records, mut appends, mut latency) = (0, 0, Duration::ZERO);
    for h in handles {
        let (r, a, l) = h.await.expect("appender");
        records += r;
        appends += a;
        latency += l;
    }
    let elapsed = start.elapsed();
    let mut batches = Vec::new();
    let mut read_back = 0;
    for (p, &from) in (0..PARTITIONS).zip(&from) {
        let part = log.partition(TOPIC, p).expect("partition");
        read_back += batch_sizes(&part, from, &mut batches);
    }
    assert_eq!(read_back, records, "every acknowledged record reads back");
    (
        AppendRun {
            records,
            appends,
            latency,
            elapsed,
            batches,
        },
        log,
    )
}

#[derive(Clone, Copy)]
enum BaselineSync {
    EachWrite,
    Every(Duration),
    None,
}

/// Writes `chunks` (sizes) one after another into a new plain file in `dir`, fdatasyncing as
/// `sync` says; stops early after `BASELINE_CAP`. Returns bytes written and the time taken.
fn baseline(dir: &Path, chunks: &[u32], sync: BaselineSync) -> (u64, Duration) {
    let path = dir.join("baseline.dat");
    let mut file = File::create(&path).expect("baseline file");
    let buf = vec![0xa5u8; chunks.iter().copied().max().unwrap_or(0) as usize];
    let mut bytes = 0u64;
    let start = Instant::now();
    let mut last_sync = start;
    for &c in chunks {
        file.write_all(&buf[..c as usize]).expect("baseline write");
        bytes += u64::from(c);
        match sync {
            BaselineSync::EachWrite => file.sync_data().expect("fdatasync"),
            BaselineSync::Every(d) if last_sync.elapsed() >= d => {
                last_sync = Instant::now();
                file.sync_data().expect("fdatasync");
            }
            _ => {}
        }
        if start.elapsed() >= BASELINE_CAP {
            break;
        }
    }
    if let BaselineSync::Every(_) = sync {
        file.sync_data().expect("fdatasync");
    }
    let elapsed = start.elapsed();
    drop(file);
    std::fs::remove_file(&path).expect("remove baseline file");
    (bytes, elapsed)
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

/// Reads the partition from offset 0 to its end, every batch decoded into records.
fn read_decoded(p: &PartitionShared) -> ReadFigures {
    let start = Instant::now();
    let (mut offset, mut records, mut bytes, mut batches) = (0u64, 0u64, 0u64, 0u64);
    loop {
        let got = p.read(Offset(offset), READ_BYTES).expect("read");
        if got.is_empty() {
            break;
        }
        bytes += got.len() as u64;
        for item in batch::batches(&got) {
            let (_, whole) = item.expect("valid batch");
            let decoded = batch::decode(whole).expect("decode");
            batches += 1;
            for r in &decoded.records {
                if r.offset as u64 >= offset {
                    records += 1;
                }
            }
            offset = decoded.header.next_offset() as u64;
            black_box(decoded);
        }
    }
    ReadFigures {
        records,
        bytes,
        batches,
        elapsed: start.elapsed(),
    }
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

fn appends(rt: &Runtime, tmp: &Path) -> Option<(tempfile::TempDir, Arc<Log>)> {
    println!("== 1. append throughput ==");
    println!(
        "  {PARTITIONS} partitions, {} MiB segments, interval = {} ms; each case runs {} s once (acknowledged records only)",
        SEGMENT_BYTES / MIB,
        INTERVAL.as_millis(),
        RUN.as_secs()
    );
    println!("  single:  {SINGLE_TASKS} tasks, each awaiting log.append(topic, task % {PARTITIONS}, vec![record]) in a loop");
    println!("  batched: {BATCHED_TASKS} tasks, each awaiting log.append(topic, task % {PARTITIONS}, <{BATCH_RECORDS} records>) in a loop");
    println!("  records: 11-byte key, no headers, the value; MB/s counts the on-disk batch bytes (1 MB = 10^6 B)");
    println!("  batch B: mean size of the batches the log wrote (concurrent appends merged into one batch)");
    println!("  ack ms: mean time from append call to answer");
    println!("  baseline: the same batch sizes, in the same order, written with plain write() into one file;");
    println!("    always: fdatasync after every write; interval: fdatasync when >= 5 ms since the last one");
    println!(
        "    started, and at the end; never: no fdatasync. Stops after {} s if not done.",
        BASELINE_CAP.as_secs()
    );
    println!("  goals: interval >= 0.80x baseline; >= 500,000 records/s with 100-byte values");
    println!(
        "  {:<8} {:<7} {:>5} {:>12} {:>8} {:>9} {:>8} {:>7} | {:>9} {:>12} {:>8} | {:>6}  goal",
        "policy",
        "mode",
        "value",
        "records/s",
        "MB/s",
        "batches/s",
        "batch B",
        "ack ms",
        "base MB/s",
        "base recs/s",
        "base s",
        "ratio"
    );
    let mut keep = None;
    for policy in [
        FsyncPolicy::Always,
        FsyncPolicy::Interval,
        FsyncPolicy::Never,
    ] {
        for value_len in [100usize, 1024] {
            for (mode, tasks, per_append) in [
                ("single", SINGLE_TASKS, 1),
                ("batched", BATCHED_TASKS, BATCH_RECORDS),
            ] {
                let dir = tempfile::tempdir_in(tmp).expect("temp dir");
                let (run, log) =
                    rt.block_on(append_run(dir.path(), policy, value_len, tasks, per_append));
                let secs = run.elapsed.as_secs_f64();
                let rate = run.records as f64 / secs;
                let mbs = run.bytes() as f64 / MB / secs;
                let bytes_per_record = run.bytes() as f64 / run.records as f64;
                let sync = match policy {
                    FsyncPolicy::Always => BaselineSync::EachWrite,
                    FsyncPolicy::Interval => BaselineSync::Every(INTERVAL),
                    FsyncPolicy::Never => BaselineSync::None,
                };
                let (base_bytes, base_time) = baseline(dir.path(), &run.batches, sync);
                let base_mbs = base_bytes as f64 / MB / base_time.as_secs_f64();
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
                    goals.push(if rate >= 500_000.0 {
                        "500k ok"
                    } else {
                        "500k MISS"
                    });
                }
                println!(
                    "  {:<8} {:<7} {:>5} {:>12.0} {:>8.1} {:>9.0} {:>8.0} {:>7.2} | {:>9.1} {:>12.0} {:>8.2} | {:>5.2}x  {}",
                    policy_name(policy),
                    mode,
                    format!("{value_len}B"),
                    rate,
                    mbs,
                    run.batches.len() as f64 / secs,
                    run.bytes() as f64 / run.batches.len() as f64,
                    run.latency.as_secs_f64() * 1e3 / run.appends as f64,
                    base_mbs,
                    base_mbs * MB / bytes_per_record,
                    base_time.as_secs_f64(),
                    ratio,
                    goals.join(", ")
                );
                if policy == FsyncPolicy::Never && value_len == 100 && mode == "batched" {
                    keep = Some((dir, log));
                } else {
                    let log = Arc::into_inner(log).expect("appenders done");
                    rt.block_on(log.close()).expect("close");
                }
            }
        }
    }
    println!("  load average after appends: {}", load());
    keep
}

fn reads_small(rt: &Runtime, kept: Option<(tempfile::TempDir, Arc<Log>)>) {
    let Some((dir, log)) = kept else { return };
    let part = log.partition(TOPIC, 0).expect("partition");
    println!("== 2. sequential reads: partition 0 of the never/batched/100B run (page cache warm, best of 3) ==");
    let raw = best(3, || read_raw(&part));
    let decoded = best(3, || read_decoded(&part));
    println!(
        "  {:.1} records per batch on average, {READ_BYTES} bytes per PartitionShared::read",
        raw.records as f64 / raw.batches as f64
    );
    println!("{}", raw.line("raw batches (headers walked):"));
    println!("{}", decoded.line("decoded records (batch::decode):"));
    drop(part);
    let log = Arc::into_inner(log).expect("no other holders");
    rt.block_on(log.close()).expect("close");
    drop(dir);
}

/// Appends `total` bytes (about) of 1 KiB-value records to partition 0, fsync never.
async fn build(dir: &Path, segment_bytes: u64, total: u64) -> (u64, Duration) {
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
            loop {
                let done = log.partition(TOPIC, 0).map_or(0, |p| p.size_bytes());
                if done >= total {
                    break;
                }
                let ts = clock.fetch_add(1, Ordering::Relaxed);
                let batch = (0..BATCH_RECORDS)
                    .map(|_| record(&route, &key, &value, ts))
                    .collect();
                log.append(TOPIC, 0, batch).await.expect("append");
            }
        }));
    }
    for h in handles {
        h.await.expect("builder");
    }
    let records = log.partition(TOPIC, 0).expect("partition").end_offset().0;
    let log = Arc::into_inner(log).expect("builders done");
    log.close().await.expect("close");
    (records, start.elapsed())
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
    let (records, took) = rt.block_on(build(dir.path(), segment_bytes, total - 2 * MIB));
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
    crash(dir.path(), records);
    let cold = cold && drop_cache(dir.path());
    let crash_cold = time_open(rt, dir.path(), segment_bytes, records);
    let cold_note = if cold {
        ""
    } else {
        " (dd failed: cache NOT dropped)"
    };
    println!(
        "  Log::open after a clean close, page cache warm:         {:>9.1} ms",
        clean_warm.as_secs_f64() * 1e3
    );
    println!(
        "  Log::open after a crash, page cache warm:               {:>9.1} ms  (scans the {:.1} MiB active segment; {torn} torn bytes cut)",
        crash_warm.as_secs_f64() * 1e3,
        active as f64 / MIB as f64
    );
    println!(
        "  Log::open after a clean close, page cache dropped:      {:>9.1} ms{cold_note}",
        clean_cold.as_secs_f64() * 1e3
    );
    println!(
        "  Log::open after a crash, page cache dropped:            {:>9.1} ms{cold_note}",
        crash_cold.as_secs_f64() * 1e3
    );
    println!(
        "  for scale: reading the active segment at the build's write speed would take {:.0} ms",
        active as f64 / (data as f64 / took.as_secs_f64()) * 1e3
    );

    // 2 (continued): the whole big partition, read sequentially.
    println!(
        "== 2. sequential reads: the whole {:.0} MiB partition, 1 KiB values ==",
        data as f64 / MIB as f64
    );
    let log = rt
        .block_on(Log::open(options(
            dir.path(),
            FsyncPolicy::Never,
            segment_bytes,
        )))
        .expect("open");
    let part = log.partition(TOPIC, 0).expect("partition");
    let dropped = drop_cache(dir.path());
    let cold = read_raw(&part);
    let warm = read_raw(&part);
    let decoded = read_decoded(&part);
    println!(
        "  {:.1} records per batch on average, {READ_BYTES} bytes per PartitionShared::read",
        warm.records as f64 / warm.batches as f64
    );
    println!(
        "{}",
        cold.line(if dropped {
            "raw batches, page cache dropped:"
        } else {
            "raw batches (cache NOT dropped):"
        })
    );
    println!("{}", warm.line("raw batches, page cache warm:"));
    println!("{}", decoded.line("decoded records, page cache warm:"));
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
