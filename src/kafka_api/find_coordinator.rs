//! FindCoordinator: the one broker coordinates every group.

use super::{str_bytes as s, Context, NODE_ID};
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};

/// This broker, at the address its clients reach it by.
pub fn handle(
    ctx: &Context<'_>,
    _r: FindCoordinatorRequest,
    _version: i16,
) -> FindCoordinatorResponse {
    FindCoordinatorResponse::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(s(ctx.host.clone()))
        .with_port(i32::from(ctx.port))
}
