//! Sinks: where records go. The pipeline appends through the [`Sink`] trait and acks MQTT
//! messages once the sink says their records are durable. Two implementations: the embedded
//! log ([`embedded::EmbeddedSink`]) and, later, a Kafka cluster. Both pass the same
//! conformance suite (`tests/sink_conformance.rs`).
//!
//! [`open`] and [`inspect`] are the one place that knows which backend `log.backend` names.

pub mod buffered;
pub mod embedded;
pub mod kafka;

use crate::config::{Backend, Config, KafkaDelivery, LogConfig, TopicsConfig};
use crate::log::{Log, LogError, LogOptions, LogReader, Offset};
use crate::record::Record;
use crate::route::PartitionCounts;
use buffered::BufferedSink;
use embedded::EmbeddedSink;
use futures::future::Either;
use kafka::KafkaSink;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum SinkError {
    #[error(transparent)]
    Log(#[from] LogError),
    /// The config names a backend this build cannot open.
    #[error("{0}")]
    Unavailable(String),
    #[error("kafka: {message}")]
    Kafka { message: String, permanent: bool },
    /// An earlier append failed: this one was not submitted, so that none is stored ahead of
    /// the failed one (see [`Sink::resume`]).
    #[error("not submitted: an earlier append failed and is retried first")]
    Fenced,
    /// The buffer of `delivery: buffered` is full: acks and reading stop until the forwarders
    /// ship enough to Kafka.
    #[error("the Kafka buffer is full ({bytes} of log.kafka.buffer.max_bytes {max} bytes): waiting for Kafka to take records")]
    BufferFull { bytes: u64, max: u64 },
}

/// The backend `log.backend` names, opened for writing.
#[derive(Debug, Clone)]
pub enum AnySink {
    Embedded(EmbeddedSink),
    Kafka(KafkaSink),
    Buffered(BufferedSink),
}

/// Opens the configured backend for writing: for the embedded log (and the Kafka buffer),
/// takes its lock and recovers it.
pub async fn open(config: &Config) -> Result<AnySink, SinkError> {
    let log = &config.log;
    match (log.backend, log.kafka.delivery) {
        (Backend::Embedded, _) => {
            let opened = Log::open(LogOptions::new(&log.embedded, &config.topics)).await?;
            Ok(AnySink::Embedded(EmbeddedSink::new(Arc::new(opened))))
        }
        (Backend::Kafka, KafkaDelivery::Direct) => Ok(AnySink::Kafka(
            KafkaSink::open(&log.kafka, &config.topics, &literal_topics(config)).await?,
        )),
        (Backend::Kafka, KafkaDelivery::Buffered) => {
            Ok(AnySink::Buffered(BufferedSink::open(config).await?))
        }
    }
}

/// The topics a config names outright: each route's `to` without a template, and the
/// dead-letter topic. A Kafka cluster gets them at start.
pub fn literal_topics(config: &Config) -> Vec<String> {
    let mut topics: Vec<String> = config
        .routes
        .iter()
        .map(|r| r.to.clone())
        .filter(|to| !to.contains('{'))
        .chain(std::iter::once(config.dead_letter.topic.clone()))
        .collect();
    topics.sort();
    topics.dedup();
    topics
}

/// The topics the configured backend holds, read without opening it for writing (no lock, no
/// recovery), as `check` needs while `run` may be writing. A Kafka cluster is not asked: `check`
/// works offline, and Kafka's counts win at run time anyway.
pub fn inspect(log: &LogConfig, topics: &TopicsConfig) -> Result<Inspected, SinkError> {
    let existing = match log.backend {
        Backend::Embedded if log.embedded.dir.is_dir() => {
            LogReader::open(&log.embedded.dir)?.topic_names().clone()
        }
        Backend::Embedded | Backend::Kafka => BTreeMap::new(),
    };
    Ok(Inspected {
        existing,
        topics: topics.clone(),
    })
}

/// A backend's topics as they were when inspected.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// Partition counts of the topics that exist.
    pub existing: BTreeMap<String, u32>,
    /// The counts topics still to be created get.
    topics: TopicsConfig,
}

impl PartitionCounts for Inspected {
    fn partitions(&self, topic: &str) -> u32 {
        match self.existing.get(topic) {
            Some(&n) => n,
            None => self.topics.get(topic).partitions,
        }
    }
}

impl SinkError {
    /// A short, fixed name for why: the `reason` label of `tributary_sink_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            SinkError::Unavailable(_) => "unavailable",
            SinkError::Kafka {
                permanent: false, ..
            } => "kafka",
            SinkError::Kafka {
                permanent: true, ..
            } => "kafka_rejected",
            SinkError::Fenced => "fenced",
            SinkError::BufferFull { .. } => "buffer_full",
            SinkError::Log(e) => match e {
                LogError::Io { .. } => "io",
                LogError::Corrupt { .. } => "corrupt",
                LogError::Locked { .. } => "locked",
                LogError::OffsetOutOfRange { .. } => "offset_out_of_range",
                LogError::NoSuchPartition { .. } => "no_such_partition",
                LogError::UnknownTopic(_) => "unknown_topic",
                LogError::InvalidTopic(_) => "invalid_topic",
                LogError::TooLarge(_) => "too_large",
                LogError::Closed(_) => "closed",
                LogError::Undecodable { .. } => "undecodable",
                LogError::ReadOnly { .. } => "read_only",
            },
        }
    }

    /// Whether trying again later may succeed (a full disk, a broker away) rather than never
    /// (a record too large to store).
    pub fn is_retryable(&self) -> bool {
        match self {
            SinkError::Unavailable(_) => false,
            SinkError::Kafka { permanent, .. } => !permanent,
            SinkError::Fenced | SinkError::BufferFull { .. } => true,
            SinkError::Log(e) => !matches!(
                e,
                LogError::TooLarge(_)
                    | LogError::InvalidTopic(_)
                    | LogError::NoSuchPartition { .. }
            ),
        }
    }
}

/// Appends records durably.
pub trait Sink: Send + Sync + 'static {
    /// Appends `records` (any topics and partitions) and resolves once every one is durable,
    /// with each record's offset in input order. Records are submitted when `append` is
    /// called, not when its future is first polled: calls made one after another are stored in
    /// that order within each partition. On error, none of them may be treated as stored.
    fn append(
        &self,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Vec<Offset>, SinkError>> + Send + 'static;

    /// After an append fails, the sink refuses every later append to that partition (so none
    /// is stored ahead of the failed one) until this call: the caller has seen the failure, has
    /// nothing in flight, and will retry in arrival order.
    fn resume(&self);

    /// Whether one append may carry the records of many messages. False for a sink whose failed
    /// append may still have stored some of its records (Kafka: a record refused at delivery
    /// while the others went in): retrying every message of it would store those twice.
    fn takes_batches(&self) -> bool {
        true
    }

    /// Partition counts of the topics that exist already: they win over the config.
    fn partition_counts(
        &self,
    ) -> impl Future<Output = Result<BTreeMap<String, u32>, SinkError>> + Send;

    /// Finishes what is in flight and releases the backend.
    fn close(self) -> impl Future<Output = Result<(), SinkError>> + Send;
}

impl AnySink {
    /// Takes a reloaded config's `topics`: the partition counts of topics created from now on.
    pub fn set_topics(&self, topics: &TopicsConfig) {
        match self {
            AnySink::Embedded(sink) => sink.log().set_topics(topics),
            AnySink::Kafka(sink) => sink.set_topics(topics),
            AnySink::Buffered(sink) => sink.set_topics(topics),
        }
    }

    /// The Kafka buffer of `delivery: buffered`, for its forward lag.
    pub fn buffered(&self) -> Option<&BufferedSink> {
        match self {
            AnySink::Buffered(sink) => Some(sink),
            _ => None,
        }
    }

    /// The embedded log, which the Kafka API listener serves.
    pub fn embedded_log(&self) -> Option<&Arc<Log>> {
        match self {
            AnySink::Embedded(sink) => Some(sink.log()),
            AnySink::Kafka(_) | AnySink::Buffered(_) => None,
        }
    }
}

impl PartitionCounts for AnySink {
    fn partitions(&self, topic: &str) -> u32 {
        match self {
            AnySink::Embedded(sink) => sink.partitions(topic),
            AnySink::Kafka(sink) => sink.partitions(topic),
            AnySink::Buffered(sink) => sink.partitions(topic),
        }
    }
}

impl Sink for AnySink {
    fn append(
        &self,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Vec<Offset>, SinkError>> + Send + 'static {
        match self {
            AnySink::Embedded(sink) => Either::Left(sink.append(records)),
            AnySink::Kafka(sink) => Either::Right(Either::Left(sink.append(records))),
            AnySink::Buffered(sink) => Either::Right(Either::Right(sink.append(records))),
        }
    }

    fn resume(&self) {
        match self {
            AnySink::Embedded(sink) => sink.resume(),
            AnySink::Kafka(sink) => sink.resume(),
            AnySink::Buffered(sink) => sink.resume(),
        }
    }

    fn takes_batches(&self) -> bool {
        match self {
            AnySink::Embedded(sink) => sink.takes_batches(),
            AnySink::Kafka(sink) => sink.takes_batches(),
            AnySink::Buffered(sink) => sink.takes_batches(),
        }
    }

    async fn partition_counts(&self) -> Result<BTreeMap<String, u32>, SinkError> {
        match self {
            AnySink::Embedded(sink) => sink.partition_counts().await,
            AnySink::Kafka(sink) => sink.partition_counts().await,
            AnySink::Buffered(sink) => sink.partition_counts().await,
        }
    }

    async fn close(self) -> Result<(), SinkError> {
        match self {
            AnySink::Embedded(sink) => sink.close().await,
            AnySink::Kafka(sink) => sink.close().await,
            AnySink::Buffered(sink) => sink.close().await,
        }
    }
}
