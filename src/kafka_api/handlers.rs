//! Handlers for the APIs that read and write the log (groups are in `groups`).

use super::{versions, NODE_ID};
use crate::log::{Log, LogError, Offset};
use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use std::time::Duration;
use tokio::time::Instant;

/// Kafka error codes used here.
pub mod code {
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REPLICATION_FACTOR: i16 = 38;
    pub const INVALID_RECORD: i16 = 87;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
}

/// The most partitions CreateTopics makes for a topic, as for `topics.*.partitions` in the
/// config: each is a directory, open files and a writer task.
const MAX_PARTITIONS: i32 = 10_000;

/// The longest a Fetch waits for data, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

pub struct Context<'a> {
    pub log: &'a Log,
    /// Where clients reach this broker.
    pub host: String,
    pub port: u16,
    pub cluster_id: &'a str,
}

fn s(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

fn error_code(e: &LogError) -> i16 {
    match e {
        LogError::OffsetOutOfRange { .. } => code::OFFSET_OUT_OF_RANGE,
        LogError::NoSuchPartition { .. } | LogError::UnknownTopic(_) => {
            code::UNKNOWN_TOPIC_OR_PARTITION
        }
        LogError::InvalidTopic(_) => code::INVALID_TOPIC_EXCEPTION,
        LogError::Corrupt { .. } => code::CORRUPT_MESSAGE,
        LogError::Io { .. } | LogError::Closed(_) => code::KAFKA_STORAGE_ERROR,
        _ => code::UNKNOWN_SERVER_ERROR,
    }
}

pub fn api_versions() -> ApiVersionsResponse {
    let keys = versions::offered()
        .map(|(api, min, max)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default().with_api_keys(keys)
}

/// For an ApiVersions request of a version this broker does not speak: error 35, and the list,
/// encoded as v0 so any client reads it.
pub fn api_versions_unsupported() -> ApiVersionsResponse {
    api_versions().with_error_code(code::UNSUPPORTED_VERSION)
}

pub fn metadata(ctx: &Context<'_>, r: MetadataRequest, version: i16) -> MetadataResponse {
    let existing = ctx.log.partition_counts();
    // v0: an empty list means every topic; v1+: null means every topic, empty means none.
    let wanted: Vec<String> = match r.topics {
        None => existing.keys().cloned().collect(),
        Some(t) if t.is_empty() && version == 0 => existing.keys().cloned().collect(),
        Some(t) => t
            .into_iter()
            .filter_map(|t| t.name.map(|n| n.0.to_string()))
            .collect(),
    };
    // Topics appear when Tributary writes them (or a producer does); consumers do not create
    // them, whatever `allow_auto_topic_creation` says.
    let topics = wanted
        .into_iter()
        .map(|name| {
            let topic =
                MetadataResponseTopic::default().with_name(Some(TopicName(s(name.clone()))));
            match existing.get(&name) {
                Some(&n) => topic.with_partitions(
                    (0..n as i32)
                        .map(|p| {
                            MetadataResponsePartition::default()
                                .with_partition_index(p)
                                .with_leader_id(BrokerId(NODE_ID))
                                .with_leader_epoch(-1)
                                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                                .with_isr_nodes(vec![BrokerId(NODE_ID)])
                        })
                        .collect(),
                ),
                None => topic.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION),
            }
        })
        .collect();
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(s(ctx.host.clone()))
        .with_port(i32::from(ctx.port));
    MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(s(ctx.cluster_id)))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics)
}

pub fn list_offsets(
    ctx: &Context<'_>,
    r: ListOffsetsRequest,
    _version: i16,
) -> ListOffsetsResponse {
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let name = t.name.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let answer = ListOffsetsPartitionResponse::default()
                        .with_partition_index(p.partition_index)
                        .with_leader_epoch(-1);
                    let Some(part) = ctx.log.partition(&name, p.partition_index as u32) else {
                        return answer
                            .with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION)
                            .with_offset(-1)
                            .with_timestamp(-1);
                    };
                    let found = match p.timestamp {
                        -2 => Ok(Some(part.start_offset())),
                        // -1 latest; -3 (v7) the offset of the largest timestamp: the newest record
                        // here, where timestamps are receive times.
                        -1 => Ok(Some(part.end_offset())),
                        -3 => Ok(Some(Offset(part.end_offset().0.saturating_sub(1)))),
                        t => part.offset_for_time(t),
                    };
                    match found {
                        Ok(Some(o)) => answer
                            .with_offset(o.0 as i64)
                            .with_timestamp(if p.timestamp >= 0 { p.timestamp } else { -1 }),
                        Ok(None) => answer.with_offset(-1).with_timestamp(-1),
                        Err(e) => answer
                            .with_error_code(error_code(&e))
                            .with_offset(-1)
                            .with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// Answers when `min_bytes` are there or `max_wait_ms` has passed, woken by appends.
pub async fn fetch(ctx: &Context<'_>, r: FetchRequest, _version: i16) -> FetchResponse {
    let deadline =
        Instant::now() + Duration::from_millis(r.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    // Subscribe before reading, so an append between the read and the wait still wakes us.
    let mut receivers: Vec<_> = r
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter_map(|p| ctx.log.partition(&t.topic.0, p.partition as u32))
        })
        .map(|p| p.subscribe())
        .collect();
    loop {
        for rx in receivers.iter_mut() {
            rx.borrow_and_update();
        }
        let (response, bytes, errors) = fetch_once(ctx, &r);
        if bytes >= r.min_bytes.max(1) as usize
            || errors
            || Instant::now() >= deadline
            || receivers.is_empty()
        {
            return response;
        }
        let changed =
            futures::future::select_all(receivers.iter_mut().map(|rx| Box::pin(rx.changed())));
        if tokio::time::timeout_at(deadline, changed).await.is_err() {
            return fetch_once(ctx, &r).0;
        }
    }
}

/// One pass over the requested partitions: the response, its record bytes, and whether any
/// partition had an error.
fn fetch_once(ctx: &Context<'_>, r: &FetchRequest) -> (FetchResponse, usize, bool) {
    let mut budget = if r.max_bytes > 0 {
        r.max_bytes as usize
    } else {
        usize::MAX
    };
    let mut total = 0usize;
    let mut errors = false;
    let topics = r
        .topics
        .iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    // Never null records: librdkafka rejects them ("invalid MessageSetSize").
                    let answer = PartitionData::default()
                        .with_partition_index(p.partition)
                        .with_preferred_read_replica(BrokerId(-1))
                        .with_records(Some(Bytes::new()));
                    let Some(part) = ctx.log.partition(&t.topic.0, p.partition as u32) else {
                        errors = true;
                        return answer.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION).with_high_watermark(-1).with_last_stable_offset(-1).with_log_start_offset(-1);
                    };
                    let (start, end) = (part.start_offset().0 as i64, part.end_offset().0 as i64);
                    let answer = answer.with_high_watermark(end).with_last_stable_offset(end).with_log_start_offset(start);
                    if budget == 0 {
                        return answer;
                    }
                    let limit = (p.partition_max_bytes.max(0) as usize).min(budget);
                    match part.read(Offset(p.fetch_offset.max(0) as u64), limit) {
                        _ if p.fetch_offset < 0 => {
                            errors = true;
                            answer.with_error_code(code::OFFSET_OUT_OF_RANGE)
                        }
                        // Past the first partition with data, a batch that does not fit waits.
                        Ok(bytes) if total > 0 && bytes.len() > budget => answer,
                        Ok(bytes) => {
                            total += bytes.len();
                            budget = budget.saturating_sub(bytes.len());
                            answer.with_records(Some(bytes))
                        }
                        Err(e) => {
                            errors = true;
                            if !matches!(e, LogError::OffsetOutOfRange { .. }) {
                                tracing::warn!(topic = %t.topic.0, partition = p.partition, error = %e, "fetch failed");
                            }
                            answer.with_error_code(error_code(&e))
                        }
                    }
                })
                .collect();
            FetchableTopicResponse::default().with_topic(t.topic.clone()).with_partitions(partitions)
        })
        .collect();
    (
        FetchResponse::default().with_responses(topics),
        total,
        errors,
    )
}

/// Appends producers' batches through the same durable path as the pipeline: the answer (for
/// acks != 0) comes once they are fsynced per the policy.
pub async fn produce(ctx: &Context<'_>, r: ProduceRequest, _version: i16) -> ProduceResponse {
    let mut pending = Vec::new();
    for t in &r.topic_data {
        for p in &t.partition_data {
            let records = p.records.clone().unwrap_or_default();
            let append = match offsets_disagree(&records) {
                Some(why) => Err(why),
                None => Ok(ctx.log.append_batches(&t.name.0, p.index as u32, records)),
            };
            pending.push((t.name.clone(), p.index, append));
        }
    }
    let mut topics: Vec<TopicProduceResponse> = Vec::new();
    for (name, index, append) in pending {
        let answer = PartitionProduceResponse::default()
            .with_index(index)
            .with_log_append_time_ms(-1);
        let answer = match append {
            Err(why) => {
                tracing::warn!(topic = %name.0, partition = index, why, "produce refused");
                answer
                    .with_error_code(code::INVALID_RECORD)
                    .with_base_offset(-1)
                    .with_error_message(Some(s(why)))
            }
            Ok(append) => match append.await {
                Ok(range) => answer.with_base_offset(range.start.0 as i64),
                Err(e) => {
                    tracing::warn!(topic = %name.0, partition = index, error = %e, "produce failed");
                    answer
                        .with_error_code(error_code(&e))
                        .with_base_offset(-1)
                        .with_error_message(Some(s(e.to_string())))
                }
            },
        };
        match topics.iter_mut().find(|t| t.name == name) {
            Some(t) => t.partition_responses.push(answer),
            None => topics.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(vec![answer]),
            ),
        }
    }
    ProduceResponse::default().with_responses(topics)
}

/// Why a producer's batches must not be stored: one whose offset range (last offset delta + 1)
/// is not its record count, which Kafka refuses too (INVALID_RECORD). Stored, a single record
/// could move the partition's offsets on by up to 2^31. Damaged bytes are left for the log to
/// report.
fn offsets_disagree(mut batches: &[u8]) -> Option<String> {
    while let Ok(h) = crate::log::batch::BatchHeader::parse(batches) {
        if i64::from(h.last_offset_delta) + 1 != i64::from(h.record_count) {
            return Some(format!(
                "a batch of {} records has a last offset delta of {}",
                h.record_count, h.last_offset_delta
            ));
        }
        batches = batches.get(h.total_len()..).unwrap_or_default();
    }
    None
}

pub fn create_topics(
    ctx: &Context<'_>,
    r: CreateTopicsRequest,
    _version: i16,
) -> CreateTopicsResponse {
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let answer = CreatableTopicResult::default().with_name(t.name.clone());
            let partitions = if t.num_partitions == -1 {
                1
            } else {
                t.num_partitions
            };
            if !(1..=MAX_PARTITIONS).contains(&partitions) {
                return answer
                    .with_error_code(code::INVALID_PARTITIONS)
                    .with_error_message(Some(s(format!(
                        "partitions must be 1 to {MAX_PARTITIONS}"
                    ))));
            }
            if !(t.replication_factor == -1 || t.replication_factor == 1) {
                return answer
                    .with_error_code(code::INVALID_REPLICATION_FACTOR)
                    .with_error_message(Some(s("a single broker: replication factor 1")));
            }
            if r.validate_only {
                return answer
                    .with_num_partitions(partitions)
                    .with_replication_factor(1);
            }
            match ctx.log.create_topic(&t.name.0, partitions as u32) {
                Ok(true) => answer
                    .with_num_partitions(partitions)
                    .with_replication_factor(1),
                Ok(false) => answer
                    .with_error_code(code::TOPIC_ALREADY_EXISTS)
                    .with_error_message(Some(s("topic already exists"))),
                Err(e) => answer
                    .with_error_code(error_code(&e))
                    .with_error_message(Some(s(e.to_string()))),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// The one broker coordinates every group.
pub fn find_coordinator(
    ctx: &Context<'_>,
    _r: FindCoordinatorRequest,
    _version: i16,
) -> FindCoordinatorResponse {
    FindCoordinatorResponse::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(s(ctx.host.clone()))
        .with_port(i32::from(ctx.port))
}
