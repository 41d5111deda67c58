//! Idempotent producers: an rdkafka producer with `enable.idempotence=true` whose connections
//! are cut mid-stream (so it retries batches the log already stored) leaves every record
//! exactly once, in order per key; and the producer state rebuilt after a restart still
//! recognises a retried batch.

use crate::records::test_record;
use crate::server::{assert_no_library_panics, blocking, Server};
use bytes::{Bytes, BytesMut};
use kafka_protocol::ResponseError;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
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
#[tokio::test(flavor = "multi_thread")]
async fn rdkafka_idempotent_producer_with_cut_connections_stores_each_record_once() {
    const RECORDS: usize = 10_000;
    const KEYS: usize = 50;
    const CUTS: usize = 8;
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = proxy_listener.local_addr().unwrap().port();
    let server = Server::start(ServerOptions {
        advertised: Some(("127.0.0.1".into(), proxy_port)),
        ..Default::default()
    })
    .await;
    server.log.create_topic("idem", 3).unwrap();
    let proxy = CuttingProxy::start(proxy_listener, server.addr, CUTS, 60 << 10);
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

    // The log: exactly the records sent, once each, per key in order.
    let mut seen = HashSet::new();
    let mut next_per_key: HashMap<String, usize> = HashMap::new();
    let mut stored = 0;
    for p in 0..3 {
        let shared = server.log.partition("idem", p).unwrap();
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
    assert_eq!(stored, RECORDS);
    assert_eq!(seen.len(), RECORDS);
    assert_eq!(told.len(), RECORDS);
    assert_eq!(next_per_key.len(), KEYS);
    assert!(next_per_key.values().all(|&n| n == RECORDS / KEYS));
    server.assert_alive();
    assert_no_library_panics();
}

/// One uncompressed batch of `count` records of producer `pid`, epoch 0, from sequence `seq`.
fn idempotent_batch(pid: i64, seq: i32, count: usize) -> (batch::BatchHeader, Bytes) {
    let records: Vec<_> = (0..count).map(|i| test_record("t", 0, i, true)).collect();
    let mut buf = BytesMut::new();
    batch::encode(&mut buf, 0, &records).unwrap();
    buf[43..51].copy_from_slice(&pid.to_be_bytes());
    buf[51..53].copy_from_slice(&0i16.to_be_bytes());
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
        producers.append(&log, ("t", 0), h, b).await.map_err(|e| e.0),
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
