//! rdkafka helpers (blocking: call them inside `blocking`), and outside clients (kcat, the
//! Python scripts) run with a time limit.

use crate::records::Rec;
use crate::support;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset as KOffset, TopicPartitionList};
use std::collections::HashSet;
use std::process::Command;
use std::time::{Duration, Instant};

/// How long one blocking client call may take.
pub(crate) const CALL: Duration = Duration::from_secs(10);

/// A consumer that never joins a group: partitions are assigned by hand, nothing is committed.
/// (librdkafka's `assign` needs a `group.id` to exist, "Local: Unknown group" otherwise; with
/// `assign` alone it only looks the coordinator up, and never sends JoinGroup.)
pub(crate) fn consumer_config(bootstrap: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "tributary-test-never-joined")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    config
}

pub(crate) fn base_consumer(bootstrap: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut config = consumer_config(bootstrap);
    config
        .set("client.id", "tributary-test")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "100")
        .set("socket.timeout.ms", "10000");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("rdkafka consumer")
}

pub(crate) fn assign(consumer: &BaseConsumer, topic: &str, offsets: &[(i32, KOffset)]) {
    let mut tpl = TopicPartitionList::new();
    for &(p, o) in offsets {
        tpl.add_partition_offset(topic, p, o).unwrap();
    }
    consumer.assign(&tpl).unwrap();
}

/// Polls until every one of `partitions` assigned partitions has reported its end; returns the
/// records by partition and offset, checking that each partition's arrive in offset order.
pub(crate) fn read_to_end(consumer: &BaseConsumer, partitions: usize) -> Vec<Rec> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut at_end = HashSet::new();
    let mut records: Vec<Rec> = Vec::new();
    while at_end.len() < partitions {
        assert!(
            Instant::now() < deadline,
            "timed out: {} records, at the end of {at_end:?}",
            records.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                let r = Rec::from_message(&m);
                at_end.remove(&r.partition);
                if let Some(last) = records.iter().rev().find(|l| l.partition == r.partition) {
                    assert!(
                        r.offset > last.offset,
                        "partition {} went from {} to {}",
                        r.partition,
                        last.offset,
                        r.offset
                    );
                }
                records.push(r);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("consume error: {e}"),
        }
    }
    records.sort();
    records
}

pub(crate) fn from(expected: &[Rec], starts: &[(i32, i64)]) -> Vec<Rec> {
    expected
        .iter()
        .filter(|r| {
            starts
                .iter()
                .any(|&(p, o)| r.partition == p && r.offset >= o)
        })
        .cloned()
        .collect()
}

/// Waits for a child process, killing it after `limit`.
pub(crate) fn run(mut command: Command, limit: Duration) -> std::process::Output {
    let what = format!("{command:?}");
    // Cargo points LD_LIBRARY_PATH at build outputs, rdkafka-sys's librdkafka.so.1 (no zstd)
    // among them: kcat and Python must load their own.
    let child = command
        .env_remove("LD_LIBRARY_PATH")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let id = child.id();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let watchdog = std::thread::spawn(move || {
        if done_rx.recv_timeout(limit).is_err() {
            support::signal_pid(id, libc::SIGKILL);
            return true;
        }
        false
    });
    let output = child.wait_with_output().unwrap();
    let _ = done_tx.send(());
    let killed = watchdog.join().unwrap();
    assert!(
        !killed,
        "{what} took over {limit:?}; stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

pub(crate) fn kcat(args: &[&str]) -> String {
    let mut command = Command::new(support::require("kcat", "apt-get install -y kcat"));
    command.args(args);
    let out = run(command, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kcat {args:?}: {}\n{stderr}",
        out.status
    );
    String::from_utf8(out.stdout).unwrap()
}
