//! Fetch: record batches served as they lie in the segments, long polled until `min_bytes`
//! are there or `max_wait_ms` has passed, within the request's and each partition's byte
//! limits.

use super::{log_error, Context};
use crate::log::{LogError, Offset};
use bytes::Bytes;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;
use std::time::Duration;
use tokio::time::Instant;

/// The longest a Fetch waits for data, whatever the client asks.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// Answers when `min_bytes` are there or `max_wait_ms` has passed, woken by appends.
pub async fn handle(ctx: &Context<'_>, r: FetchRequest, _version: i16) -> FetchResponse {
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
                        return answer.with_error_code(ResponseError::UnknownTopicOrPartition.code()).with_high_watermark(-1).with_last_stable_offset(-1).with_log_start_offset(-1);
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
                            answer.with_error_code(ResponseError::OffsetOutOfRange.code())
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
                            answer.with_error_code(log_error(&e).code())
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
