//! The classic consumer-group coordinator behind the Kafka API listener: JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups and ListGroups for the single
//! broker (node 0), which coordinates every group.
//!
//! # Group states
//!
//! ```text
//!  Empty ──first join──▶ PreparingRebalance ──every member rejoined, or the join deadline──▶
//!        (generation + 1) CompletingRebalance ──the leader's SyncGroup──▶ Stable
//!
//!  a member joins, leaves or is evicted,
//!  or the leader misses the sync deadline ──▶ PreparingRebalance
//!  no member left when a join phase ends  ──▶ Empty
//! ```
//!
//! - **Empty**: no members. Committed offsets may exist. The first JoinGroup starts a delayed
//!   join: the join phase lasts `initial_rebalance_delay`, extended by each new member up to the
//!   members' rebalance timeout, so consumers started together land in one generation.
//! - **PreparingRebalance**: JoinGroup responses are held. The phase ends as soon as every known
//!   member has rejoined (and no member id handed out with MEMBER_ID_REQUIRED is still to come
//!   back), or at the join deadline (the largest rebalance timeout of the members, the session
//!   timeout for JoinGroup v0): members that did not rejoin by then are removed. The generation
//!   goes up by one, a protocol every member supports is chosen (the leader's first choice among
//!   them) and every held JoinGroup is answered; only the leader gets the member list.
//! - **CompletingRebalance**: SyncGroup requests are held until the leader's arrives with the
//!   assignments; then every member gets its own (empty bytes if the leader gave it none). A
//!   leader that does not sync within the rebalance timeout is removed with every other member
//!   that did not sync, which starts a new rebalance.
//! - **Stable**: heartbeats and commits succeed. A new member, a leaving or evicted member, the
//!   leader rejoining or a member rejoining with other protocols starts a rebalance.
//!
//! Existing members learn of a rebalance from REBALANCE_IN_PROGRESS on their next heartbeat.
//! Every held JoinGroup or SyncGroup is answered, with an error if need be, when its member is
//! removed, when the group rebalances again, or when [`Coordinator::run`] stops; members waiting
//! on a held request are not evicted for missing heartbeats (the request's own deadline covers
//! them, as in Kafka).
//!
//! Heartbeat, SyncGroup and OffsetCommit check the generation (ILLEGAL_GENERATION), then the
//! member (UNKNOWN_MEMBER_ID), then the state. As in Kafka, a heartbeat is answered
//! REBALANCE_IN_PROGRESS only while the group is PreparingRebalance (a member that has its join
//! response may heartbeat while CompletingRebalance), and an OffsetCommit of the current
//! generation is accepted while PreparingRebalance (consumers commit revoked partitions before
//! rejoining) but refused with REBALANCE_IN_PROGRESS while CompletingRebalance.
//!
//! Timers (initial delay, join and sync deadlines, session timeouts, expiry of member ids handed
//! out with MEMBER_ID_REQUIRED) only fire while [`Coordinator::run`] runs.
//!
//! Committed offsets live in [`GroupOffsets`]: an OffsetCommit is on disk before its response.
//! Group membership is in memory only: after a restart every consumer rejoins.
//!
//! Static membership (`group_instance_id`) is only partly supported: a member joining with an
//! empty member id and the instance id of an existing member replaces it (the old one is fenced
//! with FENCED_INSTANCE_ID), through a rebalance rather than Kafka's rebalance-free
//! replacement; LeaveGroup v3+ finds members by instance id.

use crate::log::offsets::GroupOffsets;
use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest,
    ListGroupsResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The Kafka error codes this module answers with.
mod code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const OFFSET_METADATA_TOO_LARGE: i16 = 12;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const FENCED_INSTANCE_ID: i16 = 82;
}

/// The protocol type reported for groups that only have committed offsets.
const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// The group type ListGroups v5 reports: every group here uses the classic protocol.
const CLASSIC_GROUP_TYPE: &str = "classic";
/// A state name for groups that do not exist, as Kafka reports it.
const DEAD: &str = "Dead";

/// Tunables of the coordinator, named after Kafka's broker settings.
#[derive(Debug, Clone)]
pub struct CoordinatorOptions {
    /// How long the first join of an empty group waits for more members
    /// (`group.initial.rebalance.delay.ms`, default 3 s). Each member joining meanwhile extends
    /// the wait by as much again, up to the members' rebalance timeout.
    pub initial_rebalance_delay: Duration,
    /// The shortest session timeout a member may ask for (`group.min.session.timeout.ms`,
    /// default 6 s); outside the bounds JoinGroup fails with INVALID_SESSION_TIMEOUT.
    pub min_session_timeout: Duration,
    /// The longest session timeout a member may ask for (`group.max.session.timeout.ms`,
    /// default 30 min).
    pub max_session_timeout: Duration,
    /// The longest metadata string an OffsetCommit may carry per partition
    /// (`offset.metadata.max.bytes`, default 4096); longer ones fail with
    /// OFFSET_METADATA_TOO_LARGE.
    pub max_metadata_bytes: usize,
}

impl Default for CoordinatorOptions {
    fn default() -> Self {
        CoordinatorOptions {
            initial_rebalance_delay: Duration::from_secs(3),
            min_session_timeout: Duration::from_secs(6),
            max_session_timeout: Duration::from_secs(30 * 60),
            max_metadata_bytes: 4096,
        }
    }
}

/// The classic group coordinator. `Send + Sync`; shared as `Arc<Coordinator>` by every
/// connection, with [`Coordinator::run`] spawned once to drive its timers.
pub struct Coordinator {
    offsets: Arc<GroupOffsets>,
    options: CoordinatorOptions,
    state: Mutex<State>,
    /// Wakes [`Coordinator::run`] when a deadline may have moved earlier.
    wake: Notify,
    /// Feeds member ids.
    member_seq: AtomicU64,
    clock: Clock,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("options", &self.options)
            .field("groups", &lock(&self.state).groups.len())
            .finish()
    }
}

/// Where the coordinator reads the time: tokio's clock, or one the tests move by hand.
enum Clock {
    Tokio,
    #[cfg(test)]
    Manual(Arc<Mutex<Instant>>),
}

impl Clock {
    fn now(&self) -> Instant {
        match self {
            Clock::Tokio => Instant::now(),
            #[cfg(test)]
            Clock::Manual(now) => *lock(now),
        }
    }
}

#[derive(Default)]
struct State {
    groups: HashMap<String, Group>,
    /// Set when [`Coordinator::run`] stops: timers no longer fire, so JoinGroup and SyncGroup
    /// are refused rather than held.
    closed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name Kafka reports in DescribeGroups and ListGroups.
    fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// A held request: where its response goes, and the version it must be encodable at.
struct Waiter<T> {
    tx: oneshot::Sender<T>,
    version: i16,
}

impl<T> Waiter<T> {
    fn answer(self, response: T) {
        // The requester may be gone (connection closed): nothing to do then.
        let _ = self.tx.send(response);
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

struct Member {
    /// Join order: the first joiner leads.
    seq: u64,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    /// (name, metadata) in the member's order of preference.
    protocols: Vec<(String, Bytes)>,
    assignment: Bytes,
    /// When the session times out unless the member is heard from.
    expires: Instant,
    /// Has (re)joined in the current PreparingRebalance.
    joined: bool,
    /// Has sent SyncGroup in the current CompletingRebalance.
    synced: bool,
    join_waiter: Option<Waiter<JoinGroupResponse>>,
    sync_waiter: Option<Waiter<SyncGroupResponse>>,
}

impl Member {
    /// Whether a held request of the member is still wanted: such members are not evicted for
    /// missing heartbeats, the join or sync deadline covers them.
    fn awaiting(&self) -> bool {
        self.join_waiter.is_some() || self.sync_waiter.is_some()
    }

    fn touch(&mut self, now: Instant) {
        self.expires = now + self.session_timeout;
    }

    /// Answers the member's held requests with `error`.
    fn answer_pending(&mut self, id: &str, error: i16) {
        if let Some(w) = self.join_waiter.take() {
            let version = w.version;
            w.answer(join_error(version, error, id));
        }
        if let Some(w) = self.sync_waiter.take() {
            w.answer(sync_error(error));
        }
    }

    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }
}

/// What a JoinGroup asked for, validated.
struct JoinSpec {
    version: i16,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocol_type: String,
    protocols: Vec<(String, Bytes)>,
}

struct Group {
    state: GroupState,
    generation: i32,
    /// The protocol type of the members; kept when the group empties.
    protocol_type: Option<String>,
    /// The protocol chosen for the current generation.
    protocol: Option<String>,
    leader: Option<String>,
    members: HashMap<String, Member>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until the client joins with them or its
    /// session timeout passes.
    pending: HashMap<String, Instant>,
    join_deadline: Option<Instant>,
    /// When the delayed first join of an empty group started, while it lasts.
    initial_join_started: Option<Instant>,
    sync_deadline: Option<Instant>,
    next_seq: u64,
}

/// A response now, or one to await.
enum Held<T> {
    Ready(T),
    Wait(oneshot::Receiver<T>),
}

impl Group {
    fn new() -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: HashMap::new(),
            pending: HashMap::new(),
            join_deadline: None,
            initial_join_started: None,
            sync_deadline: None,
            next_seq: 0,
        }
    }

    fn protocol_type_name(&self) -> &str {
        self.protocol_type
            .as_deref()
            .unwrap_or(CONSUMER_PROTOCOL_TYPE)
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// Member ids in join order.
    fn member_ids(&self) -> Vec<String> {
        let mut ids: Vec<(&String, u64)> = self.members.iter().map(|(id, m)| (id, m.seq)).collect();
        ids.sort_unstable_by_key(|&(_, seq)| seq);
        ids.into_iter().map(|(id, _)| id.clone()).collect()
    }

    fn member_with_instance(&self, instance_id: &str) -> Option<String> {
        self.members
            .iter()
            .find(|(_, m)| m.instance_id.as_deref() == Some(instance_id))
            .map(|(id, _)| id.clone())
    }

    /// Whether a member with these protocols may be in the group with the members other than
    /// `except`: the same protocol type, and some protocol all of them support.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)], except: &str) -> bool {
        let mut others = self
            .members
            .iter()
            .filter(|(id, _)| id.as_str() != except)
            .map(|(_, m)| m)
            .peekable();
        if others.peek().is_none() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        let others: Vec<&Member> = others.collect();
        protocols.iter().any(|(name, _)| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// The protocol of the next generation: the leader's first choice among those every member
    /// supports.
    fn select_protocol(&self, leader: &str) -> Option<String> {
        let leader = self.members.get(leader)?;
        leader
            .protocols
            .iter()
            .map(|(name, _)| name)
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .cloned()
    }

    /// The JoinGroup response of the current generation for `member_id`.
    fn join_response(&self, member_id: &str) -> JoinGroupResponse {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.member_ids()
                .into_iter()
                .map(|id| {
                    let m = &self.members[&id];
                    JoinGroupResponseMember::default()
                        .with_member_id(StrBytes::from_string(id))
                        .with_group_instance_id(m.instance_id.clone().map(StrBytes::from_string))
                        .with_metadata(m.metadata_for(&protocol))
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinGroupResponse::default()
            .with_generation_id(self.generation)
            .with_protocol_type(Some(str_bytes(self.protocol_type_name())))
            .with_protocol_name(Some(StrBytes::from_string(protocol)))
            .with_leader(StrBytes::from_string(leader))
            .with_member_id(str_bytes(member_id))
            .with_members(members)
    }

    fn sync_response(&self, assignment: Bytes) -> SyncGroupResponse {
        SyncGroupResponse::default()
            .with_protocol_type(Some(str_bytes(self.protocol_type_name())))
            .with_protocol_name(Some(StrBytes::from_string(
                self.protocol.clone().unwrap_or_default(),
            )))
            .with_assignment(assignment)
    }

    /// Enters PreparingRebalance: held SyncGroups fail with REBALANCE_IN_PROGRESS, assignments
    /// are dropped and every member has to rejoin. `initial_delay` is for an empty group's first
    /// join.
    fn prepare_rebalance(&mut self, now: Instant, initial_delay: Option<Duration>) {
        for m in self.members.values_mut() {
            if let Some(w) = m.sync_waiter.take() {
                w.answer(sync_error(code::REBALANCE_IN_PROGRESS));
            }
            m.joined = false;
            m.synced = false;
            m.assignment = Bytes::new();
        }
        self.state = GroupState::PreparingRebalance;
        self.sync_deadline = None;
        match initial_delay {
            Some(delay) => {
                self.initial_join_started = Some(now);
                self.join_deadline = Some(now + delay);
            }
            None => {
                self.initial_join_started = None;
                self.join_deadline = Some(now + self.max_rebalance_timeout());
            }
        }
        tracing::debug!(generation = self.generation, "group is rebalancing");
    }

    /// Ends the join phase if it can end now: no members left, or (past the initial delay)
    /// every member rejoined and no handed-out member id is still to come back.
    fn try_complete_join(&mut self, now: Instant) {
        if self.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined = self.initial_join_started.is_none()
            && self.pending.is_empty()
            && self.members.values().all(|m| m.joined);
        if self.members.is_empty() || all_joined {
            self.complete_join(now);
        }
    }

    /// Ends the join phase: removes the members that did not rejoin, starts the next
    /// generation and answers every held JoinGroup.
    fn complete_join(&mut self, now: Instant) {
        let gone: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.joined)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            if let Some(mut m) = self.members.remove(&id) {
                tracing::info!(member = %id, "member did not rejoin in time: removed");
                m.answer_pending(&id, code::UNKNOWN_MEMBER_ID);
            }
        }
        self.join_deadline = None;
        self.initial_join_started = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        let ids = self.member_ids();
        let leader = match &self.leader {
            Some(leader) if self.members.contains_key(leader) => leader.clone(),
            _ => ids[0].clone(),
        };
        let Some(protocol) = self.select_protocol(&leader) else {
            // Unreachable: joins are checked against the other members' protocols.
            tracing::warn!("no protocol common to every member: dropping the members");
            for (id, mut m) in self.members.drain() {
                m.answer_pending(&id, code::INCONSISTENT_GROUP_PROTOCOL);
            }
            self.become_empty();
            return;
        };
        self.leader = Some(leader);
        self.protocol = Some(protocol);
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline = Some(now + self.max_rebalance_timeout());
        tracing::debug!(
            generation = self.generation,
            members = ids.len(),
            "group is completing its rebalance"
        );
        for id in ids {
            let response = self.join_response(&id);
            let m = self.members.get_mut(&id).expect("listed member");
            m.synced = false;
            m.touch(now);
            if let Some(w) = m.join_waiter.take() {
                w.answer(response);
            }
        }
    }

    fn become_empty(&mut self) {
        self.state = GroupState::Empty;
        self.protocol = None;
        self.leader = None;
        self.join_deadline = None;
        self.initial_join_started = None;
        self.sync_deadline = None;
    }

    /// Removes a member, answers its held requests with `error` and rebalances the rest.
    fn remove_member(&mut self, id: &str, error: i16, now: Instant) -> bool {
        let Some(mut m) = self.members.remove(id) else {
            return false;
        };
        m.answer_pending(id, error);
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now, None);
        }
        self.try_complete_join(now);
        true
    }

    /// Adds a member that joined with a new member id, and holds its JoinGroup.
    fn join_new_member(
        &mut self,
        id: String,
        spec: JoinSpec,
        now: Instant,
        initial_delay: Duration,
    ) -> Held<JoinGroupResponse> {
        let (tx, rx) = oneshot::channel();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.protocol_type = Some(spec.protocol_type);
        self.members.insert(
            id.clone(),
            Member {
                seq,
                instance_id: spec.instance_id,
                client_id: spec.client_id,
                client_host: spec.client_host,
                session_timeout: spec.session_timeout,
                rebalance_timeout: spec.rebalance_timeout,
                protocols: spec.protocols,
                assignment: Bytes::new(),
                expires: now + spec.session_timeout,
                joined: true,
                synced: false,
                join_waiter: Some(Waiter {
                    tx,
                    version: spec.version,
                }),
                sync_waiter: None,
            },
        );
        tracing::debug!(member = %id, "member joins");
        match self.state {
            GroupState::Empty => self.prepare_rebalance(now, Some(initial_delay)),
            GroupState::PreparingRebalance => {
                if let Some(started) = self.initial_join_started {
                    // Another member during the initial delay: wait as long again, within the
                    // rebalance timeout.
                    let extended = (now + initial_delay)
                        .min(started + self.max_rebalance_timeout().max(initial_delay));
                    self.join_deadline = self.join_deadline.max(Some(extended));
                }
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.prepare_rebalance(now, None)
            }
        }
        // prepare_rebalance clears every `joined`; this member has.
        if let Some(m) = self.members.get_mut(&id) {
            m.joined = true;
        }
        self.try_complete_join(now);
        Held::Wait(rx)
    }

    /// A JoinGroup of an existing member.
    fn rejoin_member(&mut self, id: &str, spec: JoinSpec, now: Instant) -> Held<JoinGroupResponse> {
        let is_leader = self.leader.as_deref() == Some(id);
        let m = self.members.get_mut(id).expect("checked member");
        let changed = m.protocols != spec.protocols;
        m.instance_id = spec.instance_id;
        m.client_id = spec.client_id;
        m.client_host = spec.client_host;
        m.session_timeout = spec.session_timeout;
        m.rebalance_timeout = spec.rebalance_timeout;
        m.protocols = spec.protocols;
        m.touch(now);
        self.protocol_type = Some(spec.protocol_type);
        match self.state {
            GroupState::PreparingRebalance => {}
            // The member missed its join response: send it again.
            GroupState::CompletingRebalance if !changed => {
                return Held::Ready(self.join_response(id))
            }
            GroupState::Stable if !changed && !is_leader => {
                return Held::Ready(self.join_response(id))
            }
            GroupState::Empty | GroupState::CompletingRebalance | GroupState::Stable => {
                self.prepare_rebalance(now, None)
            }
        }
        let (tx, rx) = oneshot::channel();
        let m = self.members.get_mut(id).expect("checked member");
        m.joined = true;
        let waiter = Waiter {
            tx,
            version: spec.version,
        };
        if let Some(old) = m.join_waiter.replace(waiter) {
            // A JoinGroup sent again before the first was answered: the last one wins.
            let version = old.version;
            old.answer(join_error(version, code::REBALANCE_IN_PROGRESS, id));
        }
        self.try_complete_join(now);
        Held::Wait(rx)
    }

    /// Fires the timers due at `now`; returns when the next one is due.
    fn sweep(&mut self, now: Instant) -> Option<Instant> {
        let pending = self.pending.len();
        self.pending.retain(|_, expires| *expires > now);
        if self.pending.len() != pending {
            self.try_complete_join(now);
        }
        // Requests whose connection went away no longer keep their member alive.
        for m in self.members.values_mut() {
            if m.join_waiter.as_ref().is_some_and(Waiter::is_closed) {
                m.join_waiter = None;
            }
            if m.sync_waiter.as_ref().is_some_and(Waiter::is_closed) {
                m.sync_waiter = None;
            }
        }
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.awaiting() && m.expires <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            tracing::info!(member = %id, "member session timed out: removed");
            self.remove_member(&id, code::UNKNOWN_MEMBER_ID, now);
        }
        if self.state == GroupState::PreparingRebalance
            && self.join_deadline.is_some_and(|d| d <= now)
        {
            self.complete_join(now);
        }
        if self.state == GroupState::CompletingRebalance
            && self.sync_deadline.is_some_and(|d| d <= now)
        {
            let lagging: Vec<String> = self
                .members
                .iter()
                .filter(|(_, m)| !m.synced)
                .map(|(id, _)| id.clone())
                .collect();
            for id in lagging {
                tracing::info!(member = %id, "member did not sync in time: removed");
                self.remove_member(&id, code::UNKNOWN_MEMBER_ID, now);
            }
        }

        let mut next: Option<Instant> = None;
        let mut consider = |t: Instant| next = Some(next.map_or(t, |n| n.min(t)));
        self.pending.values().copied().for_each(&mut consider);
        self.members
            .values()
            .filter(|m| !m.awaiting())
            .for_each(|m| consider(m.expires));
        match self.state {
            GroupState::PreparingRebalance => {
                self.join_deadline.into_iter().for_each(&mut consider)
            }
            GroupState::CompletingRebalance => {
                self.sync_deadline.into_iter().for_each(&mut consider)
            }
            GroupState::Empty | GroupState::Stable => {}
        }
        next
    }
}

impl Coordinator {
    /// A coordinator keeping committed offsets in `offsets`. Spawn [`Coordinator::run`] for its
    /// timers.
    pub fn new(offsets: Arc<GroupOffsets>, options: CoordinatorOptions) -> Arc<Self> {
        Self::with_clock(offsets, options, Clock::Tokio)
    }

    fn with_clock(
        offsets: Arc<GroupOffsets>,
        options: CoordinatorOptions,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new(Coordinator {
            offsets,
            options,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            member_seq: AtomicU64::new(0),
            clock,
        })
    }

    /// JoinGroup (v0–9). Held until the group's join phase completes, which needs
    /// [`Coordinator::run`]. The member's client id and host are reported as empty by
    /// DescribeGroups: see [`Coordinator::join_group_with_client`].
    pub async fn join_group(&self, req: JoinGroupRequest, version: i16) -> JoinGroupResponse {
        self.join_group_with_client(req, version, "", "").await
    }

    /// [`Coordinator::join_group`] with the request header's client id and the peer's host,
    /// which DescribeGroups reports and new member ids start with (`<client id>-<uuid>`, as in
    /// Kafka).
    pub async fn join_group_with_client(
        &self,
        req: JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> JoinGroupResponse {
        let member_id = req.member_id.clone();
        let held = {
            let now = self.clock.now();
            let mut state = lock(&self.state);
            self.join_locked(&mut state, req, version, client_id, client_host, now)
        };
        // Deadlines may have moved earlier (a join phase started, a member id handed out).
        self.wake.notify_one();
        match held {
            Held::Ready(response) => response,
            Held::Wait(rx) => rx.await.unwrap_or_else(|_| {
                join_error(version, code::COORDINATOR_NOT_AVAILABLE, &member_id)
            }),
        }
    }

    fn join_locked(
        &self,
        state: &mut State,
        req: JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
        now: Instant,
    ) -> Held<JoinGroupResponse> {
        let member_id = req.member_id.to_string();
        let fail = |error| Held::Ready(join_error(version, error, &member_id));
        if state.closed {
            return fail(code::COORDINATOR_NOT_AVAILABLE);
        }
        let group_id = req.group_id.0.to_string();
        if group_id.is_empty() {
            return fail(code::INVALID_GROUP_ID);
        }
        let Some(session_timeout) = millis(req.session_timeout_ms) else {
            return fail(code::INVALID_SESSION_TIMEOUT);
        };
        if session_timeout < self.options.min_session_timeout
            || session_timeout > self.options.max_session_timeout
        {
            return fail(code::INVALID_SESSION_TIMEOUT);
        }
        // JoinGroup v0 has no rebalance timeout: Kafka uses the session timeout.
        let rebalance_timeout = match millis(req.rebalance_timeout_ms) {
            Some(t) if version >= 1 && !t.is_zero() => t,
            _ => session_timeout,
        };
        let mut protocols: Vec<(String, Bytes)> = Vec::with_capacity(req.protocols.len());
        for p in req.protocols {
            if !protocols.iter().any(|(name, _)| name == p.name.as_str()) {
                protocols.push((p.name.to_string(), p.metadata));
            }
        }
        let protocol_type = req.protocol_type.to_string();
        if protocol_type.is_empty() || protocols.is_empty() {
            return fail(code::INCONSISTENT_GROUP_PROTOCOL);
        }
        let instance_id = req
            .group_instance_id
            .filter(|_| version >= 5)
            .map(|id| id.to_string());
        let new_id = member_id.is_empty().then(|| {
            let prefix = instance_id.as_deref().unwrap_or(client_id);
            self.new_member_id(prefix)
        });
        let spec = JoinSpec {
            version,
            instance_id,
            client_id: client_id.to_owned(),
            client_host: client_host.to_owned(),
            session_timeout,
            rebalance_timeout,
            protocol_type,
            protocols,
        };
        let delay = self.options.initial_rebalance_delay;
        let group = state.groups.entry(group_id).or_insert_with(Group::new);
        if !group.supports(&spec.protocol_type, &spec.protocols, &member_id) {
            return fail(code::INCONSISTENT_GROUP_PROTOCOL);
        }

        if let Some(id) = new_id {
            if let Some(instance_id) = &spec.instance_id {
                // A static member restarting replaces its previous incarnation. Joining first
                // keeps the group from emptying (and restarting the initial delay) in between.
                let previous = group.member_with_instance(instance_id);
                let held = group.join_new_member(id, spec, now, delay);
                if let Some(previous) = previous {
                    group.remove_member(&previous, code::FENCED_INSTANCE_ID, now);
                }
                return held;
            }
            if version >= 4 {
                group.pending.insert(id.clone(), now + session_timeout);
                return Held::Ready(join_error(version, code::MEMBER_ID_REQUIRED, &id));
            }
            return group.join_new_member(id, spec, now, delay);
        }
        if group.pending.remove(&member_id).is_some() {
            return group.join_new_member(member_id, spec, now, delay);
        }
        if !group.members.contains_key(&member_id) {
            return fail(code::UNKNOWN_MEMBER_ID);
        }
        group.rejoin_member(&member_id, spec, now)
    }

    /// SyncGroup (v0–5). A follower's is held until the leader's arrives with the assignments.
    pub async fn sync_group(&self, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
        let held = {
            let now = self.clock.now();
            let mut state = lock(&self.state);
            Self::sync_locked(&mut state, req, version, now)
        };
        match held {
            Held::Ready(response) => response,
            Held::Wait(rx) => {
                self.wake.notify_one();
                rx.await
                    .unwrap_or_else(|_| sync_error(code::COORDINATOR_NOT_AVAILABLE))
            }
        }
    }

    fn sync_locked(
        state: &mut State,
        req: SyncGroupRequest,
        version: i16,
        now: Instant,
    ) -> Held<SyncGroupResponse> {
        let fail = |error| Held::Ready(sync_error(error));
        if state.closed {
            return fail(code::COORDINATOR_NOT_AVAILABLE);
        }
        let Some(group) = state.groups.get_mut(req.group_id.as_str()) else {
            return fail(code::UNKNOWN_MEMBER_ID);
        };
        if req.generation_id != group.generation {
            return fail(code::ILLEGAL_GENERATION);
        }
        let member_id = req.member_id.as_str();
        if !group.members.contains_key(member_id) {
            return fail(code::UNKNOWN_MEMBER_ID);
        }
        if version >= 5 {
            let type_differs = req
                .protocol_type
                .as_ref()
                .is_some_and(|t| t.as_str() != group.protocol_type_name());
            let name_differs = req
                .protocol_name
                .as_ref()
                .is_some_and(|n| Some(n.as_str()) != group.protocol.as_deref());
            if type_differs || name_differs {
                return fail(code::INCONSISTENT_GROUP_PROTOCOL);
            }
        }
        match group.state {
            GroupState::Empty => fail(code::UNKNOWN_MEMBER_ID),
            GroupState::PreparingRebalance => fail(code::REBALANCE_IN_PROGRESS),
            GroupState::Stable => {
                let m = group.members.get_mut(member_id).expect("checked member");
                m.touch(now);
                let assignment = m.assignment.clone();
                Held::Ready(group.sync_response(assignment))
            }
            GroupState::CompletingRebalance => {
                let (tx, rx) = oneshot::channel();
                let m = group.members.get_mut(member_id).expect("checked member");
                m.synced = true;
                m.touch(now);
                if let Some(old) = m.sync_waiter.replace(Waiter { tx, version }) {
                    old.answer(sync_error(code::REBALANCE_IN_PROGRESS));
                }
                if group.leader.as_deref() == Some(member_id) {
                    let mut assignments: HashMap<String, Bytes> = req
                        .assignments
                        .into_iter()
                        .map(|a| (a.member_id.to_string(), a.assignment))
                        .collect();
                    for (id, m) in group.members.iter_mut() {
                        m.assignment = assignments.remove(id).unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    group.sync_deadline = None;
                    tracing::debug!(generation = group.generation, "group is stable");
                    let responses: Vec<(String, SyncGroupResponse)> = group
                        .members
                        .iter()
                        .map(|(id, m)| (id.clone(), group.sync_response(m.assignment.clone())))
                        .collect();
                    for (id, response) in responses {
                        let m = group.members.get_mut(&id).expect("listed member");
                        m.touch(now);
                        if let Some(w) = m.sync_waiter.take() {
                            w.answer(response);
                        }
                    }
                }
                Held::Wait(rx)
            }
        }
    }

    /// Heartbeat (v0–4).
    pub fn heartbeat(&self, req: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        let error = match state.groups.get_mut(req.group_id.as_str()) {
            None => code::UNKNOWN_MEMBER_ID,
            Some(group) if req.generation_id != group.generation => code::ILLEGAL_GENERATION,
            Some(group) => match group.members.get_mut(req.member_id.as_str()) {
                None => code::UNKNOWN_MEMBER_ID,
                Some(m) => {
                    m.touch(now);
                    match group.state {
                        GroupState::Empty => code::UNKNOWN_MEMBER_ID,
                        GroupState::PreparingRebalance => code::REBALANCE_IN_PROGRESS,
                        GroupState::CompletingRebalance | GroupState::Stable => code::NONE,
                    }
                }
            },
        };
        HeartbeatResponse::default().with_error_code(error)
    }

    /// LeaveGroup (v0–5): v0–2 name one member, v3+ a list (by member id, or by instance id
    /// when the member id is empty). The remaining members rebalance.
    pub fn leave_group(&self, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
        let leaving: Vec<(StrBytes, Option<StrBytes>)> = if version >= 3 {
            req.members
                .into_iter()
                .map(|m| (m.member_id, m.group_instance_id))
                .collect()
        } else {
            vec![(req.member_id, None)]
        };
        let now = self.clock.now();
        let mut results = Vec::with_capacity(leaving.len());
        {
            let mut state = lock(&self.state);
            let mut group = state.groups.get_mut(req.group_id.as_str());
            for (member_id, instance_id) in leaving {
                let error = match group.as_deref_mut() {
                    None => code::UNKNOWN_MEMBER_ID,
                    Some(group) => Self::leave_one(group, &member_id, instance_id.as_deref(), now),
                };
                results.push((member_id, instance_id, error));
            }
        }
        self.wake.notify_one();
        if version >= 3 {
            let members = results
                .into_iter()
                .map(|(member_id, group_instance_id, error_code)| {
                    MemberResponse::default()
                        .with_member_id(member_id)
                        .with_group_instance_id(group_instance_id)
                        .with_error_code(error_code)
                })
                .collect();
            LeaveGroupResponse::default().with_members(members)
        } else {
            let error = results.first().map_or(code::NONE, |r| r.2);
            LeaveGroupResponse::default().with_error_code(error)
        }
    }

    fn leave_one(
        group: &mut Group,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> i16 {
        let id = if !member_id.is_empty() {
            if group.pending.remove(member_id).is_some() {
                group.try_complete_join(now);
                return code::NONE;
            }
            match group.members.get(member_id) {
                None => return code::UNKNOWN_MEMBER_ID,
                Some(m) if instance_id.is_some() && m.instance_id.as_deref() != instance_id => {
                    return code::FENCED_INSTANCE_ID
                }
                Some(_) => member_id.to_owned(),
            }
        } else {
            match instance_id.and_then(|i| group.member_with_instance(i)) {
                Some(id) => id,
                None => return code::UNKNOWN_MEMBER_ID,
            }
        };
        tracing::debug!(member = %id, "member leaves");
        group.remove_member(&id, code::UNKNOWN_MEMBER_ID, now);
        code::NONE
    }

    /// OffsetCommit (v2–9). Checks the generation and member (generation -1 with no members is
    /// a "simple" commit, from a consumer that assigns itself partitions), then commits every
    /// valid partition durably in one write before answering. Blocks on that write (an fsync):
    /// call it where blocking is acceptable (e.g. `tokio::task::spawn_blocking`).
    pub fn offset_commit(&self, req: OffsetCommitRequest, _version: i16) -> OffsetCommitResponse {
        let group_id = req.group_id.0.to_string();
        let check = if group_id.is_empty() {
            code::INVALID_GROUP_ID
        } else {
            self.commit_check(
                &group_id,
                req.generation_id_or_member_epoch,
                req.member_id.as_str(),
            )
        };
        let mut errors: Vec<Vec<i16>> = Vec::with_capacity(req.topics.len());
        let mut entries: Vec<(&str, u32, i64, &str)> = Vec::new();
        for topic in &req.topics {
            let mut topic_errors = Vec::with_capacity(topic.partitions.len());
            for p in &topic.partitions {
                let metadata = p.committed_metadata.as_deref().unwrap_or("");
                let error = if check != code::NONE {
                    check
                } else if p.partition_index < 0 {
                    code::UNKNOWN_TOPIC_OR_PARTITION
                } else if metadata.len() > self.options.max_metadata_bytes {
                    code::OFFSET_METADATA_TOO_LARGE
                } else {
                    entries.push((
                        topic.name.as_str(),
                        p.partition_index as u32,
                        p.committed_offset,
                        metadata,
                    ));
                    code::NONE
                };
                topic_errors.push(error);
            }
            errors.push(topic_errors);
        }
        let write_error = match self.offsets.commit(&group_id, &entries) {
            Ok(()) => code::NONE,
            Err(e) => {
                tracing::error!(group = %group_id, error = %e, "could not commit offsets");
                code::COORDINATOR_NOT_AVAILABLE
            }
        };
        let topics = req
            .topics
            .iter()
            .zip(errors)
            .map(|(topic, topic_errors)| {
                let partitions = topic
                    .partitions
                    .iter()
                    .zip(topic_errors)
                    .map(|(p, error)| {
                        let error = if error == code::NONE {
                            write_error
                        } else {
                            error
                        };
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(p.partition_index)
                            .with_error_code(error)
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(topic.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }

    /// Whether `member_id` of `generation` may commit for `group_id` now.
    fn commit_check(&self, group_id: &str, generation: i32, member_id: &str) -> i16 {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        let Some(group) = state.groups.get_mut(group_id) else {
            // Kafka: no group, so either a simple commit or one from a stale generation.
            return if generation < 0 {
                code::NONE
            } else {
                code::ILLEGAL_GENERATION
            };
        };
        if group.members.is_empty() && generation < 0 {
            return code::NONE;
        }
        if generation != group.generation {
            return code::ILLEGAL_GENERATION;
        }
        let Some(m) = group.members.get_mut(member_id) else {
            return code::UNKNOWN_MEMBER_ID;
        };
        match group.state {
            GroupState::Empty => code::UNKNOWN_MEMBER_ID,
            // Consumers commit what they are giving up before they rejoin.
            GroupState::Stable | GroupState::PreparingRebalance => {
                m.touch(now);
                code::NONE
            }
            GroupState::CompletingRebalance => code::REBALANCE_IN_PROGRESS,
        }
    }

    /// OffsetFetch (v1–9). Unknown groups and partitions get offset -1, metadata "" and no
    /// error; null topics (v2+) means every partition the group committed.
    pub fn offset_fetch(&self, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
        if version >= 8 {
            let groups = req
                .groups
                .into_iter()
                .map(|g| {
                    let wanted = g.topics.map(|topics| {
                        topics
                            .into_iter()
                            .map(|t| (t.name, t.partition_indexes))
                            .collect()
                    });
                    let topics = self
                        .fetch_offsets(g.group_id.as_str(), wanted)
                        .into_iter()
                        .map(|(name, partitions)| {
                            let partitions = partitions
                                .into_iter()
                                .map(|(partition, offset, metadata)| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(partition)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(-1)
                                        .with_metadata(Some(StrBytes::from_string(metadata)))
                                })
                                .collect();
                            OffsetFetchResponseTopics::default()
                                .with_name(name)
                                .with_partitions(partitions)
                        })
                        .collect();
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id)
                        .with_topics(topics)
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let wanted = req.topics.map(|topics| {
            topics
                .into_iter()
                .map(|t| (t.name, t.partition_indexes))
                .collect()
        });
        let topics = self
            .fetch_offsets(req.group_id.as_str(), wanted)
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|(partition, offset, metadata)| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(-1)
                            .with_metadata(Some(StrBytes::from_string(metadata)))
                    })
                    .collect();
                OffsetFetchResponseTopic::default()
                    .with_name(name)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetFetchResponse::default().with_topics(topics)
    }

    /// (topic, [(partition, offset, metadata)]) for the wanted partitions, or for every committed
    /// one when `wanted` is `None`.
    #[allow(clippy::type_complexity)]
    fn fetch_offsets(
        &self,
        group: &str,
        wanted: Option<Vec<(TopicName, Vec<i32>)>>,
    ) -> Vec<(TopicName, Vec<(i32, i64, String)>)> {
        match wanted {
            Some(topics) => topics
                .into_iter()
                .map(|(name, partitions)| {
                    let partitions = partitions
                        .into_iter()
                        .map(|partition| {
                            let committed = u32::try_from(partition)
                                .ok()
                                .and_then(|p| self.offsets.fetch(group, name.as_str(), p));
                            match committed {
                                Some(c) => (partition, c.offset, c.metadata),
                                None => (partition, -1, String::new()),
                            }
                        })
                        .collect();
                    (name, partitions)
                })
                .collect(),
            None => {
                let mut topics: Vec<(TopicName, Vec<(i32, i64, String)>)> = Vec::new();
                for (topic, partition, c) in self.offsets.group(group) {
                    let Ok(partition) = i32::try_from(partition) else {
                        continue;
                    };
                    let entry = (partition, c.offset, c.metadata);
                    match topics.last_mut() {
                        Some((name, partitions)) if name.as_str() == topic => {
                            partitions.push(entry)
                        }
                        _ => topics.push((TopicName(StrBytes::from_string(topic)), vec![entry])),
                    }
                }
                topics
            }
        }
    }

    /// DescribeGroups (v0–6). Member metadata and assignments are reported while Stable only,
    /// as Kafka does; a group with committed offsets only is Empty, an unknown one Dead (v6:
    /// GROUP_ID_NOT_FOUND).
    pub fn describe_groups(
        &self,
        req: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        let state = lock(&self.state);
        let groups = req
            .groups
            .into_iter()
            .map(|group_id| {
                if let Some(group) = state.groups.get(group_id.as_str()) {
                    describe(group_id, group)
                } else if !self.offsets.group(group_id.as_str()).is_empty() {
                    DescribedGroup::default()
                        .with_group_id(group_id)
                        .with_group_state(str_bytes(GroupState::Empty.name()))
                        .with_protocol_type(str_bytes(CONSUMER_PROTOCOL_TYPE))
                } else {
                    let described = DescribedGroup::default()
                        .with_group_id(group_id.clone())
                        .with_group_state(str_bytes(DEAD));
                    if version >= 6 {
                        described
                            .with_error_code(code::GROUP_ID_NOT_FOUND)
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Group {} not found.",
                                group_id.as_str()
                            ))))
                    } else {
                        described
                    }
                }
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    /// ListGroups (v0–5): groups with members or committed offsets (the latter Empty, protocol
    /// type "consumer"), filtered by state (v4+) and type (v5: every group is "classic").
    pub fn list_groups(&self, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        let mut listed: BTreeMap<String, (&'static str, String)> = BTreeMap::new();
        {
            let state = lock(&self.state);
            for (id, group) in &state.groups {
                let entry = (group.state.name(), group.protocol_type_name().to_owned());
                listed.insert(id.clone(), entry);
            }
        }
        for id in self.offsets.groups() {
            listed
                .entry(id)
                .or_insert_with(|| (GroupState::Empty.name(), CONSUMER_PROTOCOL_TYPE.to_owned()));
        }
        let state_ok = |state: &str| {
            version < 4
                || req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|f| f.as_str().eq_ignore_ascii_case(state))
        };
        let type_ok = version < 5
            || req.types_filter.is_empty()
            || req
                .types_filter
                .iter()
                .any(|f| f.as_str().eq_ignore_ascii_case(CLASSIC_GROUP_TYPE));
        let groups = listed
            .into_iter()
            .filter(|(_, (state, _))| type_ok && state_ok(state))
            .map(|(id, (state, protocol_type))| {
                ListedGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(id)))
                    .with_protocol_type(StrBytes::from_string(protocol_type))
                    .with_group_state(str_bytes(state))
                    .with_group_type(str_bytes(CLASSIC_GROUP_TYPE))
            })
            .collect();
        ListGroupsResponse::default().with_groups(groups)
    }

    /// Drives the timers: evicts members past their session timeout, ends join phases (initial
    /// delay, join deadline) and sync phases (sync deadline), and forgets member ids handed out
    /// with MEMBER_ID_REQUIRED that were never used. Runs until `shutdown` is cancelled, then
    /// answers every held JoinGroup and SyncGroup with NOT_COORDINATOR and refuses new ones
    /// (COORDINATOR_NOT_AVAILABLE), since nothing would complete them.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let woken = self.wake.notified();
            let next = self.sweep();
            let sleep = async {
                match next {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                () = woken => {}
                () = sleep => {}
            }
        }
        self.close();
    }

    /// Fires every timer due now; returns when the next one is due.
    fn sweep(&self) -> Option<Instant> {
        let now = self.clock.now();
        let mut state = lock(&self.state);
        let next = state
            .groups
            .values_mut()
            .filter_map(|group| group.sweep(now))
            .min();
        // Never spin: whatever is due now has been handled.
        next.map(|at| at.max(now + Duration::from_millis(1)))
    }

    fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        for group in state.groups.values_mut() {
            for (id, m) in group.members.iter_mut() {
                m.answer_pending(id, code::NOT_COORDINATOR);
            }
        }
    }

    fn new_member_id(&self, prefix: &str) -> String {
        let n = self.member_seq.fetch_add(1, Ordering::Relaxed);
        // RandomState is randomly keyed per process (and per instance), so its hashes serve as
        // random bits; the counter keeps ids distinct within a process regardless.
        let hasher = RandomState::new();
        let hi = hasher.hash_one((n, 0u8));
        let lo = hasher.hash_one((n, 1u8));
        let prefix = if prefix.is_empty() { "member" } else { prefix };
        format!(
            "{prefix}-{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }
}

fn describe(group_id: GroupId, group: &Group) -> DescribedGroup {
    let stable = group.state == GroupState::Stable;
    let protocol = if stable {
        group.protocol.clone().unwrap_or_default()
    } else {
        String::new()
    };
    let members = group
        .member_ids()
        .into_iter()
        .map(|id| {
            let m = &group.members[&id];
            let member = DescribedGroupMember::default()
                .with_member_id(StrBytes::from_string(id))
                .with_group_instance_id(m.instance_id.clone().map(StrBytes::from_string))
                .with_client_id(StrBytes::from_string(m.client_id.clone()))
                .with_client_host(StrBytes::from_string(m.client_host.clone()));
            if stable {
                member
                    .with_member_metadata(m.metadata_for(&protocol))
                    .with_member_assignment(m.assignment.clone())
            } else {
                member
            }
        })
        .collect();
    DescribedGroup::default()
        .with_group_id(group_id)
        .with_group_state(str_bytes(group.state.name()))
        .with_protocol_type(str_bytes(group.protocol_type_name()))
        .with_protocol_data(StrBytes::from_string(protocol))
        .with_members(members)
}

/// A failed JoinGroup: generation -1, and a null protocol name from v7 (where it is nullable),
/// an empty one before, as Kafka does.
fn join_error(version: i16, error: i16, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(error)
        .with_generation_id(-1)
        .with_protocol_name((version < 7).then(StrBytes::new))
        .with_member_id(str_bytes(member_id))
}

fn sync_error(error: i16) -> SyncGroupResponse {
    SyncGroupResponse::default().with_error_code(error)
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// A non-negative millisecond count as a duration.
fn millis(ms: i32) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent between statements that can panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use kafka_protocol::messages::leave_group_request::MemberIdentity;
    use kafka_protocol::messages::offset_commit_request::{
        OffsetCommitRequestPartition, OffsetCommitRequestTopic,
    };
    use kafka_protocol::messages::offset_fetch_request::{
        OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
    };
    use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
    use kafka_protocol::protocol::Encodable;
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll, Waker};
    use tempfile::TempDir;

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
            self.coord =
                Coordinator::with_clock(offsets, options(), Clock::Manual(self.now.clone()));
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
        assert_eq!(first.error_code, code::MEMBER_ID_REQUIRED);
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
        assert_eq!(hb(h, group, 1, &a), code::REBALANCE_IN_PROGRESS);
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
                .join_group_with_client(
                    join_req(&group, "", RANGE),
                    version,
                    "rdkafka",
                    "/10.0.0.1",
                )
                .await;
            encodes(&first, version);
            assert_eq!(first.error_code, code::MEMBER_ID_REQUIRED);
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
        assert_eq!(late.error_code, code::UNKNOWN_MEMBER_ID);
        // Made-up member ids are unknown too.
        let made_up = h
            .coord
            .join_group(join_req("late", "nobody", RANGE), 5)
            .await;
        assert_eq!(made_up.error_code, code::UNKNOWN_MEMBER_ID);
    }

    #[tokio::test]
    async fn a_second_member_rebalances_a_stable_group() {
        let h = Harness::new();
        let a = stable_one(&h, "g").await;
        let second = h.coord.join_group(join_req("g", "", RANGE), 5).await;
        assert_eq!(second.error_code, code::MEMBER_ID_REQUIRED);
        let b = second.member_id.to_string();
        // Handing out an id does not disturb the group.
        assert_eq!(hb(&h, "g", 1, &a), 0);
        let mut join_b = Box::pin(h.coord.join_group(join_req("g", &b, RANGE), 5));
        assert!(poll_now(join_b.as_mut()).is_none());

        // A learns of the rebalance on its next heartbeat; it may still commit meanwhile.
        assert_eq!(hb(&h, "g", 1, &a), code::REBALANCE_IN_PROGRESS);
        assert_eq!(commit(&h, "g", 1, &a, &[("t", 0, 5, None)]), [0]);
        // SyncGroup of the old generation during the rebalance.
        let sync = h.coord.sync_group(sync_req("g", 1, &a, &[]), 3).await;
        assert_eq!(sync.error_code, code::REBALANCE_IN_PROGRESS);
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
            [code::REBALANCE_IN_PROGRESS]
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
        assert_eq!(hb(&h, "g", 1, &a), code::ILLEGAL_GENERATION);
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
        assert_eq!(hb(&h, "g", 2, &a), code::REBALANCE_IN_PROGRESS);
        // B, still on generation 2, is told it is unknown.
        assert_eq!(hb(&h, "g", 2, &b), code::UNKNOWN_MEMBER_ID);

        let join_a = h.coord.join_group(join_req("g", &a, RANGE), 5).await;
        assert_eq!((join_a.error_code, join_a.generation_id), (0, 3));
        assert_eq!(member_ids(&join_a), [a.as_str()]);
        let sync = h
            .coord
            .sync_group(sync_req("g", 3, &a, &[(&a, b"all")]), 5)
            .await;
        assert_eq!(&sync.assignment[..], b"all");
        assert_eq!(hb(&h, "g", 2, &b), code::ILLEGAL_GENERATION);
        assert_eq!(hb(&h, "g", 3, &b), code::UNKNOWN_MEMBER_ID);
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
        assert_eq!(hb(&h, "g", 1, &a), code::REBALANCE_IN_PROGRESS);
        h.advance(ms(4_999));
        assert_eq!(hb(&h, "g", 1, &a), code::REBALANCE_IN_PROGRESS);
        assert!(poll_now(join_b.as_mut()).is_none());
        h.advance(ms(1));
        let join_b = ready(join_b.as_mut());
        assert_eq!((join_b.error_code, join_b.generation_id), (0, 2));
        assert_eq!(join_b.leader, join_b.member_id);
        assert_eq!(member_ids(&join_b), [join_b.member_id.to_string()]);
        assert_eq!(hb(&h, "g", 1, &a), code::ILLEGAL_GENERATION);
        assert_eq!(hb(&h, "g", 2, &a), code::UNKNOWN_MEMBER_ID);
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
            assert_eq!(hb(&h, "g", 2, &b), code::REBALANCE_IN_PROGRESS);
            assert!(poll_now(join_a.as_mut()).is_none());
        }
        h.advance(ms(2_000));
        let (join_a, join_c) = (ready(join_a.as_mut()), ready(join_c.as_mut()));
        assert_eq!((join_a.generation_id, join_c.generation_id), (3, 3));
        assert_eq!(member_ids(&join_a), [a.clone(), c.clone()]);
        assert_eq!(hb(&h, "g", 2, &b), code::ILLEGAL_GENERATION);
        assert_eq!(hb(&h, "g", 3, &b), code::UNKNOWN_MEMBER_ID);
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
        assert_eq!(hb(&h, "g", 2, &a), code::REBALANCE_IN_PROGRESS);
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
            assert_eq!(left.error_code, code::UNKNOWN_MEMBER_ID);
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
                ("nobody".to_owned(), code::UNKNOWN_MEMBER_ID)
            ]
        );
        let described = describe_one(&h, "g", 0);
        assert_eq!(described.group_state.as_str(), "Empty");
        assert!(described.members.is_empty());
        assert_eq!(hb(&h, "g", 4, &a), code::UNKNOWN_MEMBER_ID);
        let left = h.coord.leave_group(leave_v3("nope", &[(&a, None)]), 5);
        encodes(&left, 5);
        assert_eq!(left.members[0].error_code, code::UNKNOWN_MEMBER_ID);
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
        assert_eq!(hb(&h, "g", 2, &old.member_id), code::UNKNOWN_MEMBER_ID);

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
        assert_eq!(hb(&h, "g", 7, "nobody"), code::ILLEGAL_GENERATION);
        assert_eq!(hb(&h, "g", 1, "nobody"), code::UNKNOWN_MEMBER_ID);
        assert_eq!(hb(&h, "nope", 1, &a), code::UNKNOWN_MEMBER_ID);
        let sync = |generation, member: &str| {
            h.coord
                .sync_group(sync_req("g", generation, member, &[]), 3)
        };
        assert_eq!(sync(0, &a).await.error_code, code::ILLEGAL_GENERATION);
        assert_eq!(sync(1, "nobody").await.error_code, code::UNKNOWN_MEMBER_ID);
        let unknown_group = h.coord.sync_group(sync_req("nope", 1, &a, &[]), 3).await;
        assert_eq!(unknown_group.error_code, code::UNKNOWN_MEMBER_ID);
        let wrong_protocol = h
            .coord
            .sync_group(
                sync_req("g", 1, &a, &[]).with_protocol_name(Some(s("roundrobin"))),
                5,
            )
            .await;
        assert_eq!(wrong_protocol.error_code, code::INCONSISTENT_GROUP_PROTOCOL);
        let t = &[("t", 0, 1, None)];
        assert_eq!(commit(&h, "g", 2, &a, t), [code::ILLEGAL_GENERATION]);
        assert_eq!(commit(&h, "g", 1, "nobody", t), [code::UNKNOWN_MEMBER_ID]);
        // A simple commit to a group with members is from a stale generation.
        assert_eq!(commit(&h, "g", -1, "", t), [code::ILLEGAL_GENERATION]);
        // A generation on a group that does not exist (say, after a restart).
        assert_eq!(commit(&h, "nope", 3, &a, t), [code::ILLEGAL_GENERATION]);
        assert_eq!(commit(&h, "", -1, "", t), [code::INVALID_GROUP_ID]);
        assert_eq!(commit(&h, "g", 1, &a, t), [0]);
    }

    #[tokio::test]
    async fn join_validation_errors() {
        let h = Harness::new();
        let short = join_req("g", "", RANGE).with_session_timeout_ms(1_000);
        let resp = h.coord.join_group(short, 5).await;
        assert_eq!(resp.error_code, code::INVALID_SESSION_TIMEOUT);
        let resp = h.coord.join_group(join_req("", "", RANGE), 5).await;
        assert_eq!(resp.error_code, code::INVALID_GROUP_ID);
        let resp = h.coord.join_group(join_req("g", "", &[]), 5).await;
        assert_eq!(resp.error_code, code::INCONSISTENT_GROUP_PROTOCOL);
        encodes(&resp, 5);
        for version in 0..=9 {
            encodes(&join_error(version, code::UNKNOWN_MEMBER_ID, "m"), version);
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
        assert_eq!(sticky.error_code, code::INCONSISTENT_GROUP_PROTOCOL);
        let connect = h
            .coord
            .join_group(join_req("g", "", both).with_protocol_type(s("connect")), 3)
            .await;
        assert_eq!(connect.error_code, code::INCONSISTENT_GROUP_PROTOCOL);
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
            [code::ILLEGAL_GENERATION]
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
                ("t".into(), -1, code::UNKNOWN_TOPIC_OR_PARTITION),
                ("u".into(), 3, 0),
                ("u".into(), 4, code::OFFSET_METADATA_TOO_LARGE),
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
            [code::ILLEGAL_GENERATION]
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
        assert_eq!(v6.groups[2].error_code, code::GROUP_ID_NOT_FOUND);

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
        assert_eq!(ready(join_b.as_mut()).error_code, code::UNKNOWN_MEMBER_ID);
        // A still has to rejoin: the rebalance B started goes on without B.
        assert_eq!(hb(&h, "g2", 1, &a), code::REBALANCE_IN_PROGRESS);
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
            code::REBALANCE_IN_PROGRESS
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
            code::REBALANCE_IN_PROGRESS
        );
        assert_eq!(
            ready(sync_c.as_mut()).error_code,
            code::REBALANCE_IN_PROGRESS
        );
        assert_eq!(hb(&h, "g4", 3, &a), code::UNKNOWN_MEMBER_ID);
        assert_eq!(hb(&h, "g4", 3, &b), code::REBALANCE_IN_PROGRESS);

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
            code::REBALANCE_IN_PROGRESS
        );

        // A member waiting on a held join outlives its session timeout (A and D heartbeat)...
        for _ in 0..3 {
            h.advance(ms(4_000));
            assert_eq!(hb(&h, "g5", 3, &a), code::REBALANCE_IN_PROGRESS);
            assert_eq!(hb(&h, "g5", 3, &d), code::REBALANCE_IN_PROGRESS);
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
        assert_eq!(resp.error_code, code::NOT_COORDINATOR);
        let late = coord.join_group(join_req("g", "", RANGE), 3).await;
        assert_eq!(late.error_code, code::COORDINATOR_NOT_AVAILABLE);
    }
}
