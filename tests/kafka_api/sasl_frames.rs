//! SASL on the wire, request by request: the v0 handshake's bare tokens (older clients), the
//! SaslAuthenticate flow's refusals, nothing but ApiVersions and SASL served before
//! authentication, and SASL requests to a listener without `kafka_auth`. Real clients
//! (librdkafka, Python, Java) are in tests/kafka_security/.

use crate::frames::{api_versions_ok, expect_closed, prefixed, request, round_trip, METADATA};
use crate::server::Server;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tributary::config::SaslMechanism;
use tributary::kafka_api::sasl::Authenticator;
use tributary::kafka_api::{Security, ServerOptions};
use tributary::security::users::{hash_password, Users};

const SASL_HANDSHAKE: i16 = 17;
const SASL_AUTHENTICATE: i16 = 36;
const ILLEGAL_SASL_STATE: i16 = 34;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// A listener taking PLAIN for alice (password "pw").
async fn plain_server() -> Server {
    let users = Users::parse(&format!("alice:{}\n", hash_password(b"pw").unwrap())).unwrap();
    let sasl = Authenticator::new(SaslMechanism::Plain, users).unwrap();
    Server::start(ServerOptions {
        security: Security {
            sasl: Some(Arc::new(sasl)),
            tls: None,
        },
        ..Default::default()
    })
    .await
}

fn string(s: &str) -> Vec<u8> {
    let mut b = (s.len() as i16).to_be_bytes().to_vec();
    b.extend(s.as_bytes());
    b
}

fn bytes(b: &[u8]) -> Vec<u8> {
    let mut out = (b.len() as i32).to_be_bytes().to_vec();
    out.extend(b);
    out
}

/// SaslHandshake at `version`: (error code, the mechanisms offered).
async fn handshake(conn: &mut TcpStream, version: i16, mechanism: &str) -> (i16, Vec<String>) {
    let frame = request(SASL_HANDSHAKE, version, 7, &string(mechanism));
    let r = round_trip(conn, &frame).await.expect("a handshake answer");
    assert_eq!(r[..4], 7i32.to_be_bytes());
    let error = i16::from_be_bytes([r[4], r[5]]);
    let count = i32::from_be_bytes(r[6..10].try_into().unwrap());
    let (mut at, mut mechanisms) = (10, Vec::new());
    for _ in 0..count {
        let len = i16::from_be_bytes([r[at], r[at + 1]]) as usize;
        mechanisms.push(String::from_utf8(r[at + 2..at + 2 + len].to_vec()).unwrap());
        at += 2 + len;
    }
    (error, mechanisms)
}

/// SaslAuthenticate v0: the error code, or None if the connection closed instead.
async fn authenticate(conn: &mut TcpStream, token: &[u8]) -> Option<i16> {
    let frame = request(SASL_AUTHENTICATE, 0, 8, &bytes(token));
    let r = round_trip(conn, &frame).await?;
    Some(i16::from_be_bytes([r[4], r[5]]))
}

/// Metadata v1 for every topic answered (correlation id 9).
async fn metadata_served(conn: &mut TcpStream) -> bool {
    let frame = request(METADATA, 1, 9, &(-1i32).to_be_bytes());
    round_trip(conn, &frame)
        .await
        .is_some_and(|r| r[..4] == 9i32.to_be_bytes())
}

const CLOSE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_v0_handshake_takes_bare_tokens() {
    let server = plain_server().await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    assert!(
        api_versions_ok(&mut conn, 1).await,
        "ApiVersions comes first"
    );
    assert_eq!(
        handshake(&mut conn, 0, "PLAIN").await,
        (0, vec!["PLAIN".into()])
    );
    // The token is a bare frame; so is the (empty) answer.
    let answer = round_trip(&mut conn, &prefixed(b"\0alice\0pw".to_vec())).await;
    assert_eq!(answer, Some(vec![]), "PLAIN's success is an empty token");
    assert!(
        metadata_served(&mut conn).await,
        "served once authenticated"
    );

    let mut wrong = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(handshake(&mut wrong, 0, "PLAIN").await.0, 0);
    wrong
        .write_all(&prefixed(b"\0alice\0nope".to_vec()))
        .await
        .unwrap();
    expect_closed(&mut wrong, "a wrong bare token", CLOSE).await;
    server.assert_alive();
}

#[tokio::test]
async fn nothing_but_sasl_before_authentication() {
    let server = plain_server().await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    let frame = request(METADATA, 1, 9, &(-1i32).to_be_bytes());
    conn.write_all(&frame).await.unwrap();
    expect_closed(&mut conn, "Metadata before SASL", CLOSE).await;

    let mut early = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(
        authenticate(&mut early, b"\0alice\0pw").await,
        Some(ILLEGAL_SASL_STATE),
        "SaslAuthenticate before SaslHandshake"
    );
    expect_closed(&mut early, "after an illegal SASL state", CLOSE).await;

    let mut other = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(
        handshake(&mut other, 1, "SCRAM-SHA-256").await,
        (UNSUPPORTED_SASL_MECHANISM, vec!["PLAIN".into()])
    );
    expect_closed(&mut other, "after an unsupported mechanism", CLOSE).await;

    let mut wrong = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(handshake(&mut wrong, 1, "PLAIN").await.0, 0);
    assert_eq!(
        authenticate(&mut wrong, b"\0alice\0nope").await,
        Some(SASL_AUTHENTICATION_FAILED)
    );
    expect_closed(&mut wrong, "after failed authentication", CLOSE).await;

    // Before authentication a frame may be at most 512 KiB (sasl.server.max.receive.size).
    let mut big = TcpStream::connect(server.addr).await.unwrap();
    big.write_all(&(1i32 << 20).to_be_bytes()).await.unwrap();
    expect_closed(&mut big, "a 1 MiB frame before SASL", CLOSE).await;

    let mut good = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(handshake(&mut good, 1, "PLAIN").await.0, 0);
    assert_eq!(authenticate(&mut good, b"alice\0alice\0pw").await, Some(0));
    assert!(metadata_served(&mut good).await);
    assert_eq!(
        authenticate(&mut good, b"\0alice\0pw").await,
        Some(ILLEGAL_SASL_STATE),
        "a second authentication is refused, the session kept"
    );
    assert!(metadata_served(&mut good).await);
}

#[tokio::test]
async fn sasl_requests_without_kafka_auth_are_an_illegal_state() {
    let server = Server::start(ServerOptions::default()).await;
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(handshake(&mut conn, 1, "PLAIN").await.0, ILLEGAL_SASL_STATE);
    assert!(metadata_served(&mut conn).await, "the connection goes on");
}
