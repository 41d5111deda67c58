//! Buffered delivery to Kafka (`log.kafka.delivery: buffered`): records go into a local
//! embedded log under `buffer.dir` (the same log code: group commit, recovery), and an append
//! resolves at its fsync, so MQTT acks at local disk speed. A forwarder per partition ships the
//! local log to Kafka in offset order through the Kafka sink and stores its position durably
//! only after Kafka's delivery report; shipped segments are deleted.
//!
//! Kafka may be away for any length of time: the buffer grows, up to `buffer.max_bytes`, and
//! then appends fail (retryably) so acks and reading stop until the forwarders free room.
//! Nothing is dropped.

mod forwarder;

use super::embedded::EmbeddedSink;
use super::kafka::KafkaSink;
use super::{Sink, SinkError};
use crate::config::Config;
use crate::log::positions::Positions;
use crate::log::{Log, LogOptions, Offset};
use crate::record::Record;
use crate::route::PartitionCounts;
use forwarder::{Forwarder, Progress};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One buffered partition's progress, for `tributary topics` and the lag metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lag {
    pub topic: String,
    pub partition: u32,
    /// Every record below this offset is in Kafka.
    pub forwarded: Offset,
    /// The local log's end.
    pub end: Offset,
}

impl Lag {
    pub fn records(&self) -> u64 {
        self.end.0.saturating_sub(self.forwarded.0)
    }
}

/// The buffered sink. Clones share the buffer and its forwarders.
#[derive(Clone, Debug)]
pub struct BufferedSink {
    local: EmbeddedSink,
    kafka: KafkaSink,
    max_bytes: u64,
    forwarders: Arc<Forwarders>,
}

#[derive(Debug)]
struct Forwarders {
    running: Mutex<HashMap<(String, u32), Arc<Progress>>>,
    positions: Positions,
    dead_letter_topic: String,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl BufferedSink {
    /// Opens (and recovers) the buffer, connects to Kafka and starts a forwarder for every
    /// partition the buffer holds.
    pub async fn open(config: &Config) -> Result<BufferedSink, SinkError> {
        let kafka_config = &config.log.kafka;
        let embedded = &config.log.embedded;
        let buffer = &kafka_config.buffer;
        // Segments of at most a sixteenth of the buffer: only sealed segments are deleted once
        // shipped, so a full buffer that Kafka drained falls well below its limit.
        let segment_bytes = embedded
            .segment_bytes
            .0
            .min((buffer.max_bytes.0 / 16).max(64 << 10));
        let options = LogOptions {
            dir: buffer.dir.clone(),
            segment_bytes,
            fsync: embedded.fsync,
            fsync_interval: embedded.fsync_interval.0,
            // Only shipping frees the buffer: never time or size.
            retention_time: None,
            retention_bytes: None,
            retention_check: Duration::from_secs(1),
            topics: config.topics.clone(),
        };
        let log = Arc::new(Log::open(options).await?);
        let kafka =
            KafkaSink::open(kafka_config, &config.topics, &super::literal_topics(config)).await?;
        let sink = BufferedSink {
            local: EmbeddedSink::new(log.clone()),
            kafka,
            max_bytes: buffer.max_bytes.0,
            forwarders: Arc::new(Forwarders {
                running: Mutex::new(HashMap::new()),
                positions: Positions::forwarded(&buffer.dir),
                dead_letter_topic: config.dead_letter.topic.clone(),
                shutdown: CancellationToken::new(),
                tasks: TaskTracker::new(),
            }),
        };
        for (topic, partitions) in log.partition_counts() {
            for partition in 0..partitions {
                sink.forward(&topic, partition);
            }
        }
        Ok(sink)
    }

    /// Starts the forwarder of `topic`/`partition` unless it runs already.
    fn forward(&self, topic: &str, partition: u32) {
        let mut running = self
            .forwarders
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if running.contains_key(&(topic.to_string(), partition)) {
            return;
        }
        let Some(part) = self.local.log().partition(topic, partition) else {
            return;
        };
        let progress = Arc::new(Progress::default());
        running.insert((topic.to_string(), partition), progress.clone());
        let forwarder = Forwarder {
            part,
            kafka: self.kafka.clone(),
            positions: self.forwarders.positions.clone(),
            dead_letter_topic: self.forwarders.dead_letter_topic.clone(),
            progress,
        };
        self.forwarders
            .tasks
            .spawn(forwarder.run(self.forwarders.shutdown.clone()));
    }

    /// Every buffered partition's forwarded position and end.
    pub fn lag(&self) -> Vec<Lag> {
        let running = self
            .forwarders
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut lags: Vec<Lag> = running
            .iter()
            .filter_map(|((topic, partition), progress)| {
                let part = self.local.log().partition(topic, *partition)?;
                Some(Lag {
                    topic: topic.clone(),
                    partition: *partition,
                    forwarded: Offset(progress.forwarded.load(Ordering::Relaxed)),
                    end: part.end_offset(),
                })
            })
            .collect();
        lags.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        lags
    }

    /// Takes a reloaded config's `topics`, for the buffer and Kafka alike.
    pub fn set_topics(&self, topics: &crate::config::TopicsConfig) {
        self.local.log().set_topics(topics);
        self.kafka.set_topics(topics);
    }

    /// The buffer's bytes on disk.
    pub fn buffered_bytes(&self) -> u64 {
        self.local.log().size_bytes()
    }
}

impl PartitionCounts for BufferedSink {
    /// The buffer's count for a topic it holds (its partitions are Kafka's); Kafka's otherwise.
    fn partitions(&self, topic: &str) -> u32 {
        self.local
            .log()
            .existing_partitions(topic)
            .unwrap_or_else(|| self.kafka.partitions(topic))
    }
}

impl Sink for BufferedSink {
    fn append(
        &self,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Vec<Offset>, SinkError>> + Send + 'static {
        let append = self.admit(&records).map(|()| {
            let touched: BTreeSet<(String, u32)> = records
                .iter()
                .map(|r| (r.topic.clone(), r.partition))
                .collect();
            let append = self.local.append(records);
            for (topic, partition) in touched {
                self.forward(&topic, partition);
            }
            append
        });
        async move { append?.await }
    }

    fn resume(&self) {
        self.local.resume();
    }

    async fn partition_counts(&self) -> Result<BTreeMap<String, u32>, SinkError> {
        self.local.partition_counts().await
    }

    async fn close(self) -> Result<(), SinkError> {
        self.forwarders.shutdown.cancel();
        self.forwarders.tasks.close();
        self.forwarders.tasks.wait().await;
        let BufferedSink { local, kafka, .. } = self;
        local.close().await?;
        kafka.close().await
    }
}

impl BufferedSink {
    /// Whether `records` may go into the buffer now: it has room, and each record's topic is
    /// there (made with Kafka's partition count, so local and Kafka partitions agree).
    fn admit(&self, records: &[Record]) -> Result<(), SinkError> {
        let bytes = self.buffered_bytes();
        if bytes >= self.max_bytes {
            return Err(SinkError::BufferFull {
                bytes,
                max: self.max_bytes,
            });
        }
        let log = self.local.log();
        let topics: BTreeSet<&str> = records.iter().map(|r| r.topic.as_str()).collect();
        for topic in topics {
            if log.existing_partitions(topic).is_none() {
                log.create_topic(topic, self.kafka.partitions(topic))?;
            }
        }
        Ok(())
    }
}
