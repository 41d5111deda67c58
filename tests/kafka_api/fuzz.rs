//! Fuzzing with mutated real requests captured from rdkafka: the server neither panics nor
//! stops, and real clients are served afterwards.

use crate::clients::{assign, base_consumer, from, read_to_end, CALL};
use crate::frames::{request, Rng, API_VERSIONS, METADATA};
use crate::proxy::Proxy;
use crate::records::{append_dataset, timestamp, Rec, T0};
use crate::server::{assert_no_library_panics, blocking, Server};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::Consumer;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset as KOffset, TopicPartitionList};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tributary::kafka_api::ServerOptions;

/// A mutated copy of `frame` (length prefix included).
fn mutate(frame: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut f = frame.to_vec();
    let body = f.len() - 4;
    let fix = |f: &mut Vec<u8>| {
        let len = (f.len() - 4) as i32;
        f[..4].copy_from_slice(&len.to_be_bytes());
    };
    match rng.below(11) {
        // Flip a few bytes.
        0 | 1 => {
            for _ in 0..1 + rng.below(8) {
                let i = 4 + rng.below(body);
                f[i] ^= 1 << rng.below(8);
            }
        }
        // Cut short, length fixed.
        2 => {
            f.truncate(4 + rng.below(body));
            fix(&mut f);
        }
        // Cut short, length as it was: the connection then ends mid-frame.
        3 => f.truncate(4 + rng.below(body)),
        // Extra bytes at the end.
        4 => {
            let n = 1 + rng.below(64);
            f.extend(rng.bytes(n));
            fix(&mut f);
        }
        // A 32-bit field somewhere set to an extreme: array counts, lengths, offsets.
        5 => {
            if body >= 4 {
                let v: u32 = [0x7fff_ffff, 0xffff_ffff, 0x8000_0000, 0x0001_0000, 0][rng.below(5)];
                let i = 4 + rng.below(body - 3);
                f[i..i + 4].copy_from_slice(&v.to_be_bytes());
            }
        }
        // A 16-bit field set to an extreme: string lengths, versions, error codes.
        6 => {
            if body >= 2 {
                let v: u16 = [0x7fff, 0xffff, 0x8000, 0xfffe][rng.below(4)];
                let i = 4 + rng.below(body - 1);
                f[i..i + 2].copy_from_slice(&v.to_be_bytes());
            }
        }
        // A huge unsigned varint (compact arrays and strings in flexible versions).
        7 => {
            let i = 4 + rng.below(body);
            let huge = [0xff, 0xff, 0xff, 0xff, 0x0f];
            let end = (i + huge.len()).min(f.len());
            f[i..end].copy_from_slice(&huge[..end - i]);
        }
        // Another version of the same API.
        8 => {
            let v = rng.below(20) as i16 - 2;
            f[6..8].copy_from_slice(&v.to_be_bytes());
        }
        // Random bytes behind a real API key and version.
        9 => {
            let n = rng.below(200);
            f.truncate(8);
            f.extend(rng.bytes(n));
            fix(&mut f);
        }
        // Another API key (not CreateTopics: a decodable one could create a topic of up to
        // 10,000 partitions, each with open files, and run the process out of descriptors).
        _ => {
            let mut key = rng.below(80) as i16;
            if key == 19 {
                key = 0x7fff;
            }
            f[4..6].copy_from_slice(&key.to_be_bytes());
        }
    }
    f
}

#[derive(Debug, Default)]
struct FuzzStats {
    connections: usize,
    frames: usize,
    answered: usize,
    closed: usize,
    still_open: usize,
}

async fn fuzz_worker(
    addr: SocketAddr,
    corpus: Arc<Vec<Vec<u8>>>,
    seed: u64,
    until: Instant,
) -> FuzzStats {
    let mut rng = Rng(seed | 1);
    let mut stats = FuzzStats::default();
    let mut buf = vec![0u8; 64 << 10];
    while Instant::now() < until {
        let mut conn = TcpStream::connect(addr)
            .await
            .expect("the server refused a connection while being fuzzed");
        stats.connections += 1;
        let mut bytes = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let base = &corpus[rng.below(corpus.len())];
            if rng.below(4) == 0 {
                bytes.extend_from_slice(base);
            } else {
                bytes.extend(mutate(base, &mut rng));
            }
            stats.frames += 1;
        }
        let _ = conn.write_all(&bytes).await;
        if rng.below(3) == 0 {
            let _ = conn.shutdown().await;
        }
        loop {
            match tokio::time::timeout(Duration::from_millis(120), conn.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    stats.closed += 1;
                    break;
                }
                Ok(Ok(_)) => stats.answered += 1,
                Err(_) => {
                    stats.still_open += 1;
                    break;
                }
            }
        }
    }
    stats
}

/// Real requests captured from rdkafka (through a recording proxy), mutated and replayed for a
/// few seconds (TRIBUTARY_FUZZ_SECS, default 3; TRIBUTARY_FUZZ_SEED repeats a run): the server
/// neither panics nor stops, the log stays readable, and a real client is served afterwards.
#[tokio::test(flavor = "multi_thread")]
async fn fuzzed_requests_do_not_take_the_server_down() {
    let proxy_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_port = proxy_listener.local_addr().unwrap().port();
    let server = Server::start(ServerOptions {
        advertised: Some(("127.0.0.1".into(), proxy_port)),
        ..Default::default()
    })
    .await;
    let proxy = Proxy::start(proxy_listener, server.addr);
    let original = append_dataset(&server.log, "fuzz", 2, 12, false).await;

    // Capture: what librdkafka sends to look up metadata, list offsets, fetch and produce.
    let bootstrap = proxy.addr.to_string();
    let b = bootstrap.clone();
    let want = original.clone();
    blocking(move || {
        let c = base_consumer(&b, &[]);
        c.fetch_metadata(None, CALL).unwrap();
        c.fetch_watermarks("fuzz", 1, CALL).unwrap();
        let mut times = TopicPartitionList::new();
        times
            .add_partition_offset("fuzz", 0, KOffset::Offset(timestamp(0, 3)))
            .unwrap();
        c.offsets_for_times(times, CALL).unwrap();
        assign(
            &c,
            "fuzz",
            &[(0, KOffset::Beginning), (1, KOffset::Offset(4))],
        );
        assert_eq!(read_to_end(&c, 2), from(&want, &[(0, 0), (1, 4)]));
    })
    .await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .create()
        .unwrap();
    let delivered = producer
        .send(
            FutureRecord::to("fuzz")
                .partition(0)
                .key("k")
                .payload("produced")
                .timestamp(T0),
            CALL,
        )
        .await
        .map_err(|(e, _)| e)
        .unwrap();
    assert_eq!((delivered.partition, delivered.offset), (0, 12));
    drop(producer);
    let mut corpus = proxy.requests();
    // Seeds for the cargo-fuzz target (fuzz/): frames without their length prefix.
    if let Ok(dir) = std::env::var("TRIBUTARY_WRITE_FUZZ_CORPUS") {
        std::fs::create_dir_all(&dir).unwrap();
        for (i, frame) in corpus.iter().enumerate() {
            std::fs::write(format!("{dir}/rdkafka-{i}"), &frame[4..]).unwrap();
        }
    }
    corpus.push(request(API_VERSIONS, 0, 1, &[]));
    corpus.push(request(
        METADATA,
        0,
        1,
        &[0, 0, 0, 1, 0, 4, b'f', b'u', b'z', b'z'],
    ));
    let mut apis: Vec<(i16, i16)> = corpus
        .iter()
        .map(|f| {
            (
                i16::from_be_bytes([f[4], f[5]]),
                i16::from_be_bytes([f[6], f[7]]),
            )
        })
        .collect();
    apis.sort_unstable();
    apis.dedup();
    for api in [0, 1, 2, 3, 18] {
        assert!(
            apis.iter().any(|(a, _)| *a == api),
            "API {api} captured: {apis:?}"
        );
    }
    assert!(
        !apis.iter().any(|(a, _)| *a == 19),
        "no CreateTopics in the corpus"
    );

    let secs: u64 = std::env::var("TRIBUTARY_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed: u64 = std::env::var("TRIBUTARY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("fuzzing for {secs} s with TRIBUTARY_FUZZ_SEED={seed}; corpus: {} requests, (api, version) {apis:?}", corpus.len());
    let corpus = Arc::new(corpus);
    let until = Instant::now() + Duration::from_secs(secs);
    let workers: Vec<_> = (0..8u64)
        .map(|w| {
            tokio::spawn(fuzz_worker(
                server.addr,
                corpus.clone(),
                seed.wrapping_add(w.wrapping_mul(0x9e37_79b9_7f4a_7c15)),
                until,
            ))
        })
        .collect();
    let mut total = FuzzStats::default();
    for w in workers {
        let s = w.await.unwrap();
        total.connections += s.connections;
        total.frames += s.frames;
        total.answered += s.answered;
        total.closed += s.closed;
        total.still_open += s.still_open;
    }
    eprintln!("fuzz (seed {seed}): {total:?}");
    assert!(
        total.connections > 50,
        "too few runs to mean anything: {total:?}"
    );
    assert!(total.answered > 0 && total.closed > 0, "{total:?}");

    server.assert_alive();
    assert_no_library_panics();
    // Still serving, and the log still reads back: the records from before, then whatever
    // well-formed Produce requests appended (each batch checked by the client's CRC check).
    let want = original.clone();
    let b = server.bootstrap();
    blocking(move || {
        let c = base_consumer(&b, &[("check.crcs", "true")]);
        c.fetch_metadata(None, CALL).unwrap();
        assign(
            &c,
            "fuzz",
            &[(0, KOffset::Beginning), (1, KOffset::Beginning)],
        );
        let got = read_to_end(&c, 2);
        for p in 0..2 {
            let got: Vec<&Rec> = got.iter().filter(|r| r.partition == p).collect();
            let want: Vec<&Rec> = want.iter().filter(|r| r.partition == p).collect();
            assert_eq!(
                &got[..want.len()],
                &want[..],
                "partition {p} starts with the records from before"
            );
        }
    })
    .await;
    server.assert_alive();
    drop(proxy);
    assert_no_library_panics();
}
