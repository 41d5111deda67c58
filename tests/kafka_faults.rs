//! The Kafka backend (`log.backend: kafka`, direct) under injected faults: a real Mosquitto,
//! the real `tributary run` binary, and rdkafka's mock cluster (`rdkafka::mocking`), an
//! in-process cluster that speaks the real protocol on a loopback port, with the faults it can
//! inject: Produce requests answered with retriable errors, the broker down for longer than
//! `message.timeout.ms`, and a record over `message.max.bytes`. A last test points the sink at
//! another Tributary's own Kafka listener.
//!
//! Every test publishes QoS 1 messages `d<device>:<seq>` keyed by device, reads back what the
//! cluster holds with an rdkafka consumer, and counts exactly: lost (must be 0), duplicates
//! (printed) and per-device order.
//!
//! Mock cluster facts these tests rely on (librdkafka 2.12, rdkafka 0.39):
//! - It has no CreateTopics (no handler; rdkafka's `MockCluster::create_topic` says so too):
//!   an admin `create_topics` is never answered, so a sink that tries to create a topic
//!   fails that append after its 10 s admin timeout, again and again. The gateways here run
//!   with `create_topics: false` and the tests create every topic, the dead-letter topic
//!   included, with `MockCluster::create_topic` before the gateway starts. (The sink sets
//!   `allow.auto.create.topics=false`, so Metadata does not auto-create them either.)
//! - Broker ids start at 1: `broker_down(1)`.
//! - `request_errors` pushes onto one cluster-wide stack per API key: each Produce request,
//!   retries included, pops the next error, so a request that succeeds proves every error
//!   pushed before it was answered.
//! - It checks no sequence numbers of a non-transactional idempotent producer, which can make
//!   librdkafka report an unstored record delivered: see `MOCK_PROPERTIES`.
//! - `broker_down` closes the listening socket (connections are refused) and every open
//!   connection; `broker_up` listens again on the same port.

mod support;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use rdkafka::{Offset as KOffset, TopicPartitionList};
use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};
use support::{Gateway, Mosquitto};
use tributary::route::partition::partition_for_key;

const DEVICES: usize = 10;
const TOPIC: &str = "telemetry";
const DEAD_LETTER: &str = "tributary.dead-letter";
const PARTITIONS: u32 = 3;

type Mock = MockCluster<'static, DefaultProducerContext>;

/// Producer properties every gateway on the mock gets. The mock checks idempotent producer
/// sequences only for transactional producers (librdkafka's `rd_kafka_mock_validate_records`
/// returns early without a transactional id), so with several Produce requests in flight a
/// later one is appended although an earlier one failed; a real broker refuses it
/// (OUT_OF_ORDER_SEQUENCE_NUMBER). librdkafka takes that success as proof the earlier batch
/// was persisted after all and reports it delivered (`rd_kafka_dr_implicit_ack`): on the mock
/// a record is then acked that is not there (seen here: one message of 600 missing in about
/// one run in eight, the gateway's stats saying every append succeeded at the first try). One
/// request in flight keeps the mock honest: a failed batch is retried before anything after
/// it is sent, which is what the broker's sequence check enforces with five.
const MOCK_PROPERTIES: &str = "\"max.in.flight.requests.per.connection\": \"1\"";

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// `count` rounds of one message per device, from round `from`: `devices/d<d>/telemetry` with
/// payload `d<d>:<round>`.
fn messages(from: usize, count: usize) -> Vec<(String, Vec<u8>)> {
    (from..from + count)
        .flat_map(|seq| {
            (0..DEVICES).map(move |d| {
                (
                    format!("devices/d{d}/telemetry"),
                    format!("d{d}:{seq}").into_bytes(),
                )
            })
        })
        .collect()
}

/// A mock cluster of one broker holding `telemetry` (3 partitions) and the dead-letter topic.
fn mock_cluster() -> Mock {
    let mock = MockCluster::new(1).expect("mock cluster");
    // The mock has no CreateTopics: topics are made here (see the module docs).
    mock.create_topic(TOPIC, PARTITIONS as i32, 1).unwrap();
    mock.create_topic(DEAD_LETTER, 1, 1).unwrap();
    mock
}

/// A gateway bridging `broker` to the Kafka cluster at `bootstrap`; `properties` and
/// `mqtt_extra` are YAML flow-map entries (`"a.b": "1", ...`, `, max_payload: 1MiB`).
fn kafka_gateway(
    broker: &Mosquitto,
    client_id: &str,
    bootstrap: &str,
    create_topics: bool,
    properties: &str,
    mqtt_extra: &str,
) -> Gateway {
    Gateway::new(&format!(
        "mqtt: {{ url: \"{url}\", client_id: {client_id}, keep_alive: 5s {mqtt_extra} }}\n\
         log: {{ backend: kafka, kafka: {{ bootstrap_servers: \"{bootstrap}\", create_topics: {create_topics}, properties: {{ {properties} }} }} }}\n\
         topics: {{ default: {{ partitions: {PARTITIONS} }} }}\n\
         http: {{ listen: null }}\n\
         routes:\n  - {{ name: telemetry, from: \"devices/{{device}}/telemetry\", to: {TOPIC}, key: \"{{device}}\" }}\n",
        url = broker.url(),
    ))
}

/// Publishes like `support::publish` (QoS 1, MQTT 5, waits for every PUBACK), pausing `pause`
/// after every `chunk` messages: a stream that runs across a fault instead of before it.
async fn publish_paced(
    port: u16,
    client_id: &str,
    messages: Vec<(String, Vec<u8>)>,
    chunk: usize,
    pause: Duration,
) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_outgoing_inflight_upper_limit(100);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let total = messages.len();
    let sender = tokio::spawn(async move {
        for (i, (topic, payload)) in messages.into_iter().enumerate() {
            if i > 0 && i % chunk == 0 {
                tokio::time::sleep(pause).await;
            }
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < total {
        let event = tokio::time::timeout(Duration::from_secs(30), eventloop.poll())
            .await
            .expect("publisher stalled")
            .unwrap();
        if let Event::Incoming(Packet::PubAck(_)) = event {
            acked += 1;
        }
    }
    let client = sender.await.unwrap();
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
}

/// A record as an rdkafka consumer read it.
#[derive(Debug, Clone)]
struct Got {
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: Vec<u8>,
    headers: Vec<(String, Vec<u8>)>,
}

impl Got {
    fn value_str(&self) -> &str {
        std::str::from_utf8(&self.value).unwrap_or("<not UTF-8>")
    }

    fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| std::str::from_utf8(v).unwrap_or("<not UTF-8>"))
    }
}

/// A consumer of every partition of `topic` from the beginning; no group is joined.
fn consumer(bootstrap: &str, topic: &str) -> (BaseConsumer, usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "kafka-faults-never-joined")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "50")
        .create()
        .expect("rdkafka consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let partitions = metadata.topics()[0].partitions().len();
    assert!(partitions > 0, "{topic} has no partitions");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p as i32, KOffset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    (consumer, partitions)
}

fn got(m: &rdkafka::message::BorrowedMessage<'_>) -> Got {
    Got {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        value: m.payload().unwrap_or_default().to_vec(),
        headers: m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default(),
    }
}

/// Reads `topic` from the beginning until `done(records so far)` holds, at most `limit`.
fn read_until(
    bootstrap: &str,
    topic: &str,
    limit: Duration,
    mut done: impl FnMut(&[Got]) -> bool,
) -> Result<Vec<Got>, Vec<Got>> {
    let (consumer, _) = consumer(bootstrap, topic);
    let deadline = Instant::now() + limit;
    let mut records = Vec::new();
    loop {
        if done(&records) {
            return Ok(records);
        }
        if Instant::now() > deadline {
            return Err(records);
        }
        match consumer.poll(Duration::from_millis(50)) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => {}
            Some(Ok(m)) => records.push(got(&m)),
            Some(Err(e)) => panic!("consuming {topic}: {e}"),
        }
    }
}

/// Every record of `topic` now: reads until each partition reported its end.
fn read_all(bootstrap: &str, topic: &str) -> Vec<Got> {
    let (consumer, partitions) = consumer(bootstrap, topic);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut at_end = HashSet::new();
    let mut records = Vec::new();
    while at_end.len() < partitions {
        assert!(
            Instant::now() < deadline,
            "reading {topic}: {} records, at the end of {at_end:?} only",
            records.len()
        );
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                records.push(got(&m));
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("consuming {topic}: {e}"),
        }
    }
    records.sort_by_key(|r| (r.partition, r.offset));
    records
}

/// Waits until `topic` holds every payload of `published` (duplicates allowed).
fn wait_for_all(bootstrap: &str, topic: &str, published: &[(String, Vec<u8>)], gw: &Gateway) {
    let mut missing: HashSet<&[u8]> = published.iter().map(|(_, p)| &p[..]).collect();
    let mut seen = 0;
    let result = read_until(bootstrap, topic, Duration::from_secs(40), |records| {
        for r in &records[seen..] {
            missing.remove(&r.value[..]);
        }
        seen = records.len();
        missing.is_empty()
    });
    if let Err(records) = result {
        let t = tally(&records, published);
        report(topic, published.len(), &t);
        panic!(
            "{topic}: {} of {} published messages missing after 40 s ({} records read): {:?}\n{}",
            t.lost.len(),
            published.len(),
            records.len(),
            t.lost.iter().take(20).collect::<Vec<_>>(),
            gw.log()
        );
    }
}

/// What a topic holds against what was published.
#[derive(Debug, Default)]
struct Tally {
    records: usize,
    lost: Vec<String>,
    /// Extra copies over all messages.
    duplicates: usize,
    /// A device's message stored (for the first time) after a later one of the same device.
    disorder: Vec<String>,
}

/// Counts `records` (in partition and offset order) against `published`, and checks each
/// record's key and partition: key `d<device>`, partition murmur2(key) % partitions.
fn tally(records: &[Got], published: &[(String, Vec<u8>)]) -> Tally {
    let mut records = records.to_vec();
    records.sort_by_key(|r| (r.partition, r.offset));
    let mut copies: HashMap<&str, usize> = published
        .iter()
        .map(|(_, p)| (std::str::from_utf8(p).unwrap(), 0))
        .collect();
    let mut last: HashMap<String, usize> = HashMap::new();
    let mut disorder = Vec::new();
    for r in &records {
        let value = r.value_str();
        let (device, seq) = value.split_once(':').expect("payload is d<device>:<seq>");
        let seq: usize = seq.parse().unwrap();
        let Some(n) = copies.get_mut(value) else {
            panic!("a record nobody published: {r:?}");
        };
        assert_eq!(r.key.as_deref(), Some(device), "key of {value}");
        assert_eq!(
            r.partition as u32,
            partition_for_key(device.as_bytes(), PARTITIONS),
            "partition of {value}"
        );
        *n += 1;
        if *n > 1 {
            continue; // a duplicate: at-least-once allows it
        }
        if let Some(prev) = last.insert(device.to_string(), seq) {
            if prev > seq {
                disorder.push(format!(
                    "partition {} offset {}: {device} seq {seq} after {prev}",
                    r.partition, r.offset
                ));
            }
        }
    }
    let mut lost: Vec<String> = copies
        .iter()
        .filter(|(_, &n)| n == 0)
        .map(|(v, _)| v.to_string())
        .collect();
    lost.sort();
    Tally {
        records: records.len(),
        lost,
        duplicates: copies.values().map(|&n| n.saturating_sub(1)).sum(),
        disorder,
    }
}

fn report(name: &str, published: usize, t: &Tally) {
    println!(
        "{name}: published {published}, records {}, lost {}, duplicates {}, order violations {}",
        t.records,
        t.lost.len(),
        t.duplicates,
        t.disorder.len()
    );
    for line in t.disorder.iter().take(10) {
        println!("  {line}");
    }
}

/// SIGTERM: the gateway finishes what is in flight, flushes the producer and exits 0; after
/// that nothing more reaches Kafka, so a read is final.
fn stop(gw: &mut Gateway) {
    let status = gw.terminate();
    assert!(status.success(), "gateway exit {status}:\n{}", gw.log());
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Produce requests answered with retriable errors, several in a row (not leader, timed out,
/// not enough replicas, leader not available, and a dropped connection), mid-stream.
/// librdkafka retries them itself (`message.timeout.ms` is infinite by default), so the
/// pipeline never sees them; with one request in flight (`MOCK_PROPERTIES`) a failed batch is
/// retried before anything after it, so order holds; and none of these errors stores the
/// batch in the mock (the error is answered instead of appending), so a retry is its first
/// copy: no duplicates. Lost 0, duplicates 0, order kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_request_errors_lose_nothing_and_keep_order() {
    let mock = mock_cluster();
    let bootstrap = mock.bootstrap_servers();
    let broker = Mosquitto::start();
    let mut gw = kafka_gateway(
        &broker,
        "gw-request-errors",
        &bootstrap,
        false,
        MOCK_PROPERTIES,
        "",
    );
    gw.start();

    // Before the fault: the stream flows.
    let before = messages(0, 20);
    support::publish(broker.port, "pub-before", 1, before.clone()).await;
    wait_for_all(&bootstrap, TOPIC, &before, &gw);

    use RDKafkaRespErr::*;
    let errors = [
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE,
        RD_KAFKA_RESP_ERR__TRANSPORT,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
        RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS,
        RD_KAFKA_RESP_ERR__TRANSPORT,
        RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
    ];
    mock.request_errors(RDKafkaApiKey::Produce, &errors);
    let injected = Instant::now();

    // During and after: a paced stream; its first Produce requests get the errors.
    let during = messages(20, 40);
    publish_paced(
        broker.port,
        "pub-during",
        during.clone(),
        DEVICES,
        Duration::from_millis(10),
    )
    .await;
    let mut published = before;
    published.extend(during);
    // A record of `during` in Kafka means a Produce request succeeded after the injection,
    // which the mock allows only once every injected error has been answered.
    wait_for_all(&bootstrap, TOPIC, &published, &gw);
    println!(
        "{} Produce errors answered; the stream was through {:?} after they were injected",
        errors.len(),
        injected.elapsed()
    );
    stop(&mut gw);

    let t = tally(&read_all(&bootstrap, TOPIC), &published);
    report("request errors", published.len(), &t);
    assert!(t.lost.is_empty(), "lost: {:?}\n{}", t.lost, gw.log());
    assert!(t.disorder.is_empty(), "order: {:?}", t.disorder);
    assert_eq!(
        t.duplicates, 0,
        "the idempotent producer stores a retried batch once"
    );
}

/// The gateway's pipeline counters from its shutdown line (`pipeline drained stats=...`).
fn drained_stat(gw: &Gateway, name: &str) -> u64 {
    let log = gw.log();
    let line = log
        .lines()
        .rfind(|l| l.contains("pipeline drained"))
        .unwrap_or_else(|| panic!("no drain line:\n{log}"));
    let at = line
        .find(&format!("{name}: "))
        .unwrap_or_else(|| panic!("no {name} in {line}"));
    line[at + name.len() + 2..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number for {name} in {line}"))
}

/// The broker down for 6 s, three times `message.timeout.ms` (2 s), mid-stream: librdkafka
/// gives up on the records it holds, their appends fail (retryably), the pipeline stops
/// reading and produces them again, in arrival order, round after round until the broker is
/// back; then the gateway carries on by itself, no restart. Lost 0.
///
/// Per-device order must hold here, and only because of the timing. The pipeline resubmits
/// failed messages in arrival order and the sink's fence keeps later *appends* out until
/// then, but records librdkafka already holds are not recalled: if the broker comes back while
/// part of them has timed out, the rest are stored ahead of the timed-out ones, which come
/// later. The first wave here is what the gateway read in the ~2 s before the first failure;
/// its records time out by about 4.5 s into the outage (with the backoff below), well before
/// the broker returns at 6 s. Later waves are retry rounds, handed over within milliseconds:
/// each times out whole or is delivered whole, unless the broker returns inside those
/// milliseconds. With the broker down for 3 s instead (1.5 x the timeout), every run tried
/// showed 10 devices' early messages stored after later ones (`d0 seq 25 after 123`): a finite
/// `message.timeout.ms` trades order for the failure being seen; the default (0, infinite)
/// keeps order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_down_longer_than_message_timeout_loses_nothing() {
    const DOWN: Duration = Duration::from_secs(6);
    let mock = mock_cluster();
    let bootstrap = mock.bootstrap_servers();
    let broker = Mosquitto::start();
    let mut gw = kafka_gateway(
        &broker,
        "gw-broker-down",
        &bootstrap,
        false,
        // librdkafka expires records only when the partition leader's broker thread wakes up,
        // and while the broker is unreachable that thread sleeps its reconnect backoff, which
        // grows to `reconnect.backoff.max.ms` (10 s by default): records then fail up to 10 s
        // late, and the producer reconnects up to 10 s after the broker is back. Half a
        // second keeps the outage's timing what the test says.
        &format!(
            "{MOCK_PROPERTIES}, \"message.timeout.ms\": \"2000\", \"reconnect.backoff.max.ms\": \"500\""
        ),
        "",
    );
    gw.start();

    // A stream of ~9 s: ten messages every 20 ms.
    let published = messages(0, 450);
    let stream = tokio::spawn(publish_paced(
        broker.port,
        "pub-stream",
        published.clone(),
        DEVICES,
        Duration::from_millis(20),
    ));
    let flowing = read_until(&bootstrap, TOPIC, Duration::from_secs(20), |r| {
        r.len() >= 200
    });
    assert!(flowing.is_ok(), "the stream did not start:\n{}", gw.log());

    mock.broker_down(1).unwrap();
    let down = Instant::now();
    // The first record librdkafka gives up on fails its append.
    let failed = support::wait_until(Duration::from_secs(5), || {
        gw.log().contains("append failed")
    });
    assert!(
        failed,
        "no append failed within 5 s of the broker going down:\n{}",
        gw.log()
    );
    println!(
        "first append failed {:?} after the broker went down",
        down.elapsed()
    );
    // The fault itself lasts a fixed time: nothing to wait on.
    tokio::time::sleep(DOWN.saturating_sub(down.elapsed())).await;
    mock.broker_up(1).unwrap();
    let up = Instant::now();

    stream.await.unwrap();
    println!(
        "stream published {:?} after the broker came back",
        up.elapsed()
    );
    wait_for_all(&bootstrap, TOPIC, &published, &gw);
    println!(
        "every message in Kafka {:?} after the broker came back",
        up.elapsed()
    );
    stop(&mut gw);
    let retries = drained_stat(&gw, "retries");

    let t = tally(&read_all(&bootstrap, TOPIC), &published);
    report("broker down", published.len(), &t);
    println!("appends retried by the pipeline: {retries}");
    assert!(t.lost.is_empty(), "lost: {:?}\n{}", t.lost, gw.log());
    assert!(retries > 0, "nothing timed out:\n{}", gw.log());
    assert!(t.disorder.is_empty(), "order: {:?}", t.disorder);
}

/// A record over the producer's `message.max.bytes` (100 000 bytes here; the gateway's own
/// `mqtt.max_payload` is 1 MiB, so the router lets it through): librdkafka refuses it at
/// `produce` (MSG_SIZE_TOO_LARGE), the sink calls that permanent, and the pipeline stores the
/// message on the dead-letter topic in Kafka instead: its first 1 KiB as the value, an `error`
/// header naming the size problem, `route: telemetry`. The small messages around it all arrive,
/// once and in order. Nothing stays unacked: after a clean stop and a restart on the same MQTT
/// session, the broker redelivers nothing (a message published then arrives alone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_over_message_max_bytes_goes_to_the_dead_letter_topic() {
    let mock = mock_cluster();
    let bootstrap = mock.bootstrap_servers();
    let broker = Mosquitto::start();
    let mut gw = kafka_gateway(
        &broker,
        "gw-too-large",
        &bootstrap,
        false,
        &format!("{MOCK_PROPERTIES}, \"message.max.bytes\": \"100000\""),
        ", max_payload: 1MiB",
    );
    gw.start();

    let big: Vec<u8> = (0..200_000).map(|i| b'a' + (i % 26) as u8).collect();
    let mut published = messages(0, 15);
    let mut stream = published.clone();
    stream.push(("devices/d3/telemetry".into(), big.clone()));
    stream.extend(messages(15, 15));
    published.extend(messages(15, 15));
    support::publish(broker.port, "pub-big", 1, stream).await;

    wait_for_all(&bootstrap, TOPIC, &published, &gw);
    let dead_letter_stored = read_until(&bootstrap, DEAD_LETTER, Duration::from_secs(20), |r| {
        !r.is_empty()
    });
    assert!(
        dead_letter_stored.is_ok(),
        "no dead letter in Kafka:\n{}",
        gw.log()
    );
    stop(&mut gw);
    assert_eq!(drained_stat(&gw, "dead_letters"), 1, "{}", gw.log());
    assert_eq!(
        drained_stat(&gw, "messages"),
        published.len() as u64 + 1,
        "{}",
        gw.log()
    );

    // Same MQTT session again: anything left unacked would come back ahead of this one.
    gw.start();
    let last = messages(30, 1)[..1].to_vec();
    support::publish(broker.port, "pub-last", 1, last.clone()).await;
    published.extend(last);
    wait_for_all(&bootstrap, TOPIC, &published, &gw);
    stop(&mut gw);

    let t = tally(&read_all(&bootstrap, TOPIC), &published);
    report("too large", published.len(), &t);
    assert!(t.lost.is_empty(), "lost: {:?}\n{}", t.lost, gw.log());
    assert!(t.disorder.is_empty(), "order: {:?}", t.disorder);
    assert_eq!(
        t.duplicates,
        0,
        "redelivered after the restart:\n{}",
        gw.log()
    );

    let dead = read_all(&bootstrap, DEAD_LETTER);
    assert_eq!(dead.len(), 1, "dead letters: {dead:?}");
    let d = &dead[0];
    let error = d.header("error").expect("an error header");
    println!("dead letter: {} bytes, error: {error}", d.value.len());
    assert!(
        error.contains("MessageSizeTooLarge"),
        "error header: {error}"
    );
    assert_eq!(
        d.value,
        big[..1024],
        "the value is the payload's first 1 KiB"
    );
    assert_eq!(d.header("route"), Some("telemetry"));
    assert_eq!(d.header("mqtt.topic"), Some("devices/d3/telemetry"));
    assert_eq!(d.key, None);
}

/// Tributary's own Kafka listener as the cluster: gateway A (embedded log, Kafka listener on
/// a free port) and gateway B (`backend: kafka`, bootstrap = A's listener) bridging its own
/// Mosquitto, both separate processes. B runs the sink's defaults (acks=all, lz4, murmur2
/// partitions, `create_topics: true`), once with `enable.idempotence: false` and once with the
/// default, the idempotent producer (A's listener serves InitProducerId). B creates `telemetry` in A through CreateTopics with B's partition count
/// (3, where A's own default is 2), and every record lands in A's log exactly once, under its
/// key, in partition murmur2(key) % 3, in order.
///
/// A's log is read in two ways: its files (`count_records` and the partition count, read-only
/// while A runs) and, for keys, values and headers, an rdkafka consumer on A's listener:
/// `support::read_topic` decodes only uncompressed batches, and A stores B's lz4 batches as
/// they came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tributary_listener_as_the_kafka_cluster() {
    listener_as_the_cluster("\"enable.idempotence\": \"false\"").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tributary_listener_as_the_kafka_cluster_with_the_idempotent_producer() {
    listener_as_the_cluster("").await;
}

async fn listener_as_the_cluster(properties: &str) {
    let broker_a = Mosquitto::start();
    let port = support::free_port();
    let mut gw_a = Gateway::new(&format!(
        "mqtt: {{ url: \"{}\", client_id: gw-a, keep_alive: 5s }}\n\
         log: {{ embedded: {{ dir: DATA_DIR, fsync_interval: 2ms, kafka_listener: \"127.0.0.1:{port}\" }} }}\n\
         topics: {{ default: {{ partitions: 2 }} }}\n\
         http: {{ listen: null }}\n\
         routes:\n  - {{ name: anything, from: \"#\", to: a-ingress }}\n",
        broker_a.url()
    ));
    gw_a.start();
    let bootstrap = format!("127.0.0.1:{port}");

    let broker_b = Mosquitto::start();
    let mut gw_b = kafka_gateway(&broker_b, "gw-b", &bootstrap, true, properties, "");
    gw_b.start();

    let published = messages(0, 30);
    support::publish(broker_b.port, "pub-b", 1, published.clone()).await;
    let data_a = gw_a.data_dir();
    let stored = support::wait_until(Duration::from_secs(20), || {
        support::count_records(&data_a, TOPIC) >= published.len()
    });
    assert!(
        stored,
        "A holds {} of {} records\n--- A ---\n{}\n--- B ---\n{}",
        support::count_records(&data_a, TOPIC),
        published.len(),
        gw_a.log(),
        gw_b.log()
    );
    stop(&mut gw_b);
    assert_eq!(
        support::count_records(&data_a, TOPIC),
        published.len(),
        "exactly once in A's files"
    );
    let partitions = tributary::log::LogReader::open(&data_a)
        .unwrap()
        .topic_names()
        .get(TOPIC)
        .copied();
    assert_eq!(
        partitions,
        Some(PARTITIONS),
        "B's CreateTopics partition count"
    );

    let (b, want) = (bootstrap.clone(), published.clone());
    let records = tokio::task::spawn_blocking(move || read_all(&b, TOPIC))
        .await
        .unwrap();
    let t = tally(&records, &want);
    report("Tributary listener", published.len(), &t);
    assert_eq!(t.records, published.len());
    assert!(t.lost.is_empty(), "lost: {:?}", t.lost);
    assert_eq!(t.duplicates, 0);
    assert!(t.disorder.is_empty(), "order: {:?}", t.disorder);
    for r in &records {
        let device = r.key.as_deref().unwrap();
        assert_eq!(
            r.header("mqtt.topic"),
            Some(format!("devices/{device}/telemetry").as_str())
        );
    }
    // A's own route saw nothing: B's records came through its Kafka listener, not MQTT.
    assert_eq!(support::count_records(&data_a, "a-ingress"), 0);
    stop(&mut gw_a);
}
