//! Idempotent producers' state in one partition, as Kafka keeps it (its `ProducerStateManager`
//! and `ProducerAppendInfo`): per producer id, the epoch and the sequence ranges and base
//! offsets of its last [`RECENT_BATCHES`] batches. Pure data: [`PartitionProducers::check`]
//! says what to do with a produced batch, [`PartitionProducers::record`] notes a batch once it
//! is durable, [`PartitionProducers::replay`] rebuilds the state from the batches stored. The
//! I/O around it (locking, the log scan after a restart) is in `idempotence`.

use crate::log::batch::BatchHeader;
use kafka_protocol::ResponseError;
use std::collections::{HashMap, VecDeque};

/// Batches remembered per producer for deduplication: a producer has at most 5 requests in
/// flight with idempotence, so a retry is always one of its last 5 batches.
pub const RECENT_BATCHES: usize = 5;

/// Producers remembered per partition: past this, the one whose last batch is oldest is
/// forgotten (Kafka expires producers idle for `producer.id.expiration.ms`; here the bound is on
/// memory, as every producer restart brings a new producer id). A forgotten producer that
/// comes back is unknown, and may go on from any sequence.
pub const MAX_PRODUCERS: usize = 10_000;

/// One stored batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

/// One producer's state in a partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    /// Oldest first; at most [`RECENT_BATCHES`].
    recent: VecDeque<BatchMeta>,
}

/// What to do with a produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Store it (and [`PartitionProducers::record`] it once durable).
    Append,
    /// A retry of a batch stored at this base offset: answer success with it, store nothing.
    Duplicate(i64),
    /// Refuse it with this error.
    Reject(ResponseError),
}

/// The idempotent producers of one partition.
#[derive(Debug, Clone, Default)]
pub struct PartitionProducers {
    producers: HashMap<i64, ProducerEntry>,
}

/// The sequence number of the last record of a batch: sequences wrap from `i32::MAX` to 0.
pub fn last_sequence(h: &BatchHeader) -> i32 {
    let delta = h.record_count.max(1) - 1;
    if h.base_sequence > i32::MAX - delta {
        delta - (i32::MAX - h.base_sequence) - 1
    } else {
        h.base_sequence + delta
    }
}

fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

impl PartitionProducers {
    /// Producers known.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The highest producer id known, if any.
    pub fn max_producer_id(&self) -> Option<i64> {
        self.producers.keys().copied().max()
    }

    /// What to do with `h`, a batch of an idempotent producer (producer id >= 0), as Kafka
    /// decides: a batch of the current epoch whose sequence range is one of the recent ones is
    /// a duplicate; a stale epoch is INVALID_PRODUCER_EPOCH; a new epoch must start at sequence
    /// 0; otherwise the first sequence must follow the last one (OUT_OF_ORDER_SEQUENCE_NUMBER).
    /// A producer this partition does not know (new, or its batches aged out of what the state
    /// was rebuilt from) may start at any sequence, as in Kafka.
    pub fn check(&self, h: &BatchHeader) -> Decision {
        if h.base_sequence < 0 || h.producer_epoch < 0 {
            return Decision::Reject(ResponseError::InvalidRecord);
        }
        let Some(entry) = self.producers.get(&h.producer_id) else {
            return Decision::Append;
        };
        let last_seq = last_sequence(h);
        if h.producer_epoch < entry.epoch {
            return Decision::Reject(ResponseError::InvalidProducerEpoch);
        }
        if h.producer_epoch > entry.epoch {
            return match h.base_sequence {
                0 => Decision::Append,
                _ => Decision::Reject(ResponseError::OutOfOrderSequenceNumber),
            };
        }
        if let Some(b) = entry
            .recent
            .iter()
            .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
        {
            return Decision::Duplicate(b.base_offset);
        }
        match entry.recent.back() {
            Some(b) if !in_sequence(b.last_seq, h.base_sequence) => {
                Decision::Reject(ResponseError::OutOfOrderSequenceNumber)
            }
            _ => Decision::Append,
        }
    }

    /// Notes `h`, stored at `base_offset` (durable), as its producer's latest batch: a higher
    /// epoch forgets the batches of the old one.
    pub fn record(&mut self, h: &BatchHeader, base_offset: i64) {
        if self.producers.len() >= MAX_PRODUCERS && !self.producers.contains_key(&h.producer_id) {
            self.forget_oldest();
        }
        let entry = self.producers.entry(h.producer_id).or_default();
        if h.producer_epoch > entry.epoch || entry.recent.is_empty() {
            entry.epoch = h.producer_epoch;
            entry.recent.clear();
        }
        if entry.recent.len() == RECENT_BATCHES {
            entry.recent.pop_front();
        }
        entry.recent.push_back(BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_sequence(h),
            base_offset,
        });
    }

    /// Forgets the producer whose last batch is the oldest.
    fn forget_oldest(&mut self) {
        let oldest = self
            .producers
            .iter()
            .min_by_key(|(_, e)| e.recent.back().map_or(i64::MIN, |b| b.base_offset))
            .map(|(&id, _)| id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
        }
    }

    /// Rebuilds from a stored batch (its header as stored, base offset included), oldest first:
    /// batches without a producer id and those of a stale epoch are left out, nothing is
    /// refused.
    pub fn replay(&mut self, h: &BatchHeader) {
        if h.producer_id < 0 || h.producer_epoch < 0 || h.base_sequence < 0 {
            return;
        }
        if self
            .producers
            .get(&h.producer_id)
            .is_some_and(|e| h.producer_epoch < e.epoch)
        {
            return;
        }
        self.record(h, h.base_offset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(pid: i64, epoch: i16, seq: i32, count: i32) -> BatchHeader {
        BatchHeader {
            base_offset: 0,
            batch_length: 0,
            partition_leader_epoch: 0,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    /// Checks and, if appended, records at `offset`.
    fn produce(s: &mut PartitionProducers, h: BatchHeader, offset: i64) -> Decision {
        let d = s.check(&h);
        if d == Decision::Append {
            s.record(&h, offset);
        }
        d
    }

    #[test]
    fn in_order_batches_append_and_retries_are_duplicates() {
        let mut s = PartitionProducers::default();
        assert_eq!(produce(&mut s, batch(7, 0, 0, 10), 0), Decision::Append);
        assert_eq!(produce(&mut s, batch(7, 0, 10, 5), 10), Decision::Append);
        assert_eq!(produce(&mut s, batch(7, 0, 15, 1), 15), Decision::Append);
        // Retries of any recent batch: the original base offset, nothing stored.
        assert_eq!(
            produce(&mut s, batch(7, 0, 0, 10), 99),
            Decision::Duplicate(0)
        );
        assert_eq!(
            produce(&mut s, batch(7, 0, 10, 5), 99),
            Decision::Duplicate(10)
        );
        assert_eq!(
            produce(&mut s, batch(7, 0, 15, 1), 99),
            Decision::Duplicate(15)
        );
        // The same first sequence with another range is no duplicate.
        assert_eq!(
            s.check(&batch(7, 0, 10, 4)),
            Decision::Reject(ResponseError::OutOfOrderSequenceNumber)
        );
        // Other producers are independent.
        assert_eq!(produce(&mut s, batch(8, 3, 40, 2), 16), Decision::Append);
        assert_eq!(produce(&mut s, batch(7, 0, 16, 1), 18), Decision::Append);
        assert_eq!(s.len(), 2);
        assert_eq!(s.max_producer_id(), Some(8));
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = PartitionProducers::default();
        for i in 0..7 {
            assert_eq!(
                produce(&mut s, batch(1, 0, i, 1), i64::from(i)),
                Decision::Append
            );
        }
        assert_eq!(s.check(&batch(1, 0, 2, 1)), Decision::Duplicate(2));
        assert_eq!(s.check(&batch(1, 0, 6, 1)), Decision::Duplicate(6));
        assert_eq!(
            s.check(&batch(1, 0, 1, 1)),
            Decision::Reject(ResponseError::OutOfOrderSequenceNumber),
            "older than the last five: out of order, as in Kafka"
        );
    }

    #[test]
    fn a_gap_is_out_of_order() {
        let mut s = PartitionProducers::default();
        produce(&mut s, batch(1, 0, 0, 10), 0);
        for seq in [11, 20, 5, 9] {
            assert_eq!(
                produce(&mut s, batch(1, 0, seq, 1), 50),
                Decision::Reject(ResponseError::OutOfOrderSequenceNumber),
                "seq {seq}"
            );
        }
        assert_eq!(produce(&mut s, batch(1, 0, 10, 1), 10), Decision::Append);
    }

    #[test]
    fn a_stale_epoch_is_fenced_and_a_new_one_restarts_at_zero() {
        let mut s = PartitionProducers::default();
        produce(&mut s, batch(1, 2, 0, 10), 0);
        assert_eq!(
            produce(&mut s, batch(1, 1, 10, 1), 10),
            Decision::Reject(ResponseError::InvalidProducerEpoch)
        );
        assert_eq!(
            produce(&mut s, batch(1, 1, 0, 10), 10),
            Decision::Reject(ResponseError::InvalidProducerEpoch),
            "even a retry of the old epoch"
        );
        assert_eq!(
            produce(&mut s, batch(1, 3, 10, 1), 10),
            Decision::Reject(ResponseError::OutOfOrderSequenceNumber),
            "a new epoch must start at 0"
        );
        assert_eq!(produce(&mut s, batch(1, 3, 0, 4), 10), Decision::Append);
        assert_eq!(
            produce(&mut s, batch(1, 3, 0, 4), 20),
            Decision::Duplicate(10)
        );
        assert_eq!(
            produce(&mut s, batch(1, 2, 0, 10), 20),
            Decision::Reject(ResponseError::InvalidProducerEpoch),
            "the old epoch's batches are forgotten and fenced"
        );
        assert_eq!(produce(&mut s, batch(1, 3, 4, 1), 14), Decision::Append);
    }

    #[test]
    fn unknown_producers_start_anywhere_and_sequences_wrap() {
        let mut s = PartitionProducers::default();
        assert_eq!(
            produce(&mut s, batch(1, 0, i32::MAX - 1, 2), 0),
            Decision::Append
        );
        assert_eq!(last_sequence(&batch(1, 0, i32::MAX - 1, 4)), 1);
        assert_eq!(produce(&mut s, batch(1, 0, 0, 3), 2), Decision::Append);
        assert_eq!(produce(&mut s, batch(1, 0, 3, 1), 5), Decision::Append);
        assert_eq!(
            s.check(&batch(1, 0, -1, 1)),
            Decision::Reject(ResponseError::InvalidRecord)
        );
    }

    #[test]
    fn past_the_bound_the_producer_idle_longest_is_forgotten() {
        let mut s = PartitionProducers::default();
        for pid in 0..MAX_PRODUCERS as i64 {
            produce(&mut s, batch(pid, 0, 0, 1), pid);
        }
        // Producer 0 writes again: producer 1 is now the one idle longest.
        produce(&mut s, batch(0, 0, 1, 1), 20_000);
        produce(&mut s, batch(99_999, 0, 0, 1), 20_001);
        assert_eq!(s.len(), MAX_PRODUCERS);
        assert_eq!(s.check(&batch(0, 0, 1, 1)), Decision::Duplicate(20_000));
        assert_eq!(
            s.check(&batch(1, 0, 0, 1)),
            Decision::Append,
            "forgotten: unknown again"
        );
        assert_eq!(s.check(&batch(2, 0, 0, 1)), Decision::Duplicate(2));
    }

    #[test]
    fn replay_rebuilds_what_record_built() {
        let mut live = PartitionProducers::default();
        let mut stored = Vec::new();
        let mut offset = 0;
        for (pid, epoch, seq, n) in [(1, 0, 0, 3), (2, 0, 0, 1), (1, 0, 3, 2), (1, 1, 0, 1)] {
            let mut h = batch(pid, epoch, seq, n);
            assert_eq!(produce(&mut live, h, offset), Decision::Append);
            h.base_offset = offset;
            stored.push(h);
            offset += i64::from(n);
        }
        // A stale batch and batches without a producer id are skipped.
        stored.push(batch(1, 0, 5, 1));
        stored.push(batch(-1, -1, -1, 4));
        let mut rebuilt = PartitionProducers::default();
        stored.iter().for_each(|h| rebuilt.replay(h));
        assert_eq!(rebuilt.producers, live.producers);
        assert_eq!(rebuilt.check(&batch(1, 1, 0, 1)), Decision::Duplicate(6));
        assert_eq!(rebuilt.check(&batch(2, 0, 0, 1)), Decision::Duplicate(3));
    }
}
