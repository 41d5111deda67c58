//! Produce: producers' record batches, checked and stored as they came (never decoded and
//! encoded again), answered once durable. A read-only face (`kafka_produce: false`) refuses
//! every partition with TOPIC_AUTHORIZATION_FAILED, as Kafka answers a client without write
//! access.

use super::idempotence::Refusal;
use super::{log_error, str_bytes as s, Context, READ_ONLY};
use crate::log::batch::BatchHeader;
use futures::future::BoxFuture;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;

/// Appends producers' batches through the same durable path as the pipeline: the answer (for
/// acks != 0) comes once they are fsynced per the policy. A batch of an idempotent producer
/// (producer id >= 0) is checked against its producer's sequence first (see `idempotence`):
/// a retry is answered with the offset it was stored at and not stored again.
pub async fn handle(ctx: &Context<'_>, r: ProduceRequest, _version: i16) -> ProduceResponse {
    let mut names = Vec::new();
    let mut pending: Vec<BoxFuture<'_, Result<i64, Refusal>>> = Vec::new();
    for t in &r.topic_data {
        for p in &t.partition_data {
            let records = p.records.clone().unwrap_or_default();
            names.push((t.name.clone(), p.index));
            let (topic, partition) = (t.name.0.as_str(), p.index as u32);
            if !ctx.produce {
                pending.push(Box::pin(std::future::ready(Err((
                    ResponseError::TopicAuthorizationFailed,
                    READ_ONLY.to_string(),
                )))));
                continue;
            }
            pending.push(match check(&records) {
                Err(why) => Box::pin(std::future::ready(Err((ResponseError::InvalidRecord, why)))),
                // Queued now, in request order.
                Ok(None) => {
                    let append = ctx.log.append_batches(topic, partition, records);
                    Box::pin(async move {
                        append
                            .await
                            .map(|range| range.start.0 as i64)
                            .map_err(|e| (log_error(&e), e.to_string()))
                    })
                }
                Ok(Some(header)) => {
                    Box::pin(
                        ctx.producers
                            .append(ctx.log, (topic, partition), header, records),
                    )
                }
            });
        }
    }
    let results = futures::future::join_all(pending).await;
    let mut topics: Vec<TopicProduceResponse> = Vec::new();
    for ((name, index), result) in names.into_iter().zip(results) {
        let answer = PartitionProduceResponse::default()
            .with_index(index)
            .with_log_append_time_ms(-1);
        let answer = match result {
            Ok(base) => answer.with_base_offset(base),
            Err((error, why)) => {
                tracing::warn!(topic = %name.0, partition = index, why, "produce refused");
                answer
                    .with_error_code(error.code())
                    .with_base_offset(-1)
                    .with_error_message(Some(s(why)))
            }
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

/// Whether the batches may be stored: an error for those that must not be; the header of the
/// one batch of an idempotent producer, to be checked against its sequence; `None` for batches
/// without a producer id. As Kafka, an idempotent producer's data for a partition must be
/// exactly one batch (INVALID_RECORD otherwise).
fn check(records: &[u8]) -> Result<Option<BatchHeader>, String> {
    if let Some(why) = offsets_disagree(records) {
        return Err(why);
    }
    let Ok(first) = BatchHeader::parse(records) else {
        return Ok(None);
    };
    // Headers only: the log checks the CRCs as it appends.
    let (mut rest, mut idempotent) = (records, 0);
    while let Ok(h) = BatchHeader::parse(rest) {
        idempotent += usize::from(h.producer_id >= 0);
        rest = rest.get(h.total_len()..).unwrap_or_default();
    }
    match idempotent {
        0 => Ok(None),
        1 if first.producer_id >= 0 && first.total_len() == records.len() => Ok(Some(first)),
        _ => Err("an idempotent producer's records for a partition must be one batch".into()),
    }
}

/// Why a producer's batches must not be stored: one whose offset range (last offset delta + 1)
/// is not its record count, which Kafka refuses too (INVALID_RECORD). Stored, a single record
/// could move the partition's offsets on by up to 2^31. Damaged bytes are left for the log to
/// report.
fn offsets_disagree(mut batches: &[u8]) -> Option<String> {
    while let Ok(h) = BatchHeader::parse(batches) {
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
