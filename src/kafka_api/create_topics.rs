//! CreateTopics: new topics in the embedded log, with replication factor 1; refused per topic
//! (TOPIC_AUTHORIZATION_FAILED) by a read-only face.

use super::{log_error, str_bytes as s, Context, READ_ONLY};
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use kafka_protocol::ResponseError;

/// The most partitions CreateTopics makes for a topic, as for `topics.*.partitions` in the
/// config: each is a directory, open files and a writer task.
const MAX_PARTITIONS: i32 = 10_000;

/// Creates each topic unless it exists (or `validate_only`); one result per topic.
pub fn handle(ctx: &Context<'_>, r: CreateTopicsRequest, _version: i16) -> CreateTopicsResponse {
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let answer = CreatableTopicResult::default().with_name(t.name.clone());
            if !ctx.produce {
                return answer
                    .with_error_code(ResponseError::TopicAuthorizationFailed.code())
                    .with_error_message(Some(s(READ_ONLY)));
            }
            let partitions = if t.num_partitions == -1 {
                1
            } else {
                t.num_partitions
            };
            if !(1..=MAX_PARTITIONS).contains(&partitions) {
                return answer
                    .with_error_code(ResponseError::InvalidPartitions.code())
                    .with_error_message(Some(s(format!(
                        "partitions must be 1 to {MAX_PARTITIONS}"
                    ))));
            }
            if !(t.replication_factor == -1 || t.replication_factor == 1) {
                return answer
                    .with_error_code(ResponseError::InvalidReplicationFactor.code())
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
                    .with_error_code(ResponseError::TopicAlreadyExists.code())
                    .with_error_message(Some(s("topic already exists"))),
                Err(e) => answer
                    .with_error_code(log_error(&e).code())
                    .with_error_message(Some(s(e.to_string()))),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}
