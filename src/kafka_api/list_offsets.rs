//! ListOffsets: the log start (-2), the end (-1), the newest record (-3, v7+), or the first
//! record at or after a timestamp. As Kafka does, the answer to -3 or a timestamp carries the
//! timestamp of the record found (the Java client's `offsetsForTimes` returns it), the others -1.

use super::{log_error, Context};
use crate::log::{LogError, Offset, PartitionShared};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};
use kafka_protocol::ResponseError;

/// The offset (and timestamp, for a timestamp query) of every partition asked for.
pub fn handle(ctx: &Context<'_>, r: ListOffsetsRequest, _version: i16) -> ListOffsetsResponse {
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
                            .with_error_code(ResponseError::UnknownTopicOrPartition.code())
                            .with_offset(-1)
                            .with_timestamp(-1);
                    };
                    let found = match p.timestamp {
                        -2 => Ok(Some((part.start_offset(), -1))),
                        -1 => Ok(Some((part.end_offset(), -1))),
                        // -3 (v7) the offset of the largest timestamp: the newest record here,
                        // where timestamps mostly are receive times; none in an empty partition.
                        -3 => match part.end_offset().0.checked_sub(1) {
                            Some(last) if last >= part.start_offset().0 => {
                                with_timestamp(&part, Some(Offset(last)))
                            }
                            _ => Ok(None),
                        },
                        t => part
                            .offset_for_time(t)
                            .and_then(|o| with_timestamp(&part, o)),
                    };
                    match found {
                        Ok(Some((o, timestamp))) => {
                            answer.with_offset(o.0 as i64).with_timestamp(timestamp)
                        }
                        Ok(None) => answer.with_offset(-1).with_timestamp(-1),
                        Err(e) => answer
                            .with_error_code(log_error(&e).code())
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

/// `offset` with the timestamp of its record (-1 if the record cannot be read back).
fn with_timestamp(
    part: &PartitionShared,
    offset: Option<Offset>,
) -> Result<Option<(Offset, i64)>, LogError> {
    let Some(offset) = offset else {
        return Ok(None);
    };
    // The one batch holding it is enough.
    let timestamp = match part.records(offset).read_bytes(1).next() {
        Some(Ok(r)) if r.offset == offset.0 as i64 => r.timestamp_ms,
        Some(Err(e)) => return Err(e),
        _ => -1,
    };
    Ok(Some((offset, timestamp)))
}
