//! Egress to devices through a real Mosquitto, from the embedded log and from a real Kafka
//! broker: commands produced with a real Kafka client (rdkafka) reach an MQTT subscriber on
//! `devices/<key>/commands`, every one, in order per key, across a SIGKILL of the gateway; a
//! record whose template cannot be filled becomes a dead letter and delivery goes on. The
//! scenario is stated once and run against both.

mod support;

use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::kafka::KafkaBroker;
use support::{free_port, wait_until, Gateway, Mosquitto};

const KEYS: usize = 10;
const PARTITIONS: i32 = 3;

/// Where the commands are produced, and the gateway reads them.
enum Log {
    /// The embedded log, produced to through the gateway's Kafka listener on this port.
    Embedded(u16),
    /// A real Kafka broker: `log.backend: kafka`.
    Kafka(String),
}

impl Log {
    fn embedded() -> Log {
        Log::Embedded(free_port())
    }

    /// The shared test broker, with `topic` made (3 partitions).
    async fn kafka(topic: &str) -> Log {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        let bootstrap = KafkaBroker::shared().bootstrap();
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .unwrap();
        let made = admin
            .create_topics(
                &[NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))],
                &AdminOptions::new(),
            )
            .await
            .unwrap();
        assert!(made.iter().all(Result::is_ok), "{made:?}");
        Log::Kafka(bootstrap)
    }

    fn bootstrap(&self) -> String {
        match self {
            Log::Embedded(port) => format!("127.0.0.1:{port}"),
            Log::Kafka(bootstrap) => bootstrap.clone(),
        }
    }
}

fn config(broker: &Mosquitto, log: &Log, topic: &str) -> String {
    let log = match log {
        Log::Embedded(port) => format!("{{ embedded: {{ dir: DATA_DIR, fsync_interval: 2ms, kafka_listener: 127.0.0.1:{port} }} }}"),
        Log::Kafka(bootstrap) => format!("{{ backend: kafka, kafka: {{ bootstrap_servers: \"{bootstrap}\" }} }}"),
    };
    format!(
        "mqtt: {{ url: \"{}\", client_id: egress-{topic}, keep_alive: 5s }}\n\
         log: {log}\n\
         topics: {{ default: {{ partitions: 3 }}, {topic}: {{ partitions: {PARTITIONS} }} }}\n\
         http: {{ listen: null }}\n\
         routes: [{{ from: \"devices/{{device}}/telemetry\", to: telemetry }}]\n\
         egress:\n\
         \x20 - {{ name: commands, from: {topic}, to: \"devices/{{key}}/commands\", qos: 1, start: earliest }}\n",
        broker.url()
    )
}

fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// An MQTT 5 subscriber on `devices/+/commands` that records (topic, payload) in arrival order.
fn subscriber(port: u16) -> Arc<Mutex<Vec<(String, String)>>> {
    subscriber_as(port, "device-fleet", false, "devices/+/commands")
}

/// As [`subscriber`], as `client_id` on `filter`; `persistent`: clean start false, a session of an hour,
/// at most 4 messages in flight. It reconnects by itself after the connection drops.
fn subscriber_as(
    port: u16,
    client_id: &str,
    persistent: bool,
    filter: &str,
) -> Arc<Mutex<Vec<(String, String)>>> {
    let (client_id, filter) = (client_id.to_string(), filter.to_string());
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
            options.set_keep_alive(Duration::from_secs(5));
            if persistent {
                // Few in flight, so a kill lands mid-stream.
                options
                    .set_clean_start(false)
                    .set_session_expiry_interval(Some(3600))
                    .set_receive_maximum(Some(4));
            }
            let (client, mut events) = AsyncClient::new(options, 1024);
            client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
            let mut ready = Some(ready_tx);
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => sink.lock().unwrap().push((
                        String::from_utf8_lossy(&p.topic).into_owned(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                    )),
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("subscribed");
    received
}

fn producer(log: &Log) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", log.bootstrap())
        .set("acks", "all")
        .set("linger.ms", "2")
        .create()
        .unwrap()
}

/// Produces commands `range` to `topic`, keyed `d<i % KEYS>`, value `d<k>:<i>`, waiting for
/// each ack.
async fn produce(producer: &FutureProducer, topic: &str, range: std::ops::Range<usize>) {
    let sends: Vec<_> = range
        .map(|i| {
            let key = format!("d{}", i % KEYS);
            let value = format!("{key}:{i}");
            async move {
                producer
                    .send(
                        FutureRecord::to(topic).key(&key).payload(&value),
                        Duration::from_secs(10),
                    )
                    .await
                    .map_err(|(e, _)| e)
            }
        })
        .collect();
    for result in futures::future::join_all(sends).await {
        result.expect("produced");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_the_embedded_log_commands_reach_devices_in_order_across_a_sigkill() {
    commands_across_a_sigkill(Log::embedded(), "commands").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_kafka_commands_reach_devices_in_order_across_a_sigkill() {
    let topic = unique("commands");
    commands_across_a_sigkill(Log::kafka(&topic).await, &topic).await;
}

/// 2,000 keyed commands, half before a SIGKILL of the gateway and half after its restart:
/// every one reaches its device's topic, first deliveries in produced order per key.
async fn commands_across_a_sigkill(log: Log, topic: &str) {
    const N: usize = 2000;
    let broker = Mosquitto::start();
    let mut gw = Gateway::new(&config(&broker, &log, topic));
    gw.start();
    let received = subscriber(broker.port);
    let producer = producer(&log);

    produce(&producer, topic, 0..N / 2).await;
    let count = || received.lock().unwrap().len();
    assert!(
        wait_until(Duration::from_secs(20), || count() >= N / 4),
        "only {} delivered before the kill\n{}",
        count(),
        gw.log()
    );
    gw.kill();
    let at_kill = count();
    gw.start();
    produce(&producer, topic, N / 2..N).await;

    // Each on its device's topic; per key, first deliveries in produced order, and every
    // repeat is a redelivery of what came after the kill's committed position.
    let got = all_received(&received, N, &gw);
    let duplicates = check_per_key(&got, N);
    println!(
        "egress from {topic} across a SIGKILL: {N} produced, {} delivered, lost 0, duplicates {duplicates} (killed after {at_kill} deliveries)",
        got.len()
    );
    // Redelivery is bounded by what was published and not yet committed: the rounds in
    // flight per partition.
    assert!(duplicates <= 3 * 512, "{duplicates} duplicates");
    assert!(gw.terminate().success(), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfillable_template_makes_a_dead_letter_and_delivery_goes_on() {
    let broker = Mosquitto::start();
    let log = Log::embedded();
    let mut gw = Gateway::new(&config(&broker, &log, "commands"));
    gw.start();
    let received = subscriber(broker.port);
    let producer = producer(&log);
    produce_one_unkeyed(&producer).await;
    assert!(
        wait_until(Duration::from_secs(15), || received.lock().unwrap().len()
            >= 2),
        "{:?}\n{}",
        received.lock().unwrap(),
        gw.log()
    );
    assert_eq!(
        *received.lock().unwrap(),
        [
            ("devices/k1/commands".to_string(), "first".to_string()),
            ("devices/k1/commands".to_string(), "last".to_string())
        ]
    );
    let dead = gw.records("tributary.dead-letter");
    let dead: Vec<_> = dead.values().flatten().collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].value_str(), "no-key");
    assert_eq!(dead[0].header("error"), Some("the record has no key"));
    assert_eq!(dead[0].header("route"), Some("commands"));
    assert_eq!(dead[0].header("egress.from"), Some("commands-0@1"));
    // The position moved past all three: a restart delivers nothing again.
    assert!(gw.terminate().success(), "{}", gw.log());
    gw.start();
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(received.lock().unwrap().len(), 2, "nothing delivered twice");
    assert_eq!(
        gw.records("tributary.dead-letter")
            .values()
            .flatten()
            .count(),
        1
    );
}

/// A gateway with only the listener face (devices connect to it), the embedded log and the
/// egress route: returns it, started, and its listener port.
fn listener_gateway(kafka_port: u16) -> (Gateway, u16) {
    let port = free_port();
    let yaml = format!(
        "listener: {{ listen: 127.0.0.1:{port} }}\n\
         log: {{ embedded: {{ dir: DATA_DIR, fsync_interval: 2ms, kafka_listener: 127.0.0.1:{kafka_port} }} }}\n\
         topics: {{ default: {{ partitions: 3 }}, commands: {{ partitions: {PARTITIONS} }} }}\n\
         http: {{ listen: null }}\n\
         routes: [{{ from: \"devices/{{device}}/telemetry\", to: telemetry }}]\n\
         egress:\n\
         \x20 - {{ name: commands, from: commands, to: \"devices/{{key}}/commands\", qos: 1 }}\n"
    );
    let mut gw = Gateway::new(&yaml);
    start_listening(&mut gw);
    (gw, port)
}

fn start_listening(gw: &mut Gateway) {
    gw.spawn();
    assert!(
        wait_until(Duration::from_secs(15), || gw
            .log()
            .contains("MQTT listener accepting")),
        "{}",
        gw.log()
    );
}

/// Devices subscribed on the listener itself (a persistent session) get every command,
/// first deliveries in produced order per key, across a SIGKILL of the gateway: their session
/// (subscriptions and positions) is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn to_listener_subscribers_commands_arrive_in_order_across_a_sigkill() {
    const N: usize = 2000;
    let log = Log::embedded();
    let Log::Embedded(kafka_port) = log else {
        unreachable!()
    };
    let (mut gw, port) = listener_gateway(kafka_port);
    let received = subscriber_as(port, "fleet", true, "devices/+/commands");
    let producer = producer(&log);
    produce(&producer, "commands", 0..N / 2).await;
    let count = || received.lock().unwrap().len();
    assert!(
        wait_until(Duration::from_secs(20), || count() >= N / 4),
        "only {} delivered before the kill\n{}",
        count(),
        gw.log()
    );
    gw.kill();
    let at_kill = count();
    start_listening(&mut gw);
    produce(&producer, "commands", N / 2..N).await;
    let got = all_received(&received, N, &gw);
    let duplicates = check_per_key(&got, N);
    println!(
        "egress to listener subscribers across a SIGKILL: {N} produced, {} delivered, lost 0, duplicates {duplicates} (killed after {at_kill})",
        got.len()
    );
    assert!(duplicates <= 3 * 512, "{duplicates} duplicates");
    assert!(gw.terminate().success(), "{}", gw.log());
}

/// A persistent session that was away gets what it missed when it comes back, from the log;
/// one that is not persistent starts again at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_persistent_session_gets_what_it_missed() {
    let log = Log::embedded();
    let Log::Embedded(kafka_port) = log else {
        unreachable!()
    };
    let (mut gw, port) = listener_gateway(kafka_port);
    let producer = producer(&log);
    // Subscribe, then leave (the thread's client is dropped with its runtime: simulate by
    // a raw session that subscribes and disconnects).
    for (client, persistent) in [("away", true), ("fleeting", false)] {
        let mut options = MqttOptions::new(client, "127.0.0.1", port);
        if persistent {
            options
                .set_clean_start(false)
                .set_session_expiry_interval(Some(3600));
        }
        let (c, mut events) = AsyncClient::new(options, 16);
        c.subscribe("devices/d3/commands", QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            if let Event::Incoming(Packet::SubAck(_)) = events.poll().await.unwrap() {
                break;
            }
        }
        c.disconnect().await.unwrap();
        while events.poll().await.is_ok() {}
    }
    // 100 commands for d3 (keys d0..d9: every tenth), produced while both are away.
    produce(&producer, "commands", 0..1000).await;
    let back = subscriber_as(port, "away", true, "devices/d3/commands");
    let wanted: Vec<String> = (0..1000)
        .filter(|i| i % KEYS == 3)
        .map(|i| format!("d3:{i}"))
        .collect();
    assert!(
        wait_until(Duration::from_secs(15), || received_len(&back)
            >= wanted.len()),
        "{} of {}\n{}",
        received_len(&back),
        wanted.len(),
        gw.log()
    );
    let got: Vec<String> = back
        .lock()
        .unwrap()
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(got, wanted, "everything it missed, in order, once");
    // The session that was not persistent starts at the end: nothing of the backlog.
    let fresh = subscriber_as(port, "fleeting", false, "devices/d3/commands");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        fresh.lock().unwrap().is_empty(),
        "{:?}",
        fresh.lock().unwrap()
    );
    assert!(gw.terminate().success(), "{}", gw.log());
}

fn received_len(r: &Arc<Mutex<Vec<(String, String)>>>) -> usize {
    r.lock().unwrap().len()
}

/// With only the listener (no broker), a record whose topic cannot be made still becomes one
/// dead letter, and the records around it reach the subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_broker_an_unfillable_record_is_still_a_dead_letter() {
    let log = Log::embedded();
    let Log::Embedded(kafka_port) = log else {
        unreachable!()
    };
    let (mut gw, port) = listener_gateway(kafka_port);
    let received = subscriber_as(port, "solo", true, "devices/k1/commands");
    let producer = producer(&log);
    produce_one_unkeyed(&producer).await;
    assert!(
        wait_until(Duration::from_secs(15), || received_len(&received) >= 2
            && gw
                .records("tributary.dead-letter")
                .values()
                .flatten()
                .count()
                == 1),
        "{:?}\n{}",
        received.lock().unwrap(),
        gw.log()
    );
    let got: Vec<String> = received
        .lock()
        .unwrap()
        .iter()
        .map(|(_, p)| p.clone())
        .collect();
    assert_eq!(got, ["first", "last"]);
    let dead = gw.records("tributary.dead-letter");
    let dead: Vec<_> = dead.values().flatten().collect();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].value_str(), "no-key");
    assert_eq!(dead[0].header("error"), Some("the record has no key"));
    assert!(gw.terminate().success(), "{}", gw.log());
}

/// To partition 0 of `commands`, so order is plain: a command keyed k1 ("first"), an unkeyed
/// one ("no-key": no topic can be made of it), another keyed k1 ("last").
async fn produce_one_unkeyed(producer: &FutureProducer) {
    for (key, value) in [
        (Some("k1"), "first"),
        (None, "no-key"),
        (Some("k1"), "last"),
    ] {
        let mut record = FutureRecord::to("commands").payload(value).partition(0);
        if let Some(key) = key {
            record = record.key(key);
        }
        producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produced");
    }
}

/// Checks what a subscriber got of `n` commands `d<k>:<i>`: each on its device's topic, every
/// one there, first deliveries in produced order per key; returns the duplicates.
fn check_per_key(got: &[(String, String)], n: usize) -> usize {
    let mut per_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (topic, payload) in got {
        let (key, seq) = payload.split_once(':').unwrap();
        assert_eq!(topic, &format!("devices/{key}/commands"));
        per_key.entry(key).or_default().push(seq.parse().unwrap());
    }
    let mut duplicates = 0;
    for (key, seqs) in &per_key {
        let mut seen = std::collections::BTreeSet::new();
        let mut last_new = None;
        for &s in seqs {
            if seen.insert(s) {
                assert!(
                    last_new.is_none_or(|l| s > l),
                    "{key}: {s} after {last_new:?}: {seqs:?}"
                );
                last_new = Some(s);
            } else {
                duplicates += 1;
            }
        }
        assert_eq!(seen.len(), n / KEYS, "{key}");
    }
    duplicates
}

/// Waits (up to 30 s) until `received` holds all `n` commands, at least once each, and
/// returns everything received; fails naming how many are missing.
fn all_received(
    received: &Arc<Mutex<Vec<(String, String)>>>,
    n: usize,
    gw: &Gateway,
) -> Vec<(String, String)> {
    let distinct = || {
        received
            .lock()
            .unwrap()
            .iter()
            .map(|(_, p)| p.clone())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    };
    let all = wait_until(Duration::from_secs(30), || distinct() >= n);
    assert!(all, "lost {} of {n} commands\n{}", n - distinct(), gw.log());
    received.lock().unwrap().clone()
}
