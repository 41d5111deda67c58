//! The forwarder of one buffered partition: ships the local log to Kafka in offset order and
//! moves its durable position only after Kafka's delivery report. One append is in flight at a
//! time, so order needs nothing more; after a crash it starts again at the stored position, so
//! Kafka sees at most one batch twice, and never misses one.

use crate::log::batch::DecodedRecord;
use crate::log::positions::Positions;
use crate::log::{Offset, PartitionShared};
use crate::record::{Header, Record};
use crate::route::partition::partition_for_key;
use crate::sink::kafka::KafkaSink;
use crate::sink::{Sink, SinkError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// At most this many records go to Kafka in one append.
const BATCH_RECORDS: usize = 5_000;
/// ... and at most about this many bytes.
const BATCH_BYTES: usize = 4 << 20;

/// How long a batch under way may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the sink and `tributary topics` read of a forwarder while it runs.
#[derive(Debug, Default)]
pub struct Progress {
    /// Every record below this offset is in Kafka.
    pub forwarded: AtomicU64,
}

pub struct Forwarder {
    pub part: Arc<PartitionShared>,
    pub kafka: KafkaSink,
    pub positions: Positions,
    pub dead_letter_topic: String,
    pub progress: Arc<Progress>,
}

impl Forwarder {
    /// Forwards until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let (topic, partition) = (self.part.topic.to_string(), self.part.partition);
        let mut position = match self.positions.load(&topic, partition) {
            Ok(stored) => stored.unwrap_or(Offset(0)).max(self.part.start_offset()),
            Err(e) => {
                tracing::error!(topic = %topic, partition, error = %e, "forwarded position unreadable: forwarding this partition from its start (duplicates in Kafka, nothing lost)");
                self.part.start_offset()
            }
        };
        self.progress.forwarded.store(position.0, Ordering::Relaxed);
        self.part.release_below(position);
        let mut end = self.part.subscribe();
        let mut failures = 0u32;
        loop {
            if *end.borrow_and_update() <= position.0 {
                tokio::select! {
                    changed = end.changed() => if changed.is_err() { return },
                    _ = shutdown.cancelled() => return,
                }
                continue;
            }
            // A batch under way gets a moment to finish at shutdown, so that a clean stop does
            // not send it again on the next start.
            let shipped = tokio::select! {
                shipped = self.ship(&topic, position) => shipped,
                _ = async { shutdown.cancelled().await; tokio::time::sleep(SHUTDOWN_GRACE).await } => return,
            };
            match shipped {
                Ok(next) => {
                    failures = 0;
                    position = next;
                    // An fsync or two: off the runtime's threads.
                    let (positions, t) = (self.positions.clone(), topic.clone());
                    let stored = tokio::task::spawn_blocking(move || {
                        positions.store(&t, partition, position)
                    })
                    .await
                    .unwrap_or_else(|e| Err(crate::log::LogError::Closed(e.to_string())));
                    if let Err(e) = stored {
                        // Kafka has the records; only the restart after a crash would send
                        // them again.
                        tracing::warn!(topic = %topic, partition, error = %e, "could not store the forwarded position");
                    }
                    self.progress.forwarded.store(position.0, Ordering::Relaxed);
                    self.part.release_below(position);
                }
                Err(e) => {
                    if failures == 0 || failures.is_power_of_two() {
                        tracing::warn!(topic = %topic, partition, position = position.0, error = %e, "forwarding to Kafka failed; the records stay in the buffer and are sent again");
                    }
                    failures = failures.saturating_add(1);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff(failures)) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    self.kafka.resume();
                }
            }
        }
    }

    /// Sends the records from `position` on (one batch) and returns the position after them.
    async fn ship(&self, topic: &str, position: Offset) -> Result<Offset, SinkError> {
        let part = self.part.clone();
        let decoded = tokio::task::spawn_blocking(move || read_batch(&part, position))
            .await
            .map_err(|e| SinkError::Unavailable(format!("reading the buffer: {e}")))??;
        let Some(last) = decoded.last().map(|r| r.offset) else {
            return Ok(position);
        };
        let partitions = self.kafka.topic_partitions(topic).await?;
        let local = self.part.partition;
        let records: Vec<Record> = decoded
            .into_iter()
            .map(|r| to_record(topic, local, partitions, r))
            .collect();
        match self.kafka.append(records.clone()).await {
            Ok(_) => {}
            Err(e) if !e.is_retryable() => self.one_by_one(records).await?,
            Err(e) => return Err(e),
        }
        Ok(Offset(last as u64 + 1))
    }

    /// A batch Kafka refused for good: each record alone, and the ones it refuses become dead
    /// letters (Kafka's dead-letter topic, with the reason) so the partition moves on.
    async fn one_by_one(&self, records: Vec<Record>) -> Result<(), SinkError> {
        for record in records {
            match self.kafka.append(vec![record.clone()]).await {
                Ok(_) => {}
                Err(e) if !e.is_retryable() => {
                    tracing::error!(topic = %record.topic, partition = record.partition, error = %e, "Kafka refused a buffered record for good; sending it to the dead-letter topic");
                    let partitions = self.kafka.topic_partitions(&self.dead_letter_topic).await?;
                    let dead = dead_letter(record, &self.dead_letter_topic, partitions, &e);
                    self.kafka.append(vec![dead]).await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Up to one batch of records from `position`, read from the local log.
fn read_batch(part: &PartitionShared, position: Offset) -> Result<Vec<DecodedRecord>, SinkError> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for record in part.records(position) {
        let record = record?;
        bytes += record.value.as_ref().map_or(0, |v| v.len()) + 64;
        out.push(record);
        if out.len() >= BATCH_RECORDS || bytes >= BATCH_BYTES {
            break;
        }
    }
    Ok(out)
}

/// The Kafka record for a buffered one. Its Kafka partition is its local one, unless Kafka's
/// count differs from the local (the topic was made while Kafka could not be asked): then a
/// keyed record goes where murmur2 puts it in Kafka, so a key still has one partition.
fn to_record(topic: &str, local: u32, partitions: u32, r: DecodedRecord) -> Record {
    let partition = match (&r.key, local < partitions) {
        (_, true) => local,
        (Some(key), false) => partition_for_key(key, partitions),
        (None, false) => local % partitions.max(1),
    };
    Record {
        route: Arc::from("forward"),
        topic: topic.to_string(),
        partition,
        key: r.key,
        value: r.value.unwrap_or_default(),
        headers: r
            .headers
            .into_iter()
            .map(|h| Header::new(h.key, h.value.unwrap_or_default()))
            .collect(),
        timestamp_ms: r.timestamp_ms,
        dead_letter: None,
    }
}

/// A dead letter for a buffered record Kafka refused: its headers plus `error`, its value cut to
/// its first KiB (the size may be why).
fn dead_letter(record: Record, topic: &str, partitions: u32, error: &SinkError) -> Record {
    let mut headers = record.headers;
    headers.push(Header::new("error", error.to_string()));
    headers.push(Header::new("route", record.route.to_string()));
    let value = record
        .value
        .slice(..crate::route::DEAD_LETTER_TRUNCATE.min(record.value.len()));
    Record {
        route: record.route,
        topic: topic.to_string(),
        partition: (record.partition) % partitions.max(1),
        key: record.key,
        value,
        headers,
        timestamp_ms: record.timestamp_ms,
        dead_letter: Some(crate::record::DeadLetterReason::SinkRejected),
    }
}

/// 100 ms doubling to 5 s.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis(100)
        .saturating_mul(1 << failures.min(6))
        .min(Duration::from_secs(5))
}
