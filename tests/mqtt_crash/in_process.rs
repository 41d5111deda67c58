//! A sink that fails for a while, and the gateway's pipeline run in process over it.

use crate::publish::ROUTE;
use crate::support::{self, Gateway, Mosquitto, Stored};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tributary::log::{Log, LogError, LogOptions, Offset};
use tributary::record::Record;
use tributary::route::Router;
use tributary::sink::embedded::EmbeddedSink;
use tributary::sink::{Sink, SinkError};

/// The embedded sink, failing every append made while `failing` is set with a retryable error,
/// reported after `delay` (as a sink that times out would: appends keep being made meanwhile).
/// Like any sink (the `Sink` contract), once an append fails it refuses the later ones too
/// until `resume`. While `refusing` is set, every append fails for good (not retryable), dead
/// letters included, as a sink that rejects whatever it is sent would.
#[derive(Clone)]
pub(crate) struct FlakySink {
    pub(crate) inner: EmbeddedSink,
    pub(crate) failing: Arc<AtomicBool>,
    pub(crate) refusing: Arc<AtomicBool>,
    pub(crate) fenced: Arc<AtomicBool>,
    pub(crate) delay: Duration,
    pub(crate) refused: Arc<AtomicU64>,
}

impl FlakySink {
    pub(crate) fn new(inner: EmbeddedSink, delay: Duration) -> Self {
        FlakySink {
            inner,
            failing: Arc::new(AtomicBool::new(false)),
            refusing: Arc::new(AtomicBool::new(false)),
            fenced: Arc::new(AtomicBool::new(false)),
            delay,
            refused: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Sink for FlakySink {
    fn append(
        &self,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Vec<Offset>, SinkError>> + Send + 'static {
        if self.failing.load(Ordering::SeqCst) {
            self.fenced.store(true, Ordering::SeqCst);
        }
        let append = if self.refusing.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Err(SinkError::Log(LogError::TooLarge(
                "injected: refused for good".into(),
            )))
        } else if self.fenced.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::Relaxed);
            Err(SinkError::Log(LogError::io(
                Path::new("flaky-sink"),
                std::io::Error::other("injected fault"),
            )))
        } else {
            Ok(self.inner.append(records))
        };
        let delay = self.delay;
        async move {
            match append {
                Ok(append) => append.await,
                Err(e) => {
                    tokio::time::sleep(delay).await;
                    Err(e)
                }
            }
        }
    }

    fn resume(&self) {
        if !self.failing.load(Ordering::SeqCst) {
            self.fenced.store(false, Ordering::SeqCst);
        }
        self.inner.resume();
    }

    async fn partition_counts(&self) -> Result<BTreeMap<String, u32>, SinkError> {
        self.inner.partition_counts().await
    }

    async fn close(self) -> Result<(), SinkError> {
        self.inner.close().await
    }
}

/// The in-process gateway (what `app::run` wires) over a [`FlakySink`], on a broker of its own.
pub(crate) struct InProcess {
    pub(crate) broker: Mosquitto,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ingress: tributary::mqtt::Ingress,
    pub(crate) acker: Arc<tributary::mqtt::Acker>,
    pub(crate) pipeline: tokio::task::JoinHandle<tributary::pipeline::PipelineStats>,
    pub(crate) log: Arc<Log>,
    pub(crate) failing: Arc<AtomicBool>,
    pub(crate) refusing: Arc<AtomicBool>,
    pub(crate) refused: Arc<AtomicU64>,
}

impl InProcess {
    pub(crate) async fn start(
        client_id: &str,
        max_inflight: usize,
        fail_delay: Duration,
    ) -> InProcess {
        let broker = Mosquitto::start();
        let dir = tempfile::tempdir().unwrap();
        let yaml = Gateway::config(
            &broker.url(),
            client_id,
            &format!(", max_inflight: {max_inflight}"),
            ROUTE,
        )
        .replace("DATA_DIR", &dir.path().join("data").display().to_string());
        let path = dir.path().join("bridge.yaml");
        std::fs::write(&path, yaml).unwrap();
        let mut config = tributary::config::load(&path).expect("valid config");
        config.mqtt.as_mut().expect("mqtt section").url = broker.url();
        let log = Arc::new(
            Log::open(LogOptions::new(&config.log.embedded, &config.topics))
                .await
                .unwrap(),
        );
        let sink = FlakySink::new(EmbeddedSink::new(log.clone()), fail_delay);
        let (failing, refusing, refused) = (
            sink.failing.clone(),
            sink.refusing.clone(),
            sink.refused.clone(),
        );
        let partitions = Arc::new(EmbeddedSink::new(log.clone()));
        let router = Arc::new(Router::new(&config, partitions).expect("routes"));
        let (ingress, deliveries) = tributary::mqtt::Ingress::start(
            config.mqtt.as_ref().expect("mqtt section"),
            &router.subscriptions(),
            None,
        )
        .unwrap();
        let acker = ingress.acker();
        let pipeline = tokio::spawn(tributary::pipeline::run(deliveries, router, sink, None));
        let mut connected = ingress.connected();
        tokio::time::timeout(Duration::from_secs(10), connected.wait_for(|c| *c))
            .await
            .expect("connected in time")
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await; // the SUBSCRIBE follows the CONNACK
        InProcess {
            broker,
            dir,
            ingress,
            acker,
            pipeline,
            log,
            failing,
            refusing,
            refused,
        }
    }

    pub(crate) fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Records stored now (read from disk on a blocking thread).
    pub(crate) async fn stored(&self) -> usize {
        let data = self.data();
        tokio::task::spawn_blocking(move || support::count_records(&data, "telemetry"))
            .await
            .unwrap()
    }

    /// Stops as `app::run` does: stop reading, drain, disconnect, close the log.
    pub(crate) async fn stop(
        self,
    ) -> (
        tributary::pipeline::PipelineStats,
        BTreeMap<u32, Vec<Stored>>,
    ) {
        self.ingress.stop_reading();
        let stats = tokio::time::timeout(Duration::from_secs(20), self.pipeline)
            .await
            .expect("pipeline drains")
            .unwrap();
        self.ingress.disconnect(Duration::from_secs(5)).await;
        match Arc::try_unwrap(self.log) {
            Ok(log) => log.close().await.unwrap(),
            Err(_) => panic!("log still shared after the pipeline ended"),
        }
        let data = self.dir.path().join("data");
        let records = tokio::task::spawn_blocking(move || support::read_topic(&data, "telemetry"))
            .await
            .unwrap();
        drop(self.broker);
        (stats, records)
    }
}

/// Samples `acker.inflight()` every millisecond until `stop`: (max overall, max while failing).
pub(crate) fn sample_inflight(
    acker: Arc<tributary::mqtt::Acker>,
    failing: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, usize, u64)> {
    tokio::spawn(async move {
        let (mut max, mut max_failing, mut samples) = (0, 0, 0u64);
        while !stop.load(Ordering::Relaxed) {
            let n = acker.inflight();
            max = max.max(n);
            if failing.load(Ordering::Relaxed) {
                max_failing = max_failing.max(n);
            }
            samples += 1;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        (max, max_failing, samples)
    })
}
