//! The listener: accepts connections up to the limit (with TLS when configured) and serves
//! each in its own task until shutdown, with the group coordinator's timers running beside
//! them.

use super::connection::ConnectionError;
use super::KafkaApi;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

impl KafkaApi {
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
                    result = api.accepted(stream, peer) => match result {
                        Ok(()) => tracing::debug!(%peer, "Kafka client disconnected"),
                        Err(ConnectionError::Io(e)) => tracing::debug!(%peer, error = %e, "Kafka connection closed"),
                        Err(ConnectionError::Tls(e)) => tracing::warn!(%peer, error = %e, "Kafka connection closed: TLS handshake failed"),
                        Err(e) => tracing::warn!(%peer, error = %e, "Kafka connection closed"),
                    },
                    _ = shutdown.cancelled() => {}
                }
            });
        }
    }

    /// Serves one accepted connection, over TLS when `kafka_tls` is set (the handshake must
    /// finish within the idle timeout).
    async fn accepted(&self, stream: TcpStream, peer: SocketAddr) -> Result<(), ConnectionError> {
        stream.set_nodelay(true)?;
        let local = stream.local_addr()?;
        match &self.options.security.tls {
            None => self.connection(stream, local, peer).await,
            Some(acceptor) => {
                let limit = self.options.idle_timeout;
                let stream = tokio::time::timeout(limit, acceptor.accept(stream))
                    .await
                    .map_err(|_| ConnectionError::Idle(limit))?
                    .map_err(ConnectionError::Tls)?;
                self.connection(stream, local, peer).await
            }
        }
    }
}
