//! `tributary run`: opens the sink, starts the ingress faces (broker client, MQTT listener),
//! the pipeline and the other listeners (Kafka API, `http.listen`), and on shutdown drains them in order: stop reading, finish and ack what
//! is in flight, disconnect, stop the listeners, close the sink.
//!
//! Metrics cost nothing when nobody can read them: with `http.listen` off nothing is counted.

use super::prepare::{prepare, Access, PrepareError, Prepared};
use super::reload;
use crate::config::{Config, Issue};
use crate::egress::{self, publisher::BrokerPublisher, subscribers::ListenerFeed, Egress};
use crate::kafka_api::{KafkaApi, ServerOptions};
use crate::log::offsets::GroupOffsets;
use crate::log::Log;
use crate::mqtt::server::feed::Feed;
use crate::mqtt::server::{self, Listener, ListenerError};
use crate::mqtt::Ingress;
use crate::ops::http::{self, Endpoints};
use crate::ops::{Face, Metrics, Probes, Watch, WatchedSink};
use crate::pipeline::{self, LiveRouter};
use crate::sink::Sink;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long shutdown waits for in-flight messages to be stored and acked.
const DRAIN: Duration = Duration::from_secs(20);

#[derive(Debug, Error)]
pub enum AppError {
    /// The config is wrong or contradicts what the backend holds; exit code 2.
    #[error("{} problem(s) in the configuration", .0.len())]
    Invalid(Vec<Issue>),
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    #[error(transparent)]
    Mqtt(#[from] crate::mqtt::session::SessionError),
    #[error(transparent)]
    Listener(#[from] ListenerError),
    #[error("{0}")]
    Other(String),
}

/// A listener task and how to stop it.
struct Server {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    fn spawn<F: Future<Output = ()> + Send + 'static>(
        serve: impl FnOnce(CancellationToken) -> F,
    ) -> Server {
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(stop.clone()));
        Server { stop, task }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Starts the Kafka API listener when `kafka_listener` is set; returns it and the consumer
/// groups' offsets it keeps.
async fn start_kafka_listener(
    config: &Config,
    log: &Arc<Log>,
) -> Result<Option<(Server, Arc<GroupOffsets>)>, AppError> {
    let embedded = &config.log.embedded;
    let Some(addr) = embedded.kafka_listener else {
        return Ok(None);
    };
    let offsets = GroupOffsets::open(&embedded.dir)?;
    for damaged in offsets.damaged() {
        tracing::warn!(%damaged, "consumer-group offsets file skipped");
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        AppError::Other(format!(
            "log.embedded.kafka_listener: cannot listen on {addr}: {e}"
        ))
    })?;
    let security = crate::kafka_api::Security::load(embedded).map_err(AppError::Other)?;
    if let Some(warning) = embedded.kafka_exposure_warning() {
        tracing::warn!("{warning}");
    }
    let options = ServerOptions {
        advertised: embedded.advertised().map_err(AppError::Config)?,
        produce: embedded.kafka_produce,
        security,
        ..Default::default()
    };
    let offsets = Arc::new(offsets);
    let api = KafkaApi::new(log.clone(), offsets.clone(), options);
    tracing::info!(
        %addr,
        tls = embedded.kafka_tls.is_some(),
        sasl = embedded.kafka_auth.as_ref().map(|a| a.mechanism.name()),
        read_only = !embedded.kafka_produce,
        "Kafka API listening"
    );
    Ok(Some((
        Server::spawn(|stop| api.serve(listener, stop)),
        offsets,
    )))
}

/// Runs the gateway until `shutdown` resolves, then drains and stops. Each config from
/// `reloads` (see `reload::on_sighup`) replaces the routes, topics and dead-letter topic.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()>,
    mut reloads: mpsc::UnboundedReceiver<Config>,
    file: &Path,
) -> Result<(), AppError> {
    // rumqttc's rustls needs a process-wide crypto provider; a second install is harmless.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let Prepared { router, sink } = match prepare(&config, Access::Write).await {
        Ok(prepared) => prepared,
        Err(PrepareError::Invalid(issues)) => return Err(AppError::Invalid(issues)),
        Err(PrepareError::Sink(e)) => return Err(e.into()),
    };
    let Some(sink) = sink else {
        return Err(AppError::Other(
            "the sink was not opened for writing".into(),
        ));
    };
    // Bound before anything starts, so a port in use stops the start with a clear error.
    let http_listener = match config.http.listen {
        Some(addr) => Some(http::bind(addr).await.map_err(AppError::Other)?),
        None => None,
    };
    let (kafka, groups) = match sink.embedded_log() {
        Some(log) => match start_kafka_listener(&config, log).await? {
            Some((server, groups)) => (Some(server), Some(groups)),
            None => (None, None),
        },
        None => (None, None),
    };
    let watch = http_listener.as_ref().map(|_| Watch {
        metrics: Arc::new(Metrics::new()),
        appends: Default::default(),
    });
    let backend = sink.clone();
    let sink = WatchedSink::new(sink, watch.clone());
    let face = |face| watch.as_ref().map(|w| w.metrics.face(face));
    // One stream into the pipeline from both faces, holding everything either may have in
    // flight, so no face waits on the other.
    let capacity = config.mqtt.as_ref().map_or(0, |m| m.max_inflight as usize)
        + config.listener.as_ref().map_or(0, Listener::slots);
    let (tx, deliveries) = mpsc::channel(capacity.max(1));
    let ingress = match &config.mqtt {
        Some(mqtt) => Some(Ingress::start_into(
            mqtt,
            &router.subscriptions(),
            tx.clone(),
            face(Face::Client),
        )?),
        None => None,
    };
    let (egress_routes, _) = egress::compile(&config.egress);
    if let Some(log) = backend.embedded_log() {
        // Made now, so services can produce commands before the first delivery.
        for route in &egress_routes {
            let partitions = config.topics.get(&route.from).partitions;
            log.create_topic(&route.from, partitions)?;
        }
    }
    let listener = match &config.listener {
        Some(l) => {
            let (auth, tls) = server::load(l)?;
            let feed = match backend.embedded_log() {
                Some(log) if !egress_routes.is_empty() => Some(Arc::new(ListenerFeed::new(
                    egress_routes.clone(),
                    log.clone(),
                    &config.log.embedded.dir,
                    l.session_expiry_max.0,
                    watch.as_ref().map(|w| w.metrics.clone()),
                )) as Arc<dyn Feed>),
                _ => None,
            };
            Some(Listener::start(l, auth, tls, tx.clone(), face(Face::Listener), feed).await?)
        }
        None => None,
    };
    drop(tx);
    let ops = match (http_listener, &watch) {
        (Some(socket), Some(watch)) => {
            let addr = socket
                .local_addr()
                .map_or_else(|e| e.to_string(), |a| a.to_string());
            let mut probes = Probes::new(watch.appends.clone());
            if let Some(ingress) = &ingress {
                probes = probes.face(Face::Client.as_str(), ingress.connected());
            }
            if listener.is_some() {
                // Bound is up: it stays so while it runs.
                probes = probes.face(Face::Listener.as_str(), tokio::sync::watch::channel(true).1);
            }
            let endpoints = Arc::new(Endpoints {
                metrics: watch.metrics.clone(),
                probes,
                log: backend.embedded_log().cloned(),
                groups,
                buffer: backend.buffered().cloned(),
            });
            tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
            Some(Server::spawn(|stop| http::serve(socket, endpoints, stop)))
        }
        _ => None,
    };
    tracing::info!(backend = ?config.log.backend, routes = router.routes().len(), "tributary running");
    let (live, set_router) = LiveRouter::new(router.clone());
    let mut pipeline = tokio::spawn(pipeline::run(
        deliveries,
        live,
        sink.clone(),
        watch.as_ref().map(|w| w.metrics.clone()),
    ));

    // Egress reads when there is somewhere to deliver: the broker, or the listener's
    // subscribers (they read for themselves; the routes then make the dead letters).
    let listener_feed = config.listener.is_some() && backend.embedded_log().is_some();
    let egress = match &config.mqtt {
        _ if config.egress.is_empty() => None,
        None if !listener_feed => None,
        mqtt => {
            let routes = egress_routes;
            let from = match (backend.embedded_log(), mqtt) {
                (Some(log), _) => egress::Origin::Embedded {
                    log: log.clone(),
                    dir: config.log.embedded.dir.clone(),
                },
                (None, Some(mqtt)) => egress::Origin::Kafka {
                    kafka: config.log.kafka.clone(),
                    instance: mqtt.client_id.clone(),
                },
                (None, None) => {
                    return Err(AppError::Other(
                        "egress from Kafka needs the mqtt section".into(),
                    ))
                }
            };
            let publisher = match mqtt {
                Some(mqtt) => Some(BrokerPublisher::start(mqtt)?),
                None => None,
            };
            tracing::info!(
                routes = routes.len(),
                broker = publisher.is_some(),
                "egress running"
            );
            let wiring = egress::Wiring {
                from,
                sink: sink.clone(),
                partitions: Arc::new(backend.clone()),
                dead_letter_topic: config.dead_letter.topic.clone(),
                metrics: watch.as_ref().map(|w| w.metrics.clone()),
            };
            Some(Egress::start(routes, publisher, wiring).map_err(AppError::Other)?)
        }
    };
    let mut current = config;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down: finishing messages in flight");
                break;
            }
            result = &mut pipeline => {
                return Err(AppError::Other(format!("pipeline stopped unexpectedly: {result:?}")));
            }
            Some(new) = reloads.recv() => {
                let (applied, restart) = reload::merge(&current, &new);
                if !restart.is_empty() {
                    tracing::warn!(settings = ?restart, "these settings need a restart and were not applied");
                }
                match reload::router_for(&applied, &backend).await {
                    Ok(router) => {
                        let router = Arc::new(router);
                        if let Some(ingress) = &ingress {
                            ingress.resubscribe(&router.subscriptions());
                        }
                        tracing::info!(routes = router.routes().len(), "reloaded routes, topics and dead_letter");
                        set_router.send_replace(router);
                        current = applied;
                    }
                    Err(issues) => reload::log_refused(file, issues),
                }
            }
        }
    }
    if let Some(ingress) = &ingress {
        ingress.stop_reading();
    }
    if let Some(listener) = &listener {
        listener.stop_reading();
    }
    let drained = tokio::time::timeout(DRAIN, &mut pipeline).await;
    match &drained {
        Ok(Ok(stats)) => tracing::info!(?stats, "pipeline drained"),
        Ok(Err(e)) => tracing::error!(error = %e, "pipeline task failed"),
        Err(_) => {
            tracing::error!("messages still in flight after {DRAIN:?}; they stay unacked and the broker redelivers them");
            pipeline.abort();
        }
    }
    if let Some(egress) = egress {
        egress.stop().await;
    }
    if let Some(ingress) = ingress {
        ingress.disconnect(Duration::from_secs(5)).await;
    }
    if let Some(listener) = listener {
        listener.close(Duration::from_secs(5)).await;
    }
    // Both hold the log: stopped before it closes.
    for server in [kafka, ops].into_iter().flatten() {
        server.stop().await;
    }
    // The routers ask the sink for partition counts, and reloads use it: let them all go so
    // the sink can close (the embedded log then marks a clean shutdown).
    drop((router, set_router, backend));
    sink.close().await?;
    match drained {
        Ok(Ok(_)) => Ok(()),
        _ => Err(AppError::Other(
            "shutdown did not finish every message in flight".into(),
        )),
    }
}
