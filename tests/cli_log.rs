//! `tributary topics` and `tributary consume` on a real log, including while a writer holds it.

use bytes::Bytes;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tributary::config::{FsyncPolicy, TopicConfig, TopicsConfig};
use tributary::log::{Log, LogOptions};
use tributary::record::{Header, Record};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");
const T0: i64 = 1_790_000_000_000;

fn options(dir: &Path) -> LogOptions {
    let mut topics = TopicsConfig::default();
    topics
        .topics
        .insert("t".into(), TopicConfig { partitions: 2 });
    LogOptions {
        dir: dir.to_path_buf(),
        segment_bytes: 2048,
        fsync: FsyncPolicy::Always,
        fsync_interval: Duration::from_millis(1),
        retention_time: None,
        retention_bytes: None,
        retention_check: Duration::from_secs(3600),
        topics,
    }
}

fn record(partition: u32, i: i64) -> Record {
    Record {
        route: Arc::from("r"),
        topic: "t".into(),
        partition,
        key: (i % 2 == 0).then(|| Bytes::from(format!("k{i}"))),
        value: if i == 3 {
            Bytes::from_static(&[0xff, 0xfe])
        } else {
            Bytes::from(format!("v{i}"))
        },
        headers: vec![Header::new("mqtt.topic", format!("devices/{i}"))],
        timestamp_ms: T0 + i * 1000,
        dead_letter: None,
    }
}

/// A config file whose embedded log lives in `dir`.
fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("bridge.yaml");
    let yaml = format!(
        "listener: {{ listen: 127.0.0.1:0 }}\nlog: {{ embedded: {{ dir: {:?} }} }}\nroutes: [{{ from: \"#\", to: t }}]\n",
        dir.join("data")
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

fn run(cfg: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("-c")
        .arg(cfg)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Writes 20 records to partition 0 and 5 to partition 1, and keeps the writer open.
async fn populated(dir: &Path) -> Log {
    let log = Log::open(options(&dir.join("data"))).await.unwrap();
    for i in 0..20 {
        log.append("t", 0, vec![record(0, i)]).await.unwrap();
    }
    log.append("t", 1, (0..5).map(|i| record(1, i)).collect())
        .await
        .unwrap();
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_and_consume_read_while_the_writer_runs() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let log = populated(dir.path()).await;

    let (code, stdout, stderr) = run(&cfg, &["topics"]);
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<Vec<&str>> = stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert_eq!(rows[0][..4], ["t", "0", "0", "20"]);
    assert_eq!(rows[1][..4], ["t", "1", "0", "5"]);
    assert!(rows[0][4].parse::<u64>().unwrap() > 0);

    let (code, stdout, _) = run(&cfg, &["consume", "-t", "t", "--partition", "0"]);
    assert_eq!(code, 0);
    let records = lines(&stdout);
    assert_eq!(records.len(), 20);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["topic"], "t");
        assert_eq!(r["partition"], 0);
        assert_eq!(r["offset"], i as u64);
        assert_eq!(r["timestamp"], T0 + i as i64 * 1000);
        assert_eq!(r["headers"]["mqtt.topic"], format!("devices/{i}"));
        if i == 3 {
            assert_eq!(r["value_b64"], "//4=");
            assert!(r.get("value").is_none());
        } else {
            assert_eq!(r["value"], format!("v{i}"));
        }
        let key = if i % 2 == 0 {
            Value::from(format!("k{i}"))
        } else {
            Value::Null
        };
        assert_eq!(r["key"], key);
    }
    // Field order is the documented one.
    let first_line = stdout.lines().next().unwrap();
    assert!(
        first_line.starts_with(r#"{"topic":"t","partition":0,"offset":0,"timestamp":"#),
        "{first_line}"
    );

    let offsets = |args: &[&str]| -> Vec<(u64, u64)> {
        let mut all = vec!["consume", "-t", "t"];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = run(&cfg, &all);
        assert_eq!(code, 0, "{args:?}: {stderr}");
        lines(&stdout)
            .iter()
            .map(|r| {
                (
                    r["partition"].as_u64().unwrap(),
                    r["offset"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let all = offsets(&[]);
    assert_eq!(all.len(), 25, "every partition, partition by partition");
    assert_eq!(all[19..21], [(0, 19), (1, 0)]);
    assert_eq!(
        offsets(&["--partition", "0", "--from", "15"]),
        (15..20).map(|o| (0, o)).collect::<Vec<_>>()
    );
    assert_eq!(offsets(&["--from", "latest"]), []);
    assert_eq!(
        offsets(&["--partition", "0", "--limit", "3"]),
        [(0, 0), (0, 1), (0, 2)]
    );
    // Time: record i has timestamp T0 + i s; the first at or after T0 + 12.5 s is offset 13.
    let at = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + Duration::from_millis((T0 + 12_500) as u64),
    )
    .to_string();
    assert_eq!(
        offsets(&["--partition", "0", "--from", &at]),
        (13..20).map(|o| (0, o)).collect::<Vec<_>>()
    );
    assert_eq!(
        offsets(&["--partition", "1", "--from", &at]),
        [],
        "all of partition 1 is older"
    );

    let (code, _, stderr) = run(
        &cfg,
        &["consume", "-t", "t", "--partition", "0", "--from", "21"],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("offset 21 is out of range; the log holds 0 to 20"),
        "{stderr}"
    );
    let (code, _, stderr) = run(&cfg, &["consume", "-t", "nope"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no topic nope"), "{stderr}");
    let (code, _, stderr) = run(&cfg, &["consume", "-t", "t", "--partition", "5"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no partition 5"), "{stderr}");
    let (code, _, _) = run(&cfg, &["consume", "-t", "t", "--from", "yesterday"]);
    assert_eq!(code, 2, "a bad --from is a usage error");
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consume_follow_prints_records_as_the_writer_appends_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let log = populated(dir.path()).await;
    let mut child = Command::new(BIN)
        .args([
            "consume",
            "-t",
            "t",
            "--partition",
            "0",
            "--from",
            "20",
            "--follow",
            "--limit",
            "30",
            "-c",
        ])
        .arg(&cfg)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map(|l| serde_json::from_str::<Value>(&l.unwrap()).unwrap())
            .collect::<Vec<_>>()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    for i in 20..50 {
        log.append("t", 0, vec![record(0, i)]).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let records = reader.join().unwrap();
    let offsets: Vec<u64> = records
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(
        offsets,
        (20..50).collect::<Vec<_>>(),
        "followed from offset 20 as records arrived, stopped at --limit"
    );
    log.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_route_and_run_all_refuse_a_changed_partition_count() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    populated(dir.path()).await.close().await.unwrap();
    // The log holds topic t with 2 partitions; the config now says 3.
    let yaml = std::fs::read_to_string(&cfg).unwrap() + "topics: { t: { partitions: 3 } }\n";
    std::fs::write(&cfg, yaml).unwrap();
    for args in [&["check"][..], &["route", "a/b"], &["run"]] {
        let (code, stdout, stderr) = run(&cfg, args);
        assert_eq!(code, 2, "{args:?}: {stdout}{stderr}");
        assert!(
            stderr.contains("topics.t.partitions: 3 but the log already holds t with 2 partitions"),
            "{args:?}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_and_route_use_the_logs_partition_counts() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    // The log holds topic t with 2 partitions; the config leaves t to the default (4).
    let log = populated(dir.path()).await;
    // ... and they read it while `run`'s writer holds the log.
    let (code, stdout, stderr) = run(&cfg, &["check"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("-> t (2 partitions)"), "{stdout}");
    let (code, stdout, stderr) = run(&cfg, &["route", "a/b"]);
    assert_eq!(code, 0, "{stderr}");
    let line: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(line["partition"].as_u64().unwrap() < 2, "{line}");
    log.close().await.unwrap();
}
