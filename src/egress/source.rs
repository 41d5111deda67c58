//! Where egress reads: one small trait over the embedded log (a source per partition, woken by
//! appends) and a Kafka cluster (one consumer group per route, `tributary-egress-<route>`), so
//! one delivery loop serves both. A source hands out records in offset order per partition and
//! commits, durably, only when told that everything it handed out is delivered.

use crate::config::{EgressStart, KafkaConfig};
use crate::log::batch::{DecodedHeader, DecodedRecord};
use crate::log::positions::Positions;
use crate::log::{Offset, PartitionShared};
use crate::sink::kafka::{consumer_config, LogContext};
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset as KafkaOffset, TopicPartitionList};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A record and the partition it is in.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub partition: u32,
    pub record: DecodedRecord,
}

pub trait Source: Send {
    /// The next records (at most `max`), in order within each partition; waits until there are
    /// some. `None` once `stop` is cancelled. An empty round means only unreadable records were
    /// passed over: committing moves past them.
    fn next(
        &mut self,
        max: usize,
        stop: &CancellationToken,
    ) -> impl Future<Output = Option<Vec<SourceRecord>>> + Send;

    /// Where everything handed out so far ends: committed once all of it is delivered, while
    /// the source hands out more.
    fn checkpoint(&self) -> Checkpoint;

    /// Records not yet handed out, where the source can tell.
    fn lag(&self) -> Option<u64>;
}

/// A position to commit once every record before it is delivered.
pub enum Checkpoint {
    /// One partition of the embedded log: the offset after the last record handed out.
    Embedded {
        route: Arc<str>,
        positions: Arc<Positions>,
        topic: Arc<str>,
        partition: u32,
        next: Offset,
    },
    /// A Kafka consumer's offsets, per partition.
    Kafka {
        route: Arc<str>,
        consumer: Arc<StreamConsumer<LogContext>>,
        offsets: TopicPartitionList,
    },
}

impl Checkpoint {
    /// Makes it durable, retrying until it is (or until `stop`).
    pub async fn commit(self, stop: &CancellationToken) {
        let mut said = false;
        loop {
            let committed = match &self {
                Checkpoint::Embedded {
                    positions,
                    topic,
                    partition,
                    next,
                    ..
                } => {
                    let (positions, topic, p, next) =
                        (positions.clone(), topic.clone(), *partition, *next);
                    tokio::task::spawn_blocking(move || positions.store(&topic, p, next))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                }
                Checkpoint::Kafka {
                    consumer, offsets, ..
                } => {
                    let (consumer, offsets) = (consumer.clone(), offsets.clone());
                    tokio::task::spawn_blocking(move || consumer.commit(&offsets, CommitMode::Sync))
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                }
            };
            match committed {
                Ok(()) => return,
                Err(e) => {
                    if !said {
                        let route = match &self {
                            Checkpoint::Embedded { route, .. }
                            | Checkpoint::Kafka { route, .. } => route,
                        };
                        tracing::error!(%route, error = %e, "cannot commit the egress position; retrying");
                        said = true;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = stop.cancelled() => return,
                    }
                }
            }
        }
    }
}

/// One partition of the embedded log, with its committed position in `@egress/<route>/`.
pub struct EmbeddedSource {
    route: Arc<str>,
    partition: Arc<PartitionShared>,
    positions: Arc<Positions>,
    appended: watch::Receiver<u64>,
    /// The offset after the last record handed out.
    next: Offset,
}

impl EmbeddedSource {
    /// Resumes at the committed position; a route seen the first time starts at `start` and
    /// commits that at once (so `latest` means the end when the route first ran).
    pub async fn open(
        route: Arc<str>,
        partition: Arc<PartitionShared>,
        positions: Arc<Positions>,
        start: EgressStart,
        stop: &CancellationToken,
    ) -> Option<EmbeddedSource> {
        let (topic, p) = (partition.topic.clone(), partition.partition);
        let stored = loop {
            match positions.load(&topic, p) {
                Ok(position) => break position,
                Err(e) => {
                    tracing::error!(%route, %topic, partition = p, error = %e, "egress position unreadable; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                        _ = stop.cancelled() => return None,
                    }
                }
            }
        };
        let appended = partition.subscribe();
        let mut source = EmbeddedSource {
            route,
            next: Offset(0),
            partition,
            positions,
            appended,
        };
        source.next = match stored {
            Some(position) => position.max(source.partition.start_offset()),
            None => {
                source.next = match start {
                    EgressStart::Earliest => source.partition.start_offset(),
                    EgressStart::Latest => source.partition.end_offset(),
                };
                source.checkpoint().commit(stop).await;
                source.next
            }
        };
        Some(source)
    }
}

impl Source for EmbeddedSource {
    async fn next(&mut self, max: usize, stop: &CancellationToken) -> Option<Vec<SourceRecord>> {
        loop {
            let mut round = Vec::new();
            let mut records = self.partition.records(self.next);
            for record in records.by_ref() {
                match record {
                    Ok(record) => {
                        round.push(SourceRecord {
                            partition: self.partition.partition,
                            record,
                        });
                        if round.len() == max {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(route = %self.route, topic = %self.partition.topic, partition = self.partition.partition, error = %e, "egress passes over records it cannot read")
                    }
                }
            }
            let next = records.position();
            drop(records);
            if !round.is_empty() || next > self.next {
                self.next = next;
                return Some(round);
            }
            tokio::select! {
                changed = self.appended.changed() => if changed.is_err() { return None },
                _ = stop.cancelled() => return None,
            }
        }
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint::Embedded {
            route: self.route.clone(),
            positions: self.positions.clone(),
            topic: self.partition.topic.clone(),
            partition: self.partition.partition,
            next: self.next,
        }
    }

    fn lag(&self) -> Option<u64> {
        Some(self.partition.end_offset().0.saturating_sub(self.next.0))
    }
}

/// A topic of a Kafka cluster, read by the consumer group `tributary-egress-<route>`; offsets
/// are committed only after delivery (never automatically).
pub struct KafkaSource {
    route: Arc<str>,
    topic: String,
    consumer: Arc<StreamConsumer<LogContext>>,
    /// Per partition, the offset after the last record handed out.
    handed: BTreeMap<u32, i64>,
}

impl KafkaSource {
    /// `instance` names this gateway among the group's members (its MQTT client id).
    pub fn open(
        route: Arc<str>,
        topic: &str,
        kafka: &KafkaConfig,
        instance: &str,
        start: EgressStart,
    ) -> Result<KafkaSource, String> {
        let group = format!("tributary-egress-{route}");
        let consumer: StreamConsumer<LogContext> =
            consumer_config(kafka, &group, instance, start == EgressStart::Earliest)
                .create_with_context(LogContext::default())
                .map_err(|e| format!("egress consumer for {topic}: {e}"))?;
        consumer
            .subscribe(&[topic])
            .map_err(|e| format!("egress consumer for {topic}: {e}"))?;
        Ok(KafkaSource {
            route,
            topic: topic.to_string(),
            consumer: Arc::new(consumer),
            handed: BTreeMap::new(),
        })
    }

    fn take(&mut self, message: &rdkafka::message::BorrowedMessage<'_>) -> SourceRecord {
        let partition = u32::try_from(message.partition()).unwrap_or(0);
        self.handed.insert(partition, message.offset() + 1);
        let headers = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| DecodedHeader {
                        key: h.key.to_string(),
                        value: h.value.map(bytes::Bytes::copy_from_slice),
                    })
                    .collect()
            })
            .unwrap_or_default();
        SourceRecord {
            partition,
            record: DecodedRecord {
                offset: message.offset(),
                timestamp_ms: message.timestamp().to_millis().unwrap_or(0),
                key: message.key().map(bytes::Bytes::copy_from_slice),
                value: message.payload().map(bytes::Bytes::copy_from_slice),
                headers,
            },
        }
    }
}

impl Source for KafkaSource {
    async fn next(&mut self, max: usize, stop: &CancellationToken) -> Option<Vec<SourceRecord>> {
        let consumer = self.consumer.clone();
        let mut round = Vec::new();
        loop {
            let first = tokio::select! {
                m = consumer.recv() => m,
                _ = stop.cancelled() => return None,
            };
            match first {
                Ok(m) => {
                    round.push(self.take(&m));
                    break;
                }
                Err(e) => {
                    tracing::warn!(route = %self.route, topic = %self.topic, error = %e, "egress consumer");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        // Then whatever is already fetched, without waiting.
        while round.len() < max {
            match consumer.recv().now_or_never() {
                Some(Ok(m)) => round.push(self.take(&m)),
                _ => break,
            }
        }
        Some(round)
    }

    fn checkpoint(&self) -> Checkpoint {
        let mut offsets = TopicPartitionList::new();
        for (&p, &next) in &self.handed {
            let _ = offsets.add_partition_offset(&self.topic, p as i32, KafkaOffset::Offset(next));
        }
        Checkpoint::Kafka {
            route: self.route.clone(),
            consumer: self.consumer.clone(),
            offsets,
        }
    }

    fn lag(&self) -> Option<u64> {
        None
    }
}
