//! The Kafka cluster backend end to end: a real Mosquitto, the `tributary` binary with
//! `log.backend: kafka`, and a real Apache Kafka broker (KRaft, started by the tests). Counts
//! of lost and duplicated records are exact; a key's partition is checked against murmur2.

mod support;

use std::time::Duration;
use support::kafka::KafkaBroker;
use support::kafka_read::{in_kafka, messages, publish_paced, read_and_count, Read};
use support::{Gateway, Mosquitto};
use tributary::route::partition::partition_for_key;

const PARTITIONS: u32 = 6;

/// A gateway config bridging `broker` to the Kafka at `bootstrap`, topic `topic`.
fn config(broker: &Mosquitto, client_id: &str, bootstrap: &str, topic: &str) -> String {
    format!(
        "mqtt: {{ url: \"{}\", client_id: {client_id}, keep_alive: 5s, max_inflight: 200 }}\n\
         log: {{ backend: kafka, kafka: {{ bootstrap_servers: \"{bootstrap}\" }} }}\n\
         topics: {{ {topic}: {{ partitions: {PARTITIONS} }} }}\n\
         http: {{ listen: null }}\n\
         routes:\n  - {{ name: telemetry, from: \"devices/{{device}}/telemetry\", to: {topic}, key: \"{{device}}\", headers: {{ source: gw }} }}\n",
        broker.url()
    )
}

/// Every record is where murmur2 puts its key, with the gateway's headers and a timestamp
/// from this run.
fn check_shape(records: &[Read], started_ms: i64) {
    for r in records {
        let (device, _) = r.value.split_once(':').unwrap();
        assert_eq!(r.key, format!("d{device}"));
        assert_eq!(
            r.partition,
            partition_for_key(r.key.as_bytes(), PARTITIONS),
            "{r:?}"
        );
        assert_eq!(
            r.headers.get("mqtt.topic"),
            Some(&format!("devices/d{device}/telemetry"))
        );
        assert_eq!(r.headers.get("mqtt.qos").map(String::as_str), Some("1"));
        assert_eq!(r.headers.get("source").map(String::as_str), Some("gw"));
        let now = tributary::message::now_ms();
        assert!((started_ms..=now).contains(&r.timestamp_ms), "{r:?}");
    }
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_to_end_into_kafka_across_two_sigkills() {
    const N: usize = 20_000;
    let started_ms = tributary::message::now_ms();
    let kafka = KafkaBroker::shared();
    let broker = Mosquitto::start();
    let topic = unique("telemetry-kills");
    let mut gw = Gateway::new(&config(
        &broker,
        "gw-kafka-kills",
        &kafka.bootstrap(),
        &topic,
    ));
    gw.start();
    // The route's topic and the dead-letter topic are made at start, before any message.
    let (bootstrap, t) = (kafka.bootstrap(), topic.clone());
    let counts = tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .unwrap();
        [t.as_str(), "tributary.dead-letter"].map(|name| {
            metadata
                .topics()
                .iter()
                .find(|m| m.name() == name)
                .map(|m| m.partitions().len())
        })
    })
    .await
    .unwrap();
    assert_eq!(
        counts[0],
        Some(PARTITIONS as usize),
        "{topic} made at start"
    );
    assert!(counts[1].is_some(), "the dead-letter topic made at start");
    let port = broker.port;
    // A steady stream, so each kill lands with messages in flight.
    let messages = messages(N);
    let publisher = tokio::spawn(publish_paced(port, messages, 40, Duration::from_millis(20)));
    for kill in 1..=2 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let (bootstrap, t) = (kafka.bootstrap(), topic.clone());
        let stored = tokio::task::spawn_blocking(move || in_kafka(&bootstrap, &t, PARTITIONS))
            .await
            .unwrap();
        println!("SIGKILL {kill} with {stored} of {N} records in Kafka");
        assert!(stored < N as i64, "the kill lands mid-stream");
        gw.kill();
        tokio::time::sleep(Duration::from_millis(300)).await;
        gw.start();
    }
    publisher.await.unwrap();
    let (records, t) = read_and_count(
        kafka.bootstrap(),
        topic.clone(),
        PARTITIONS,
        N,
        "two SIGKILLs",
    )
    .await;
    assert_eq!(t.lost, Vec::<usize>::new(), "lost:\n{}", gw.log());
    assert_eq!(t.disorder, 0);
    check_shape(&records, started_ms);
    let status = gw.terminate();
    assert!(status.success(), "{status:?}\n{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_outage_of_ten_seconds_loses_nothing() {
    const N: usize = 2_000;
    let started_ms = tributary::message::now_ms();
    let mut kafka = KafkaBroker::start();
    let broker = Mosquitto::start();
    let topic = unique("telemetry-outage");
    let mut gw = Gateway::new(&config(
        &broker,
        "gw-kafka-outage",
        &kafka.bootstrap(),
        &topic,
    ));
    gw.start();
    let publisher = tokio::spawn(publish_paced(
        broker.port,
        messages(N),
        20,
        Duration::from_millis(500),
    ));
    tokio::time::sleep(Duration::from_secs(2)).await;
    kafka.stop();
    println!("Kafka stopped");
    tokio::time::sleep(Duration::from_secs(10)).await;
    kafka.start_again();
    println!("Kafka started again");
    publisher.await.unwrap();
    let (records, t) = read_and_count(
        kafka.bootstrap(),
        topic.clone(),
        PARTITIONS,
        N,
        "10 s outage",
    )
    .await;
    assert_eq!(t.lost, Vec::<usize>::new(), "lost:\n{}", gw.log());
    assert_eq!(t.disorder, 0, "per-key order");
    check_shape(&records, started_ms);
    assert!(
        gw.pid().is_some(),
        "the gateway recovered by itself, without a restart"
    );
    let status = gw.terminate();
    assert!(status.success(), "{status:?}\n{}", gw.log());
}
