//! Egress: log records back to MQTT devices, beside the broker's own rate in the same run.
//!
//! The backlog: `BENCH_MESSAGES` records (default 100k) of 100 bytes, keyed over 1,000 keys
//! (`d0`..`d999`), in the log topic `commands` (`BENCH_PARTITIONS` partitions, default 4),
//! produced once with rdkafka (acks all) through the Kafka listener of a gateway whose egress
//! cannot deliver yet (no `mqtt:`; the listener subscriber below is away), then stopped. Each
//! round runs on a fresh copy of that log directory, so every round delivers the same backlog.
//! The gateway is `tributary run`, the release binary (`CARGO_BIN_EXE_tributary`, built by
//! `cargo bench`), in a process of its own, with the route
//! `{ from: commands, to: "devices/{key}/commands", qos: 1, start: earliest }`.
//!
//! - **Baseline**: one rumqttc publisher (QoS 1, up to 1,024 in flight: egress's own window)
//!   sends the same number of 100-byte messages over the same 1,000 topics through Mosquitto
//!   (`max_queued_messages 0`, `max_inflight_messages 0`: no limits) to the subscriber below.
//!   Messages/s from the first publish to the last message received.
//! - **1. Through the broker**: the gateway with `mqtt:` pointing at the same Mosquitto and the
//!   backlog in its log; records/s from spawning the gateway until the subscriber (subscribed
//!   beforehand) has received every record; also from the first record received to the last.
//! - **2. To listener subscribers**: the gateway with `listener:` (no `mqtt:`); a persistent
//!   rumqttc session (clean start false) that subscribed before the backlog was produced comes
//!   back and gets what it missed; records/s from its CONNECT to the last record received.
//!
//! The subscriber is the same in all three: rumqttc, MQTT 5, QoS 1 on `devices/+/commands`,
//! receive maximum 1,024, acks each message as it is read, on a thread and runtime of its own
//! (as common/load.rs's bare subscriber). It checks every message: each record received (the
//! payload names it), duplicates counted, each on its key's topic, first deliveries in order
//! per key. After each egress round the gateway is stopped and its committed positions are
//! checked to be at the end of every partition.
//!
//! `BENCH_ROUNDS` rounds (default 3) alternate the three so drift on a shared machine hits all
//! alike; medians are compared. Then, once, e2e's baseline (common/load.rs: 4 publishers) for
//! reference, and 1 and 2 on the same backlog in a single partition (`BENCH_ONE_PARTITION=0`
//! skips it): a partition delivers round by round (publish a round, await every PUBACK,
//! commit, read the next), so that is the per-partition ceiling.
//!
//! TCP_NODELAY is off by default on the subscriber (rumqttc's default, as most device stacks)
//! and on Mosquitto (its default); `BENCH_SUBSCRIBER_NODELAY=1` and `BENCH_BROKER_NODELAY=1`
//! turn it on (the baseline's subscriber is the same, so it changes too). Everything (gateway,
//! Mosquitto, publisher, subscriber) shares the machine's cores.
//! `cargo bench --bench egress` (needs `mosquitto`).

#[path = "common/load.rs"]
mod load;
#[path = "../tests/support/mod.rs"]
mod support;

use load::{now_us, peak_rss_kib};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rumqttc::v5::mqttbytes::v5::{Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{count_records, free_port, read_topic, wait_until, Gateway, Mosquitto};
use tributary::egress::subscribers::SESSIONS_DIR;
use tributary::log::positions::Positions;
use tributary::log::LogReader;

/// Devices: record `seq` is keyed `d{seq % KEYS}` and goes to `devices/d{seq % KEYS}/commands`.
const KEYS: usize = 1000;
/// The baseline publisher's QoS 1 window (egress's own: `publisher::WINDOW`) and every
/// subscriber's receive maximum.
const WINDOW: u16 = 1024;
const FILTER: &str = "devices/+/commands";
/// The persistent listener session that is away while the backlog is produced.
const SESSION: &str = "bench-fleet";
/// A subscriber that gets nothing for this long gives up.
const STALL: Duration = Duration::from_secs(30);
/// How long a subscriber keeps reading once it has every record, to count late duplicates.
const GRACE: Duration = Duration::from_millis(300);

/// An on/off setting: set and not `0`.
fn flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v != "0")
}

fn env_or(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

/// Record `seq`'s 100-byte payload: `d<key>:<seq, 10 digits>:xxx...`.
fn payload(seq: usize) -> Vec<u8> {
    let mut p = format!("d{}:{seq:010}:", seq % KEYS).into_bytes();
    p.resize(100, b'x');
    p
}

/// The sequence number a payload names.
fn seq_of(payload: &[u8]) -> Option<usize> {
    let mut fields = payload.split(|b| *b == b':');
    fields.next()?;
    std::str::from_utf8(fields.next()?).ok()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The subscriber.

/// What a subscriber saw.
#[derive(Debug)]
struct Tally {
    expected: usize,
    /// Records received at least once.
    distinct: usize,
    /// Messages received again (until `GRACE` after the last new one).
    duplicates: usize,
    /// Messages on a topic other than their key's, or naming no record of the backlog.
    misrouted: usize,
    /// First deliveries older than one already delivered for the same key.
    out_of_order: usize,
    /// When it started to connect.
    connect: Instant,
    first: Option<Instant>,
    /// When the last new record arrived.
    last: Option<Instant>,
    /// Set when it gave up: nothing for `STALL`, or the connection failed.
    failed: Option<String>,
}

impl Tally {
    fn complete(&self) -> bool {
        self.distinct == self.expected && self.misrouted == 0 && self.failed.is_none()
    }

    fn describe(&self) -> String {
        format!(
            "{} of {} received, {} duplicates, {} misrouted, {} out of order per key{}",
            self.distinct,
            self.expected,
            self.duplicates,
            self.misrouted,
            self.out_of_order,
            self.failed
                .as_ref()
                .map_or(String::new(), |f| format!("; {f}"))
        )
    }
}

struct Subscriber {
    /// Resolves at its SUBACK.
    subscribed: Option<tokio::sync::oneshot::Receiver<()>>,
    thread: std::thread::JoinHandle<Tally>,
}

impl Subscriber {
    /// Connects as `client_id` (`persistent`: clean start false, an hour's session) to `port`,
    /// subscribes to `FILTER` at QoS 1 and reads until it has all `expected` records.
    fn start(port: u16, client_id: String, persistent: bool, expected: usize) -> Subscriber {
        let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(read(port, client_id, persistent, expected, subscribed_tx))
        });
        Subscriber {
            subscribed: Some(subscribed),
            thread,
        }
    }

    /// Waits for its SUBACK; panics with what it saw if it never comes.
    async fn subscribed(mut self) -> Subscriber {
        if let Some(subscribed) = self.subscribed.take() {
            if subscribed.await.is_err() {
                panic!(
                    "subscriber failed before its SUBACK: {}",
                    self.finish().await.describe()
                );
            }
        }
        self
    }

    async fn finish(self) -> Tally {
        tokio::task::spawn_blocking(move || self.thread.join().unwrap())
            .await
            .unwrap()
    }
}

async fn read(
    port: u16,
    client_id: String,
    persistent: bool,
    expected: usize,
    subscribed: tokio::sync::oneshot::Sender<()>,
) -> Tally {
    let mut tally = Tally {
        expected,
        distinct: 0,
        duplicates: 0,
        misrouted: 0,
        out_of_order: 0,
        connect: Instant::now(),
        first: None,
        last: None,
        failed: None,
    };
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_receive_maximum(Some(WINDOW));
    if persistent {
        options
            .set_clean_start(false)
            .set_session_expiry_interval(Some(3600));
    }
    if flag("BENCH_SUBSCRIBER_NODELAY") {
        let mut network = rumqttc::NetworkOptions::new();
        network.set_tcp_nodelay(true);
        options.set_network_options(network);
    }
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    client.subscribe(FILTER, QoS::AtLeastOnce).await.unwrap();
    let mut subscribed = Some(subscribed);
    let mut seen = vec![false; expected];
    let mut newest: Vec<Option<usize>> = vec![None; KEYS];
    let mut done_at: Option<Instant> = None;
    loop {
        let wait = match done_at {
            Some(at) => GRACE.saturating_sub(at.elapsed()),
            None => STALL,
        };
        let event = match tokio::time::timeout(wait, eventloop.poll()).await {
            Err(_) if done_at.is_some() => break,
            Err(_) => {
                tally.failed = Some(format!("nothing received for {STALL:?}"));
                break;
            }
            Ok(Err(e)) => {
                tally.failed = Some(format!("connection: {e}"));
                break;
            }
            Ok(Ok(event)) => event,
        };
        match event {
            Event::Incoming(Packet::SubAck(ack)) => {
                if let Some(tx) = subscribed.take() {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                    {
                        tally.failed = Some(format!("SUBSCRIBE refused: {ack:?}"));
                        break;
                    }
                    let _ = tx.send(());
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                let now = Instant::now();
                tally.first.get_or_insert(now);
                let seq = match seq_of(&p.payload) {
                    Some(seq) if seq < expected => seq,
                    _ => {
                        tally.misrouted += 1;
                        continue;
                    }
                };
                let key = seq % KEYS;
                if p.topic != format!("devices/d{key}/commands").as_bytes() {
                    tally.misrouted += 1;
                }
                if std::mem::replace(&mut seen[seq], true) {
                    tally.duplicates += 1;
                    continue;
                }
                tally.distinct += 1;
                match newest[key] {
                    Some(n) if seq < n => tally.out_of_order += 1,
                    _ => newest[key] = Some(seq),
                }
                if tally.distinct == expected {
                    tally.last = Some(now);
                    done_at = Some(now);
                }
            }
            _ => {}
        }
    }
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(200), async {
        while eventloop.poll().await.is_ok() {}
    })
    .await;
    tally
}

// ---------------------------------------------------------------------------------------------
// The gateway.

/// `tributary run`'s config: `face` (the `mqtt:` or `listener:` line), the embedded log with
/// the Kafka listener on `kafka_port` (or off), the egress route.
fn config(face: &str, kafka_port: Option<u16>, partitions: usize) -> String {
    let kafka = kafka_port.map_or("null".to_string(), |p| format!("\"127.0.0.1:{p}\""));
    format!(
        "{face}\n\
         log: {{ embedded: {{ dir: DATA_DIR, fsync: interval, fsync_interval: 5ms, kafka_listener: {kafka} }} }}\n\
         topics: {{ default: {{ partitions: 4 }}, commands: {{ partitions: {partitions} }} }}\n\
         http: {{ listen: null }}\n\
         routes:\n  - {{ name: telemetry, from: \"devices/{{device}}/telemetry\", to: telemetry, key: \"{{device}}\" }}\n\
         egress:\n  - {{ name: commands, from: commands, to: \"devices/{{key}}/commands\", qos: 1, start: earliest }}\n"
    )
}

fn listener_face(port: u16) -> String {
    format!("listener: {{ listen: \"127.0.0.1:{port}\" }}")
}

fn broker_face(broker: &Mosquitto) -> String {
    format!(
        "mqtt: {{ url: \"{}\", client_id: bench-egress-{}, keep_alive: 30s }}",
        broker.url(),
        now_us()
    )
}

fn spawn_listening(gw: &mut Gateway) {
    gw.spawn();
    let ok = wait_until(Duration::from_secs(15), || {
        gw.log().contains("MQTT listener accepting")
    });
    assert!(ok, "the gateway did not start listening:\n{}", gw.log());
}

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The end offset of every partition of `commands` in the log at `dir`.
fn ends(dir: &Path, partitions: usize) -> Vec<u64> {
    let reader = LogReader::open(dir).unwrap();
    (0..partitions as u32)
        .map(|p| reader.partition("commands", p).unwrap().end_offset().0)
        .collect()
}

/// The positions in `positions` that are not at the end of their partition.
fn behind(positions: &Positions, ends: &[u64]) -> Vec<String> {
    ends.iter()
        .enumerate()
        .filter_map(|(p, end)| {
            let at = positions.load("commands", p as u32).unwrap().map(|o| o.0);
            (at != Some(*end)).then(|| format!("partition {p}: {at:?} of {end}"))
        })
        .collect()
}

fn session_positions(data: &Path) -> Positions {
    let hex: String = SESSION.bytes().map(|b| format!("{b:02x}")).collect();
    Positions::in_dir(data.join(SESSIONS_DIR).join(hex).join("commands"))
}

/// Copies the log directory `from` to `to` (which must not exist).
fn copy_dir(from: &Path, to: &Path) {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}

/// Makes the backlog: a gateway with the listener face, the Kafka listener and the egress
/// route; the persistent session `SESSION` subscribes and leaves; `count` records are
/// produced; the gateway stops. Returns the stopped gateway (its `data_dir` is the backlog)
/// and how long producing took.
async fn make_backlog(count: usize, partitions: usize) -> (Gateway, Duration) {
    let (port, kafka_port) = (free_port(), free_port());
    let mut gw = Gateway::new(&config(&listener_face(port), Some(kafka_port), partitions));
    spawn_listening(&mut gw);
    let data = gw.data_dir();

    // The session subscribes (its position in each partition is stored: the end, 0), then
    // goes away; it gets what it missed when it comes back.
    let mut options = MqttOptions::new(SESSION, "127.0.0.1", port);
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(3600));
    let (client, mut eventloop) = AsyncClient::new(options, 16);
    client.subscribe(FILTER, QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Event::Incoming(Packet::SubAck(ack)) = eventloop.poll().await.unwrap() {
            assert!(
                ack.return_codes
                    .iter()
                    .all(|c| matches!(c, SubscribeReasonCode::Success(_))),
                "{ack:?}"
            );
            break;
        }
    }
    let positions = session_positions(&data);
    let stored = wait_until(Duration::from_secs(10), || {
        (0..partitions as u32).all(|p| matches!(positions.load("commands", p), Ok(Some(_))))
    });
    assert!(
        stored,
        "the session's positions were not stored\n{}",
        gw.log()
    );
    client.disconnect().await.unwrap();
    while eventloop.poll().await.is_ok() {}

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{kafka_port}"))
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let start = Instant::now();
    for chunk in (0..count).collect::<Vec<_>>().chunks(10_000) {
        let sends: Vec<_> = chunk
            .iter()
            .map(|&seq| {
                let producer = &producer;
                async move {
                    let key = format!("d{}", seq % KEYS);
                    let value = payload(seq);
                    producer
                        .send(
                            FutureRecord::to("commands").key(&key).payload(&value),
                            Duration::from_secs(30),
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
    let took = start.elapsed();
    drop(producer);
    let all = wait_until(Duration::from_secs(10), || {
        count_records(&data, "commands") == count
    });
    assert!(
        all,
        "{} of {count} records stored",
        count_records(&data, "commands")
    );
    assert!(gw.terminate().success(), "gateway:\n{}", gw.log());

    // What the subscribers must see: every record once, in order per key.
    let mut seen = vec![false; count];
    let mut newest: Vec<Option<usize>> = vec![None; KEYS];
    for record in read_topic(&data, "commands").into_values().flatten() {
        let seq = seq_of(&record.value).expect("a backlog record");
        assert!(
            !std::mem::replace(&mut seen[seq], true),
            "{seq} stored twice"
        );
        let key = seq % KEYS;
        assert_eq!(record.key.as_deref(), Some(format!("d{key}").as_bytes()));
        assert!(
            newest[key].is_none_or(|n| n < seq),
            "d{key}: {seq} stored after {:?}",
            newest[key]
        );
        newest[key] = Some(seq);
    }
    assert!(seen.iter().all(|s| *s), "records missing from the log");
    // No one delivered anything yet.
    let positions = session_positions(&data);
    for p in 0..partitions as u32 {
        assert_eq!(positions.load("commands", p).unwrap().map(|o| o.0), Some(0));
    }
    (gw, took)
}

// ---------------------------------------------------------------------------------------------
// The three measurements.

/// One rumqttc publisher (QoS 1, `WINDOW` in flight) -> Mosquitto -> the subscriber.
async fn baseline(broker: &Mosquitto, count: usize) -> f64 {
    let port = broker.port;
    let subscriber = Subscriber::start(port, format!("bench-bare-{}", now_us()), false, count);
    let subscriber = subscriber.subscribed().await;
    let start = Instant::now();
    let mut options = MqttOptions::new(format!("bench-pub-{}", now_us()), "127.0.0.1", port);
    options.set_outgoing_inflight_upper_limit(WINDOW);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let sender = tokio::spawn(async move {
        for seq in 0..count {
            client
                .publish(
                    format!("devices/d{}/commands", seq % KEYS),
                    QoS::AtLeastOnce,
                    false,
                    payload(seq),
                )
                .await
                .unwrap();
        }
        client
    });
    let mut acked = 0;
    while acked < count {
        let event = tokio::time::timeout(STALL, eventloop.poll())
            .await
            .expect("baseline publisher stalled")
            .unwrap();
        if let Event::Incoming(Packet::PubAck(_)) = event {
            acked += 1;
        }
    }
    let client = sender.await.unwrap();
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(100), eventloop.poll()).await;
    let tally = subscriber.finish().await;
    assert!(
        tally.complete() && tally.duplicates == 0,
        "baseline: {}",
        tally.describe()
    );
    count as f64 / (tally.last.unwrap() - start).as_secs_f64()
}

/// One egress round.
struct Run {
    /// Records/s from the start (gateway spawned, or subscriber connecting) to the last record.
    rate: f64,
    /// Records/s from the first record received to the last.
    steady: f64,
    /// From the start to the first record received.
    first_ms: f64,
    /// The gateway's CPU (user + system) per record, startup included.
    cpu_us: f64,
    peak_rss_kib: u64,
    duplicates: usize,
    out_of_order: usize,
}

impl Run {
    fn new(tally: &Tally, start: Instant, cpu: f64, peak_rss_kib: u64) -> Run {
        let (first, last) = (tally.first.unwrap(), tally.last.unwrap());
        let n = tally.expected as f64;
        Run {
            rate: n / (last - start).as_secs_f64(),
            steady: (n - 1.0) / (last - first).as_secs_f64(),
            first_ms: (first - start).as_secs_f64() * 1e3,
            cpu_us: cpu * 1e6 / n,
            peak_rss_kib,
            duplicates: tally.duplicates,
            out_of_order: tally.out_of_order,
        }
    }
}

/// 1: the backlog through Mosquitto, from spawning the gateway.
async fn through_broker(
    broker: &Mosquitto,
    backlog: &Path,
    count: usize,
    partitions: usize,
) -> Run {
    let mut gw = Gateway::new(&config(&broker_face(broker), None, partitions));
    copy_dir(backlog, &gw.data_dir());
    let subscriber = Subscriber::start(
        broker.port,
        format!("bench-device-{}", now_us()),
        false,
        count,
    );
    let subscriber = subscriber.subscribed().await;
    let start = Instant::now();
    gw.spawn();
    let pid = gw.pid().unwrap();
    let tally = subscriber.finish().await;
    let (cpu, rss) = (cpu_seconds(pid), peak_rss_kib(pid));
    assert!(
        tally.complete(),
        "through the broker: {}\n{}",
        tally.describe(),
        gw.log()
    );
    assert!(gw.terminate().success(), "gateway:\n{}", gw.log());
    let behind = behind(
        &Positions::egress(&gw.data_dir(), "commands"),
        &ends(&gw.data_dir(), partitions),
    );
    assert!(
        behind.is_empty(),
        "egress positions not at the end after every record was received: {behind:?}"
    );
    Run::new(&tally, start, cpu, rss)
}

/// 2: the backlog to the persistent listener session, from its CONNECT.
async fn to_listener(backlog: &Path, count: usize, partitions: usize) -> Run {
    let port = free_port();
    let mut gw = Gateway::new(&config(&listener_face(port), None, partitions));
    copy_dir(backlog, &gw.data_dir());
    spawn_listening(&mut gw);
    let pid = gw.pid().unwrap();
    let cpu_before = cpu_seconds(pid);
    let subscriber = Subscriber::start(port, SESSION.to_string(), true, count);
    let tally = subscriber.finish().await;
    let (cpu, rss) = (cpu_seconds(pid) - cpu_before, peak_rss_kib(pid));
    assert!(
        tally.complete(),
        "to the listener: {}\n{}",
        tally.describe(),
        gw.log()
    );
    assert!(gw.terminate().success(), "gateway:\n{}", gw.log());
    let behind = behind(
        &session_positions(&gw.data_dir()),
        &ends(&gw.data_dir(), partitions),
    );
    assert!(
        behind.is_empty(),
        "session positions not at the end after every record was received: {behind:?}"
    );
    Run::new(&tally, tally.connect, cpu, rss)
}

fn median(values: impl IntoIterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = values.into_iter().collect();
    v.sort_by(f64::total_cmp);
    match v.len() % 2 {
        1 => v[v.len() / 2],
        _ => (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0,
    }
}

fn runs(runs: &[Run], f: fn(&Run) -> f64) -> String {
    runs.iter()
        .map(|r| format!("{:.0}", f(r)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn summary(name: &str, runs_: &[Run], bare: f64) {
    let rate = median(runs_.iter().map(|r| r.rate));
    println!(
        "  {name} {rate:>7.0} records/s (median; runs: {}), ratio {:.2}",
        runs(runs_, |r| r.rate),
        rate / bare
    );
    println!(
        "      first record after {:.0} ms (median); first to last record: {:.0} records/s (median); gateway CPU {:.2} µs per record, peak RSS {:.1} MiB (max); duplicates {}, out of order per key {} (over all rounds)",
        median(runs_.iter().map(|r| r.first_ms)),
        median(runs_.iter().map(|r| r.steady)),
        median(runs_.iter().map(|r| r.cpu_us)),
        runs_.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0,
        runs_.iter().map(|r| r.duplicates).sum::<usize>(),
        runs_.iter().map(|r| r.out_of_order).sum::<usize>(),
    );
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let count = env_or("BENCH_MESSAGES", 100_000);
    let rounds = env_or("BENCH_ROUNDS", 3).max(1);
    let partitions = env_or("BENCH_PARTITIONS", 4).max(1);
    let one_partition = env_or("BENCH_ONE_PARTITION", 1) != 0 && partitions != 1;
    let broker_nodelay = flag("BENCH_BROKER_NODELAY");
    let nodelay = |on: bool| if on { "on" } else { "off (the default)" };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "egress: {count} records, 100 bytes, {KEYS} keys, log topic `commands` with {partitions} partitions; QoS 1 subscriber on {FILTER} (rumqttc, receive maximum {WINDOW}); `tributary run` (release binary, own process); {rounds} rounds alternated"
        );
        println!(
            "  TCP_NODELAY: subscriber {}, Mosquitto {}",
            nodelay(flag("BENCH_SUBSCRIBER_NODELAY")),
            nodelay(broker_nodelay)
        );
        let (backlog_gw, took) = make_backlog(count, partitions).await;
        let backlog = backlog_gw.data_dir();
        println!(
            "  backlog produced with rdkafka (acks all) through the Kafka listener: {:.0} records/s; read back: every record once, in order per key",
            count as f64 / took.as_secs_f64()
        );
        let broker = match broker_nodelay {
            true => Mosquitto::start_with("set_tcp_nodelay true"),
            false => Mosquitto::start(),
        };
        let (mut bare, mut broker_runs, mut listener_runs) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=rounds {
            let b = baseline(&broker, count).await;
            let e = through_broker(&broker, &backlog, count, partitions).await;
            let l = to_listener(&backlog, count, partitions).await;
            println!(
                "  round {round}: baseline {b:>7.0}/s | through Mosquitto {:>7.0}/s (first to last {:.0}/s), ratio {:.2} | to the listener {:>7.0}/s, ratio {:.2}",
                e.rate, e.steady, e.rate / b, l.rate, l.rate / b
            );
            bare.push(b);
            broker_runs.push(e);
            listener_runs.push(l);
        }
        drop(backlog_gw);
        let bare_rate = median(bare.iter().copied());
        println!(
            "  baseline: 1 rumqttc publisher (QoS 1, {WINDOW} in flight) -> Mosquitto -> subscriber: {bare_rate:>7.0} msgs/s (median; runs: {})",
            bare.iter().map(|b| format!("{b:.0}")).collect::<Vec<_>>().join(", ")
        );
        summary("1. egress through Mosquitto, gateway spawn -> last record:", &broker_runs, bare_rate);
        summary("2. egress to a persistent listener session, CONNECT -> last record:", &listener_runs, bare_rate);
        println!("  every round: every record received, on its key's topic; committed positions at the end of every partition afterwards");
        let e2e = load::bare_subscriber(broker.port, count).await;
        println!(
            "  for reference, e2e's baseline ({} rumqttc publishers, 500 in flight each, {} topics): {e2e:.0} msgs/s",
            load::PUBLISHERS,
            load::TOPICS
        );
        if one_partition {
            // A partition delivers round by round: a round's records are published, every
            // PUBACK awaited, the position committed, and only then the next round read.
            let (one_gw, _) = make_backlog(count, 1).await;
            let e = through_broker(&broker, &one_gw.data_dir(), count, 1).await;
            let l = to_listener(&one_gw.data_dir(), count, 1).await;
            println!(
                "  the same backlog in 1 partition (BENCH_ONE_PARTITION=0 skips): through Mosquitto {:.0} records/s (ratio {:.2}), to the listener {:.0} records/s (ratio {:.2})",
                e.rate,
                e.rate / bare_rate,
                l.rate,
                l.rate / bare_rate
            );
        }
    });
}
