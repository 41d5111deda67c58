//! Produce: producers' record batches, checked and stored as they came (never decoded and
//! encoded again), answered once durable.

use super::{log_error, str_bytes as s, Context};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

/// Appends producers' batches through the same durable path as the pipeline: the answer (for
/// acks != 0) comes once they are fsynced per the policy.
pub async fn handle(ctx: &Context<'_>, r: ProduceRequest, _version: i16) -> ProduceResponse {
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
                    .with_error_code(ResponseError::InvalidRecord.code())
                    .with_base_offset(-1)
                    .with_error_message(Some(s(why)))
            }
            Ok(append) => match append.await {
                Ok(range) => answer.with_base_offset(range.start.0 as i64),
                Err(e) => {
                    tracing::warn!(topic = %name.0, partition = index, error = %e, "produce failed");
                    answer
                        .with_error_code(log_error(&e).code())
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
