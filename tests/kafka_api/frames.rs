//! Raw frames over TCP: requests built by hand, responses read back, closed connections
//! detected, and a small PRNG; for the robustness and fuzz tests.

use crate::clients::{base_consumer, CALL};
use crate::server::blocking;
use rdkafka::consumer::Consumer;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request with header v1 (api key, version, correlation id, client id), which every
/// non-flexible version uses; length prefix included.
pub(crate) fn request(api_key: i16, version: i16, correlation: i32, body: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend(api_key.to_be_bytes());
    f.extend(version.to_be_bytes());
    f.extend(correlation.to_be_bytes());
    let client = b"raw-test";
    f.extend((client.len() as i16).to_be_bytes());
    f.extend(client);
    f.extend(body);
    prefixed(f)
}

/// Header v2 (flexible versions): v1 and an empty tagged-field section.
pub(crate) fn request_flexible(
    api_key: i16,
    version: i16,
    correlation: i32,
    body: &[u8],
) -> Vec<u8> {
    let mut f = request(api_key, version, correlation, &[0]);
    f.extend(body);
    let len = (f.len() - 4) as i32;
    f[..4].copy_from_slice(&len.to_be_bytes());
    f
}

pub(crate) fn prefixed(body: Vec<u8>) -> Vec<u8> {
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend(body);
    f
}

pub(crate) const API_VERSIONS: i16 = 18;
pub(crate) const METADATA: i16 = 3;

/// Sends `frame` and reads one response frame (without its length prefix); None if the server
/// closed the connection instead.
pub(crate) async fn round_trip(conn: &mut TcpStream, frame: &[u8]) -> Option<Vec<u8>> {
    conn.write_all(frame).await.ok()?;
    read_frame(conn).await
}

async fn read_frame(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 4];
    tokio::time::timeout(CALL, conn.read_exact(&mut len))
        .await
        .expect("no answer and not closed")
        .ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    tokio::time::timeout(CALL, conn.read_exact(&mut body))
        .await
        .expect("response cut short")
        .ok()?;
    Some(body)
}

/// ApiVersions v0 answered with the same correlation id and error 0.
pub(crate) async fn api_versions_ok(conn: &mut TcpStream, correlation: i32) -> bool {
    match round_trip(conn, &request(API_VERSIONS, 0, correlation, &[])).await {
        Some(r) => {
            assert_eq!(i32::from_be_bytes(r[..4].try_into().unwrap()), correlation);
            assert_eq!(
                i16::from_be_bytes(r[4..6].try_into().unwrap()),
                0,
                "error code"
            );
            true
        }
        None => false,
    }
}

/// The server closes the connection without answering, within `limit`.
pub(crate) async fn expect_closed(conn: &mut TcpStream, what: &str, limit: Duration) {
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(limit, conn.read(&mut buf)).await {
        Err(_) => panic!("{what}: the connection is still open after {limit:?}"),
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => panic!("{what}: the server answered {n} bytes instead of closing"),
        Ok(Err(e)) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
            "{what}: {e}"
        ),
    }
}

/// Metadata through rdkafka on a new connection: the server still serves real clients.
pub(crate) async fn rdkafka_still_served(bootstrap: String, topic: &'static str) {
    blocking(move || {
        let c = base_consumer(&bootstrap, &[]);
        let md = c.fetch_metadata(Some(topic), CALL).unwrap();
        assert_eq!(md.topics()[0].error(), None);
        assert!(!md.topics()[0].partitions().is_empty());
    })
    .await;
}

/// A small deterministic PRNG (xorshift64*), so a failing run can be repeated from its seed.
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
