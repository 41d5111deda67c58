//! The embedded log as a sink.

use super::{Sink, SinkError};
use crate::log::{Log, Offset};
use crate::record::Record;
use crate::route::PartitionCounts;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct EmbeddedSink {
    log: Arc<Log>,
}

impl EmbeddedSink {
    pub fn new(log: Arc<Log>) -> Self {
        EmbeddedSink { log }
    }

    pub fn log(&self) -> &Arc<Log> {
        &self.log
    }
}

impl PartitionCounts for EmbeddedSink {
    fn partitions(&self, topic: &str) -> u32 {
        self.log.partitions(topic)
    }
}

impl Sink for EmbeddedSink {
    fn append(
        &self,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Vec<Offset>, SinkError>> + Send + 'static {
        let count = records.len();
        // One append per partition, each queued now; order within a partition is kept.
        let mut groups: BTreeMap<(String, u32), (Vec<usize>, Vec<Record>)> = BTreeMap::new();
        for (i, r) in records.into_iter().enumerate() {
            let group = groups.entry((r.topic.clone(), r.partition)).or_default();
            group.0.push(i);
            group.1.push(r);
        }
        let appends: Vec<_> = groups
            .into_iter()
            .map(|((topic, partition), (positions, records))| {
                let append = self.log.append(&topic, partition, records);
                async move { append.await.map(|range| (positions, range)) }
            })
            .collect();
        async move {
            let mut offsets = vec![Offset(0); count];
            for result in futures::future::join_all(appends).await {
                let (positions, range) = result?;
                for (i, pos) in positions.into_iter().enumerate() {
                    offsets[pos] = Offset(range.start.0 + i as u64);
                }
            }
            Ok(offsets)
        }
    }

    fn resume(&self) {
        self.log.resume();
    }

    async fn partition_counts(&self) -> Result<BTreeMap<String, u32>, SinkError> {
        Ok(self.log.partition_counts())
    }

    async fn close(self) -> Result<(), SinkError> {
        match Arc::try_unwrap(self.log) {
            Ok(log) => Ok(log.close().await?),
            // Its writers finish what is queued once the last holder lets go; the next start
            // recovers the log.
            Err(_) => {
                tracing::warn!("log still in use at shutdown; it recovers on the next start");
                Ok(())
            }
        }
    }
}
