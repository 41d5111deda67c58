//! At-least-once on the listener face under SIGKILL: four devices (rumqttc, MQTT 5) stream
//! 20,000 QoS 1 messages while the gateway is killed and restarted twice. After each kill the
//! log holds every message a device got a PUBACK for; after the devices have republished what
//! was not PUBACKed, it holds every message, duplicates only of republished ones, in order per
//! device.

use crate::common::{partition_of, Listener, Setup, TELEMETRY_PARTITIONS};
use crate::support::Stored;
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason};
use rumqttc::v5::mqttbytes::{Error as MqttError, QoS};
use rumqttc::v5::{AsyncClient, ConnectionError, Event, MqttOptions, StateError};
use rumqttc::Outgoing;
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const N: usize = 20_000;
const DEVICES: usize = 4;
const MAX_INFLIGHT: usize = 128;
/// Messages a device hands its client ahead of the wire.
const AHEAD: usize = 32;

/// What the devices know, shared with the test's thread: which messages were PUBACKed, and
/// which were sent on a connection that ended before their PUBACK (so sent again).
struct Ledger {
    acked: Vec<bool>,
    acked_count: usize,
    /// For each message: how many connections it was sent on that ended before its PUBACK.
    resent: Vec<u32>,
    /// Per device: connections opened, connections lost, done.
    connections: [usize; DEVICES],
    lost: [usize; DEVICES],
    /// Per device: messages sent and unacked when each connection was lost.
    unacked_at_loss: [Vec<usize>; DEVICES],
    done: [bool; DEVICES],
}

type Shared = Arc<Mutex<Ledger>>;

fn lock(l: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    l.lock().unwrap_or_else(|e| e.into_inner())
}

/// A device: publishes its messages (`d`, `d + DEVICES`, ...) in order; when the connection
/// ends, connects again (a new session: the gateway keeps none across a crash) and sends
/// again, first, every message not PUBACKed, in order.
async fn device(d: usize, port: u16, ledger: Shared) {
    let topic = format!("devices/d{d}/telemetry/crash");
    // Messages not PUBACKed yet, in order.
    let mut unacked: VecDeque<usize> = (d..N).step_by(DEVICES).collect();
    let mut refused = 0;
    while !unacked.is_empty() {
        let mut options = MqttOptions::new(format!("crash-device-{d}"), "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(10))
            .set_clean_start(true)
            .set_outgoing_inflight_upper_limit(100);
        let (client, mut eventloop) = AsyncClient::new(options, AHEAD);
        match tokio::time::timeout(Duration::from_secs(5), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack))))
                if ack.code == ConnectReturnCode::Success => {}
            _ => {
                // The gateway is down: try again shortly.
                refused += 1;
                assert!(refused < 2000, "device {d} cannot reconnect");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        }
        lock(&ledger).connections[d] += 1;
        // unacked[..issued] are handed to the client; unacked[..on_wire] were written, with
        // the packet ids in `sent` (in order).
        let mut issued = 0;
        let mut sent: VecDeque<u16> = VecDeque::new();
        loop {
            while issued < unacked.len() && issued - sent.len() < AHEAD {
                let seq = unacked[issued];
                let payload = format!("{d}:{seq}");
                if client
                    .try_publish(&topic, QoS::AtLeastOnce, false, payload)
                    .is_err()
                {
                    break;
                }
                issued += 1;
            }
            if unacked.is_empty() {
                break;
            }
            let event = tokio::time::timeout(Duration::from_secs(30), eventloop.poll())
                .await
                .unwrap_or_else(|_| panic!("device {d} stalled"));
            match event {
                Ok(Event::Outgoing(Outgoing::Publish(pkid))) => sent.push_back(pkid),
                Ok(Event::Incoming(Packet::PubAck(ack))) => {
                    let pkid = sent.pop_front().expect("a PUBACK for nothing sent");
                    assert_eq!(ack.pkid, pkid, "device {d}: PUBACKs in PUBLISH order");
                    assert_eq!(ack.reason, PubAckReason::Success);
                    let seq = unacked.pop_front().expect("sent");
                    issued -= 1;
                    let mut l = lock(&ledger);
                    l.acked[seq] = true;
                    l.acked_count += 1;
                }
                Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => {
                    panic!("device {d}: packet id {pkid} collided: acks out of order")
                }
                Ok(_) => {}
                Err(
                    ConnectionError::Io(_)
                    | ConnectionError::MqttState(
                        StateError::Io(_)
                        | StateError::ConnectionAborted
                        | StateError::Deserialization(MqttError::Io(_)),
                    ),
                ) => {
                    let mut l = lock(&ledger);
                    for &seq in unacked.iter().take(sent.len()) {
                        l.resent[seq] += 1;
                    }
                    l.unacked_at_loss[d].push(sent.len());
                    l.lost[d] += 1;
                    break;
                }
                Err(e) => panic!("device {d}: {e:?}"),
            }
        }
        if unacked.is_empty() {
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
        }
    }
    lock(&ledger).done[d] = true;
}

/// xorshift64*, seeded from the clock unless `LISTENER_CRASH_SEED` is set (printed).
fn rng() -> impl FnMut(u64) -> u64 {
    let mut s = std::env::var("LISTENER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
                | 1
        });
    println!("random seed: LISTENER_CRASH_SEED={s}");
    move |below| {
        s ^= s >> 12;
        s ^= s << 25;
        s ^= s >> 27;
        s.wrapping_mul(0x2545_f491_4f6c_dd1d) % below
    }
}

/// The message numbers stored in the log, each with its copies.
fn stored_copies(parts: &BTreeMap<u32, Vec<Stored>>) -> BTreeMap<usize, usize> {
    let mut copies = BTreeMap::new();
    for r in parts.values().flatten() {
        let (_, seq) = r.value_str().split_once(':').expect("device:seq");
        *copies.entry(seq.parse().unwrap()).or_default() += 1;
    }
    copies
}

#[test]
fn sigkill_twice_loses_no_acked_message_and_republishing_loses_none() {
    let started = Instant::now();
    let mut random = rng();
    let mut gw = Listener::start(Setup {
        listener: &format!(", max_inflight: {MAX_INFLIGHT}"),
        ..Setup::default()
    });
    let ledger: Shared = Arc::new(Mutex::new(Ledger {
        acked: vec![false; N],
        acked_count: 0,
        resent: vec![0; N],
        connections: [0; DEVICES],
        lost: [0; DEVICES],
        unacked_at_loss: Default::default(),
        done: [false; DEVICES],
    }));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let devices: Vec<_> = (0..DEVICES)
        .map(|d| rt.spawn(device(d, gw.port, ledger.clone())))
        .collect();

    // Copies of each message in the log at the previous kill, and the messages stored during
    // a gateway's life but not acked when it was killed: each must come back exactly once more.
    let mut before: BTreeMap<usize, usize> = BTreeMap::new();
    let mut stored_unacked_total = 0;
    for (kill, share) in [(1, 25), (2, 60)] {
        // Somewhere around 25 % and 60 % of the stream.
        let at = N * share / 100 + random(N as u64 / 10) as usize;
        let reached =
            crate::support::wait_until(Duration::from_secs(60), || lock(&ledger).acked_count >= at);
        assert!(reached, "devices stuck before {at} acks:\n{}", gw.gw.log());
        gw.gw.kill();
        let killed_at = started.elapsed();
        // Every device still sending has seen its connection end: no PUBACK can come now.
        let seen = crate::support::wait_until(Duration::from_secs(10), || {
            let l = lock(&ledger);
            (0..DEVICES).all(|d| l.done[d] || l.lost[d] >= kill)
        });
        assert!(seen, "devices did not notice the kill");
        let (acked, in_flight): (Vec<usize>, usize) = {
            let l = lock(&ledger);
            (
                (0..N).filter(|&s| l.acked[s]).collect(),
                (0..DEVICES)
                    .filter_map(|d| l.unacked_at_loss[d].get(kill - 1))
                    .sum(),
            )
        };
        let copies = stored_copies(&gw.records("telemetry"));
        let lost: Vec<usize> = acked
            .iter()
            .copied()
            .filter(|s| !copies.contains_key(s))
            .collect();
        let stored_unacked = {
            let l = lock(&ledger);
            copies
                .iter()
                .filter(|&(s, n)| !l.acked[*s] && *n > before.get(s).copied().unwrap_or(0))
                .count()
        };
        stored_unacked_total += stored_unacked;
        before = copies.clone();
        println!(
            "kill {kill} (SIGKILL) at {killed_at:?}: {} acked, {} distinct stored ({} records), {in_flight} sent and unacked (of which {stored_unacked} stored by this life but not acked); lost of acked: {}",
            acked.len(),
            copies.len(),
            copies.values().sum::<usize>(),
            lost.len()
        );
        assert!(
            lost.is_empty(),
            "kill {kill}: {} PUBACKed messages are not in the log, first {:?}",
            lost.len(),
            &lost[..lost.len().min(20)]
        );
        std::thread::sleep(Duration::from_millis(100 + random(400)));
        gw.run();
    }

    rt.block_on(async {
        for (d, h) in devices.into_iter().enumerate() {
            tokio::time::timeout(Duration::from_secs(90), h)
                .await
                .unwrap_or_else(|_| panic!("device {d} did not finish"))
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        }
    });
    let published_in = started.elapsed();
    let status = gw.gw.terminate();
    assert!(status.success(), "SIGTERM exits 0: {status:?}");

    let parts = gw.records("telemetry");
    let l = lock(&ledger);
    assert_eq!(l.acked_count, N, "every message PUBACKed in the end");
    let mut copies = vec![0usize; N];
    let mut records = 0;
    let mut disorder = Vec::new();
    for (&partition, stored) in &parts {
        let mut last: [Option<usize>; DEVICES] = [None; DEVICES];
        for r in stored {
            records += 1;
            let (device, seq) = r.value_str().split_once(':').expect("device:seq");
            let (device, seq): (usize, usize) = (device.parse().unwrap(), seq.parse().unwrap());
            assert!(seq < N && seq % DEVICES == device, "{}", r.value_str());
            let key = format!("d{device}");
            assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
            assert_eq!(
                partition,
                partition_of(&key, TELEMETRY_PARTITIONS),
                "{key} in partition {partition}"
            );
            copies[seq] += 1;
            if copies[seq] == 1 {
                // A message's first copy comes after every earlier message of its device.
                if last[device].is_some_and(|prev| prev > seq) {
                    disorder.push((device, last[device], seq));
                }
                last[device] = Some(seq);
            }
        }
    }
    let lost: Vec<usize> = (0..N).filter(|&s| copies[s] == 0).collect();
    let duplicated: Vec<(usize, usize)> = (0..N)
        .filter(|&s| copies[s] > 1)
        .map(|s| (s, copies[s]))
        .collect();
    let duplicates: usize = duplicated.iter().map(|(_, c)| c - 1).sum();
    let unexplained: Vec<(usize, usize, u32)> = duplicated
        .iter()
        .filter(|&&(s, c)| c - 1 > l.resent[s] as usize)
        .map(|&(s, c)| (s, c, l.resent[s]))
        .collect();
    let resent: u32 = l.resent.iter().sum();
    let distinct: HashSet<usize> = (0..N).filter(|&s| copies[s] > 0).collect();
    println!(
        "sent {N} messages from {DEVICES} devices ({:?} connections, {:?} lost), acked {}, {resent} sent again after a lost connection; \
         stored {records} records: {} distinct, lost {}, {duplicates} duplicates ({} messages); published in {published_in:?}, {:?} in all",
        l.connections,
        l.lost,
        l.acked_count,
        distinct.len(),
        lost.len(),
        duplicated.len(),
        started.elapsed()
    );
    assert!(
        lost.is_empty(),
        "{} messages lost, first {:?}",
        lost.len(),
        &lost[..lost.len().min(20)]
    );
    assert_eq!(records, N + duplicates);
    assert_eq!(
        duplicates, stored_unacked_total,
        "the duplicates are exactly the messages stored but not acked when a kill came"
    );
    assert!(
        unexplained.is_empty(),
        "duplicates of messages never sent again (seq, copies, resends): {:?}",
        &unexplained[..unexplained.len().min(20)]
    );
    assert!(
        disorder.is_empty(),
        "order per device (device, previous, seq): {:?}",
        &disorder[..disorder.len().min(20)]
    );
    assert!(
        l.lost.iter().all(|&n| n >= 2),
        "every device saw both kills: {:?}",
        l.lost
    );
}
