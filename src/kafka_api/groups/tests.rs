//! The coordinator through its API: requests in, responses out (encodable at their
//! versions), held requests answered, durable offsets, the timer task.

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
use std::time::Duration;
use tempfile::TempDir;
use tokio::time::Instant;
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
async fn one_member_joins_leads_syncs_and_heartbeats() {
    let h = Harness::new();
    // v3: no MEMBER_ID_REQUIRED; held for the initial delay.
    let mut join = Box::pin(h.coord.join_group(join_req("g", "", RANGE), 3));
    assert!(poll_now(join.as_mut()).is_none());
    let preparing = describe_one(&h, "g", 0);
    assert_eq!(preparing.group_state.as_str(), "PreparingRebalance");
    assert_eq!(preparing.members.len(), 1);
    h.advance(DELAY - ms(1));
    assert!(poll_now(join.as_mut()).is_none());
    h.advance(ms(1));
    let joined = ready(join.as_mut());
    encodes(&joined, 3);
    let id = joined.member_id.to_string();
    assert!(id.starts_with("member-"), "{id}");
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader.as_str(), id);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(member_ids(&joined), [id.as_str()]);
    assert_eq!(&joined.members[0].metadata[..], b"range-meta");
    assert_eq!(
        describe_one(&h, "g", 0).group_state.as_str(),
        "CompletingRebalance"
    );

    let sync = h
        .coord
        .sync_group(sync_req("g", 1, &id, &[(&id, b"mine")]), 5)
        .await;
    encodes(&sync, 5);
    assert_eq!(sync.error_code, 0);
    assert_eq!(&sync.assignment[..], b"mine");
    assert_eq!(sync.protocol_name.as_deref(), Some("range"));
    assert_eq!(sync.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(hb(&h, "g", 1, &id), 0);
    // A SyncGroup sent again while Stable gets the same assignment.
    let again = h.coord.sync_group(sync_req("g", 1, &id, &[]), 0).await;
    assert_eq!((again.error_code, &again.assignment[..]), (0, &b"mine"[..]));

    let described = describe_one(&h, "g", 5);
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(described.protocol_type.as_str(), "consumer");
    assert_eq!(described.protocol_data.as_str(), "range");
    assert_eq!(described.members.len(), 1);
    assert_eq!(&described.members[0].member_assignment[..], b"mine");
    assert_eq!(&described.members[0].member_metadata[..], b"range-meta");

    // Heartbeats keep the member well past its session timeout.
    for _ in 0..5 {
        h.advance(ms(SESSION_MS as u64 / 2));
        assert_eq!(hb(&h, "g", 1, &id), 0);
    }
}

#[tokio::test]
async fn member_id_required_then_rejoin() {
    let h = Harness::new();
    for version in [4, 7] {
        let group = format!("g{version}");
        let first = h
            .coord
            .join_group_with_client(join_req(&group, "", RANGE), version, "rdkafka", "/10.0.0.1")
            .await;
        encodes(&first, version);
        assert_eq!(first.error_code, ResponseError::MemberIdRequired.code());
        assert_eq!(first.generation_id, -1);
        assert_eq!(first.protocol_name.is_none(), version >= 7);
        let id = first.member_id.to_string();
        assert!(id.starts_with("rdkafka-"), "{id}");
        // Not a member yet.
        assert_eq!(describe_one(&h, &group, 0).members.len(), 0);

        let mut join = Box::pin(h.coord.join_group_with_client(
            join_req(&group, &id, RANGE),
            version,
            "rdkafka",
            "/10.0.0.1",
        ));
        assert!(poll_now(join.as_mut()).is_none());
        h.advance(DELAY);
        let joined = ready(join.as_mut());
        encodes(&joined, version);
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        assert_eq!(joined.member_id.as_str(), id);
        assert_eq!(joined.leader.as_str(), id);
        let described = describe_one(&h, &group, 0);
        assert_eq!(described.members[0].client_id.as_str(), "rdkafka");
        assert_eq!(described.members[0].client_host.as_str(), "/10.0.0.1");
    }

    // A handed-out id that is not used within the session timeout is forgotten.
    let first = h.coord.join_group(join_req("late", "", RANGE), 5).await;
    h.advance(ms(SESSION_MS as u64));
    let late = h
        .coord
        .join_group(join_req("late", &first.member_id, RANGE), 5)
        .await;
    assert_eq!(late.error_code, ResponseError::UnknownMemberId.code());
    // Made-up member ids are unknown too.
    let made_up = h
        .coord
        .join_group(join_req("late", "nobody", RANGE), 5)
        .await;
    assert_eq!(made_up.error_code, ResponseError::UnknownMemberId.code());
}

#[tokio::test]
async fn a_second_member_rebalances_a_stable_group() {
    let h = Harness::new();
    let a = stable_one(&h, "g").await;
    let second = h.coord.join_group(join_req("g", "", RANGE), 5).await;
    assert_eq!(second.error_code, ResponseError::MemberIdRequired.code());
    let b = second.member_id.to_string();
    // Handing out an id does not disturb the group.
    assert_eq!(hb(&h, "g", 1, &a), 0);
    let mut join_b = Box::pin(h.coord.join_group(join_req("g", &b, RANGE), 5));
    assert!(poll_now(join_b.as_mut()).is_none());

    // A learns of the rebalance on its next heartbeat; it may still commit meanwhile.
    assert_eq!(
        hb(&h, "g", 1, &a),
        ResponseError::RebalanceInProgress.code()
    );
    assert_eq!(commit(&h, "g", 1, &a, &[("t", 0, 5, None)]), [0]);
    // SyncGroup of the old generation during the rebalance.
    let sync = h.coord.sync_group(sync_req("g", 1, &a, &[]), 3).await;
    assert_eq!(sync.error_code, ResponseError::RebalanceInProgress.code());
    // B is still held: A has not rejoined, and the join deadline is far off.
    h.advance(ms(1_000));
    assert!(poll_now(join_b.as_mut()).is_none());

    // A rejoins: everyone has, so the join completes at once.
    let join_a = h.coord.join_group(join_req("g", &a, RANGE), 5).await;
    let join_b = ready(join_b.as_mut());
    encodes(&join_a, 5);
    encodes(&join_b, 5);
    assert_eq!((join_a.error_code, join_b.error_code), (0, 0));
    assert_eq!((join_a.generation_id, join_b.generation_id), (2, 2));
    assert_eq!(join_a.leader.as_str(), a);
    assert_eq!(join_b.leader.as_str(), a);
    assert_eq!(member_ids(&join_a), [a.clone(), b.clone()]);
    assert!(
        join_b.members.is_empty(),
        "only the leader gets the members"
    );

    // Heartbeats while CompletingRebalance are fine (Kafka); commits are not.
    assert_eq!(hb(&h, "g", 2, &a), 0);
    assert_eq!(
        commit(&h, "g", 2, &a, &[("t", 0, 6, None)]),
        [ResponseError::RebalanceInProgress.code()]
    );

    // B syncs first and waits for the leader's assignment.
    let mut sync_b = Box::pin(h.coord.sync_group(sync_req("g", 2, &b, &[]), 5));
    assert!(poll_now(sync_b.as_mut()).is_none());
    let assign: &[(&str, &[u8])] = &[(&a, b"for-a"), (&b, b"for-b")];
    let sync_a = h.coord.sync_group(sync_req("g", 2, &a, assign), 5).await;
    let sync_b = ready(sync_b.as_mut());
    assert_eq!(
        (sync_a.error_code, &sync_a.assignment[..]),
        (0, &b"for-a"[..])
    );
    assert_eq!(
        (sync_b.error_code, &sync_b.assignment[..]),
        (0, &b"for-b"[..])
    );
    assert_eq!((hb(&h, "g", 2, &a), hb(&h, "g", 2, &b)), (0, 0));
    assert_eq!(hb(&h, "g", 1, &a), ResponseError::IllegalGeneration.code());
    assert_eq!(commit(&h, "g", 2, &b, &[("t", 1, 7, None)]), [0]);
    assert_eq!(describe_one(&h, "g", 0).members.len(), 2);
}

#[tokio::test]
async fn a_silent_member_is_evicted_and_the_other_rebalances() {
    let h = Harness::new();
    let (a, b) = stable_two(&h, "g").await;
    // Only A heartbeats. B's session runs out 10 s after its SyncGroup.
    h.advance(ms(4_000));
    assert_eq!(hb(&h, "g", 2, &a), 0);
    h.advance(ms(4_000));
    assert_eq!(hb(&h, "g", 2, &a), 0);
    assert_eq!(describe_one(&h, "g", 0).members.len(), 2);
    h.advance(ms(2_000));
    assert_eq!(describe_one(&h, "g", 0).members.len(), 1);
    assert_eq!(
        hb(&h, "g", 2, &a),
        ResponseError::RebalanceInProgress.code()
    );
    // B, still on generation 2, is told it is unknown.
    assert_eq!(hb(&h, "g", 2, &b), ResponseError::UnknownMemberId.code());

    let join_a = h.coord.join_group(join_req("g", &a, RANGE), 5).await;
    assert_eq!((join_a.error_code, join_a.generation_id), (0, 3));
    assert_eq!(member_ids(&join_a), [a.as_str()]);
    let sync = h
        .coord
        .sync_group(sync_req("g", 3, &a, &[(&a, b"all")]), 5)
        .await;
    assert_eq!(&sync.assignment[..], b"all");
    assert_eq!(hb(&h, "g", 2, &b), ResponseError::IllegalGeneration.code());
    assert_eq!(hb(&h, "g", 3, &b), ResponseError::UnknownMemberId.code());
}

#[tokio::test]
async fn join_v0_uses_the_session_timeout_as_rebalance_timeout() {
    let h = Harness::new();
    let mut join_a = Box::pin(h.coord.join_group(join_req("g", "", RANGE), 0));
    assert!(poll_now(join_a.as_mut()).is_none());
    h.advance(DELAY);
    let join_a = ready(join_a.as_mut());
    encodes(&join_a, 0);
    let a = join_a.member_id.to_string();
    let sync = h.coord.sync_group(sync_req("g", 1, &a, &[]), 0).await;
    encodes(&sync, 0);
    assert_eq!(sync.error_code, 0);

    let mut join_b = Box::pin(h.coord.join_group(join_req("g", "", RANGE), 0));
    assert!(poll_now(join_b.as_mut()).is_none());
    // A keeps heartbeating but never rejoins: after the session timeout (not the 30 s
    // rebalance timeout of the request, which v0 does not have) the join completes without A.
    h.advance(ms(5_000));
    assert_eq!(
        hb(&h, "g", 1, &a),
        ResponseError::RebalanceInProgress.code()
    );
    h.advance(ms(4_999));
    assert_eq!(
        hb(&h, "g", 1, &a),
        ResponseError::RebalanceInProgress.code()
    );
    assert!(poll_now(join_b.as_mut()).is_none());
    h.advance(ms(1));
    let join_b = ready(join_b.as_mut());
    assert_eq!((join_b.error_code, join_b.generation_id), (0, 2));
    assert_eq!(join_b.leader, join_b.member_id);
    assert_eq!(member_ids(&join_b), [join_b.member_id.to_string()]);
    assert_eq!(hb(&h, "g", 1, &a), ResponseError::IllegalGeneration.code());
    assert_eq!(hb(&h, "g", 2, &a), ResponseError::UnknownMemberId.code());
}

#[tokio::test]
async fn members_that_do_not_rejoin_in_time_are_removed() {
    let h = Harness::new();
    let (a, b) = stable_two(&h, "g").await;
    let c = h
        .coord
        .join_group(join_req("g", "", RANGE), 5)
        .await
        .member_id
        .to_string();
    let mut join_c = Box::pin(h.coord.join_group(join_req("g", &c, RANGE), 5));
    let mut join_a = Box::pin(h.coord.join_group(join_req("g", &a, RANGE), 5));
    assert!(poll_now(join_c.as_mut()).is_none());
    assert!(poll_now(join_a.as_mut()).is_none());
    // B heartbeats (so it is not evicted) but does not rejoin before the rebalance timeout.
    for _ in 0..7 {
        h.advance(ms(4_000));
        assert_eq!(
            hb(&h, "g", 2, &b),
            ResponseError::RebalanceInProgress.code()
        );
        assert!(poll_now(join_a.as_mut()).is_none());
    }
    h.advance(ms(2_000));
    let (join_a, join_c) = (ready(join_a.as_mut()), ready(join_c.as_mut()));
    assert_eq!((join_a.generation_id, join_c.generation_id), (3, 3));
    assert_eq!(member_ids(&join_a), [a.clone(), c.clone()]);
    assert_eq!(hb(&h, "g", 2, &b), ResponseError::IllegalGeneration.code());
    assert_eq!(hb(&h, "g", 3, &b), ResponseError::UnknownMemberId.code());
}

#[tokio::test]
async fn leave_group_v0_and_v3() {
    let h = Harness::new();
    let (a, b) = stable_two(&h, "g").await;
    let left = h.coord.leave_group(
        LeaveGroupRequest::default()
            .with_group_id(gid("g"))
            .with_member_id(s(&b)),
        0,
    );
    encodes(&left, 0);
    assert_eq!(left.error_code, 0);
    assert_eq!(
        hb(&h, "g", 2, &a),
        ResponseError::RebalanceInProgress.code()
    );
    let join_a = h.coord.join_group(join_req("g", &a, RANGE), 5).await;
    assert_eq!(
        (join_a.generation_id, member_ids(&join_a)),
        (3, vec![a.clone()])
    );
    h.coord.sync_group(sync_req("g", 3, &a, &[]), 5).await;

    // Unknown member, unknown group (v0–2: the top-level error).
    for (group, member) in [("g", b.as_str()), ("nope", a.as_str())] {
        let left = h.coord.leave_group(
            LeaveGroupRequest::default()
                .with_group_id(gid(group))
                .with_member_id(s(member)),
            1,
        );
        encodes(&left, 1);
        assert_eq!(left.error_code, ResponseError::UnknownMemberId.code());
    }

    // v3+: a list, with an error per member.
    let left = h
        .coord
        .leave_group(leave_v3("g", &[(&a, None), ("nobody", None)]), 3);
    encodes(&left, 3);
    assert_eq!(left.error_code, 0);
    let errors: Vec<_> = left
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.error_code))
        .collect();
    assert_eq!(
        errors,
        [
            (a.clone(), 0),
            ("nobody".to_owned(), ResponseError::UnknownMemberId.code())
        ]
    );
    let described = describe_one(&h, "g", 0);
    assert_eq!(described.group_state.as_str(), "Empty");
    assert!(described.members.is_empty());
    assert_eq!(hb(&h, "g", 4, &a), ResponseError::UnknownMemberId.code());
    let left = h.coord.leave_group(leave_v3("nope", &[(&a, None)]), 5);
    encodes(&left, 5);
    assert_eq!(
        left.members[0].error_code,
        ResponseError::UnknownMemberId.code()
    );
}

#[tokio::test]
async fn static_members_are_replaced_and_leave_by_instance_id() {
    let h = Harness::new();
    let with_instance =
        |member: &str| join_req("g", member, RANGE).with_group_instance_id(Some(s("host-1")));
    // A static member gets its id at once (no MEMBER_ID_REQUIRED).
    let mut join = Box::pin(h.coord.join_group(with_instance(""), 5));
    assert!(poll_now(join.as_mut()).is_none());
    h.advance(DELAY);
    let old = ready(join.as_mut());
    assert_eq!((old.error_code, old.generation_id), (0, 1));
    assert!(old.member_id.starts_with("host-1-"), "{}", old.member_id);
    assert_eq!(old.members[0].group_instance_id.as_deref(), Some("host-1"));
    encodes(&old, 5);
    h.coord
        .sync_group(sync_req("g", 1, &old.member_id, &[]), 5)
        .await;

    // Restarted with the same instance id: replaces the old incarnation.
    let new = h.coord.join_group(with_instance(""), 5).await;
    assert_eq!((new.error_code, new.generation_id), (0, 2));
    assert_ne!(new.member_id, old.member_id);
    assert_eq!(member_ids(&new), [new.member_id.to_string()]);
    assert_eq!(
        hb(&h, "g", 2, &old.member_id),
        ResponseError::UnknownMemberId.code()
    );

    let left = h
        .coord
        .leave_group(leave_v3("g", &[("", Some("host-1"))]), 4);
    assert_eq!(left.members[0].error_code, 0);
    assert_eq!(describe_one(&h, "g", 4).group_state.as_str(), "Empty");
}

#[tokio::test]
async fn generation_then_member_then_state_errors() {
    let h = Harness::new();
    let a = stable_one(&h, "g").await;
    // Wrong generation first, even for an unknown member.
    assert_eq!(
        hb(&h, "g", 7, "nobody"),
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        hb(&h, "g", 1, "nobody"),
        ResponseError::UnknownMemberId.code()
    );
    assert_eq!(hb(&h, "nope", 1, &a), ResponseError::UnknownMemberId.code());
    let sync = |generation, member: &str| {
        h.coord
            .sync_group(sync_req("g", generation, member, &[]), 3)
    };
    assert_eq!(
        sync(0, &a).await.error_code,
        ResponseError::IllegalGeneration.code()
    );
    assert_eq!(
        sync(1, "nobody").await.error_code,
        ResponseError::UnknownMemberId.code()
    );
    let unknown_group = h.coord.sync_group(sync_req("nope", 1, &a, &[]), 3).await;
    assert_eq!(
        unknown_group.error_code,
        ResponseError::UnknownMemberId.code()
    );
    let wrong_protocol = h
        .coord
        .sync_group(
            sync_req("g", 1, &a, &[]).with_protocol_name(Some(s("roundrobin"))),
            5,
        )
        .await;
    assert_eq!(
        wrong_protocol.error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    let t = &[("t", 0, 1, None)];
    assert_eq!(
        commit(&h, "g", 2, &a, t),
        [ResponseError::IllegalGeneration.code()]
    );
    assert_eq!(
        commit(&h, "g", 1, "nobody", t),
        [ResponseError::UnknownMemberId.code()]
    );
    // A simple commit to a group with members is from a stale generation.
    assert_eq!(
        commit(&h, "g", -1, "", t),
        [ResponseError::IllegalGeneration.code()]
    );
    // A generation on a group that does not exist (say, after a restart).
    assert_eq!(
        commit(&h, "nope", 3, &a, t),
        [ResponseError::IllegalGeneration.code()]
    );
    assert_eq!(
        commit(&h, "", -1, "", t),
        [ResponseError::InvalidGroupId.code()]
    );
    assert_eq!(commit(&h, "g", 1, &a, t), [0]);
}

#[tokio::test]
async fn join_validation_errors() {
    let h = Harness::new();
    let short = join_req("g", "", RANGE).with_session_timeout_ms(1_000);
    let resp = h.coord.join_group(short, 5).await;
    assert_eq!(resp.error_code, ResponseError::InvalidSessionTimeout.code());
    let resp = h.coord.join_group(join_req("", "", RANGE), 5).await;
    assert_eq!(resp.error_code, ResponseError::InvalidGroupId.code());
    let resp = h.coord.join_group(join_req("g", "", &[]), 5).await;
    assert_eq!(
        resp.error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    encodes(&resp, 5);
    for version in 0..=9 {
        encodes(
            &join_error(version, ResponseError::UnknownMemberId, "m"),
            version,
        );
    }
}

#[tokio::test]
async fn protocol_selection_and_inconsistent_protocols() {
    let h = Harness::new();
    let both: &[(&str, &[u8])] = &[("range", b"r"), ("roundrobin", b"rr")];
    let rr_first: &[(&str, &[u8])] = &[("roundrobin", b"rr2"), ("range", b"r2")];
    let mut join_a = Box::pin(h.coord.join_group(join_req("g", "", both), 3));
    let mut join_b = Box::pin(h.coord.join_group(join_req("g", "", rr_first), 3));
    assert!(poll_now(join_a.as_mut()).is_none());
    assert!(poll_now(join_b.as_mut()).is_none());
    // Nothing in common with the members, or another protocol type.
    let sticky = h
        .coord
        .join_group(join_req("g", "", &[("sticky", b"s")]), 3)
        .await;
    assert_eq!(
        sticky.error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    let connect = h
        .coord
        .join_group(join_req("g", "", both).with_protocol_type(s("connect")), 3)
        .await;
    assert_eq!(
        connect.error_code,
        ResponseError::InconsistentGroupProtocol.code()
    );
    h.advance(DELAY);
    let (join_a, join_b) = (ready(join_a.as_mut()), ready(join_b.as_mut()));
    // The leader (first joiner) prefers range.
    assert_eq!(join_a.leader, join_a.member_id);
    assert_eq!(join_a.protocol_name.as_deref(), Some("range"));
    assert_eq!(join_b.protocol_name.as_deref(), Some("range"));
    let metadata: Vec<&[u8]> = join_a.members.iter().map(|m| &m.metadata[..]).collect();
    assert_eq!(metadata, [&b"r"[..], &b"r2"[..]]);

    // Only roundrobin in common.
    let mut join_c = Box::pin(h.coord.join_group(join_req("h", "", both), 3));
    let mut join_d = Box::pin(
        h.coord
            .join_group(join_req("h", "", &[("roundrobin", b"x")]), 3),
    );
    assert!(poll_now(join_c.as_mut()).is_none());
    assert!(poll_now(join_d.as_mut()).is_none());
    h.advance(DELAY);
    assert_eq!(
        ready(join_c.as_mut()).protocol_name.as_deref(),
        Some("roundrobin")
    );
    assert_eq!(
        ready(join_d.as_mut()).protocol_name.as_deref(),
        Some("roundrobin")
    );
}

#[tokio::test]
async fn simple_commits_without_members() {
    let h = Harness::new();
    assert_eq!(
        commit(&h, "manual", -1, "", &[("t", 0, 10, Some("m"))]),
        [0]
    );
    let resp = h
        .coord
        .offset_fetch(fetch_req("manual", Some(&[("t", &[0])])), 3);
    assert_eq!(fetched(&resp), [("t".into(), 0, 10, "m".into(), 0)]);
    // Also on a group whose members all left.
    let a = stable_one(&h, "g").await;
    h.coord.leave_group(leave_v3("g", &[(&a, None)]), 3);
    assert_eq!(commit(&h, "g", -1, "", &[("t", 1, 3, None)]), [0]);
    assert_eq!(h.coord.offsets.fetch("g", "t", 1).unwrap().offset, 3);
    // A generation that is not the group's.
    assert_eq!(
        commit(&h, "g", 1, &a, &[("t", 1, 4, None)]),
        [ResponseError::IllegalGeneration.code()]
    );
}

#[tokio::test]
async fn commit_then_fetch_and_again_after_a_restart() {
    let mut h = Harness::new();
    let a = stable_one(&h, "g").await;
    let resp = h.coord.offset_commit(
        commit_req(
            "g",
            1,
            &a,
            &[
                ("t", 0, 42, Some("meta")),
                ("t", 1, 7, None),
                ("u", 3, 0, Some("")),
                ("t", -1, 1, None),
                ("u", 4, 1, Some(&"x".repeat(4097))),
            ],
        ),
        2,
    );
    encodes(&resp, 2);
    assert_eq!(
        commit_errors(&resp),
        [
            ("t".into(), 0, 0),
            ("t".into(), 1, 0),
            (
                "t".into(),
                -1,
                ResponseError::UnknownTopicOrPartition.code()
            ),
            ("u".into(), 3, 0),
            ("u".into(), 4, ResponseError::OffsetMetadataTooLarge.code()),
        ]
    );
    let expect = vec![
        ("t".to_owned(), 0, 42, "meta".to_owned(), 0),
        ("t".to_owned(), 1, 7, String::new(), 0),
        ("t".to_owned(), 2, -1, String::new(), 0),
        ("u".to_owned(), 3, 0, String::new(), 0),
        ("v".to_owned(), 0, -1, String::new(), 0),
    ];
    let req = || fetch_req("g", Some(&[("t", &[0, 1, 2]), ("u", &[3]), ("v", &[0])]));
    for version in [1, 5, 7] {
        let resp = h.coord.offset_fetch(req(), version);
        encodes(&resp, version);
        assert_eq!(fetched(&resp), expect, "v{version}");
        assert_eq!(resp.error_code, 0);
    }

    h.restart();
    assert_eq!(fetched(&h.coord.offset_fetch(req(), 7)), expect);
    // Group membership is not durable: the old generation is gone.
    assert_eq!(
        commit(&h, "g", 1, &a, &[("t", 0, 43, None)]),
        [ResponseError::IllegalGeneration.code()]
    );

    // Unknown group: -1, "" and no error for every partition asked for.
    let resp = h
        .coord
        .offset_fetch(fetch_req("other", Some(&[("t", &[0, 1])])), 6);
    assert_eq!(
        fetched(&resp),
        [
            ("t".into(), 0, -1, String::new(), 0),
            ("t".into(), 1, -1, String::new(), 0)
        ]
    );
}

#[tokio::test]
async fn offset_fetch_with_null_topics_returns_every_committed_partition() {
    let h = Harness::new();
    commit(
        &h,
        "g",
        -1,
        "",
        &[
            ("b", 1, 11, None),
            ("a", 0, 5, Some("x")),
            ("b", 0, 10, None),
        ],
    );
    let resp = h.coord.offset_fetch(fetch_req("g", None), 2);
    encodes(&resp, 2);
    assert_eq!(
        fetched(&resp),
        [
            ("a".into(), 0, 5, "x".into(), 0),
            ("b".into(), 0, 10, String::new(), 0),
            ("b".into(), 1, 11, String::new(), 0),
        ]
    );
    assert!(h
        .coord
        .offset_fetch(fetch_req("none", None), 7)
        .topics
        .is_empty());

    // v8+: a list of groups.
    let req = OffsetFetchRequest::default()
        .with_topics(None)
        .with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(gid("g"))
                .with_topics(None),
            OffsetFetchRequestGroup::default()
                .with_group_id(gid("none"))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s("a")))
                    .with_partition_indexes(vec![0])])),
        ]);
    let resp = h.coord.offset_fetch(req, 8);
    encodes(&resp, 8);
    let got: Vec<_> = resp
        .groups
        .iter()
        .flat_map(|g| {
            g.topics.iter().flat_map(move |t| {
                t.partitions.iter().map(move |p| {
                    (
                        g.group_id.to_string(),
                        t.name.to_string(),
                        p.partition_index,
                        p.committed_offset,
                    )
                })
            })
        })
        .collect();
    assert_eq!(
        got,
        [
            ("g".into(), "a".into(), 0, 5),
            ("g".into(), "b".into(), 0, 10),
            ("g".into(), "b".into(), 1, 11),
            ("none".into(), "a".into(), 0, -1),
        ]
    );
}

#[tokio::test]
async fn describe_and_list_groups() {
    let h = Harness::new();
    let a = stable_one(&h, "active").await;
    commit(&h, "offsets-only", -1, "", &[("t", 0, 1, None)]);
    let mut joining = Box::pin(h.coord.join_group(join_req("joining", "", RANGE), 3));
    assert!(poll_now(joining.as_mut()).is_none());

    let req = DescribeGroupsRequest::default().with_groups(vec![
        gid("active"),
        gid("offsets-only"),
        gid("missing"),
        gid("joining"),
    ]);
    for version in 0..=5 {
        let resp = h.coord.describe_groups(req.clone(), version);
        encodes(&resp, version);
        let summary: Vec<_> = resp
            .groups
            .iter()
            .map(|g| {
                (
                    g.group_id.to_string(),
                    g.error_code,
                    g.group_state.to_string(),
                    g.protocol_type.to_string(),
                    g.protocol_data.to_string(),
                    g.members.len(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "active".into(),
                    0,
                    "Stable".into(),
                    "consumer".into(),
                    "range".into(),
                    1
                ),
                (
                    "offsets-only".into(),
                    0,
                    "Empty".into(),
                    "consumer".into(),
                    String::new(),
                    0
                ),
                (
                    "missing".into(),
                    0,
                    "Dead".into(),
                    String::new(),
                    String::new(),
                    0
                ),
                (
                    "joining".into(),
                    0,
                    "PreparingRebalance".into(),
                    "consumer".into(),
                    String::new(),
                    1
                ),
            ]
        );
        assert_eq!(resp.groups[0].members[0].member_id.as_str(), a);
        // No metadata or assignment while rebalancing, as in Kafka.
        assert!(resp.groups[3].members[0].member_metadata.is_empty());
    }
    let v6 = h.coord.describe_groups(req.clone(), 6);
    encodes(&v6, 6);
    assert_eq!(
        v6.groups[2].error_code,
        ResponseError::GroupIdNotFound.code()
    );

    let list = |states: &[&str], types: &[&str], version| {
        let req = ListGroupsRequest::default()
            .with_states_filter(states.iter().map(|x| s(x)).collect())
            .with_types_filter(types.iter().map(|x| s(x)).collect());
        let resp = h.coord.list_groups(req, version);
        encodes(&resp, version);
        assert_eq!(resp.error_code, 0);
        resp.groups
            .iter()
            .map(|g| {
                (
                    g.group_id.to_string(),
                    g.protocol_type.to_string(),
                    g.group_state.to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    let all = vec![
        (
            "active".to_owned(),
            "consumer".to_owned(),
            "Stable".to_owned(),
        ),
        (
            "joining".to_owned(),
            "consumer".to_owned(),
            "PreparingRebalance".to_owned(),
        ),
        (
            "offsets-only".to_owned(),
            "consumer".to_owned(),
            "Empty".to_owned(),
        ),
    ];
    for version in 0..=5 {
        assert_eq!(list(&[], &[], version), all, "v{version}");
    }
    // Filters are v4+ / v5+; older versions ignore them.
    assert_eq!(list(&["Stable"], &[], 3), all);
    assert_eq!(
        list(&["stable", "Empty"], &[], 4),
        [all[0].clone(), all[2].clone()]
    );
    assert_eq!(list(&[], &["Classic"], 5), all);
    assert!(list(&[], &["consumer"], 5).is_empty());
    drop(joining);
}

#[tokio::test]
async fn no_request_is_left_hanging() {
    let h = Harness::new();

    // A held join completes when the member everyone waits for leaves.
    let a = stable_one(&h, "g1").await;
    let b = h
        .coord
        .join_group(join_req("g1", "", RANGE), 5)
        .await
        .member_id
        .to_string();
    let mut join_b = Box::pin(h.coord.join_group(join_req("g1", &b, RANGE), 5));
    assert!(poll_now(join_b.as_mut()).is_none());
    h.coord.leave_group(
        LeaveGroupRequest::default()
            .with_group_id(gid("g1"))
            .with_member_id(s(&a)),
        0,
    );
    let joined = ready(join_b.as_mut());
    assert_eq!((joined.error_code, joined.generation_id), (0, 2));
    assert_eq!(joined.leader.as_str(), b);

    // A held join of a member that is removed is answered with an error.
    let a = stable_one(&h, "g2").await;
    let b = h
        .coord
        .join_group(join_req("g2", "", RANGE), 5)
        .await
        .member_id
        .to_string();
    let mut join_b = Box::pin(h.coord.join_group(join_req("g2", &b, RANGE), 5));
    assert!(poll_now(join_b.as_mut()).is_none());
    let left = h.coord.leave_group(leave_v3("g2", &[(&b, None)]), 3);
    assert_eq!(left.members[0].error_code, 0);
    assert_eq!(
        ready(join_b.as_mut()).error_code,
        ResponseError::UnknownMemberId.code()
    );
    // A still has to rejoin: the rebalance B started goes on without B.
    assert_eq!(
        hb(&h, "g2", 1, &a),
        ResponseError::RebalanceInProgress.code()
    );
    let join_a = h.coord.join_group(join_req("g2", &a, RANGE), 5).await;
    assert_eq!(
        (join_a.generation_id, member_ids(&join_a)),
        (2, vec![a.clone()])
    );

    // A follower's held sync fails when the leader leaves mid-sync.
    let (a, b) = stable_two(&h, "g3").await;
    let mut join_a = Box::pin(h.coord.join_group(join_req("g3", &a, RANGE), 5));
    assert!(
        poll_now(join_a.as_mut()).is_none(),
        "the leader rejoining rebalances"
    );
    let join_b = h.coord.join_group(join_req("g3", &b, RANGE), 5).await;
    assert_eq!(join_b.generation_id, 3);
    assert_eq!(ready(join_a.as_mut()).generation_id, 3);
    let mut sync_b = Box::pin(h.coord.sync_group(sync_req("g3", 3, &b, &[]), 5));
    assert!(poll_now(sync_b.as_mut()).is_none());
    h.coord.leave_group(leave_v3("g3", &[(&a, None)]), 3);
    assert_eq!(
        ready(sync_b.as_mut()).error_code,
        ResponseError::RebalanceInProgress.code()
    );

    // A follower's held sync fails when the leader never syncs.
    let (a, b) = stable_two(&h, "g4").await;
    let c = h
        .coord
        .join_group(join_req("g4", "", RANGE), 5)
        .await
        .member_id
        .to_string();
    let mut join_c = Box::pin(h.coord.join_group(join_req("g4", &c, RANGE), 5));
    assert!(poll_now(join_c.as_mut()).is_none());
    let mut join_a = Box::pin(h.coord.join_group(join_req("g4", &a, RANGE), 5));
    assert!(poll_now(join_a.as_mut()).is_none());
    h.coord.join_group(join_req("g4", &b, RANGE), 5).await;
    assert_eq!(ready(join_a.as_mut()).generation_id, 3);
    assert_eq!(ready(join_c.as_mut()).generation_id, 3);
    let mut sync_b = Box::pin(h.coord.sync_group(sync_req("g4", 3, &b, &[]), 5));
    assert!(poll_now(sync_b.as_mut()).is_none());
    let mut sync_c = Box::pin(h.coord.sync_group(sync_req("g4", 3, &c, &[]), 5));
    assert!(poll_now(sync_c.as_mut()).is_none());
    // The leader heartbeats (fine while CompletingRebalance) but never syncs; B and C, held,
    // are not evicted meanwhile.
    for _ in 0..7 {
        h.advance(ms(4_000));
        assert_eq!(hb(&h, "g4", 3, &a), 0);
        assert!(poll_now(sync_b.as_mut()).is_none());
    }
    h.advance(ms(1_999));
    assert!(poll_now(sync_b.as_mut()).is_none());
    h.advance(ms(1));
    assert_eq!(
        ready(sync_b.as_mut()).error_code,
        ResponseError::RebalanceInProgress.code()
    );
    assert_eq!(
        ready(sync_c.as_mut()).error_code,
        ResponseError::RebalanceInProgress.code()
    );
    assert_eq!(hb(&h, "g4", 3, &a), ResponseError::UnknownMemberId.code());
    assert_eq!(
        hb(&h, "g4", 3, &b),
        ResponseError::RebalanceInProgress.code()
    );

    // A rebalance while a sync is held answers it.
    let (a, b) = stable_two(&h, "g5").await;
    let d = h
        .coord
        .join_group(join_req("g5", "", RANGE), 5)
        .await
        .member_id
        .to_string();
    let mut join_d = Box::pin(h.coord.join_group(join_req("g5", &d, RANGE), 5));
    assert!(poll_now(join_d.as_mut()).is_none());
    let mut join_a = Box::pin(h.coord.join_group(join_req("g5", &a, RANGE), 5));
    assert!(poll_now(join_a.as_mut()).is_none());
    h.coord.join_group(join_req("g5", &b, RANGE), 5).await;
    ready(join_a.as_mut());
    ready(join_d.as_mut());
    let mut sync_d = Box::pin(h.coord.sync_group(sync_req("g5", 3, &d, &[]), 5));
    assert!(poll_now(sync_d.as_mut()).is_none());
    // B rejoins with other protocols: a new rebalance.
    let mut rejoin_b = Box::pin(
        h.coord
            .join_group(join_req("g5", &b, &[("range", b"new")]), 5),
    );
    assert!(poll_now(rejoin_b.as_mut()).is_none());
    assert_eq!(
        ready(sync_d.as_mut()).error_code,
        ResponseError::RebalanceInProgress.code()
    );

    // A member waiting on a held join outlives its session timeout (A and D heartbeat)...
    for _ in 0..3 {
        h.advance(ms(4_000));
        assert_eq!(
            hb(&h, "g5", 3, &a),
            ResponseError::RebalanceInProgress.code()
        );
        assert_eq!(
            hb(&h, "g5", 3, &d),
            ResponseError::RebalanceInProgress.code()
        );
    }
    assert_eq!(describe_one(&h, "g5", 0).members.len(), 3);
    // ...unless its requester went away: then the session timeout applies again.
    drop(rejoin_b);
    h.advance(ms(1));
    assert_eq!(describe_one(&h, "g5", 0).members.len(), 2);
    let rejoin_a = h.coord.join_group(join_req("g5", &a, RANGE), 5);
    let mut rejoin_a = Box::pin(rejoin_a);
    assert!(poll_now(rejoin_a.as_mut()).is_none());
    let rejoin_d = h.coord.join_group(join_req("g5", &d, RANGE), 5).await;
    assert_eq!(rejoin_d.generation_id, 4);
    assert_eq!(
        member_ids(&ready(rejoin_a.as_mut())),
        [a.clone(), d.clone()]
    );
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
