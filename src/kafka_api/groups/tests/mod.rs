//! The coordinator through its API: requests in, responses out (encodable at their
//! versions), held requests answered, durable offsets, the timer task. The group state machine
//! has its own tests, in `state/tests.rs`.

mod describe;
mod membership;
mod offsets;

use super::coordinator::{lock, Clock, Coordinator, CoordinatorOptions};
use super::membership::join_error;
use crate::log::offsets::GroupOffsets;
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, StrBytes};
use kafka_protocol::ResponseError;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

const SESSION_MS: i32 = 10_000;
const REBALANCE_MS: i32 = 30_000;
const DELAY: Duration = Duration::from_millis(100);
const RANGE: &[(&str, &[u8])] = &[("range", b"range-meta")];

/// A coordinator on a clock the test moves; timers fire when the test sweeps.
struct Harness {
    coord: Arc<Coordinator>,
    now: Arc<Mutex<Instant>>,
    dir: TempDir,
}

impl Harness {
    fn new() -> Harness {
        let dir = TempDir::new().unwrap();
        let offsets = Arc::new(GroupOffsets::open(dir.path()).unwrap());
        let now = Arc::new(Mutex::new(Instant::now()));
        let coord = Coordinator::with_clock(offsets, options(), Clock::Manual(now.clone()));
        Harness { coord, now, dir }
    }

    /// A new coordinator over the same offsets directory, as after a restart.
    fn restart(&mut self) {
        let offsets = Arc::new(GroupOffsets::open(self.dir.path()).unwrap());
        self.coord = Coordinator::with_clock(offsets, options(), Clock::Manual(self.now.clone()));
    }

    /// Moves the clock and fires the timers due.
    fn advance(&self, by: Duration) {
        *lock(&self.now) += by;
        self.coord.sweep();
    }
}

fn options() -> CoordinatorOptions {
    CoordinatorOptions {
        initial_rebalance_delay: DELAY,
        ..CoordinatorOptions::default()
    }
}

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_owned())
}

fn gid(x: &str) -> GroupId {
    GroupId(s(x))
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Polls a held request once: `Some` if it has been answered.
fn poll_now<F: Future>(f: Pin<&mut F>) -> Option<F::Output> {
    match f.poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

fn ready<F: Future>(f: Pin<&mut F>) -> F::Output {
    poll_now(f).expect("the request should have been answered")
}

/// Panics unless the response encodes at `version` (fields set outside it fail).
fn encodes<T: Encodable>(msg: &T, version: i16) {
    let mut buf = BytesMut::new();
    msg.encode(&mut buf, version)
        .unwrap_or_else(|e| panic!("encoding at v{version}: {e}"));
}

fn join_req(group: &str, member: &str, protocols: &[(&str, &[u8])]) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_session_timeout_ms(SESSION_MS)
        .with_rebalance_timeout_ms(REBALANCE_MS)
        .with_member_id(s(member))
        .with_protocol_type(s("consumer"))
        .with_protocols(
            protocols
                .iter()
                .map(|(name, meta)| {
                    JoinGroupRequestProtocol::default()
                        .with_name(s(name))
                        .with_metadata(Bytes::copy_from_slice(meta))
                })
                .collect(),
        )
}

fn sync_req(
    group: &str,
    generation: i32,
    member: &str,
    assign: &[(&str, &[u8])],
) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member))
        .with_assignments(
            assign
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(s(m))
                        .with_assignment(Bytes::copy_from_slice(a))
                })
                .collect(),
        )
}

fn hb(h: &Harness, group: &str, generation: i32, member: &str) -> i16 {
    let req = HeartbeatRequest::default()
        .with_group_id(gid(group))
        .with_generation_id(generation)
        .with_member_id(s(member));
    let resp = h.coord.heartbeat(req, 3);
    encodes(&resp, 3);
    resp.error_code
}

fn commit_req(
    group: &str,
    generation: i32,
    member: &str,
    offsets: &[(&str, i32, i64, Option<&str>)],
) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    for &(topic, partition, offset, metadata) in offsets {
        let p = OffsetCommitRequestPartition::default()
            .with_partition_index(partition)
            .with_committed_offset(offset)
            .with_committed_metadata(metadata.map(s));
        match topics.iter_mut().find(|t| t.name.as_str() == topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(s(topic)))
                    .with_partitions(vec![p]),
            ),
        }
    }
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(s(member))
        .with_topics(topics)
}

/// Every (topic, partition, error) of a commit response.
fn commit_errors(resp: &OffsetCommitResponse) -> Vec<(String, i32, i16)> {
    resp.topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(|p| (t.name.to_string(), p.partition_index, p.error_code))
        })
        .collect()
}

fn commit(
    h: &Harness,
    group: &str,
    generation: i32,
    member: &str,
    offsets: &[(&str, i32, i64, Option<&str>)],
) -> Vec<i16> {
    let resp = h
        .coord
        .offset_commit(commit_req(group, generation, member, offsets), 8);
    encodes(&resp, 8);
    commit_errors(&resp)
        .into_iter()
        .map(|(_, _, e)| e)
        .collect()
}

/// (topic, partition, offset, metadata, error) of an OffsetFetch v1–7 response.
fn fetched(resp: &OffsetFetchResponse) -> Vec<(String, i32, i64, String, i16)> {
    resp.topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    p.committed_offset,
                    p.metadata.as_deref().unwrap_or("<null>").to_owned(),
                    p.error_code,
                )
            })
        })
        .collect()
}

fn fetch_req(group: &str, topics: Option<&[(&str, &[i32])]>) -> OffsetFetchRequest {
    OffsetFetchRequest::default()
        .with_group_id(gid(group))
        .with_topics(topics.map(|ts| {
            ts.iter()
                .map(|(name, partitions)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(s(name)))
                        .with_partition_indexes(partitions.to_vec())
                })
                .collect()
        }))
}

fn leave_v3(group: &str, members: &[(&str, Option<&str>)]) -> LeaveGroupRequest {
    LeaveGroupRequest::default()
        .with_group_id(gid(group))
        .with_members(
            members
                .iter()
                .map(|(m, i)| {
                    MemberIdentity::default()
                        .with_member_id(s(m))
                        .with_group_instance_id(i.map(s))
                })
                .collect(),
        )
}

fn describe_one(h: &Harness, group: &str, version: i16) -> DescribedGroup {
    let req = DescribeGroupsRequest::default().with_groups(vec![gid(group)]);
    let resp = h.coord.describe_groups(req, version);
    encodes(&resp, version);
    resp.groups.into_iter().next().unwrap()
}

fn member_ids(resp: &JoinGroupResponse) -> Vec<String> {
    resp.members
        .iter()
        .map(|m| m.member_id.to_string())
        .collect()
}

/// Joins a first member through MEMBER_ID_REQUIRED (v5) and the initial delay, and syncs it:
/// the group is Stable at generation 1. Returns the member id.
async fn stable_one(h: &Harness, group: &str) -> String {
    let first = h.coord.join_group(join_req(group, "", RANGE), 5).await;
    assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
    let id = first.member_id.to_string();
    let mut join = Box::pin(h.coord.join_group(join_req(group, &id, RANGE), 5));
    assert!(poll_now(join.as_mut()).is_none());
    h.advance(DELAY);
    let joined = ready(join.as_mut());
    assert_eq!((joined.error_code, joined.generation_id), (0, 1));
    let sync = h
        .coord
        .sync_group(sync_req(group, 1, &id, &[(&id, b"a1")]), 3)
        .await;
    assert_eq!(sync.error_code, 0);
    id
}

/// A second member joins a stable one-member group and both rebalance into generation 2
/// (A leads); A assigns "a2" to itself and "b2" to B. Returns (A, B).
async fn stable_two(h: &Harness, group: &str) -> (String, String) {
    let a = stable_one(h, group).await;
    let b = h
        .coord
        .join_group(join_req(group, "", RANGE), 5)
        .await
        .member_id
        .to_string();
    let mut join_b = Box::pin(h.coord.join_group(join_req(group, &b, RANGE), 5));
    assert!(poll_now(join_b.as_mut()).is_none());
    assert_eq!(
        hb(h, group, 1, &a),
        ResponseError::RebalanceInProgress.code()
    );
    let join_a = h.coord.join_group(join_req(group, &a, RANGE), 5).await;
    let join_b = ready(join_b.as_mut());
    assert_eq!((join_a.generation_id, join_b.generation_id), (2, 2));
    let mut sync_b = Box::pin(h.coord.sync_group(sync_req(group, 2, &b, &[]), 3));
    assert!(poll_now(sync_b.as_mut()).is_none());
    let assign: &[(&str, &[u8])] = &[(&a, b"a2"), (&b, b"b2")];
    let sync_a = h.coord.sync_group(sync_req(group, 2, &a, assign), 3).await;
    assert_eq!(&sync_a.assignment[..], b"a2");
    assert_eq!(&ready(sync_b.as_mut()).assignment[..], b"b2");
    (a, b)
}

#[test]
fn coordinator_and_its_futures_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>(_: &T) {}
    send_sync::<Coordinator>();
    let h = Harness::new();
    send(&h.coord.join_group(join_req("g", "", RANGE), 5));
    send(&h.coord.sync_group(sync_req("g", 1, "m", &[]), 5));
    send(&h.coord.clone().run(CancellationToken::new()));
}

#[tokio::test]
async fn run_drives_the_timers_and_answers_held_requests_at_shutdown() {
    let dir = TempDir::new().unwrap();
    let offsets = Arc::new(GroupOffsets::open(dir.path()).unwrap());
    let options = CoordinatorOptions {
        initial_rebalance_delay: ms(50),
        ..CoordinatorOptions::default()
    };
    let coord = Coordinator::new(offsets.clone(), options.clone());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(coord.clone().run(shutdown.clone()));
    let join = tokio::time::timeout(
        Duration::from_secs(10),
        coord.join_group(join_req("g", "", RANGE), 3),
    )
    .await
    .expect("the initial delay fires");
    assert_eq!((join.error_code, join.generation_id), (0, 1));
    shutdown.cancel();
    task.await.unwrap();

    // A held join is answered when run stops; later ones are refused.
    let coord = Coordinator::new(
        offsets,
        CoordinatorOptions {
            initial_rebalance_delay: Duration::from_secs(3600),
            ..options
        },
    );
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(coord.clone().run(shutdown.clone()));
    let held = tokio::spawn({
        let coord = coord.clone();
        async move { coord.join_group(join_req("g", "", RANGE), 3).await }
    });
    tokio::time::sleep(ms(50)).await;
    assert!(!held.is_finished());
    shutdown.cancel();
    task.await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("answered at shutdown")
        .unwrap();
    assert_eq!(resp.error_code, ResponseError::NotCoordinator.code());
    let late = coord.join_group(join_req("g", "", RANGE), 3).await;
    assert_eq!(
        late.error_code,
        ResponseError::CoordinatorNotAvailable.code()
    );
}
