//! The Kafka API listener: a single-node Kafka endpoint over the embedded log, so services
//! consume it with the Kafka client they already use.
//!
//! - this file: the listener (connection limit, idle timeout) and the per-connection loop
//!   (length-prefixed frames, answered strictly in order).
//! - `versions`: which APIs and versions are offered.
//! - `handlers`: ApiVersions, Metadata, ListOffsets, Fetch (served from segment bytes, long
//!   polled), Produce, CreateTopics, FindCoordinator.
//! - `groups`: the classic consumer-group coordinator and committed offsets.
//!
//! A malformed or oversized request closes its connection (logged); the server keeps serving.

pub mod groups;
mod handlers;
mod versions;

use crate::log::offsets::GroupOffsets;
use crate::log::Log;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, RequestKind, ResponseHeader, ResponseKind};
use kafka_protocol::protocol::Encodable;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The one broker's id.
pub const NODE_ID: i32 = 0;

/// Limits of the listener.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub max_connections: usize,
    /// Larger requests close the connection (Kafka's `socket.request.max.bytes`).
    pub max_request_bytes: usize,
    /// A connection with no request for this long is closed (`connections.max.idle.ms`).
    pub idle_timeout: Duration,
    /// Host and port put in Metadata; `None`: the address each client connected to.
    pub advertised: Option<(String, u16)>,
    pub group: groups::CoordinatorOptions,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 1024,
            max_request_bytes: 100 << 20,
            idle_timeout: Duration::from_secs(600),
            advertised: None,
            group: groups::CoordinatorOptions::default(),
        }
    }
}

/// What every connection shares.
pub struct KafkaApi {
    log: Arc<Log>,
    groups: Arc<groups::Coordinator>,
    options: ServerOptions,
    cluster_id: String,
}

#[derive(Debug, Error)]
enum ConnectionError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("request of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("idle for {0:?}")]
    Idle(Duration),
}

impl KafkaApi {
    pub fn new(log: Arc<Log>, offsets: Arc<GroupOffsets>, options: ServerOptions) -> Arc<KafkaApi> {
        let groups = groups::Coordinator::new(offsets, options.group.clone());
        Arc::new(KafkaApi {
            log,
            groups,
            options,
            cluster_id: "tributary".into(),
        })
    }

    /// Accepts connections until `shutdown`, each served in its own task; returns once every
    /// connection has closed.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.options.max_connections));
        let tasks = tokio_util::task::TaskTracker::new();
        tasks.spawn(self.groups.clone().run(shutdown.clone()));
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => {
                    tasks.close();
                    tasks.wait().await;
                    return;
                }
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "Kafka listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                tracing::warn!(%peer, limit = self.options.max_connections, "Kafka listener: too many connections; refusing one");
                continue;
            };
            let api = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let _permit = permit;
                tokio::select! {
                    result = api.connection(stream) => match result {
                        Ok(()) => tracing::debug!(%peer, "Kafka client disconnected"),
                        Err(ConnectionError::Io(e)) => tracing::debug!(%peer, error = %e, "Kafka connection closed"),
                        Err(e) => tracing::warn!(%peer, error = %e, "Kafka connection closed"),
                    },
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }

    /// Serves one connection: read a frame, answer it, repeat. Answers go out in request order.
    async fn connection(&self, mut stream: TcpStream) -> Result<(), ConnectionError> {
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        let peer = stream.peer_addr()?;
        let mut frame = BytesMut::new();
        let mut out = BytesMut::new();
        loop {
            let mut len = [0u8; 4];
            match tokio::time::timeout(self.options.idle_timeout, stream.read_exact(&mut len)).await
            {
                Err(_) => return Err(ConnectionError::Idle(self.options.idle_timeout)),
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(r) => r?,
            };
            let len = i32::from_be_bytes(len);
            if len < 8 || len as usize > self.options.max_request_bytes {
                return Err(ConnectionError::TooLarge(len.max(0) as usize));
            }
            // The rest of the frame must come within the idle timeout too (a client that sends a
            // length and stalls would otherwise hold its connection for good), and the buffer
            // grows with the bytes that arrive, not with the length a client claims.
            let len = len as usize;
            let body = async {
                let mut body = (&mut stream).take(len as u64);
                while frame.len() < len {
                    frame.reserve((len - frame.len()).min(64 << 10));
                    if body.read_buf(&mut frame).await? == 0 {
                        return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
                    }
                }
                Ok(())
            };
            match tokio::time::timeout(self.options.idle_timeout, body).await {
                Err(_) => return Err(ConnectionError::Idle(self.options.idle_timeout)),
                Ok(r) => r?,
            }
            out.clear();
            self.handle(frame.split().freeze(), local, peer, &mut out)
                .await?;
            stream.write_all(&out).await?;
        }
    }

    /// Decodes one request and encodes its response (length prefix included) into `out`.
    async fn handle(
        &self,
        mut frame: Bytes,
        local: SocketAddr,
        peer: SocketAddr,
        out: &mut BytesMut,
    ) -> Result<(), ConnectionError> {
        let malformed = |e: anyhow::Error| ConnectionError::Malformed(format!("{e:#}"));
        // Frames are at least 8 bytes, so the api key is there to peek at.
        let api_key = ApiKey::try_from(frame.clone().get_i16())
            .map_err(|_| ConnectionError::Malformed("unknown API key".into()))?;
        let header = kafka_protocol::protocol::decode_request_header_from_buffer(&mut frame)
            .map_err(malformed)?;
        let version = header.request_api_version;
        let response = match versions::supported(api_key) {
            Some(range) if range.contains(&version) => {
                let request =
                    RequestKind::decode(api_key, &mut frame, version).map_err(malformed)?;
                // acks=0: the producer expects no answer at all.
                let silent = matches!(&request, RequestKind::Produce(p) if p.acks == 0);
                let client = header.client_id.as_ref().map_or("", |c| c.as_str());
                let Some(response) = self.dispatch(request, version, local, (client, peer)).await
                else {
                    return Err(ConnectionError::Malformed(format!(
                        "{api_key:?} is offered but has no handler"
                    )));
                };
                if silent {
                    return Ok(());
                }
                response
            }
            // An ApiVersions the server does not speak gets a v0 answer saying what it does.
            _ if api_key == ApiKey::ApiVersions => {
                return encode(
                    out,
                    &header,
                    0,
                    &ResponseKind::ApiVersions(handlers::api_versions_unsupported()),
                );
            }
            _ => {
                return Err(ConnectionError::Malformed(format!(
                    "{api_key:?} v{version} is not supported (not offered in ApiVersions)"
                )));
            }
        };
        encode(out, &header, version, &response)
    }

    async fn dispatch(
        &self,
        request: RequestKind,
        version: i16,
        local: SocketAddr,
        (client_id, peer): (&str, SocketAddr),
    ) -> Option<ResponseKind> {
        let (host, port) = match &self.options.advertised {
            Some((h, p)) => (h.clone(), *p),
            None => (local.ip().to_string(), local.port()),
        };
        let ctx = handlers::Context {
            log: &self.log,
            host,
            port,
            cluster_id: &self.cluster_id,
        };
        Some(match request {
            RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(handlers::api_versions()),
            RequestKind::Metadata(r) => {
                ResponseKind::Metadata(handlers::metadata(&ctx, r, version))
            }
            RequestKind::ListOffsets(r) => {
                ResponseKind::ListOffsets(handlers::list_offsets(&ctx, r, version))
            }
            RequestKind::Fetch(r) => ResponseKind::Fetch(handlers::fetch(&ctx, r, version).await),
            RequestKind::Produce(r) => {
                ResponseKind::Produce(handlers::produce(&ctx, r, version).await)
            }
            RequestKind::CreateTopics(r) => {
                ResponseKind::CreateTopics(handlers::create_topics(&ctx, r, version))
            }
            RequestKind::FindCoordinator(r) => {
                ResponseKind::FindCoordinator(handlers::find_coordinator(&ctx, r, version))
            }
            RequestKind::JoinGroup(r) => {
                let host = peer.ip().to_string();
                ResponseKind::JoinGroup(
                    self.groups
                        .join_group_with_client(r, version, client_id, &host)
                        .await,
                )
            }
            RequestKind::SyncGroup(r) => {
                ResponseKind::SyncGroup(self.groups.sync_group(r, version).await)
            }
            RequestKind::Heartbeat(r) => ResponseKind::Heartbeat(self.groups.heartbeat(r, version)),
            RequestKind::LeaveGroup(r) => {
                ResponseKind::LeaveGroup(self.groups.leave_group(r, version))
            }
            RequestKind::OffsetCommit(r) => {
                // Durable before the answer: an fsync, kept off the async workers.
                let groups = self.groups.clone();
                match tokio::task::spawn_blocking(move || groups.offset_commit(r, version)).await {
                    Ok(response) => ResponseKind::OffsetCommit(response),
                    Err(e) => {
                        tracing::error!(error = %e, "offset commit task failed");
                        ResponseKind::OffsetCommit(Default::default())
                    }
                }
            }
            RequestKind::OffsetFetch(r) => {
                ResponseKind::OffsetFetch(self.groups.offset_fetch(r, version))
            }
            RequestKind::DescribeGroups(r) => {
                ResponseKind::DescribeGroups(self.groups.describe_groups(r, version))
            }
            RequestKind::ListGroups(r) => {
                ResponseKind::ListGroups(self.groups.list_groups(r, version))
            }
            // `versions::supported` offers only the APIs handled above.
            _ => return None,
        })
    }
}

/// Length prefix, response header, body.
fn encode(
    out: &mut BytesMut,
    header: &RequestHeader,
    version: i16,
    response: &ResponseKind,
) -> Result<(), ConnectionError> {
    let api_key = ApiKey::try_from(header.request_api_key)
        .map_err(|_| ConnectionError::Malformed("unknown API key".into()))?;
    // ApiVersions responses always use header v0, so old clients can read them.
    let header_version = if api_key == ApiKey::ApiVersions {
        0
    } else {
        api_key.response_header_version(version)
    };
    let response_header = ResponseHeader::default().with_correlation_id(header.correlation_id);
    let start = out.len();
    out.put_i32(0);
    let failed =
        |e: anyhow::Error| ConnectionError::Malformed(format!("encoding the response: {e:#}"));
    response_header
        .encode(out, header_version)
        .map_err(failed)?;
    response.encode(out, version).map_err(failed)?;
    let len = (out.len() - start - 4) as i32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}
