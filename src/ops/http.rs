//! The operations endpoint on `http.listen`: `GET /metrics` (Prometheus text), `/healthz`
//! (liveness) and `/readyz` (readiness, the reasons in the body).
//!
//! A tiny HTTP/1.1 responder on tokio rather than an HTTP framework: three fixed GET paths,
//! one response per connection (`Connection: close`), scraped every few seconds. It reads the
//! request head (at most 8 KiB, within 5 s), answers, and closes; anything else gets a 4xx.
//! At most 32 connections are served at once; further ones wait to be accepted.
//! [`Endpoints::respond`] is the whole routing, tested without a socket.

use super::metrics::Metrics;
use super::ready::{Probes, Readiness};
use crate::log::offsets::GroupOffsets;
use crate::log::Log;
use crate::sink::buffered::BufferedSink;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

const MAX_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_CONNECTIONS: usize = 32;
const TEXT: &str = "text/plain; charset=utf-8";
/// Prometheus text exposition format.
const METRICS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the endpoint serves from.
#[derive(Debug)]
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    pub probes: Probes,
    /// The embedded log, for `tributary_log_end_offset` (none with the Kafka backend).
    pub log: Option<Arc<Log>>,
    /// The Kafka listener's consumer groups, for `tributary_consumer_group_lag`.
    pub groups: Option<Arc<GroupOffsets>>,
    /// The Kafka buffer (`delivery: buffered`), for `tributary_kafka_forward_lag_records`.
    pub buffer: Option<BufferedSink>,
}

/// One answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: String,
}

impl Response {
    fn text(status: u16, body: impl Into<String>) -> Response {
        Response {
            status,
            content_type: TEXT,
            body: body.into(),
        }
    }

    fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            431 => "Request Header Fields Too Large",
            503 => "Service Unavailable",
            _ => "",
        }
    }

    /// The whole response as sent.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!(
            "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
            self.status,
            self.reason(),
            self.content_type,
            self.body.len()
        );
        if self.status == 405 {
            out.push_str("Allow: GET\r\n");
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(self.body.as_bytes());
        bytes
    }
}

impl Endpoints {
    /// The answer to `method` `target` (a request line's first two words).
    pub fn respond(&self, method: &str, target: &str) -> Response {
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        if !matches!(path, "/metrics" | "/healthz" | "/readyz") {
            return Response::text(404, "not found: try /metrics, /healthz or /readyz\n");
        }
        if method != "GET" {
            return Response::text(405, "only GET\n");
        }
        match path {
            "/metrics" => Response {
                status: 200,
                content_type: METRICS,
                body: self.metrics.render(
                    self.log.as_deref(),
                    self.groups.as_deref(),
                    &self
                        .buffer
                        .as_ref()
                        .map(BufferedSink::lag)
                        .unwrap_or_default(),
                ),
            },
            "/healthz" => Response::text(200, "ok\n"),
            _ => match self.probes.readiness() {
                r @ Readiness::Ready => Response::text(200, r.to_string()),
                r @ Readiness::NotReady(_) => Response::text(503, r.to_string()),
            },
        }
    }
}

/// Binds `http.listen`; the error names the key.
pub async fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("http.listen: cannot listen on {addr}: {e}"))
}

/// Serves connections until `shutdown`; then drops the connections still open and returns,
/// letting go of `endpoints` (which hold the log).
pub async fn serve(listener: TcpListener, endpoints: Arc<Endpoints>, shutdown: CancellationToken) {
    let mut connections = tokio::task::JoinSet::new();
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = accept(&listener, &endpoints, &mut connections) => {}
    }
    connections.shutdown().await;
}

async fn accept(
    listener: &TcpListener,
    endpoints: &Arc<Endpoints>,
    connections: &mut tokio::task::JoinSet<()>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: wait a little rather than spin.
                tracing::warn!(error = %e, "http: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let endpoints = endpoints.clone();
        connections.spawn(async move {
            answer(stream, &endpoints).await;
            drop(slot);
        });
    }
}

/// Reads one request head and answers it.
async fn answer(mut stream: TcpStream, endpoints: &Endpoints) {
    let response = match tokio::time::timeout(READ_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => Response::text(408, "request timeout\n"),
        Ok(Err(response)) => response,
        Ok(Ok(head)) => {
            let mut words = head.lines().next().unwrap_or("").split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(method), Some(target), Some(version)) if version.starts_with("HTTP/1.") => {
                    endpoints.respond(method, target)
                }
                _ => Response::text(400, "bad request\n"),
            }
        }
    };
    let _ = stream.write_all(&response.to_bytes()).await;
    let _ = stream.shutdown().await;
}

/// The request head, up to its blank line; an error response when there is none in time.
async fn read_head(stream: &mut TcpStream) -> Result<String, Response> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    loop {
        let n = stream
            .read(&mut buf)
            .await
            .map_err(|_| Response::text(400, "bad request\n"))?;
        if n == 0 {
            return Err(Response::text(400, "bad request: incomplete head\n"));
        }
        head.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&head);
        if text.contains("\r\n\r\n") || text.contains("\n\n") {
            return Ok(text.into_owned());
        }
        if head.len() > MAX_HEAD {
            return Err(Response::text(431, "request head too large\n"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::ready::AppendWatch;
    use std::sync::Mutex;
    use tokio::sync::watch;

    fn endpoints(connected: bool) -> (Endpoints, watch::Sender<bool>) {
        let (tx, rx) = watch::channel(connected);
        let probes = Probes::new(Arc::new(Mutex::new(AppendWatch::default()))).face("client", rx);
        let endpoints = Endpoints {
            metrics: Arc::new(Metrics::new()),
            probes,
            log: None,
            groups: None,
            buffer: None,
        };
        (endpoints, tx)
    }

    #[test]
    fn three_paths_get_only() {
        let (e, _tx) = endpoints(true);
        let metrics = e.respond("GET", "/metrics");
        assert_eq!(metrics.status, 200);
        assert_eq!(metrics.content_type, METRICS);
        assert!(metrics.body.contains("tributary_messages_received_total"));
        assert_eq!(e.respond("GET", "/healthz"), Response::text(200, "ok\n"));
        assert_eq!(e.respond("GET", "/readyz"), Response::text(200, "ready\n"));
        assert_eq!(e.respond("GET", "/readyz?verbose=1").status, 200);
        assert_eq!(e.respond("GET", "/").status, 404);
        assert_eq!(e.respond("GET", "/metrics/x").status, 404);
        assert_eq!(e.respond("POST", "/metrics").status, 405);
        assert_eq!(e.respond("HEAD", "/healthz").status, 405);
    }

    #[test]
    fn not_ready_is_503_with_the_reason() {
        let (e, tx) = endpoints(false);
        let r = e.respond("GET", "/readyz");
        assert_eq!(r.status, 503);
        assert_eq!(
            r.body,
            "not ready\ningress client: not connected to the MQTT broker\n"
        );
        assert_eq!(
            e.respond("GET", "/healthz").status,
            200,
            "alive all the same"
        );
        tx.send_replace(true);
        assert_eq!(e.respond("GET", "/readyz").status, 200);
    }

    #[test]
    fn responses_are_complete_http_1_1() {
        let bytes = Response::text(405, "only GET\n").to_bytes();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 9\r\nConnection: close\r\nAllow: GET\r\n\r\nonly GET\n"
        );
    }

    /// A raw request over a socket, the whole response back.
    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn serves_over_tcp_until_shutdown() {
        let (e, _tx) = endpoints(true);
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, Arc::new(e), stop.clone()));

        let ok = exchange(addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert_eq!(
            ok,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
        );
        let split = {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /readyz HT").await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
            s.write_all(b"TP/1.0\r\n\r\n").await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(split.starts_with("HTTP/1.1 200 OK\r\n"), "{split}");
        assert!(split.ends_with("\r\n\r\nready\n"), "{split}");
        let bad = exchange(addr, b"hello\r\n\r\n").await;
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
        let huge = exchange(addr, &[b'a'; MAX_HEAD + 1]).await;
        assert!(huge.starts_with("HTTP/1.1 431 "), "{huge}");
        let metrics = exchange(addr, b"GET /metrics HTTP/1.1\r\n\r\n").await;
        assert!(metrics.contains("Content-Type: text/plain; version=0.0.4"));
        assert!(
            metrics.contains("\ntributary_mqtt_connected 0\n"),
            "{metrics}"
        );

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), server)
            .await
            .expect("stops on shutdown")
            .unwrap();
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer listening"
        );
    }

    #[tokio::test]
    async fn a_port_in_use_names_the_key() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = bind(addr).await.unwrap_err();
        assert!(
            err.starts_with(&format!("http.listen: cannot listen on {addr}: ")),
            "{err}"
        );
    }
}
