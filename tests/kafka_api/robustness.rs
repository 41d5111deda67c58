//! Robustness with raw frames over TCP: malformed, truncated and oversized frames close only
//! their own connection, a batch whose offsets and record count disagree is refused, idle
//! connections close, and connections past the limit are refused.

use crate::clients::{base_consumer, CALL};
use crate::frames::{
    api_versions_ok, expect_closed, prefixed, rdkafka_still_served, request, request_flexible,
    round_trip, Rng, API_VERSIONS, METADATA,
};
use crate::records::{append_dataset, test_record};
use crate::server::{assert_no_library_panics, blocking, Server};
use rdkafka::consumer::Consumer;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tributary::kafka_api::ServerOptions;
use tributary::log::{batch, Offset};

#[tokio::test(flavor = "multi_thread")]
async fn malformed_frames_close_only_their_connection() {
    let server = Server::start(ServerOptions {
        idle_timeout: Duration::from_secs(5),
        ..Default::default()
    })
    .await;
    append_dataset(&server.log, "events", 1, 5, true).await;
    let mut rng = Rng(0x7215_b0a7_5eed);
    let metadata_header = request(METADATA, 4, 9, &[]);
    let with_body = |mut f: Vec<u8>, body: &[u8]| {
        f.extend(body);
        let len = (f.len() - 4) as i32;
        f[..4].copy_from_slice(&len.to_be_bytes());
        f
    };
    let mut random = rng.bytes(4096);
    random[..4].copy_from_slice(&0x5a5a_5a5au32.to_be_bytes());
    let mut small_random = prefixed(rng.bytes(40));
    small_random[4..6].copy_from_slice(&0x7777u16.to_be_bytes()); // no such API
    let mut truncated = 100i32.to_be_bytes().to_vec();
    truncated.extend(&request(METADATA, 1, 1, &[0, 0, 0, 0])[4..]);
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("random bytes", random, false),
        ("a frame of random bytes", small_random, false),
        ("a truncated frame, then EOF", truncated, true),
        (
            "length 0x7fffffff",
            with_body(0x7fff_ffffi32.to_be_bytes().to_vec(), &rng.bytes(64)),
            false,
        ),
        (
            "negative length",
            [0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4].to_vec(),
            false,
        ),
        (
            "length shorter than any header",
            [0, 0, 0, 3, 0, 18, 0].to_vec(),
            false,
        ),
        (
            "Metadata v4 promising 5 topics and holding none",
            with_body(metadata_header.clone(), &[0, 0, 0, 5]),
            false,
        ),
        (
            "Metadata v4 with a garbage body",
            with_body(metadata_header.clone(), &[0, 0, 0, 1, 0x7f, 0xff, b'a']),
            false,
        ),
        (
            "Fetch v4 with a 3-byte body",
            request(1, 4, 1, &[1, 2, 3]),
            false,
        ),
        ("an unknown API key", request(0x7fff, 0, 1, &[]), false),
        (
            "an API not offered (DeleteTopics)",
            request(20, 1, 1, &[0, 0, 0, 0, 0, 0, 0, 0]),
            false,
        ),
        (
            "a version not offered (Metadata v99)",
            request_flexible(METADATA, 99, 1, &[0]),
            false,
        ),
        (
            "a header version that does not parse (client id length -5)",
            prefixed(vec![0, 3, 0, 1, 0, 0, 0, 1, 0xff, 0xfb]),
            false,
        ),
        (
            "Metadata v0 declaring 2^31-1 topics",
            request(METADATA, 0, 1, &[0x7f, 0xff, 0xff, 0xff, 0, 1, b'a']),
            false,
        ),
        (
            "Produce v3 declaring 2^31-1 topics",
            request(
                0,
                3,
                1,
                &[
                    0xff, 0xff, 0xff, 0xff, 0, 0, 0x3a, 0x98, 0x7f, 0xff, 0xff, 0xff, 0, 1,
                ],
            ),
            false,
        ),
        (
            "Metadata v9 declaring 2^32-2 topics (compact)",
            request_flexible(METADATA, 9, 1, &[0xff, 0xff, 0xff, 0xff, 0x0f, 0]),
            false,
        ),
        // replica -1, max wait 100, min bytes 1, max bytes 1, isolation 0, session 0, epoch -1.
        (
            "Fetch v12 declaring 2^32-2 topics (compact)",
            request_flexible(
                1,
                12,
                1,
                &[
                    0xff, 0xff, 0xff, 0xff, 0, 0, 0, 100, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0,
                    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x0f,
                ],
            ),
            false,
        ),
    ];
    for (what, bytes, eof) in cases {
        let mut conn = TcpStream::connect(server.addr).await.unwrap();
        // The server may close before it has read everything; a failed write is fine.
        let _ = conn.write_all(&bytes).await;
        if eof {
            let _ = conn.shutdown().await;
        }
        expect_closed(&mut conn, what, Duration::from_secs(3)).await;
        // Another connection is served meanwhile.
        let mut other = TcpStream::connect(server.addr).await.unwrap();
        assert!(api_versions_ok(&mut other, 42).await, "after {what}");
    }

    // A valid request is answered, and garbage after it on the same connection closes it.
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    assert!(api_versions_ok(&mut conn, 1).await);
    let _ = conn.write_all(&request(0x7fff, 0, 2, &[])).await;
    expect_closed(
        &mut conn,
        "garbage after a valid request",
        Duration::from_secs(3),
    )
    .await;

    // An ApiVersions version the server does not speak: a v0 answer, error 35 and the list.
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let r = round_trip(&mut conn, &request_flexible(API_VERSIONS, 99, 7, &[0]))
        .await
        .expect("an answer");
    assert_eq!(i32::from_be_bytes(r[..4].try_into().unwrap()), 7);
    assert_eq!(
        i16::from_be_bytes(r[4..6].try_into().unwrap()),
        35,
        "UNSUPPORTED_VERSION"
    );
    let n = i32::from_be_bytes(r[6..10].try_into().unwrap());
    assert!(n > 5, "{n} APIs listed");
    assert_eq!(r.len(), 10 + n as usize * 6, "a v0 body");
    assert!(
        api_versions_ok(&mut conn, 8).await,
        "and the connection goes on"
    );

    rdkafka_still_served(server.bootstrap(), "events").await;
    server.assert_alive();
    assert_no_library_panics();
}

/// A Produce v3 request for one partition holding `batches`, acks=all.
fn produce_request(correlation: i32, topic: &str, partition: i32, batches: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend((-1i16).to_be_bytes()); // no transactional id
    body.extend((-1i16).to_be_bytes()); // acks=all
    body.extend(10_000i32.to_be_bytes());
    body.extend(1i32.to_be_bytes());
    body.extend((topic.len() as i16).to_be_bytes());
    body.extend(topic.as_bytes());
    body.extend(1i32.to_be_bytes());
    body.extend(partition.to_be_bytes());
    body.extend((batches.len() as i32).to_be_bytes());
    body.extend(batches);
    request(0, 3, correlation, &body)
}

/// The error code of the one partition in a Produce v3 response, and its base offset.
fn produce_answer(r: &[u8], topic: &str) -> (i16, i64) {
    let at = 4 + 4 + 2 + topic.len() + 4 + 4;
    (
        i16::from_be_bytes(r[at..at + 2].try_into().unwrap()),
        i64::from_be_bytes(r[at + 2..at + 10].try_into().unwrap()),
    )
}

/// A producer's batch whose offset range disagrees with its record count (CRC-valid) is
/// refused, as Kafka refuses it: stored, it would move the partition's offsets on by up to 2^31
/// with a single record. The same request with the batch as encoded is stored.
#[tokio::test(flavor = "multi_thread")]
async fn produce_refuses_a_batch_whose_offsets_and_count_disagree() {
    let server = Server::start(ServerOptions::default()).await;
    append_dataset(&server.log, "events", 1, 3, true).await;
    let mut good = Vec::new();
    batch::encode(&mut good, 0, &[test_record("events", 0, 3, true)]).unwrap();
    // lastOffsetDelta (bytes 23..27) from 0 to 2^31 - 1, and the CRC-32C (17..21) made right.
    let mut bad = good.clone();
    bad[23..27].copy_from_slice(&i32::MAX.to_be_bytes());
    let crc = crc32c::crc32c(&bad[21..]);
    bad[17..21].copy_from_slice(&crc.to_be_bytes());
    batch::validate(&bad).expect("a CRC-valid batch");

    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let r = round_trip(&mut conn, &produce_request(1, "events", 0, &bad))
        .await
        .expect("an answer");
    let (error, _) = produce_answer(&r, "events");
    assert_eq!(error, 87, "INVALID_RECORD");
    assert_eq!(
        server.log.partition("events", 0).unwrap().end_offset(),
        Offset(3)
    );

    let r = round_trip(&mut conn, &produce_request(2, "events", 0, &good))
        .await
        .expect("an answer");
    assert_eq!(produce_answer(&r, "events"), (0, 3));
    let b = server.bootstrap();
    let watermarks = blocking(move || {
        base_consumer(&b, &[])
            .fetch_watermarks("events", 0, CALL)
            .unwrap()
    })
    .await;
    assert_eq!(watermarks, (0, 4));
    assert_no_library_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_closed() {
    let idle = Duration::from_millis(400);
    let server = Server::start(ServerOptions {
        idle_timeout: idle,
        ..Default::default()
    })
    .await;
    let limit = Duration::from_secs(3);

    // Silent from the start.
    let started = Instant::now();
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    expect_closed(&mut conn, "a silent connection", limit).await;
    assert!(
        started.elapsed() >= idle - Duration::from_millis(50),
        "closed after {:?}, before the idle timeout",
        started.elapsed()
    );

    // Silent after a request.
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    assert!(api_versions_ok(&mut conn, 1).await);
    expect_closed(&mut conn, "silent after a request", limit).await;

    // Silent in the middle of a frame: the length came, the body never does.
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let frame = request(API_VERSIONS, 0, 1, &[]);
    conn.write_all(&frame[..frame.len() - 3]).await.unwrap();
    expect_closed(&mut conn, "stalled in the middle of a frame", limit).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(&100i32.to_be_bytes()).await.unwrap();
    expect_closed(&mut conn, "stalled after a length prefix", limit).await;

    // A busy connection stays open past the idle timeout.
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let mut correlation = 0;
    while started.elapsed() < idle * 3 {
        correlation += 1;
        assert!(
            api_versions_ok(&mut conn, correlation).await,
            "request {correlation} of a busy connection"
        );
        tokio::time::sleep(idle / 4).await;
    }
    server.assert_alive();
    assert_no_library_panics();
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_past_the_limit_are_refused() {
    let server = Server::start(ServerOptions {
        max_connections: 2,
        ..Default::default()
    })
    .await;
    let mut a = TcpStream::connect(server.addr).await.unwrap();
    let mut b = TcpStream::connect(server.addr).await.unwrap();
    assert!(api_versions_ok(&mut a, 1).await);
    assert!(api_versions_ok(&mut b, 1).await);
    // The third is accepted by the kernel, then closed by the server without an answer.
    let mut c = TcpStream::connect(server.addr).await.unwrap();
    let _ = c.write_all(&request(API_VERSIONS, 0, 3, &[])).await;
    expect_closed(&mut c, "a third connection", Duration::from_secs(3)).await;
    // The two still work; once one closes, a new connection is served.
    assert!(api_versions_ok(&mut a, 2).await);
    drop(b);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let mut d = TcpStream::connect(server.addr).await.unwrap();
        if api_versions_ok(&mut d, 4).await {
            break;
        }
        assert!(Instant::now() < deadline, "the freed slot was never reused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(api_versions_ok(&mut a, 3).await);
    server.assert_alive();
    assert_no_library_panics();
}
