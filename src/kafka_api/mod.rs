//! The Kafka API listener: a single-node Kafka endpoint over the embedded log, so services
//! consume it with the Kafka client they already use.
//!
//! - this file: what every connection shares ([`KafkaApi`], [`ServerOptions`]) and the table
//!   that sends each request to its handler.
//! - `server`: the listener (connection limit, TLS, shutdown); `connection`: one connection's
//!   loop (length-prefixed frames, answered strictly in order, idle timeout, SASL first,
//!   encoding); `sasl`: one connection's authentication (PLAIN, SCRAM), a pure state machine.
//! - one file per API: `api_versions` (also which APIs and versions are offered), `metadata`,
//!   `list_offsets`, `fetch` (served from segment bytes, long polled), `produce`,
//!   `create_topics`, `find_coordinator`, `init_producer_id`.
//! - idempotent producers: `producers` (the per-partition state machine, pure) and
//!   `idempotence` (producer ids, the state checked on Produce and rebuilt from the log).
//! - `groups`: the classic consumer-group coordinator and committed offsets (JoinGroup,
//!   SyncGroup, Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups, ListGroups).
//!
//! Error codes are [`ResponseError`]'s. A malformed or oversized request closes its connection
//! (logged); the server keeps serving.

mod api_versions;
mod connection;
mod create_topics;
mod fetch;
mod find_coordinator;
pub mod groups;
pub mod idempotence;
mod init_producer_id;
mod list_offsets;
mod metadata;
mod produce;
pub mod producers;
pub mod sasl;
mod server;

use crate::config::EmbeddedConfig;
use crate::log::offsets::GroupOffsets;
use crate::log::{Log, LogError};
use crate::security::tls::{self, TlsFiles};
use kafka_protocol::messages::{RequestKind, ResponseKind};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::TlsAcceptor;

/// Why a read-only face refuses a write.
const READ_ONLY: &str = "this listener is read-only (log.embedded.kafka_produce: false)";

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
    /// False: a read-only face; Produce, CreateTopics and InitProducerId are refused with the
    /// authorization errors Kafka gives a client without write access.
    pub produce: bool,
    pub security: Security,
}

/// Who may use the listener: TLS (`kafka_tls`) and SASL (`kafka_auth`).
#[derive(Clone, Default)]
pub struct Security {
    pub tls: Option<TlsAcceptor>,
    pub sasl: Option<Arc<sasl::Authenticator>>,
}

impl fmt::Debug for Security {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Security")
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl)
            .finish()
    }
}

impl Security {
    /// Reads the files `kafka_tls` and `kafka_auth` name; an error starts with its config key.
    /// `check` calls it too, so a bad file is found before start.
    pub fn load(config: &EmbeddedConfig) -> Result<Security, String> {
        let tls = match &config.kafka_tls {
            Some(t) => {
                let files = TlsFiles {
                    cert_file: &t.cert_file,
                    key_file: &t.key_file,
                    client_ca_file: t.client_ca_file.as_deref(),
                };
                Some(tls::acceptor(files, "log.embedded.kafka_tls")?)
            }
            None => None,
        };
        let sasl = match &config.kafka_auth {
            Some(a) => {
                Some(Arc::new(sasl::Authenticator::load(a).map_err(|e| {
                    format!("log.embedded.kafka_auth.users_file: {e}")
                })?))
            }
            None => None,
        };
        Ok(Security { tls, sasl })
    }
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            max_connections: 1024,
            max_request_bytes: 100 << 20,
            idle_timeout: Duration::from_secs(600),
            advertised: None,
            group: groups::CoordinatorOptions::default(),
            produce: true,
            security: Security::default(),
        }
    }
}

/// What every connection shares.
pub struct KafkaApi {
    log: Arc<Log>,
    groups: Arc<groups::Coordinator>,
    producers: idempotence::Producers,
    options: ServerOptions,
    cluster_id: String,
}

/// What the handlers of the log's APIs need to answer one request.
struct Context<'a> {
    log: &'a Log,
    /// Where clients reach this broker.
    host: String,
    port: u16,
    cluster_id: &'a str,
    producers: &'a idempotence::Producers,
    /// `kafka_produce`: false refuses every write.
    produce: bool,
}

impl KafkaApi {
    pub fn new(log: Arc<Log>, offsets: Arc<GroupOffsets>, options: ServerOptions) -> Arc<KafkaApi> {
        let groups = groups::Coordinator::new(offsets, options.group.clone());
        Arc::new(KafkaApi {
            log,
            groups,
            producers: Default::default(),
            options,
            cluster_id: "tributary".into(),
        })
    }

    /// Answers one decoded request; `None` for an API without a handler.
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
        let ctx = Context {
            log: &self.log,
            host,
            port,
            cluster_id: &self.cluster_id,
            producers: &self.producers,
            produce: self.options.produce,
        };
        Some(match request {
            RequestKind::ApiVersions(_) => ResponseKind::ApiVersions(api_versions::handle()),
            RequestKind::Metadata(r) => ResponseKind::Metadata(metadata::handle(&ctx, r, version)),
            RequestKind::ListOffsets(r) => {
                ResponseKind::ListOffsets(list_offsets::handle(&ctx, r, version))
            }
            RequestKind::Fetch(r) => ResponseKind::Fetch(fetch::handle(&ctx, r, version).await),
            RequestKind::Produce(r) => {
                ResponseKind::Produce(produce::handle(&ctx, r, version).await)
            }
            RequestKind::CreateTopics(r) => {
                ResponseKind::CreateTopics(create_topics::handle(&ctx, r, version))
            }
            RequestKind::InitProducerId(r) => {
                ResponseKind::InitProducerId(init_producer_id::handle(&ctx, r, version))
            }
            RequestKind::FindCoordinator(r) => {
                ResponseKind::FindCoordinator(find_coordinator::handle(&ctx, r, version))
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
            // `api_versions::supported` offers only the APIs handled above.
            _ => return None,
        })
    }
}

fn str_bytes(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// The Kafka error a log error is reported as.
fn log_error(e: &LogError) -> ResponseError {
    match e {
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::NoSuchPartition { .. } | LogError::UnknownTopic(_) => {
            ResponseError::UnknownTopicOrPartition
        }
        LogError::InvalidTopic(_) => ResponseError::InvalidTopicException,
        LogError::Corrupt { .. } => ResponseError::CorruptMessage,
        LogError::Io { .. } | LogError::Closed(_) => ResponseError::KafkaStorageError,
        _ => ResponseError::UnknownServerError,
    }
}

/// The error code of a result: 0 for success.
fn error_code(result: Result<(), ResponseError>) -> i16 {
    result.err().map_or(0, |e| e.code())
}
