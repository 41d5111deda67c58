//! `tributary run`: opens the sink, starts the ingress and the pipeline, and on shutdown drains
//! them in order: stop reading, finish and ack what is in flight, disconnect, close the sink.

use crate::config::{Backend, Config};
use crate::kafka_api::{KafkaApi, ServerOptions};
use crate::log::offsets::GroupOffsets;
use crate::log::{Log, LogOptions};
use crate::mqtt::Ingress;
use crate::pipeline;
use crate::route::Router;
use crate::sink::embedded::EmbeddedSink;
use crate::sink::Sink;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for in-flight messages to be stored and acked.
const DRAIN: Duration = Duration::from_secs(20);

#[derive(Debug, Error)]
pub enum AppError {
    /// The config contradicts what is on disk; exit code 2.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::session::SessionError),
    #[error("{0}")]
    Other(String),
}

/// Starts the Kafka API listener when `kafka_listener` is set; returns how to stop it.
async fn start_kafka_listener(
    config: &Config,
    log: &Arc<Log>,
) -> Result<Option<(CancellationToken, tokio::task::JoinHandle<()>)>, AppError> {
    let embedded = &config.log.embedded;
    let Some(addr) = embedded.kafka_listener else {
        return Ok(None);
    };
    let offsets = GroupOffsets::open(&embedded.dir).map_err(|e| AppError::Other(e.to_string()))?;
    for damaged in offsets.damaged() {
        tracing::warn!(%damaged, "consumer-group offsets file skipped");
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        AppError::Other(format!(
            "log.embedded.kafka_listener: cannot listen on {addr}: {e}"
        ))
    })?;
    let options = ServerOptions {
        advertised: embedded.advertised().map_err(AppError::Config)?,
        ..Default::default()
    };
    let api = KafkaApi::new(log.clone(), Arc::new(offsets), options);
    let stop = CancellationToken::new();
    tracing::info!(%addr, "Kafka API listening");
    Ok(Some((
        stop.clone(),
        tokio::spawn(api.serve(listener, stop)),
    )))
}

/// Runs the gateway until `shutdown` resolves, then drains and stops.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), AppError> {
    // rumqttc's rustls needs a process-wide crypto provider; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if config.log.backend != Backend::Embedded {
        return Err(AppError::Config(
            "log.backend: kafka is not available in this version yet; use embedded".into(),
        ));
    }
    let log = Arc::new(Log::open(LogOptions::new(&config.log.embedded, &config.topics)).await?);
    let sink = EmbeddedSink::new(log.clone());
    let existing = sink.partition_counts().await?;
    for (topic, &n) in &existing {
        if let Some(t) = config.topics.topics.get(topic) {
            if t.partitions != n {
                return Err(AppError::Config(format!(
                    "topics.{topic}.partitions: {} but the log already holds {topic} with {n} partitions; a topic's partition count cannot change (keys would move). Set it to {n}, or route to a new topic",
                    t.partitions
                )));
            }
        }
    }
    let router = Router::new(&config)
        .map_err(|issues| AppError::Config(format!("invalid routes: {issues:?}")))?
        .with_existing_topics(existing);
    let router = Arc::new(router);
    let kafka = start_kafka_listener(&config, &log).await?;
    let (ingress, deliveries) = Ingress::start(&config.mqtt, &router.subscriptions())?;
    tracing::info!(dir = %config.log.embedded.dir.display(), routes = router.routes().len(), "tributary running");
    let mut pipeline = tokio::spawn(pipeline::run(
        deliveries,
        router,
        sink.clone(),
        ingress.acker(),
    ));

    tokio::select! {
        _ = shutdown => tracing::info!("shutting down: finishing messages in flight"),
        result = &mut pipeline => {
            return Err(AppError::Other(format!("pipeline stopped unexpectedly: {result:?}")));
        }
    }
    ingress.stop_reading();
    let drained = tokio::time::timeout(DRAIN, &mut pipeline).await;
    match &drained {
        Ok(Ok(stats)) => tracing::info!(?stats, "pipeline drained"),
        Ok(Err(e)) => tracing::error!(error = %e, "pipeline task failed"),
        Err(_) => {
            tracing::error!("messages still in flight after {DRAIN:?}; they stay unacked and the broker redelivers them");
            pipeline.abort();
        }
    }
    ingress.disconnect(Duration::from_secs(5)).await;
    if let Some((stop, server)) = kafka {
        stop.cancel();
        let _ = server.await;
    }
    drop(sink);
    match Arc::try_unwrap(log) {
        Ok(log) => log.close().await?,
        Err(_) => tracing::warn!("log still in use at shutdown; it recovers on the next start"),
    }
    match drained {
        Ok(Ok(_)) => Ok(()),
        _ => Err(AppError::Other(
            "shutdown did not finish every message in flight".into(),
        )),
    }
}
