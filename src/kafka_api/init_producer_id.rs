//! InitProducerId, for idempotent producers only: a fresh producer id and epoch 0 for every
//! request, as Kafka answers a request without a transactional id (a producer that asks again
//! after an error, giving its old id and epoch, gets a new id too). Transactions are not
//! supported: a request with a transactional id is refused with
//! TRANSACTIONAL_ID_AUTHORIZATION_FAILED, the error Kafka gives a principal not allowed to use
//! that transactional id, which clients treat as fatal (a retriable error such as
//! COORDINATOR_NOT_AVAILABLE would have them retry for good). A read-only face refuses every
//! request with CLUSTER_AUTHORIZATION_FAILED, as Kafka answers a principal with no write access.

use super::Context;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

pub fn handle(
    ctx: &Context<'_>,
    r: InitProducerIdRequest,
    _version: i16,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default();
    if let Some(id) = r.transactional_id {
        tracing::warn!(transactional_id = %id.0, "transactions are not supported");
        return response
            .with_error_code(ResponseError::TransactionalIdAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    if !ctx.produce {
        // What Kafka answers a principal allowed to write to no topic.
        return response
            .with_error_code(ResponseError::ClusterAuthorizationFailed.code())
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    response
        .with_producer_id(ProducerId(ctx.producers.next_producer_id()))
        .with_producer_epoch(0)
}
