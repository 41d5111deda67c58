//! Sinks: where records go. The pipeline appends through the [`Sink`] trait and acks MQTT
//! messages once the sink says their records are durable. Two implementations: the embedded
//! log ([`embedded::EmbeddedSink`]) and, later, a Kafka cluster. Both pass the same
//! conformance suite (`tests/sink_conformance.rs`).

pub mod embedded;

use crate::log::{LogError, Offset};
use crate::record::Record;
use std::collections::BTreeMap;
use std::future::Future;
use thiserror::Error;

#[derive(Debug, Clone, Error)]
pub enum SinkError {
    #[error(transparent)]
    Log(#[from] LogError),
}

impl SinkError {
    /// Whether trying again later may succeed (a full disk, a broker away) rather than never
    /// (a record too large to store).
    pub fn is_retryable(&self) -> bool {
        match self {
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

    /// Partition counts of the topics that exist already: they win over the config.
    fn partition_counts(
        &self,
    ) -> impl Future<Output = Result<BTreeMap<String, u32>, SinkError>> + Send;

    /// Finishes what is in flight and releases the backend.
    fn close(self) -> impl Future<Output = Result<(), SinkError>> + Send;
}
