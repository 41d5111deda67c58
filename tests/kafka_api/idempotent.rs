//! Idempotent producers: an rdkafka producer with `enable.idempotence=true` whose connections
//! are cut mid-stream (so it retries batches the log already stored) leaves every record
//! exactly once, in order per key; and the producer state rebuilt after a restart still
//! recognises a retried batch.

use crate::clients::run;
use crate::frames::{request, round_trip};
use crate::records::test_record;
use crate::server::{assert_no_library_panics, blocking, Server};
use crate::support;
use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tributary::config::{FsyncPolicy, TopicsConfig};
use tributary::kafka_api::idempotence::Producers;
use tributary::kafka_api::ServerOptions;
use tributary::log::{batch, Log, LogOptions, Offset};

/// A proxy that cuts each of its first `cuts` connections once `after` bytes went up it: the
/// server still gets (and stores) the requests sent so far, the client never sees their
/// answers, and retries them on a new connection.
struct CuttingProxy {
    addr: SocketAddr,
    cut: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttingProxy {
    fn start(listener: TcpListener, upstream: SocketAddr, cuts: usize, after: usize) -> Self {
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicUsize::new(0));
        let counter = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let stop = CancellationToken::new();
                let counter = counter.clone();
                let up_stop = stop.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 << 10];
                    let mut sent = 0;
                    loop {
                        let n = tokio::select! {
                            _ = up_stop.cancelled() => break,
                            n = cr.read(&mut buf) => match n { Ok(0) | Err(_) => break, Ok(n) => n },
                        };
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        sent += n;
                        if sent >= after && counter.fetch_add(1, Ordering::SeqCst) < cuts {
                            // Both ways, now: the answers to what just went up are lost.
                            up_stop.cancel();
                            break;
                        }
                    }
                    up_stop.cancel();
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16 << 10];
                    loop {
                        let n = tokio::select! {
                            _ = stop.cancelled() => break,
                            n = sr.read(&mut buf) => match n { Ok(0) | Err(_) => break, Ok(n) => n },
                        };
                        if cw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    stop.cancel();
                });
            }
        });
        CuttingProxy { addr, cut, task }
    }

    /// Connections cut so far.
    fn cuts(&self, limit: usize) -> usize {
        self.cut.load(Ordering::SeqCst).min(limit)
    }
}

impl Drop for CuttingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// 10,000 keyed records from an idempotent rdkafka producer (acks=all, up to 5 requests in
/// flight) over connections cut every 60 KiB (8 times): the log holds each exactly once, and
/// per key in the order sent.
/// A server with `topic` (3 partitions), reached through a proxy that cuts each connection
/// after 60 KiB, `cuts` times in all; the server advertises the proxy.
async fn behind_cutting_proxy(topic: &str, cuts: usize) -> (Server, CuttingProxy) {
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = proxy_listener.local_addr().unwrap().port();
    let server = Server::start(ServerOptions {
        advertised: Some(("127.0.0.1".into(), proxy_port)),
        ..Default::default()
    })
    .await;
    server.log.create_topic(topic, 3).unwrap();
    let proxy = CuttingProxy::start(proxy_listener, server.addr, cuts, 60 << 10);
    (server, proxy)
}

#[tokio::test(flavor = "multi_thread")]
async fn rdkafka_idempotent_producer_with_cut_connections_stores_each_record_once() {
    const RECORDS: usize = 10_000;
    const KEYS: usize = 50;
    const CUTS: usize = 8;
    let (server, proxy) = behind_cutting_proxy("idem", CUTS).await;
    let bootstrap = proxy.addr.to_string();

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "2")
        .set("batch.num.messages", "50")
        .set("retry.backoff.ms", "20")
        .set("reconnect.backoff.ms", "20")
        .set("message.timeout.ms", "60000")
        .create()
        .unwrap();
    let mut deliveries = Vec::new();
    for i in 0..RECORDS {
        let key = format!("key-{}", i % KEYS);
        let value = format!("{key}:{:06}:{}", i / KEYS, "v".repeat(60));
        let mut record = FutureRecord::to("idem").key(&key).payload(&value);
        let delivery = loop {
            match producer.send_result(record) {
                Ok(d) => break d,
                Err((e, r)) => {
                    record = r;
                    // Queue full: let it drain.
                    assert!(format!("{e}").contains("Queue full"), "{e}");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        deliveries.push(delivery);
    }
    let mut told = HashSet::new();
    for d in deliveries {
        let d = d.await.unwrap().expect("delivered");
        assert!(told.insert((d.partition, d.offset)), "offset told twice");
    }
    blocking(move || producer.flush(Duration::from_secs(30)).unwrap()).await;
    assert!(proxy.cuts(CUTS) >= 2, "connections were cut mid-stream");

    assert_once_in_order(&server.log, "idem", &told, RECORDS, KEYS);
    server.assert_alive();
    assert_no_library_panics();
}

/// The log's records of `topic` (3 partitions): exactly the `records` sent (as the producers
/// here make them: `{key}:{n per key}:...`), once each, where the producer was told, per key in
/// the order sent.
fn assert_once_in_order(
    log: &Log,
    topic: &str,
    told: &HashSet<(i32, i64)>,
    records: usize,
    keys: usize,
) {
    let mut seen = HashSet::new();
    let mut next_per_key: HashMap<String, usize> = HashMap::new();
    let mut stored = 0;
    for p in 0..3 {
        let shared = log.partition(topic, p).unwrap();
        for r in shared.records(Offset(0)) {
            let r = r.unwrap();
            stored += 1;
            assert!(told.contains(&(p as i32, r.offset)), "stored where told");
            let value = String::from_utf8(r.value.unwrap().to_vec()).unwrap();
            let (key, rest) = value.split_once(':').unwrap();
            assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
            let n: usize = rest.split_once(':').unwrap().0.parse().unwrap();
            assert!(seen.insert(value.clone()), "stored twice: {value}");
            let next = next_per_key.entry(key.to_string()).or_default();
            assert_eq!(n, *next, "{key}: out of order");
            *next += 1;
        }
    }
    assert_eq!(stored, records);
    assert_eq!(seen.len(), records);
    assert_eq!(told.len(), records);
    assert_eq!(next_per_key.len(), keys);
    assert!(next_per_key.values().all(|&n| n == records / keys));
}

/// The same with confluent-kafka (Python): 10,000 keyed records from an idempotent producer
/// over connections cut 8 times, each stored once, in order per key.
#[tokio::test(flavor = "multi_thread")]
async fn confluent_kafka_idempotent_producer_with_cut_connections_stores_each_record_once() {
    const RECORDS: usize = 10_000;
    const KEYS: usize = 50;
    const CUTS: usize = 8;
    let python = support::require_python(&[("confluent_kafka", "confluent-kafka")]);
    let (server, proxy) = behind_cutting_proxy("idem-py", CUTS).await;
    let bootstrap = proxy.addr.to_string();
    let out = blocking(move || {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/produce_idempotent.py"
        );
        let mut command = Command::new(python);
        command.args([
            script,
            &bootstrap,
            "idem-py",
            &RECORDS.to_string(),
            &KEYS.to_string(),
        ]);
        run(command, Duration::from_secs(120))
    })
    .await;
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "produce_idempotent.py: {}\n{}\n{}",
        out.status,
        stdout.lines().last().unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut told = HashSet::new();
    for line in stdout.lines().filter(|l| l.starts_with("{\"p\"")) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let at = (v["p"].as_i64().unwrap() as i32, v["o"].as_i64().unwrap());
        assert!(told.insert(at), "offset told twice");
    }
    assert!(proxy.cuts(CUTS) >= 2, "connections were cut mid-stream");
    assert_once_in_order(&server.log, "idem-py", &told, RECORDS, KEYS);
    server.assert_alive();
    assert_no_library_panics();
}

/// One uncompressed batch of `count` records of producer `pid`, epoch 0, from sequence `seq`.
fn idempotent_batch(pid: i64, seq: i32, count: usize) -> (batch::BatchHeader, Bytes) {
    batch_of_epoch(pid, 0, seq, count)
}

fn batch_of_epoch(pid: i64, epoch: i16, seq: i32, count: usize) -> (batch::BatchHeader, Bytes) {
    let records: Vec<_> = (0..count).map(|i| test_record("t", 0, i, true)).collect();
    let mut buf = BytesMut::new();
    batch::encode(&mut buf, 0, &records).unwrap();
    buf[43..51].copy_from_slice(&pid.to_be_bytes());
    buf[51..53].copy_from_slice(&epoch.to_be_bytes());
    buf[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&buf[21..]);
    buf[17..21].copy_from_slice(&crc.to_be_bytes());
    let header = batch::validate(&buf).unwrap();
    (header, buf.freeze())
}

fn log_options(dir: &std::path::Path) -> LogOptions {
    LogOptions {
        dir: dir.to_path_buf(),
        segment_bytes: 4 << 10,
        fsync: FsyncPolicy::Interval,
        fsync_interval: Duration::from_millis(1),
        retention_time: None,
        retention_bytes: None,
        retention_check: Duration::from_secs(3600),
        topics: TopicsConfig::default(),
    }
}

/// A producer's batches stored, the log closed and opened again: the state rebuilt from the
/// stored batch headers answers a retry of the last batch with its offset and stores nothing,
/// takes the next sequence, and refuses a gap.
#[tokio::test(flavor = "multi_thread")]
async fn producer_state_is_rebuilt_from_the_log_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let pid = 4242;
    let log = Log::open(log_options(dir.path())).await.unwrap();
    let producers = Producers::default();
    let mut offsets = Vec::new();
    for (seq, count) in [(0, 3), (3, 40), (43, 2)] {
        let (h, b) = idempotent_batch(pid, seq, count);
        offsets.push(producers.append(&log, ("t", 0), h, b).await.unwrap());
    }
    assert_eq!(offsets, [0, 3, 43]);
    // A retry before the restart: deduplicated too.
    let (h, b) = idempotent_batch(pid, 3, 40);
    assert_eq!(producers.append(&log, ("t", 0), h, b).await, Ok(3));
    log.close().await.unwrap();

    let log = Log::open(log_options(dir.path())).await.unwrap();
    let producers = Producers::default();
    let (h, b) = idempotent_batch(pid, 43, 2);
    assert_eq!(producers.append(&log, ("t", 0), h, b).await, Ok(43));
    let (h, b) = idempotent_batch(pid, 3, 40);
    assert_eq!(producers.append(&log, ("t", 0), h, b).await, Ok(3));
    assert_eq!(log.partition("t", 0).unwrap().end_offset(), Offset(45));
    let (h, b) = idempotent_batch(pid, 46, 1);
    assert_eq!(
        producers
            .append(&log, ("t", 0), h, b)
            .await
            .map_err(|e| e.0),
        Err(ResponseError::OutOfOrderSequenceNumber)
    );
    let (h, b) = idempotent_batch(pid, 45, 1);
    assert_eq!(producers.append(&log, ("t", 0), h, b).await, Ok(45));
    assert!(
        producers.next_producer_id() > pid,
        "new ids above those in the log"
    );
    assert_eq!(log.partition("t", 0).unwrap().end_offset(), Offset(46));
    log.close().await.unwrap();
}

const PRODUCE: i16 = 0;
const INIT_PRODUCER_ID: i16 = 22;

/// InitProducerId v0 with `transactional_id`: (error code, producer id, epoch).
async fn init_producer_id(conn: &mut TcpStream, transactional_id: Option<&str>) -> (i16, i64, i16) {
    let mut body = Vec::new();
    match transactional_id {
        None => body.extend((-1i16).to_be_bytes()),
        Some(id) => {
            body.extend((id.len() as i16).to_be_bytes());
            body.extend(id.as_bytes());
        }
    }
    body.extend(60_000i32.to_be_bytes());
    let r = round_trip(conn, &request(INIT_PRODUCER_ID, 0, 7, &body))
        .await
        .unwrap();
    // correlation id, throttle time, error, producer id, epoch
    assert_eq!(r.len(), 4 + 4 + 2 + 8 + 2);
    let error = i16::from_be_bytes(r[8..10].try_into().unwrap());
    let pid = i64::from_be_bytes(r[10..18].try_into().unwrap());
    (
        error,
        pid,
        i16::from_be_bytes(r[18..20].try_into().unwrap()),
    )
}

/// Produce v3 (acks=all) of `batch` to partition 0 of `topic`: (error code, base offset).
async fn produce(conn: &mut TcpStream, topic: &str, batch: &[u8]) -> (i16, i64) {
    let mut body = Vec::new();
    body.extend((-1i16).to_be_bytes()); // no transactional id
    body.extend((-1i16).to_be_bytes()); // acks=all
    body.extend(10_000i32.to_be_bytes());
    body.extend(1i32.to_be_bytes());
    body.extend((topic.len() as i16).to_be_bytes());
    body.extend(topic.as_bytes());
    body.extend(1i32.to_be_bytes());
    body.extend(0i32.to_be_bytes());
    body.extend((batch.len() as i32).to_be_bytes());
    body.extend(batch);
    let r = round_trip(conn, &request(PRODUCE, 3, 9, &body))
        .await
        .unwrap();
    // correlation id, [topic [partition, error, base offset, append time]], throttle time
    let at = 4 + 4 + 2 + topic.len() + 4 + 4;
    let error = i16::from_be_bytes(r[at..at + 2].try_into().unwrap());
    (
        error,
        i64::from_be_bytes(r[at + 2..at + 10].try_into().unwrap()),
    )
}

/// Over the wire: InitProducerId hands out distinct ids with epoch 0 and refuses a
/// transactional id; Produce stores a batch once however often it is sent, refuses a gap
/// (OUT_OF_ORDER_SEQUENCE_NUMBER) and a stale epoch (INVALID_PRODUCER_EPOCH), and takes a new
/// epoch from sequence 0.
#[tokio::test(flavor = "multi_thread")]
async fn init_producer_id_and_sequences_over_the_wire() {
    let server = Server::start(ServerOptions::default()).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let (error, pid, epoch) = init_producer_id(&mut conn, None).await;
    assert_eq!((error, epoch), (0, 0));
    let (error, other, _) = init_producer_id(&mut conn, None).await;
    assert_eq!(error, 0);
    assert!(pid > 0 && other > pid, "{pid} then {other}");
    assert_eq!(
        init_producer_id(&mut conn, Some("tx-1")).await,
        (
            ResponseError::TransactionalIdAuthorizationFailed.code(),
            -1,
            -1
        )
    );

    let (_, first) = batch_of_epoch(pid, 0, 0, 3);
    assert_eq!(produce(&mut conn, "wire", &first).await, (0, 0));
    assert_eq!(produce(&mut conn, "wire", &first).await, (0, 0), "a retry");
    let (_, gap) = batch_of_epoch(pid, 0, 4, 1);
    let out_of_order = ResponseError::OutOfOrderSequenceNumber.code();
    assert_eq!(produce(&mut conn, "wire", &gap).await, (out_of_order, -1));
    let (_, next) = batch_of_epoch(pid, 0, 3, 2);
    assert_eq!(produce(&mut conn, "wire", &next).await, (0, 3));
    let (_, other_producer) = batch_of_epoch(other, 0, 0, 1);
    assert_eq!(produce(&mut conn, "wire", &other_producer).await, (0, 5));
    let (_, new_epoch) = batch_of_epoch(pid, 1, 0, 1);
    assert_eq!(produce(&mut conn, "wire", &new_epoch).await, (0, 6));
    let (_, stale) = batch_of_epoch(pid, 0, 5, 1);
    let fenced = ResponseError::InvalidProducerEpoch.code();
    assert_eq!(produce(&mut conn, "wire", &stale).await, (fenced, -1));
    assert_eq!(
        server.log.partition("wire", 0).unwrap().end_offset(),
        Offset(7)
    );
    server.assert_alive();
    assert_no_library_panics();
}
