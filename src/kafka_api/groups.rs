//! PLACEHOLDER until the group coordinator lands (being written now): every group request is
//! answered COORDINATOR_NOT_AVAILABLE.

use crate::log::offsets::GroupOffsets;
use kafka_protocol::messages::*;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    pub initial_rebalance_delay: Duration,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        CoordinatorOptions { initial_rebalance_delay: Duration::from_secs(3) }
    }
}

pub struct Coordinator {
    _offsets: Arc<GroupOffsets>,
}

const NOT_AVAILABLE: i16 = 15;

impl Coordinator {
    pub fn new(offsets: Arc<GroupOffsets>, _options: CoordinatorOptions) -> Arc<Self> {
        Arc::new(Coordinator { _offsets: offsets })
    }
    pub async fn join_group(&self, _r: JoinGroupRequest, _v: i16) -> JoinGroupResponse {
        JoinGroupResponse::default().with_error_code(NOT_AVAILABLE)
    }
    pub async fn sync_group(&self, _r: SyncGroupRequest, _v: i16) -> SyncGroupResponse {
        SyncGroupResponse::default().with_error_code(NOT_AVAILABLE)
    }
    pub fn heartbeat(&self, _r: HeartbeatRequest, _v: i16) -> HeartbeatResponse {
        HeartbeatResponse::default().with_error_code(NOT_AVAILABLE)
    }
    pub fn leave_group(&self, _r: LeaveGroupRequest, _v: i16) -> LeaveGroupResponse {
        LeaveGroupResponse::default().with_error_code(NOT_AVAILABLE)
    }
    pub fn offset_commit(&self, _r: OffsetCommitRequest, _v: i16) -> OffsetCommitResponse {
        OffsetCommitResponse::default()
    }
    pub fn offset_fetch(&self, _r: OffsetFetchRequest, _v: i16) -> OffsetFetchResponse {
        OffsetFetchResponse::default().with_error_code(NOT_AVAILABLE)
    }
    pub fn describe_groups(&self, _r: DescribeGroupsRequest, _v: i16) -> DescribeGroupsResponse {
        DescribeGroupsResponse::default()
    }
    pub fn list_groups(&self, _r: ListGroupsRequest, _v: i16) -> ListGroupsResponse {
        ListGroupsResponse::default()
    }
    pub async fn run(self: Arc<Self>, shutdown: tokio_util::sync::CancellationToken) {
        shutdown.cancelled().await
    }
}
