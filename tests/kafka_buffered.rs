//! Buffered delivery to Kafka (`delivery: buffered`): a message is acked once it is in the
//! local buffer, and a forwarder ships the buffer to Kafka in order. Against a real Mosquitto,
//! the `tributary` binary and a real Apache Kafka broker that the tests stop and start.

mod support;

use std::process::Command;
use std::time::Duration;
use support::kafka::KafkaBroker;
use support::kafka_read::{messages, publish_paced, read_and_count};
use support::{Gateway, Mosquitto};

const PARTITIONS: u32 = 4;

/// A gateway bridging `broker` to the Kafka at `bootstrap` through a buffer of `max_bytes`,
/// serving its metrics on port `http`.
fn config(
    broker: &Mosquitto,
    client_id: &str,
    bootstrap: &str,
    topic: &str,
    max_bytes: &str,
    http: u16,
) -> String {
    format!(
        "mqtt: {{ url: \"{}\", client_id: {client_id}, keep_alive: 5s, max_inflight: 500 }}\n\
         log: {{ backend: kafka, embedded: {{ fsync_interval: 2ms }}, kafka: {{ bootstrap_servers: \"{bootstrap}\", delivery: buffered, buffer: {{ dir: DATA_DIR/spool, max_bytes: {max_bytes} }} }} }}\n\
         topics: {{ {topic}: {{ partitions: {PARTITIONS} }} }}\n\
         http: {{ listen: \"127.0.0.1:{http}\" }}\n\
         routes:\n  - {{ name: telemetry, from: \"devices/{{device}}/telemetry\", to: {topic}, key: \"{{device}}\" }}\n",
        broker.url()
    )
}

/// `tributary_kafka_forward_lag_records{topic}` from the gateway's /metrics.
fn forward_lag_metric(port: u16, topic: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    conn.read_to_string(&mut text).ok()?;
    let name = format!("tributary_kafka_forward_lag_records{{topic=\"{topic}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&name))
        .and_then(|v| v.trim().parse().ok())
}

/// `tributary topics` on the gateway's buffer: (partition, forwarded, lag) per partition.
fn forwarded(gw: &Gateway) -> Vec<(u32, u64, u64)> {
    let out = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["topics", "-c"])
        .arg(gw.config_path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "TOPIC",
            "PARTITION",
            "EARLIEST",
            "LATEST",
            "BYTES",
            "FORWARDED",
            "LAG"
        ]
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[1].parse().unwrap(),
                f[5].parse().unwrap(),
                f[6].parse().unwrap(),
            )
        })
        .collect()
}

fn buffered_records(gw: &Gateway, topic: &str) -> usize {
    support::count_records(&gw.data_dir().join("spool"), topic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_while_kafka_is_down_and_delivered_after_a_crash() {
    const N: usize = 20_000;
    let mut kafka = KafkaBroker::start();
    let bootstrap = kafka.bootstrap();
    kafka.stop();
    let broker = Mosquitto::start();
    let topic = format!("buffered-{}", std::process::id());
    let http = support::free_port();
    let mut gw = Gateway::new(&config(
        &broker,
        "gw-buffered",
        &bootstrap,
        &topic,
        "1GiB",
        http,
    ));
    gw.start();

    // Kafka is down: every message is still taken, stored in the buffer and acked.
    publish_paced(broker.port, messages(N), 4, Duration::ZERO).await;
    let stored = tokio::task::spawn_blocking({
        let gw_data = gw.data_dir().join("spool");
        let topic = topic.clone();
        move || {
            support::wait_until(Duration::from_secs(60), || {
                support::count_records(&gw_data, &topic) >= N
            })
        }
    })
    .await
    .unwrap();
    assert!(
        stored,
        "{} of {N} in the buffer:\n{}",
        buffered_records(&gw, &topic),
        gw.log()
    );
    assert!(
        support::wait_until(Duration::from_secs(10), || forwarded(&gw)
            .iter()
            .map(|p| p.2)
            .sum::<u64>()
            == N as u64),
        "the whole buffer waits for Kafka"
    );
    assert_eq!(forward_lag_metric(http, &topic), Some(N as u64));

    // A crash while Kafka is still down, then Kafka comes back, then the gateway.
    gw.kill();
    kafka.start_again();
    gw.start();
    let (records, t) = read_and_count(
        kafka.bootstrap(),
        topic.clone(),
        PARTITIONS,
        N,
        "buffered across a crash and an outage",
    )
    .await;
    assert_eq!(t.lost, Vec::<usize>::new(), "{}", gw.log());
    assert_eq!(t.disorder, 0);
    for r in &records {
        assert_eq!(
            r.partition,
            tributary::route::partition::partition_for_key(r.key.as_bytes(), PARTITIONS)
        );
    }
    // The buffer empties: every partition forwarded to its end.
    assert!(
        support::wait_until(Duration::from_secs(10), || forwarded(&gw)
            .iter()
            .all(|&(_, _, lag)| lag == 0)),
        "{:?}",
        forwarded(&gw)
    );
    assert_eq!(forward_lag_metric(http, &topic), Some(0));
    assert!(gw.terminate().success(), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_stops_acks_until_kafka_drains_it() {
    const N: usize = 30_000;
    let mut kafka = KafkaBroker::start();
    let bootstrap = kafka.bootstrap();
    kafka.stop();
    let broker = Mosquitto::start();
    let topic = format!("buffered-full-{}", std::process::id());
    let mut gw = Gateway::new(&config(
        &broker,
        "gw-buffer-full",
        &bootstrap,
        &topic,
        "1MiB",
        support::free_port(),
    ));
    gw.start();
    let publisher = tokio::spawn(publish_paced(broker.port, messages(N), 1, Duration::ZERO));
    let full = tokio::task::spawn_blocking({
        let path = gw.dir.path().join("gateway-1.log");
        move || {
            support::wait_until(Duration::from_secs(60), || {
                std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .contains("buffer is full")
            })
        }
    })
    .await
    .unwrap();
    assert!(full, "{}", gw.log());
    let held = buffered_records(&gw, &topic);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let later = buffered_records(&gw, &topic);
    println!("buffer full at {held} records; {later} two seconds later");
    assert!(later < N, "acks stopped before every message was taken");
    assert!(
        later <= held + 500,
        "the buffer stays at its limit: {held} -> {later}"
    );

    kafka.start_again();
    publisher.await.unwrap();
    let (_, t) = read_and_count(
        kafka.bootstrap(),
        topic.clone(),
        PARTITIONS,
        N,
        "full buffer drained",
    )
    .await;
    assert_eq!(t.lost, Vec::<usize>::new(), "{}", gw.log());
    assert_eq!(t.disorder, 0);
    // Shipped segments are deleted: the buffer's earliest offsets move past them, and the
    // buffer holds less than half its 1 MiB limit.
    assert!(
        support::wait_until(Duration::from_secs(10), || forwarded(&gw)
            .iter()
            .all(|&(_, _, lag)| lag == 0)),
        "{:?}",
        forwarded(&gw)
    );
    let spool = gw.data_dir().join("spool");
    let extent = || {
        let reader = tributary::log::LogReader::open(&spool).unwrap();
        let partitions = reader.topics().unwrap().remove(&topic).unwrap();
        let earliest: u64 = partitions.iter().map(|p| p.start.0).sum();
        let bytes: u64 = partitions.iter().map(|p| p.bytes).sum();
        (earliest, bytes)
    };
    // Retention runs every second in the buffer.
    assert!(
        support::wait_until(Duration::from_secs(10), || {
            let (earliest, bytes) = extent();
            earliest > 0 && bytes < (1 << 20) / 2
        }),
        "{:?}",
        extent()
    );
    println!(
        "after the drain the buffer starts at {:?} (offsets summed, bytes)",
        extent()
    );
    assert!(gw.terminate().success(), "{}", gw.log());
}
