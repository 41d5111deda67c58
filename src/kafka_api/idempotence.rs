//! Idempotent producers over the log: producer ids for InitProducerId, and each produced batch
//! of a producer checked against its partition's [`PartitionProducers`] and stored at most once.
//!
//! - A partition's state is built on its first idempotent batch since the listener started,
//!   from the headers of the batches stored in its last [`REBUILD_RECORDS`] offsets (Kafka
//!   snapshots its producer state; here the cost is bounded by reading at most that many
//!   records once per partition after a restart). A producer whose last batch is older than
//!   that is unknown again, and Kafka too accepts any sequence from an unknown producer.
//! - Per (partition, producer) one batch at a time: check, append, wait until durable, record.
//!   The state changes only for a durable batch, and a retry that arrives on a new connection
//!   while the first attempt is still being written waits for it and is then a duplicate.
//!   Different producers of a partition still share the log's group commit. One connection's
//!   requests are answered one after the other (`connection`), so a producer's batches on it
//!   are checked in the order sent even with several requests in flight.
//! - Producer ids start at the time in microseconds (and above any id found by a rebuild):
//!   unique across restarts unless more than a million ids a second were handed out.

use super::producers::{Decision, PartitionProducers};
use crate::log::batch::BatchHeader;
use crate::log::partition::PartitionShared;
use crate::log::{Log, Offset};
use bytes::Bytes;
use kafka_protocol::ResponseError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

/// How far back (in offsets) a partition's producer state is rebuilt from.
pub const REBUILD_RECORDS: u64 = 1_000_000;

/// Why a batch was not stored: the error to answer with, and a message.
pub type Refusal = (ResponseError, String);

/// The idempotent producers of every partition, and the next producer id.
pub struct Producers {
    next_id: AtomicI64,
    partitions: Mutex<HashMap<(String, u32), Arc<Partition>>>,
}

/// One partition: its state (built on first use) and a lock per producer.
#[derive(Default)]
struct Partition {
    state: tokio::sync::OnceCell<Mutex<PartitionProducers>>,
    producers: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<()>>>>,
}

impl Default for Producers {
    fn default() -> Self {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as i64);
        Producers {
            next_id: AtomicI64::new(micros),
            partitions: Mutex::default(),
        }
    }
}

/// The partition's producer state from the headers of its last [`REBUILD_RECORDS`] offsets.
pub fn rebuild(shared: &PartitionShared) -> Result<PartitionProducers, crate::log::LogError> {
    let end = shared.end_offset().0;
    let from = shared
        .start_offset()
        .0
        .max(end.saturating_sub(REBUILD_RECORDS));
    let mut state = PartitionProducers::default();
    for batch in shared.batches(Offset(from)) {
        state.replay(&batch?.header);
    }
    Ok(state)
}

impl Producers {
    /// A producer id never handed out before.
    pub fn next_producer_id(&self) -> i64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn partition(&self, topic: &str, partition: u32) -> Arc<Partition> {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((topic.to_string(), partition))
            .or_default()
            .clone()
    }

    /// Stores `batch` (one batch, `header` its header, of producer id >= 0) unless it is a
    /// duplicate or out of order: the base offset it is stored at, the original one for a
    /// duplicate.
    pub async fn append(
        &self,
        log: &Log,
        (topic, partition): (&str, u32),
        header: BatchHeader,
        batch: Bytes,
    ) -> Result<i64, Refusal> {
        let p = self.partition(topic, partition);
        let state = p
            .state
            .get_or_try_init(|| async {
                let state = match log.partition(topic, partition) {
                    None => PartitionProducers::default(),
                    Some(shared) => tokio::task::spawn_blocking(move || rebuild(&shared))
                        .await
                        .map_err(|e| (ResponseError::UnknownServerError, e.to_string()))?
                        .map_err(|e| (super::log_error(&e), e.to_string()))?,
                };
                if let Some(id) = state.max_producer_id() {
                    self.next_id.fetch_max(id + 1, Ordering::Relaxed);
                }
                tracing::debug!(
                    topic,
                    partition,
                    producers = state.len(),
                    "producer state rebuilt"
                );
                Ok::<_, Refusal>(Mutex::new(state))
            })
            .await?;
        let lock = p
            .producers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(header.producer_id)
            .or_default()
            .clone();
        let _one_at_a_time = lock.lock().await;
        let decision = state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .check(&header);
        let result = match decision {
            Decision::Duplicate(offset) => {
                tracing::debug!(
                    topic,
                    partition,
                    producer_id = header.producer_id,
                    sequence = header.base_sequence,
                    offset,
                    "duplicate batch not stored again"
                );
                Ok(offset)
            }
            Decision::Reject(error) => Err((
                error,
                format!(
                    "producer {} epoch {} sequence {} refused: {error}",
                    header.producer_id, header.producer_epoch, header.base_sequence
                ),
            )),
            Decision::Append => match log.append_batches(topic, partition, batch).await {
                Ok(range) => {
                    let base = range.start.0 as i64;
                    state
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(&header, base);
                    Ok(base)
                }
                Err(e) => Err((super::log_error(&e), e.to_string())),
            },
        };
        drop(_one_at_a_time);
        // Forget the lock of a producer nobody waits on (its state stays).
        let mut locks = p.producers.lock().unwrap_or_else(|e| e.into_inner());
        if locks
            .get(&header.producer_id)
            .is_some_and(|l| Arc::ptr_eq(l, &lock) && Arc::strong_count(l) == 2)
        {
            locks.remove(&header.producer_id);
        }
        result
    }
}
