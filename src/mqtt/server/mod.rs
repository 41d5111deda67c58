//! The listener face: devices connect to Tributary itself (MQTT 5 and 3.1.1, plain and TLS),
//! and a PUBACK (QoS 1) or PUBREC (QoS 2) leaves only once the message's records are durable.
//!
//! - `codec`: packets of either version, read with rumqttc's `mqttbytes`, acks written here.
//! - `inflight`: one connection's unfinished publishes and acks in order (pure).
//! - `connection`: one connection's task.
//! - `feed`: what subscriptions receive (egress provides it).
//! - `auth`: the users file (argon2id, bcrypt); `tls`: certificates and mutual TLS.
//!
//! The shape is mini-redis's server: accept loops capped by a semaphore (`max_connections`),
//! one task per connection, and shutdown in two steps as the client face does: stop reading
//! (what is in flight is still acked), then close every connection.

pub mod auth;
pub mod codec;
mod connection;
pub mod feed;
pub mod inflight;

use crate::config::ListenerConfig;
use crate::message::{Ack, Delivery};
use crate::ops::FaceMetrics;
use crate::security::tls::{self, TlsFiles};
use crate::security::users::Users;
use auth::Auth;
use codec::{Outbound, Reason, Will};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Debug, Error)]
pub enum ListenerError {
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("listener.auth.users_file: {0}")]
    Users(String),
    #[error("{0}")]
    Tls(String),
}

/// Loads what the listener needs from files: the users and the TLS acceptor. `check` calls it
/// too, so a bad file is found before start.
pub fn load(config: &ListenerConfig) -> Result<(Auth, Option<TlsAcceptor>), ListenerError> {
    let users = match &config.auth.users_file {
        Some(path) => Some(Users::load(path).map_err(|errors| {
            ListenerError::Users(format!("{}: {}", path.display(), errors.join("; ")))
        })?),
        None => None,
    };
    let auth = Auth::new(config.auth.allow_anonymous, users);
    let tls = match (
        config.tls.listen,
        &config.tls.cert_file,
        &config.tls.key_file,
    ) {
        (None, _, _) => None,
        (Some(_), Some(cert_file), Some(key_file)) => {
            let files = TlsFiles {
                cert_file,
                key_file,
                client_ca_file: config.tls.client_ca_file.as_deref(),
            };
            Some(tls::acceptor(files, "listener.tls").map_err(ListenerError::Tls)?)
        }
        (Some(_), _, _) => {
            return Err(ListenerError::Tls(
                "listener.tls: cert_file and key_file are needed".into(),
            ))
        }
    };
    Ok((auth, tls))
}

/// What every connection shares.
pub(crate) struct Shared {
    config: ListenerConfig,
    auth: Auth,
    /// Where publishes go; taken when reading stops, so the pipeline's stream can end.
    deliveries: Mutex<Option<mpsc::Sender<Delivery>>>,
    /// The connection holding each client id, for takeover.
    clients: Mutex<HashMap<String, Registered>>,
    /// Persistent sessions of clients not connected: their QoS 2 ids awaiting PUBREL.
    sessions: Mutex<HashMap<String, StoredSession>>,
    metrics: Option<FaceMetrics>,
    /// What subscriptions receive (egress); none: SUBSCRIBE is refused.
    feed: Option<Arc<dyn feed::Feed>>,
    /// Messages of every connection in the pipeline at once (see [`Listener::slots`]).
    slots: Arc<Semaphore>,
    next: AtomicU64,
    stop_reading: CancellationToken,
    close: CancellationToken,
}

struct Registered {
    serial: u64,
    kick: CancellationToken,
    /// Cancelled once the connection has ended and saved its session.
    ended: CancellationToken,
}

/// A connection's hold on its client id.
pub(crate) struct Registration {
    serial: u64,
    kick: CancellationToken,
    ended: CancellationToken,
}

struct StoredSession {
    recorded: Vec<u16>,
    expires: Instant,
}

impl Shared {
    /// The largest packet read: the payload limit plus room for a topic and properties.
    fn max_packet(&self) -> usize {
        let limit = self.config.max_payload.0.saturating_add(64 * 1024 + 1024);
        // MQTT's remaining length tops out at 256 MiB.
        limit.min(268_435_455) as usize
    }

    fn deliveries(&self) -> Option<mpsc::Sender<Delivery>> {
        self.lock_deliveries().clone()
    }

    fn lock_deliveries(&self) -> std::sync::MutexGuard<'_, Option<mpsc::Sender<Delivery>>> {
        self.deliveries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn assign_client_id(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format!("tributary-{}-{n}", std::process::id())
    }

    /// Takes `client_id` for a new connection: an older connection with it is told to close,
    /// and waited for (so its session is saved) up to a few seconds.
    async fn register(&self, client_id: &str) -> Registration {
        let serial = self.next.fetch_add(1, Ordering::Relaxed);
        let kick = CancellationToken::new();
        let ended = CancellationToken::new();
        let old = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(
                client_id.to_string(),
                Registered {
                    serial,
                    kick: kick.clone(),
                    ended: ended.clone(),
                },
            );
        if let Some(old) = old {
            old.kick.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), old.ended.cancelled()).await;
        }
        Registration {
            serial,
            kick,
            ended,
        }
    }

    /// The connection has ended: it lets go of its client id (unless taken over) and
    /// keeps its session for `session` when it has one.
    fn unregister(
        &self,
        client_id: &str,
        registration: &Registration,
        session: Option<(Vec<u16>, Duration)>,
    ) {
        {
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            if clients
                .get(client_id)
                .is_some_and(|r| r.serial == registration.serial)
            {
                clients.remove(client_id);
            }
        }
        if let Some((recorded, keep)) = session {
            let now = Instant::now();
            let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
            if sessions.len() % 1024 == 1023 {
                sessions.retain(|_, s| s.expires > now);
            }
            sessions.insert(
                client_id.to_string(),
                StoredSession {
                    recorded,
                    expires: now + keep,
                },
            );
        }
        registration.ended.cancel();
    }

    fn take_session(&self, client_id: &str) -> Option<Vec<u16>> {
        let stored = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(client_id)?;
        (stored.expires > Instant::now()).then_some(stored.recorded)
    }

    fn forget_session(&self, client_id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(client_id);
    }

    /// Hands a will to the pipeline, after its delay unless the client is back by then (and
    /// the session still lasts).
    fn publish_will(self: &Arc<Self>, client_id: String, serial: u64, will: Will, session: u32) {
        let delay = Duration::from_secs(u64::from(will.delay.min(session)));
        let shared = self.clone();
        tokio::spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
                let back = shared
                    .clients
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(&client_id)
                    .is_some_and(|r| r.serial > serial);
                if back {
                    return;
                }
            }
            let Some(tx) = shared.deliveries() else {
                tracing::warn!(client_id, "stopping: a will was not stored");
                return;
            };
            let message = connection::will_message(will);
            tracing::debug!(client_id, topic = message.topic, "publishing a will");
            if let Some(m) = &shared.metrics {
                m.received.inc();
                m.inflight.inc();
            }
            let _ = tx
                .send(Delivery::new(
                    message,
                    Box::new(WillAck(shared.metrics.clone())),
                ))
                .await;
        });
    }
}

/// A will needs no ack; the pipeline stores it like any message (retrying until it is).
struct WillAck(Option<FaceMetrics>);

impl Ack for WillAck {
    fn stored(self: Box<Self>) {
        if let Some(m) = &self.0 {
            m.inflight.dec();
            m.acked.inc();
        }
    }
}

/// The running listener.
pub struct Listener {
    shared: Arc<Shared>,
    tasks: TaskTracker,
    plain: Option<SocketAddr>,
    tls: Option<SocketAddr>,
}

impl Listener {
    /// Binds `listen` and `tls.listen` and starts accepting; publishes go to `deliveries`.
    pub async fn start(
        config: &ListenerConfig,
        auth: Auth,
        tls: Option<TlsAcceptor>,
        deliveries: mpsc::Sender<Delivery>,
        metrics: Option<FaceMetrics>,
        feed: Option<Arc<dyn feed::Feed>>,
    ) -> Result<Listener, ListenerError> {
        let bind = |key: &'static str, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ListenerError::Bind { key, addr, source })
        };
        let plain = match config.listen {
            Some(addr) => Some(bind("listener.listen", addr).await?),
            None => None,
        };
        let secure = match (config.tls.listen, tls) {
            (Some(addr), Some(acceptor)) => {
                Some((bind("listener.tls.listen", addr).await?, acceptor))
            }
            (Some(_), None) => {
                return Err(ListenerError::Tls(
                    "listener.tls.listen is set but no certificate was loaded".into(),
                ))
            }
            _ => None,
        };
        let shared = Arc::new(Shared {
            config: config.clone(),
            auth,
            deliveries: Mutex::new(Some(deliveries)),
            clients: Mutex::default(),
            sessions: Mutex::default(),
            metrics,
            feed,
            slots: Arc::new(Semaphore::new(Listener::slots(config))),
            next: AtomicU64::new(1),
            stop_reading: CancellationToken::new(),
            close: CancellationToken::new(),
        });
        let connections = Arc::new(Semaphore::new(config.max_connections as usize));
        let tasks = TaskTracker::new();
        let local = |l: &TcpListener| l.local_addr().ok();
        let plain_addr = plain.as_ref().and_then(local);
        let tls_addr = secure.as_ref().and_then(|(l, _)| local(l));
        if let Some(listener) = plain {
            tracing::info!(addr = ?plain_addr, "MQTT listener accepting");
            tasks.spawn(accept(
                listener,
                None,
                shared.clone(),
                connections.clone(),
                tasks.clone(),
            ));
        }
        if let Some((listener, acceptor)) = secure {
            tracing::info!(addr = ?tls_addr, mutual = config.tls.client_ca_file.is_some(), "MQTT listener accepting TLS");
            tasks.spawn(accept(
                listener,
                Some(acceptor),
                shared.clone(),
                connections,
                tasks.clone(),
            ));
        }
        Ok(Listener {
            shared,
            tasks,
            plain: plain_addr,
            tls: tls_addr,
        })
    }

    /// How many of the listener's messages may be in the pipeline at once, over all
    /// connections (each one besides holds at most `max_inflight` unacked): the pipeline's
    /// channel must hold this many.
    pub fn slots(config: &ListenerConfig) -> usize {
        (config.max_inflight as usize * 8).max(8192)
    }

    /// The bound addresses: plain, TLS.
    pub fn local_addrs(&self) -> (Option<SocketAddr>, Option<SocketAddr>) {
        (self.plain, self.tls)
    }

    /// Stops accepting and handing on publishes (those not handed on stay unacked: devices send
    /// them again); acks of what is in flight still go out.
    pub fn stop_reading(&self) {
        self.shared.lock_deliveries().take();
        self.shared.stop_reading.cancel();
    }

    /// Closes every connection (MQTT 5 clients get DISCONNECT 0x8B) and waits up to `wait`.
    pub async fn close(self, wait: Duration) {
        self.stop_reading();
        self.shared.close.cancel();
        self.tasks.close();
        if tokio::time::timeout(wait, self.tasks.wait()).await.is_err() {
            tracing::warn!("MQTT listener connections did not close in {wait:?}");
        }
    }
}

async fn accept(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    connections: Arc<Semaphore>,
    tasks: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    tracing::warn!(error = %e, "MQTT listener accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shared.stop_reading.cancelled() => return,
        };
        let _ = stream.set_nodelay(true);
        let shared = shared.clone();
        let tls = tls.clone();
        match connections.clone().try_acquire_owned() {
            Ok(permit) => {
                tasks.spawn(async move {
                    let _permit = permit;
                    open(stream, peer, tls, shared).await;
                });
            }
            Err(_) => {
                tasks.spawn(async move {
                    tracing::warn!(%peer, max = shared.config.max_connections, "MQTT connection refused: listener.max_connections reached");
                    if let Some(tls) = tls {
                        if let Ok(Ok(stream)) = tokio::time::timeout(connection::CONNECT_TIMEOUT, tls.accept(stream)).await {
                            refuse_busy(stream, &shared).await;
                        }
                    } else {
                        refuse_busy(stream, &shared).await;
                    }
                });
            }
        }
    }
}

/// Serves one accepted socket, after the TLS handshake when there is one.
async fn open(stream: TcpStream, peer: SocketAddr, tls: Option<TlsAcceptor>, shared: Arc<Shared>) {
    match tls {
        None => connection::serve(stream, peer, shared).await,
        // Boxed: a plain connection's task need not be sized for the TLS one.
        Some(acceptor) => Box::pin(open_tls(stream, peer, acceptor, shared)).await,
    }
}

async fn open_tls(stream: TcpStream, peer: SocketAddr, acceptor: TlsAcceptor, shared: Arc<Shared>) {
    match tokio::time::timeout(connection::CONNECT_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => connection::serve(stream, peer, shared).await,
        Ok(Err(e)) => tracing::info!(%peer, error = %e, "MQTT TLS handshake failed"),
        Err(_) => tracing::info!(%peer, "MQTT TLS handshake timed out"),
    }
}

/// Over `max_connections`: read the CONNECT to learn the version, answer "quota exceeded"
/// (3.1.1: "server unavailable"), close.
async fn refuse_busy<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, shared: &Shared) {
    use tokio::io::AsyncReadExt;
    let mut buf = bytes::BytesMut::with_capacity(1024);
    let read = async {
        loop {
            match codec::read_connect(&mut buf, shared.max_packet()) {
                Ok(Some(c)) => return Some(c.version),
                Ok(None) => {}
                Err(_) => return None,
            }
            if !matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0) {
                return None;
            }
        }
    };
    let Ok(Some(version)) = tokio::time::timeout(Duration::from_secs(2), read).await else {
        return;
    };
    let mut out = bytes::BytesMut::new();
    codec::write(
        version,
        &Outbound::ConnAck {
            session_present: false,
            reason: Reason::QuotaExceeded,
            limits: Box::default(),
        },
        &mut out,
    );
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}
