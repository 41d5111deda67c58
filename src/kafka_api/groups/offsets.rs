//! OffsetCommit and OffsetFetch: committed offsets in the durable store
//! ([`GroupOffsets`](crate::log::offsets::GroupOffsets)), each commit checked against its
//! group's generation and member first.

use super::coordinator::{lock, Coordinator};
use super::state::check_commit_without_group;
use crate::kafka_api::error_code;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest, OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

impl Coordinator {
    /// OffsetCommit (v2–9). Checks the generation and member (generation -1 with no members is
    /// a "simple" commit, from a consumer that assigns itself partitions), then commits every
    /// valid partition durably in one write before answering. Blocks on that write (an fsync):
    /// call it where blocking is acceptable (e.g. `tokio::task::spawn_blocking`).
    pub fn offset_commit(&self, req: OffsetCommitRequest, _version: i16) -> OffsetCommitResponse {
        let group_id = req.group_id.0.to_string();
        let check = if group_id.is_empty() {
            Err(ResponseError::InvalidGroupId)
        } else {
            self.commit_check(
                &group_id,
                req.generation_id_or_member_epoch,
                req.member_id.as_str(),
            )
        };
        let mut results: Vec<Vec<Result<(), ResponseError>>> = Vec::with_capacity(req.topics.len());
        let mut entries: Vec<(&str, u32, i64, &str)> = Vec::new();
        for topic in &req.topics {
            let mut topic_results = Vec::with_capacity(topic.partitions.len());
            for p in &topic.partitions {
                let metadata = p.committed_metadata.as_deref().unwrap_or("");
                let result = check.and_then(|()| {
                    if p.partition_index < 0 {
                        Err(ResponseError::UnknownTopicOrPartition)
                    } else if metadata.len() > self.options.max_metadata_bytes {
                        Err(ResponseError::OffsetMetadataTooLarge)
                    } else {
                        entries.push((
                            topic.name.as_str(),
                            p.partition_index as u32,
                            p.committed_offset,
                            metadata,
                        ));
                        Ok(())
                    }
                });
                topic_results.push(result);
            }
            results.push(topic_results);
        }
        let written = self.offsets.commit(&group_id, &entries).map_err(|e| {
            tracing::error!(group = %group_id, error = %e, "could not commit offsets");
            ResponseError::CoordinatorNotAvailable
        });
        let topics = req
            .topics
            .iter()
            .zip(results)
            .map(|(topic, topic_results)| {
                let partitions = topic
                    .partitions
                    .iter()
                    .zip(topic_results)
                    .map(|(p, result)| {
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(error_code(result.and(written)))
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }

    /// Whether `member_id` of `generation` may commit for `group_id` now.
    fn commit_check(
        &self,
        group_id: &str,
        generation: i32,
        member_id: &str,
    ) -> Result<(), ResponseError> {
        let now = self.now();
        let mut groups = lock(&self.groups);
        match groups.by_id.get_mut(group_id) {
            Some(entry) => entry.group.check_commit(member_id, generation, now),
            None => check_commit_without_group(generation),
        }
    }

    /// OffsetFetch (v1–9). Unknown groups and partitions get offset -1, metadata "" and no
    /// error; null topics (v2+) means every partition the group committed.
    pub fn offset_fetch(&self, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        if version >= 8 {
            let groups = req
                .groups
                .into_iter()
                .map(|g| {
                    let wanted = g.topics.map(|topics| {
                        topics
                            .into_iter()
                            .map(|t| (t.name, t.partition_indexes))
                            .collect()
                    });
                    let topics = self
                        .fetch_offsets(g.group_id.as_str(), wanted)
                        .into_iter()
                        .map(|(name, partitions)| {
                            let partitions = partitions
                                .into_iter()
                                .map(|(partition, offset, metadata)| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(partition)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(-1)
                                        .with_metadata(Some(StrBytes::from_string(metadata)))
                                })
                                .collect();
                            OffsetFetchResponseTopics::default()
                                .with_name(name)
                                .with_partitions(partitions)
                        })
                        .collect();
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_topics(topics)
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let wanted = req.topics.map(|topics| {
            topics
                .into_iter()
                .map(|t| (t.name, t.partition_indexes))
                .collect()
        });
        let topics = self
            .fetch_offsets(req.group_id.as_str(), wanted)
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|(partition, offset, metadata)| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(-1)
                            .with_metadata(Some(StrBytes::from_string(metadata)))
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(name)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetFetchResponse::default().with_topics(topics)
    }

    /// (topic, [(partition, offset, metadata)]) for the wanted partitions, or for every committed
    /// one when `wanted` is `None`.
    #[allow(clippy::type_complexity)]
    fn fetch_offsets(
        &self,
        group: &str,
        wanted: Option<Vec<(TopicName, Vec<i32>)>>,
    ) -> Vec<(TopicName, Vec<(i32, i64, String)>)> {
        match wanted {
            Some(topics) => topics
                .into_iter()
                .map(|(name, partitions)| {
                    let partitions = partitions
                        .into_iter()
                        .map(|partition| {
                            let committed = u32::try_from(partition)
                                .ok()
                                .and_then(|p| self.offsets.fetch(group, name.as_str(), p));
                            match committed {
                                Some(c) => (partition, c.offset, c.metadata),
                                None => (partition, -1, String::new()),
                            }
                        })
                        .collect();
                    (name, partitions)
                })
                .collect(),
            None => {
                let mut topics: Vec<(TopicName, Vec<(i32, i64, String)>)> = Vec::new();
                for (topic, partition, c) in self.offsets.group(group) {
                    let Ok(partition) = i32::try_from(partition) else {
                        continue;
                    };
                    let entry = (partition, c.offset, c.metadata);
                    match topics.last_mut() {
                        Some((name, partitions)) if name.as_str() == topic => {
                            partitions.push(entry)
                        }
                        _ => topics.push((TopicName(StrBytes::from_string(topic)), vec![entry])),
                    }
                }
                topics
            }
        }
    }
}
