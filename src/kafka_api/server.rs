//! The listener: accepts connections up to the limit and serves each in its own task until
//! shutdown, with the group coordinator's timers running beside them.

use super::connection::ConnectionError;
use super::KafkaApi;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
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
}
