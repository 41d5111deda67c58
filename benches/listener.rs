//! The listener face: devices publish to Tributary itself.
//!
//! 1. Throughput: the same publishers (`BENCH_PUBLISHERS` raw MQTT 5 connections, default 8,
//!    each keeping up to `BENCH_WINDOW` QoS 1 publishes in flight, default 1024, capped by the
//!    server's receive maximum; 100-byte payloads over 100 device topics) send
//!    `BENCH_MESSAGES` messages (default 100k)
//!    - to `tributary run` (the release binary, a process of its own, fresh each round; 100
//!      warm-up messages first create the log topic) with the listener on and the embedded log
//!      (`fsync: interval`, 5 ms): messages/s from the first PUBLISH to the last PUBACK (a
//!      PUBACK leaves once the message is durable), every message's ack latency (PUBLISH
//!      written to PUBACK read), the gateway's peak RSS and CPU per message; after each run
//!      the log is read back: every message stored, once;
//!    - to Mosquitto (`max_queued_messages 0`) with the bare rumqttc subscriber (acks,
//!      discards; the e2e baseline): messages/s from the first PUBLISH to the last message the
//!      subscriber read, and the CPU per message of Mosquitto and of the subscriber's thread.
//!
//!    `BENCH_ROUNDS` rounds (default 3), alternated so drift on a shared machine hits both alike;
//!    medians are compared. Then once each with e2e's publishers (common/load.rs: 4 rumqttc
//!    clients, 500 in flight), the disk's own append + fdatasync latency, and the ack latency
//!    at a steady `BENCH_RATE` msgs/s (default 10k) for 3 s.
//! 2. Connections: `BENCH_CONNECTIONS` (default 10,000) idle MQTT 5 connections (raw sockets,
//!    CONNECT then CONNACK, keep-alive 60 s) held open against a fresh gateway: its RSS with
//!    them beside its RSS with none, its CPU while they idle; then closed and opened again
//!    (`BENCH_CONNECTION_PASSES` passes in all, default 3), its RSS after each. RLIMIT_NOFILE
//!    is raised to the hard limit first; the gateway inherits it.
//!
//! The bench's publishers share the machine's cores with the gateway (and with Mosquitto and
//! the subscriber for the baseline). `cargo bench --bench listener` (needs `mosquitto`).

#[path = "common/load.rs"]
mod load;
#[path = "../tests/support/mod.rs"]
mod support;

use bytes::{Buf, BufMut, BytesMut};
use load::{peak_rss_kib, TOPICS};
use rumqttc::v5::mqttbytes::v5::Packet;
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use std::fmt::Write as _;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Gateway, Mosquitto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Publishes a publisher writes in one go when its window allows.
const BATCH: usize = 64;
/// The gateway's listener: `max_inflight` per connection (its MQTT 5 receive maximum).
const MAX_INFLIGHT: usize = 1024;
/// Connections being opened at once in the connection test (the listen backlog is 1024).
const OPENING: usize = 128;
/// Messages sent to a fresh gateway before the timed part, one per device topic: they create
/// the log topic and its partitions (a one-time cost). Sequence numbers from the count up.
const WARM_UP: usize = TOPICS;
/// Keep-alive of the idle connections: the listener closes them after 1.5 x this.
const IDLE_KEEP_ALIVE: u16 = 60;

fn env_or(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number")),
        Err(_) => default,
    }
}

#[derive(Clone, Copy)]
struct Load {
    messages: usize,
    publishers: usize,
    window: usize,
}

// ---------------------------------------------------------------------------------------------
// Raw MQTT 5: just what the publishers and idle connections send and read.

fn put_len(buf: &mut BytesMut, mut n: usize) {
    loop {
        let mut b = (n % 128) as u8;
        n /= 128;
        if n > 0 {
            b |= 0x80;
        }
        buf.put_u8(b);
        if n == 0 {
            return;
        }
    }
}

/// A variable byte integer at the start of `buf`: its value and length, once all of it is in.
fn varint(buf: &[u8]) -> Option<(usize, usize)> {
    let mut value = 0;
    for i in 0..4 {
        let b = *buf.get(i)?;
        value += usize::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    panic!("malformed variable byte integer from the server");
}

/// The fixed header's length and the remaining length of the packet `buf` starts with, once
/// the fixed header is in.
fn frame(buf: &[u8]) -> Option<(usize, usize)> {
    let (len, n) = varint(buf.get(1..)?)?;
    Some((1 + n, len))
}

/// CONNECT, MQTT 5, clean start, no properties, no will, no credentials.
fn connect_packet(client_id: &str, keep_alive: u16) -> BytesMut {
    let mut body = BytesMut::new();
    body.put_slice(&[0, 4, b'M', b'Q', b'T', b'T', 5, 0x02]);
    body.put_u16(keep_alive);
    body.put_u8(0);
    body.put_u16(client_id.len() as u16);
    body.put_slice(client_id.as_bytes());
    let mut packet = BytesMut::new();
    packet.put_u8(0x10);
    put_len(&mut packet, body.len());
    packet.put_slice(&body);
    packet
}

/// The receive maximum in CONNACK properties (65,535 when absent).
fn receive_maximum(mut props: &[u8]) -> u16 {
    let Some((len, n)) = varint(props) else {
        return u16::MAX;
    };
    props = &props[n..(n + len).min(props.len())];
    let u16_at = |p: &[u8], i: usize| usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
    while let Some(&id) = props.first() {
        let skip = match id {
            0x21 => return u16_at(props, 1) as u16,
            0x01 | 0x17 | 0x19 | 0x24 | 0x25 | 0x28 | 0x29 | 0x2A => 1,
            0x13 | 0x22 | 0x23 => 2,
            0x02 | 0x11 | 0x18 | 0x27 => 4,
            0x03 | 0x08 | 0x09 | 0x12 | 0x15 | 0x16 | 0x1A | 0x1C | 0x1F => 2 + u16_at(props, 1),
            0x26 => {
                let key = 2 + u16_at(props, 1);
                key + 2 + u16_at(props, 1 + key)
            }
            _ => return u16::MAX,
        };
        props = &props[(1 + skip).min(props.len())..];
    }
    u16::MAX
}

/// Sends CONNECT, reads CONNACK (and nothing past it): the server's receive maximum.
async fn handshake(stream: &mut TcpStream, client_id: &str, keep_alive: u16) -> io::Result<u16> {
    stream
        .write_all(&connect_packet(client_id, keep_alive))
        .await?;
    let mut buf = Vec::with_capacity(64);
    let mut want = 2;
    let (h, len) = loop {
        while buf.len() < want {
            let mut byte = [0u8; 64];
            let n = stream.read(&mut byte[..(want - buf.len()).min(64)]).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before CONNACK",
                ));
            }
            buf.extend_from_slice(&byte[..n]);
        }
        match frame(&buf) {
            Some((h, len)) if buf.len() >= h + len => break (h, len),
            Some((h, len)) => want = h + len,
            None => want = buf.len() + 1,
        }
    };
    let body = &buf[h..h + len];
    if buf[0] != 0x20 || len < 2 {
        return Err(io::Error::other(format!("not a CONNACK: {buf:02x?}")));
    }
    if body[1] != 0 {
        return Err(io::Error::other(format!("CONNACK reason {:#04x}", body[1])));
    }
    Ok(receive_maximum(&body[2..]))
}

/// A QoS 1 PUBLISH of message `seq`: topic `devices/d{seq % 100}/telemetry`, 100-byte payload
/// starting with the sequence number.
fn put_publish(buf: &mut BytesMut, seq: usize, pkid: u16) {
    let mut topic = String::with_capacity(24);
    let _ = write!(topic, "devices/d{}/telemetry", seq % TOPICS);
    buf.put_u8(0x32);
    put_len(buf, 2 + topic.len() + 2 + 1 + 100);
    buf.put_u16(topic.len() as u16);
    buf.put_slice(topic.as_bytes());
    buf.put_u16(pkid);
    buf.put_u8(0);
    let _ = write!(buf, "{seq:010}:");
    buf.put_bytes(b'x', 89);
}

// ---------------------------------------------------------------------------------------------
// Publishers.

/// A connected publisher and the messages it will send.
struct Publisher {
    stream: TcpStream,
    window: usize,
    seqs: Vec<usize>,
}

/// What a publisher saw.
struct Sent {
    /// Per message, microseconds from writing its PUBLISH to reading its PUBACK.
    latencies_us: Vec<u32>,
    last_ack: Instant,
}

/// Opens `load.publishers` connections, each CONNACKed, splitting `load.messages` between them.
async fn connect_publishers(port: u16, load: Load, name: &str) -> Vec<Publisher> {
    let mut out = Vec::new();
    for p in 0..load.publishers {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let receive_max = handshake(&mut stream, &format!("bench-{name}-{p}"), 60)
            .await
            .unwrap();
        out.push(Publisher {
            stream,
            window: load.window.min(usize::from(receive_max)).max(1),
            seqs: (p..load.messages).step_by(load.publishers).collect(),
        });
    }
    out
}

/// Sends every message of `publisher`, keeping up to its window unacked; with `rate`, message
/// `seq` is sent no sooner than `seq / rate` seconds after `start`. Returns once all are acked.
async fn run_publisher(publisher: Publisher, start: Instant, rate: Option<f64>) -> Sent {
    let Publisher {
        stream,
        window,
        seqs,
    } = publisher;
    let total = seqs.len();
    let pkid = |k: usize| (k % 65_535) as u16 + 1;
    let (mut rd, mut wr) = stream.into_split();
    let permits = Arc::new(Semaphore::new(window));
    // Nanoseconds after `start` each packet id was written.
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..=65_535).map(|_| AtomicU64::new(0)).collect());
    let writer = {
        let (permits, sent_at) = (permits.clone(), sent_at.clone());
        tokio::spawn(async move {
            let due = |k: usize| rate.map(|r| start + Duration::from_secs_f64(seqs[k] as f64 / r));
            let mut buf = BytesMut::with_capacity(BATCH * 160);
            let mut k = 0;
            while k < total {
                if let Some(due) = due(k) {
                    tokio::time::sleep_until(due.into()).await;
                }
                permits.acquire().await.unwrap().forget();
                let mut n = 1;
                while k + n < total && n < BATCH && due(k + n).is_none_or(|d| d <= Instant::now()) {
                    match permits.try_acquire() {
                        Ok(p) => p.forget(),
                        Err(_) => break,
                    }
                    n += 1;
                }
                for (j, seq) in seqs.iter().enumerate().skip(k).take(n) {
                    put_publish(&mut buf, *seq, pkid(j));
                }
                let now = start.elapsed().as_nanos() as u64;
                for j in k..k + n {
                    sent_at[usize::from(pkid(j))].store(now, Ordering::Relaxed);
                }
                wr.write_all(&buf).await.expect("publisher write");
                buf.clear();
                k += n;
            }
            wr
        })
    };
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut latencies_us = Vec::with_capacity(total);
    while latencies_us.len() < total {
        let n = tokio::time::timeout(Duration::from_secs(30), rd.read_buf(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "publisher stalled: no PUBACK for 30 s ({} of {total} acked)",
                    latencies_us.len()
                )
            })
            .expect("publisher read");
        assert!(
            n > 0,
            "the server closed the connection after {} of {total} PUBACKs",
            latencies_us.len()
        );
        let now = start.elapsed().as_nanos() as u64;
        let before = latencies_us.len();
        while let Some((h, len)) = frame(&buf) {
            if buf.len() < h + len {
                break;
            }
            match buf[0] >> 4 {
                4 => {
                    let id = u16::from_be_bytes([buf[h], buf[h + 1]]);
                    if len > 2 && buf[h + 2] >= 0x80 {
                        panic!("PUBACK with reason {:#04x}", buf[h + 2]);
                    }
                    let sent = sent_at[usize::from(id)].load(Ordering::Relaxed);
                    latencies_us.push((now.saturating_sub(sent) / 1000) as u32);
                }
                13 => {}
                14 => panic!(
                    "DISCONNECT from the server, reason {:#04x}",
                    buf.get(h).copied().unwrap_or(0)
                ),
                other => panic!("unexpected packet type {other} from the server"),
            }
            buf.advance(h + len);
        }
        permits.add_permits(latencies_us.len() - before);
    }
    let last_ack = Instant::now();
    let mut wr = writer.await.unwrap();
    let _ = wr.write_all(&[0xE0, 0x00]).await;
    let _ = wr.shutdown().await;
    Sent {
        latencies_us,
        last_ack,
    }
}

/// Runs every publisher from `start`; returns all latencies and the last ack.
async fn run_publishers(
    publishers: Vec<Publisher>,
    start: Instant,
    rate: Option<f64>,
) -> (Vec<u32>, Instant) {
    let tasks: Vec<_> = publishers
        .into_iter()
        .map(|p| tokio::spawn(run_publisher(p, start, rate)))
        .collect();
    let mut latencies = Vec::new();
    let mut last = start;
    for t in tasks {
        let sent = t.await.unwrap();
        latencies.extend(sent.latencies_us);
        last = last.max(sent.last_ack);
    }
    (latencies, last)
}

// ---------------------------------------------------------------------------------------------
// Measurements.

/// A `kB` line of /proc/<pid>/status (`VmRSS:`, `VmHWM:`), in KiB.
fn status_kib(pid: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
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

/// CPU seconds the calling thread has used.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct passed.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// The pid of this process's child running `name`.
fn child_pid(name: &str) -> Option<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            let comm = head.split_once('(')?.1;
            let ppid = rest.split_whitespace().nth(1)?;
            (comm == name && ppid == me).then_some(pid)
        })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// p50, p99, p99.9 and max of `latencies_us`, in ms.
fn percentiles(latencies_us: &mut [u32]) -> [f64; 4] {
    latencies_us.sort_unstable();
    let pct = |p: f64| {
        let i = ((latencies_us.len() as f64 * p) as usize).min(latencies_us.len() - 1);
        f64::from(latencies_us[i]) / 1000.0
    };
    [pct(0.50), pct(0.99), pct(0.999), pct(1.0)]
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Raises this process's RLIMIT_NOFILE to its hard limit (children inherit it); returns it.
fn raise_nofile() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the struct passed.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max.min(1 << 20);
        if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        }
    }
    limit.rlim_cur
}

// ---------------------------------------------------------------------------------------------
// The two paths.

/// `tributary run` with the listener on a free port and the embedded log (fsync interval 5 ms),
/// listening.
fn gateway(max_connections: usize) -> (Gateway, u16) {
    let port = support::free_port();
    let mut gw = Gateway::new(&format!(
        "listener: {{ listen: \"127.0.0.1:{port}\", max_connections: {max_connections}, max_inflight: {MAX_INFLIGHT} }}\n\
         log: {{ embedded: {{ dir: DATA_DIR, fsync: interval, fsync_interval: 5ms, kafka_listener: null }} }}\n\
         topics: {{ default: {{ partitions: 4 }}, telemetry: {{ partitions: 12 }} }}\n\
         http: {{ listen: null }}\n\
         routes:\n  - {{ name: telemetry, from: \"devices/{{device}}/telemetry\", to: telemetry, key: \"{{device}}\" }}\n"
    ));
    gw.spawn();
    let ok = support::wait_until(Duration::from_secs(15), || {
        gw.log().contains("MQTT listener accepting")
    });
    assert!(ok, "the gateway did not start listening:\n{}", gw.log());
    (gw, port)
}

/// Stops the gateway and checks the log holds messages 0..count + warm_up, each once.
fn stop_and_check(mut gw: Gateway, count: usize, warm_up: usize) {
    assert!(gw.terminate().success(), "gateway:\n{}", gw.log());
    let count = count + warm_up;
    let mut seen = vec![false; count];
    let (mut stored, mut duplicates, mut strangers) = (0, 0, 0);
    for records in gw.records("telemetry").values() {
        for r in records {
            stored += 1;
            // `{seq:010}:xxx...` here, `{time:020}:{seq:010}:xxx...` from common/load.rs.
            let fields: Vec<&[u8]> = r.value.split(|b| *b == b':').collect();
            match std::str::from_utf8(fields[fields.len().saturating_sub(2)])
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
            {
                Some(seq) if seq < count => {
                    duplicates += usize::from(seen[seq]);
                    seen[seq] = true;
                }
                _ => strangers += 1,
            }
        }
    }
    let missing = seen.iter().filter(|s| !**s).count();
    assert!(
        stored == count && missing == 0 && duplicates == 0 && strangers == 0,
        "the log holds {stored} records for {count} messages: {missing} missing, {duplicates} duplicated, {strangers} unknown"
    );
}

struct ListenerRun {
    rate: f64,
    /// The publishers' window (capped by the server's receive maximum).
    window: usize,
    latencies_us: Vec<u32>,
    peak_rss_kib: u64,
    /// Resident at the end, before stopping: anonymous and file-backed (mapped segments).
    rss_anon_kib: u64,
    rss_file_kib: u64,
    cpu_us: f64,
    /// The bench process's (the publishers') CPU per message.
    publishers_cpu_us: f64,
}

/// Publishers -> the listener -> the log; every message checked stored once.
async fn listener_run(load: Load, rate: Option<f64>) -> ListenerRun {
    let (gw, port) = gateway(10_000);
    let pid = gw.pid().unwrap();
    let mut warm = connect_publishers(
        port,
        Load {
            publishers: 1,
            ..load
        },
        "warm-up",
    )
    .await;
    warm[0].seqs = (load.messages..load.messages + WARM_UP).collect();
    run_publishers(warm, Instant::now(), None).await;
    let publishers = connect_publishers(port, load, "listener").await;
    let window = publishers.iter().map(|p| p.window).min().unwrap_or(0);
    let (cpu_before, own_before) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
    let start = Instant::now();
    let (latencies_us, last) = run_publishers(publishers, start, rate).await;
    let run = ListenerRun {
        rate: load.messages as f64 / (last - start).as_secs_f64(),
        window,
        latencies_us,
        peak_rss_kib: peak_rss_kib(pid),
        rss_anon_kib: status_kib(&pid.to_string(), "RssAnon:"),
        rss_file_kib: status_kib(&pid.to_string(), "RssFile:"),
        cpu_us: (cpu_seconds(pid) - cpu_before) * 1e6 / load.messages as f64,
        publishers_cpu_us: (cpu_seconds(std::process::id()) - own_before) * 1e6
            / load.messages as f64,
    };
    stop_and_check(gw, load.messages, WARM_UP);
    run
}

struct BareRun {
    /// To the last message the subscriber read.
    rate: f64,
    window: usize,
    /// To the last PUBACK from Mosquitto (sent on receipt, not durable).
    acked_rate: f64,
    latencies_us: Vec<u32>,
    /// CPU per message, in microseconds, of Mosquitto and of the subscriber's thread.
    mosquitto_cpu_us: f64,
    subscriber_cpu_us: f64,
}

/// Publishers -> Mosquitto -> the bare rumqttc subscriber (as common/load.rs's: QoS 1, receive
/// maximum 1024, acks and discards, on a thread and runtime of its own).
async fn bare_run(broker: &Mosquitto, load: Load, rate: Option<f64>) -> BareRun {
    let port = broker.port;
    let messages = load.messages;
    let (subscribed_tx, subscribed) = tokio::sync::oneshot::channel();
    let subscriber = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut options =
                MqttOptions::new(format!("bench-bare-{}", load::now_us()), "127.0.0.1", port);
            options.set_receive_maximum(Some(1024));
            let (client, mut eventloop) = AsyncClient::new(options, 1000);
            client
                .subscribe("devices/+/telemetry", QoS::AtLeastOnce)
                .await
                .unwrap();
            let mut poll = async || {
                tokio::time::timeout(Duration::from_secs(30), eventloop.poll())
                    .await
                    .expect("bare subscriber stalled for 30 s")
                    .unwrap()
            };
            while !matches!(poll().await, Event::Incoming(Packet::SubAck(_))) {}
            let cpu_before = thread_cpu_seconds();
            let _ = subscribed_tx.send(());
            let mut got = 0;
            while got < messages {
                if let Event::Incoming(Packet::Publish(_)) = poll().await {
                    got += 1;
                }
            }
            let (end, cpu) = (Instant::now(), thread_cpu_seconds() - cpu_before);
            let _ = client.disconnect().await;
            let _ = tokio::time::timeout(Duration::from_millis(100), eventloop.poll()).await;
            (end, cpu)
        })
    });
    subscribed.await.unwrap();
    let publishers = connect_publishers(port, load, "bare").await;
    let window = publishers.iter().map(|p| p.window).min().unwrap_or(0);
    let mosquitto = child_pid("mosquitto").expect("mosquitto is a child of the bench");
    let mosquitto_before = cpu_seconds(mosquitto);
    let start = Instant::now();
    let (latencies_us, last_ack) = run_publishers(publishers, start, rate).await;
    let (end, subscriber_cpu) = tokio::task::spawn_blocking(move || subscriber.join().unwrap())
        .await
        .unwrap();
    let mosquitto_cpu = cpu_seconds(mosquitto) - mosquitto_before;
    BareRun {
        rate: messages as f64 / (end - start).as_secs_f64(),
        window,
        acked_rate: messages as f64 / (last_ack - start).as_secs_f64(),
        latencies_us,
        mosquitto_cpu_us: mosquitto_cpu * 1e6 / messages as f64,
        subscriber_cpu_us: subscriber_cpu * 1e6 / messages as f64,
    }
}

/// The disk's own durable-write latency, the floor under the listener's ack latency: 4 KiB
/// appends each followed by fdatasync, for `time`, in a temp dir on the filesystem the
/// gateway's log uses. p50, p99, p99.9, max in ms.
fn fdatasync_latency(time: Duration) -> [f64; 4] {
    use std::io::Write;
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let mut file = std::fs::File::create(dir.path().join("probe")).unwrap();
    let block = [b'x'; 4096];
    let mut latencies_us = Vec::new();
    let start = Instant::now();
    while start.elapsed() < time {
        let t = Instant::now();
        file.write_all(&block).unwrap();
        // SAFETY: fdatasync on a descriptor this function owns.
        assert_eq!(unsafe { libc::fdatasync(file.as_raw_fd()) }, 0);
        latencies_us.push(t.elapsed().as_micros() as u32);
    }
    percentiles(&mut latencies_us)
}

// ---------------------------------------------------------------------------------------------
// Idle connections.

/// Opens `n` connections, `OPENING` at a time, each CONNECTed and CONNACKed: those open, the
/// failures (with the first error), the time taken.
async fn open_idle(
    port: u16,
    n: usize,
    pass: usize,
) -> (Vec<TcpStream>, usize, Option<String>, Duration) {
    let opening = Arc::new(Semaphore::new(OPENING));
    let mut set = JoinSet::new();
    let start = Instant::now();
    for i in 0..n {
        let permit = opening.clone().acquire_owned().await.unwrap();
        set.spawn(async move {
            let _permit = permit;
            let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
            handshake(&mut stream, &format!("idle-{pass}-{i:05}"), IDLE_KEEP_ALIVE).await?;
            Ok::<_, io::Error>(stream)
        });
    }
    let mut open = Vec::with_capacity(n);
    let (mut failed, mut first_error) = (0, None);
    while let Some(joined) = set.join_next().await {
        match joined.unwrap() {
            Ok(stream) => open.push(stream),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    (open, failed, first_error, start.elapsed())
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Idle connections against a fresh gateway: opened, held, closed, then opened and closed once
/// more (memory kept after the first close and reused by the second is the allocator's, not a
/// leak).
async fn connections(n: usize, passes_wanted: usize, nofile: u64) {
    println!(
        "connections: {n} idle MQTT 5 connections (raw sockets, CONNECT + CONNACK, keep-alive {IDLE_KEEP_ALIVE}s), {OPENING} opening at a time; RLIMIT_NOFILE {nofile} (the gateway inherits it)"
    );
    let (mut gw, port) = gateway(n.max(10_000));
    let pid = gw.pid().unwrap();
    let rss = || status_kib(&pid.to_string(), "VmRSS:");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (rss_0, fds_0) = (rss(), open_fds(pid));
    let bench_before = status_kib("self", "VmRSS:");
    let (open, failed, first_error, took) = open_idle(port, n, 1).await;
    let opened = open.len();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let cpu_before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_cpu = cpu_seconds(pid) - cpu_before;
    let (rss_n, fds_n) = (rss(), open_fds(pid));
    let bench_with = status_kib("self", "VmRSS:");
    drop(open);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_closed, fds_closed) = (rss(), open_fds(pid));
    // Opened and closed again: memory kept after a close and reused by the next pass is the
    // allocator's; memory that grows pass after pass is held by something.
    let mut passes = vec![(rss_n, rss_closed)];
    let mut failed_later = 0;
    for pass in 2..=passes_wanted {
        let (again, failed, _, _) = open_idle(port, n, pass).await;
        failed_later += failed;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let open_rss = rss();
        drop(again);
        tokio::time::sleep(Duration::from_secs(2)).await;
        passes.push((open_rss, rss()));
    }
    let peak = peak_rss_kib(pid);
    assert!(gw.terminate().success(), "gateway:\n{}", gw.log());
    println!(
        "  opened {opened} of {n} in {:.2} s ({:.0} connections/s){}",
        took.as_secs_f64(),
        opened as f64 / took.as_secs_f64(),
        match first_error {
            Some(e) => format!("; {failed} FAILED, first: {e}"),
            None => String::new(),
        }
    );
    println!(
        "  gateway RSS: {:.1} MiB with 0 connections, {:.1} MiB with {opened} ({:.1} KiB per connection; goal < 200 MiB), peak {:.1} MiB",
        mib(rss_0),
        mib(rss_n),
        rss_n.saturating_sub(rss_0) as f64 / opened.max(1) as f64,
        mib(peak),
    );
    println!(
        "  gateway RSS, {n} open / all closed, pass by pass: {}{}",
        passes
            .iter()
            .map(|(open, closed)| format!("{:.1} / {:.1} MiB", mib(*open), mib(*closed)))
            .collect::<Vec<_>>()
            .join(", "),
        if failed_later > 0 {
            format!(" ({failed_later} FAILED to open)")
        } else {
            String::new()
        },
    );
    println!(
        "  gateway open fds: {fds_0} -> {fds_n} -> {fds_closed}; gateway CPU while {opened} idle for 2 s: {:.0} ms; bench process RSS {:.1} -> {:.1} MiB with them open",
        idle_cpu * 1000.0,
        mib(bench_before),
        mib(bench_with),
    );
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let nofile = raise_nofile();
    let load = Load {
        messages: env_or("BENCH_MESSAGES", 100_000),
        publishers: env_or("BENCH_PUBLISHERS", 8),
        window: env_or("BENCH_WINDOW", MAX_INFLIGHT),
    };
    let rounds = env_or("BENCH_ROUNDS", 3).max(1);
    let steady = env_or("BENCH_RATE", 10_000);
    let n_connections = env_or("BENCH_CONNECTIONS", 10_000);
    let passes = env_or("BENCH_CONNECTION_PASSES", 3).max(1);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!(
            "listener: {} QoS 1 messages, 100 bytes, {TOPICS} topics, {} publishers (raw MQTT 5, up to {} in flight each); `tributary run` (release binary, own process), fsync interval 5ms, 12 partitions; {rounds} rounds alternated",
            load.messages, load.publishers, load.window
        );
        let broker = Mosquitto::start();
        let (mut bare, mut listener) = (Vec::new(), Vec::new());
        for round in 1..=rounds {
            let b = bare_run(&broker, load, None).await;
            let l = listener_run(load, None).await;
            println!(
                "  round {round}: bare subscriber {:>7.0} msgs/s (Mosquitto acked all at {:.0}/s), listener {:>7.0} msgs/s, ratio {:.2}; gateway peak RSS {:.1} MiB (at the end: anon {:.1} + file {:.1}), CPU per msg: gateway {:.2} µs vs Mosquitto {:.2} + subscriber {:.2} µs (publishers {:.2} µs)",
                b.rate, b.acked_rate, l.rate, l.rate / b.rate, mib(l.peak_rss_kib), mib(l.rss_anon_kib), mib(l.rss_file_kib), l.cpu_us, b.mosquitto_cpu_us, b.subscriber_cpu_us, l.publishers_cpu_us
            );
            bare.push(b);
            listener.push(l);
        }
        let bare_rate = median(&bare.iter().map(|b| b.rate).collect::<Vec<_>>());
        let listener_rate = median(&listener.iter().map(|l| l.rate).collect::<Vec<_>>());
        let [p50, p99, ..] = percentiles(&mut listener.iter().flat_map(|l| l.latencies_us.iter().copied()).collect::<Vec<_>>());
        let [m50, m99, ..] = percentiles(&mut bare.iter().flat_map(|b| b.latencies_us.iter().copied()).collect::<Vec<_>>());
        let peak = listener.iter().map(|l| l.peak_rss_kib).max().unwrap_or(0);
        let cpu = median(&listener.iter().map(|l| l.cpu_us).collect::<Vec<_>>());
        println!(
            "  publishers' window: {} to Mosquitto, {} to the listener (each capped by the server's receive maximum)",
            bare[0].window, listener[0].window
        );
        println!("  bare rumqttc subscriber via Mosquitto (acks, discards): {bare_rate:>7.0} msgs/s   (baseline, median)");
        println!(
            "  tributary listener -> embedded log, PUBACK when durable: {listener_rate:>7.0} msgs/s   (median) ratio {:.2} (goal >= 1.5)",
            listener_rate / bare_rate
        );
        println!("  listener ack latency at full load (PUBLISH written -> PUBACK read): p50 {p50:.2} ms, p99 {p99:.2} ms   [Mosquitto's PUBACK, on receipt: p50 {m50:.2} ms, p99 {m99:.2} ms]");
        let bare_cpu = median(&bare.iter().map(|b| b.mosquitto_cpu_us + b.subscriber_cpu_us).collect::<Vec<_>>());
        println!("  CPU per message (medians; steadier than rates on a shared machine): gateway {cpu:.2} µs vs Mosquitto + subscriber {bare_cpu:.2} µs, ratio {:.2}", bare_cpu / cpu);
        println!("  gateway peak RSS {:.1} MiB (max of rounds); every round's log read back: {} messages stored, each once", mib(peak), load.messages);

        // The same comparison with e2e's publishers (rumqttc), once.
        let bare_e2e = load::bare_subscriber(broker.port, load.messages).await;
        let (gw, port) = gateway(10_000);
        let start = Instant::now();
        load::publish(port, load.messages, None).await;
        let listener_e2e = load.messages as f64 / start.elapsed().as_secs_f64();
        stop_and_check(gw, load.messages, 0);
        println!(
            "  with e2e's publishers ({} rumqttc clients, 500 in flight): bare subscriber {bare_e2e:.0} msgs/s, listener {listener_e2e:.0} msgs/s, ratio {:.2}",
            load::PUBLISHERS,
            listener_e2e / bare_e2e
        );

        // Ack latency at a steady offered load, beside the disk's own fdatasync latency.
        let [d50, d99, d999, dmax] = tokio::task::spawn_blocking(|| fdatasync_latency(Duration::from_secs(2))).await.unwrap();
        println!("  disk: 4 KiB append + fdatasync, same filesystem, for 2 s: p50 {d50:.2} ms, p99 {d99:.2} ms (p99.9 {d999:.2}, max {dmax:.2})   (the floor under a durable ack)");
        let steady_load = Load { messages: steady * 3, ..load };
        let mut b = bare_run(&broker, steady_load, Some(steady as f64)).await;
        let mut l = listener_run(steady_load, Some(steady as f64)).await;
        let [p50, p99, p999, max] = percentiles(&mut l.latencies_us);
        let [m50, m99, m999, mmax] = percentiles(&mut b.latencies_us);
        println!("  listener ack latency at {steady} msgs/s for 3 s: p50 {p50:.2} ms, p99 {p99:.2} ms (p99.9 {p999:.2}, max {max:.2})   [Mosquitto's PUBACK: p50 {m50:.2} ms, p99 {m99:.2} ms (p99.9 {m999:.2}, max {mmax:.2})]");
        drop(broker);

        connections(n_connections, passes, nofile).await;
    });
}
