//! The gateway killed with SIGKILL three times while 50,000 messages stream in, checked
//! against the broker's side of the session read from Mosquitto's log.

use crate::publish::{spawn_publishers, DEVICES, ROUTE};
use crate::support::{self, Gateway, Mosquitto};
use crate::tally::{ranges, report, tally, wait_drained};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// xorshift64*, seeded from the clock unless `CRASH_SEED` is set (the seed is printed).
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
                    | 1
            });
        println!("random seed: CRASH_SEED={seed}");
        Rng(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..hi` milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// The broker's side of the gateway's session, read from Mosquitto's `log_type all` lines: every
/// PUBLISH it sent the gateway (first sends and resends) and every PUBACK it got back. Each
/// first send is mapped to its message: the broker forwards each device's messages in the order
/// one publisher connection gave them, so the k-th first send on device d's topic is message
/// `d + DEVICES * k` (checked against the payload length in the line).
#[derive(Debug, Default)]
struct BrokerView {
    first_sends: usize,
    resends: usize,
    acks: usize,
    /// Most messages the broker had sent and not seen acked at any moment.
    max_unacked: usize,
    /// For each reconnect of the gateway: the messages then unacked, which the broker redelivers.
    redelivered: Vec<Vec<usize>>,
    /// Lines the model above cannot account for (the broker reassigning message ids around a
    /// reconnect, for one); when there are any, the checks built on this view are skipped.
    anomalies: Vec<String>,
}

fn broker_view(log: &str, client: &str) -> BrokerView {
    let send = format!("Sending PUBLISH to {client} (");
    let ack = format!("Received PUBACK from {client} (Mid: ");
    let connect = format!(" as {client} (");
    let mut view = BrokerView::default();
    let mut unacked: HashMap<u16, usize> = HashMap::new();
    let mut sent_per_device = vec![0usize; DEVICES];
    let mut connections = 0;
    for line in log.lines() {
        if let Some((_, rest)) = line.split_once(&send) {
            // d0, q1, r0, m123, 'devices/d17/telemetry', ... (8 bytes))
            let fields: Vec<&str> = rest.splitn(5, ", ").collect();
            let mid: u16 = fields[3].trim_start_matches('m').parse().expect("mid");
            if fields[0] == "d1" {
                if !unacked.contains_key(&mid) {
                    view.anomalies
                        .push(format!("resent m{mid} that was acked: {line}"));
                }
                view.resends += 1;
                continue;
            }
            let topic = fields[4].split('\'').nth(1).expect("topic");
            let device: usize = topic
                .trim_start_matches("devices/d")
                .trim_end_matches("/telemetry")
                .parse()
                .expect("device");
            let seq = device + DEVICES * sent_per_device[device];
            sent_per_device[device] += 1;
            let bytes: usize = rest
                .rsplit_once('(')
                .and_then(|(_, b)| b.split(' ').next())
                .and_then(|b| b.parse().ok())
                .expect("bytes");
            if bytes != format!("{device}:{seq}").len() {
                // The broker sent as new (d0) a message it had sent before: its order is not
                // the model's any more (seen with Mosquitto 2.0.11 around reconnects when acks
                // come in bursts). The loss and order checks on the log still hold.
                view.anomalies
                    .push(format!("first send out of the publisher's order: {line}"));
            }
            if unacked.insert(mid, seq).is_some() {
                view.anomalies
                    .push(format!("m{mid} reused while unacked: {line}"));
            }
            view.first_sends += 1;
            view.max_unacked = view.max_unacked.max(unacked.len());
        } else if let Some((_, rest)) = line.split_once(&ack) {
            let mid: u16 = rest
                .split(',')
                .next()
                .and_then(|m| m.parse().ok())
                .expect("mid");
            if unacked.remove(&mid).is_none() {
                view.anomalies
                    .push(format!("PUBACK for m{mid} not in flight: {line}"));
            }
            view.acks += 1;
        } else if line.contains("New client connected") && line.contains(&connect) {
            if connections > 0 {
                let mut seqs: Vec<usize> = unacked.values().copied().collect();
                seqs.sort_unstable();
                view.redelivered.push(seqs);
            }
            connections += 1;
        }
    }
    view
}

#[test]
fn sigkill_mid_stream_loses_nothing() {
    const N: usize = 50_000;
    const MAX_INFLIGHT: usize = 256;
    const KILLS: usize = 3;
    let started = Instant::now();
    let mut rng = Rng::new();
    // Every PUBLISH and PUBACK logged: the broker's own count of what it may redeliver.
    let broker = Mosquitto::start_with("log_type all");
    let mut gw = Gateway::new(&Gateway::config(
        &broker.url(),
        "gw-crash",
        &format!(", max_inflight: {MAX_INFLIGHT}"),
        ROUTE,
    ));
    gw.start();
    let data = gw.data_dir();
    let count = || support::count_records(&data, "telemetry");

    let progress = Arc::new(AtomicUsize::new(0));
    let publishers = spawn_publishers(broker.port, "crash-pub", N, 4, progress.clone());
    for kill in 1..=KILLS {
        std::thread::sleep(rng.millis(300, 1500));
        gw.kill();
        println!(
            "kill {kill} (SIGKILL) at {:?}: broker acked {} of {N} published, {} stored",
            started.elapsed(),
            progress.load(Ordering::Relaxed),
            count()
        );
        // Down for a while: the broker queues for the persistent session.
        std::thread::sleep(rng.millis(0, 500));
        gw.start();
    }
    let reports = publishers.join().expect("publishers");
    println!("published {N} in {:?}: {reports:?}", started.elapsed());
    assert!(
        reports
            .iter()
            .all(|r| r.connections == 1 && r.not_success == 0),
        "the broker stayed up and had the gateway's session: {reports:?}"
    );

    let stored = wait_drained(Duration::from_secs(120), N, count);
    let status = gw.terminate();
    assert!(
        status.success(),
        "graceful shutdown exits 0: {status:?}\n{}",
        gw.log()
    );
    let t = tally(&gw.records("telemetry"), N);
    report("sigkill", &t);
    println!(
        "sigkill: drained with {stored} records; {:?} in all",
        started.elapsed()
    );
    let log = broker.log();
    assert!(
        !log.contains("Outgoing messages are being dropped"),
        "the broker dropped messages"
    );
    let view = broker_view(&log, "gw-crash");
    let redeliverable: Vec<usize> = view.redelivered.iter().map(Vec::len).collect();
    let copies: HashMap<usize, usize> = t.duplicated.iter().copied().collect();
    let stored_twice: Vec<usize> = view
        .redelivered
        .iter()
        .map(|seqs| seqs.iter().filter(|s| copies.contains_key(s)).count())
        .collect();
    println!(
        "broker: {} first sends, {} resends, {} acks; at most {} unacked at once (receive maximum {MAX_INFLIGHT}); unacked at each reconnect {redeliverable:?}, of which stored more than once {stored_twice:?}",
        view.first_sends, view.resends, view.acks, view.max_unacked
    );

    assert_eq!(
        t.lost.len(),
        0,
        "lost messages: {}",
        ranges(t.lost.iter().copied().take(100))
    );
    assert_eq!(t.records, N + t.duplicates);
    assert!(
        t.disorder.is_empty(),
        "order per device: {:?}",
        &t.disorder[..t.disorder.len().min(20)]
    );
    // What follows reads the broker's log line by line; where the broker did something that
    // model does not cover, say so and keep to the checks above (loss, count, order).
    if !view.anomalies.is_empty() {
        println!(
            "NOTE: {} broker log lines outside the model; skipping the checks built on it, first: {}",
            view.anomalies.len(),
            view.anomalies[0]
        );
        return;
    }
    assert_eq!(
        view.first_sends, N,
        "the broker sent each message once, then only resends"
    );
    assert_eq!(view.redelivered.len(), KILLS, "one reconnect per kill");
    // A copy beyond the first comes only from a redelivery: each duplicated message was unacked
    // at as many reconnects as it has extra copies, at least.
    let mut times_redelivered: HashMap<usize, usize> = HashMap::new();
    for seq in view.redelivered.iter().flatten() {
        *times_redelivered.entry(*seq).or_default() += 1;
    }
    let unexplained: Vec<_> = t
        .duplicated
        .iter()
        .filter(|(seq, copies)| copies - 1 > times_redelivered.get(seq).copied().unwrap_or(0))
        .collect();
    assert!(
        unexplained.is_empty(),
        "duplicates the broker never redelivered: {unexplained:?}"
    );
    if view.max_unacked <= MAX_INFLIGHT {
        assert!(
            t.duplicates <= KILLS * MAX_INFLIGHT,
            "{} duplicates over {KILLS} crashes with max_inflight {MAX_INFLIGHT}",
            t.duplicates
        );
    } else {
        // Mosquitto 2.0.11 (Debian 12) releases a whole receive-maximum window of queued
        // messages for every PUBACK of the oldest in-flight one, so its window is not
        // max_inflight; the duplicates are then bounded by what it really had unacked.
        println!(
            "NOTE: the broker kept up to {} messages unacked, over the receive maximum of {MAX_INFLIGHT} the gateway asked for; \
             the {KILLS} x max_inflight = {} bound on duplicates cannot hold against it ({} duplicates, all redelivered by the broker)",
            view.max_unacked,
            KILLS * MAX_INFLIGHT,
            t.duplicates
        );
    }
}
