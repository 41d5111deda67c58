//! ListOffsets: the log start (-2), the end (-1), the newest record (-3, v7+), or the first
//! record at or after a timestamp.

use super::{log_error, Context};
use crate::log::Offset;
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
