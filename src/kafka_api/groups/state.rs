//! One classic consumer group as a pure state machine: members, generations, the leader, the
//! chosen protocol and the deadlines, changed by methods that take the time as an argument. No
//! I/O, no locks, no timers: a held JoinGroup or SyncGroup is a flag here, and what it is to be
//! answered with is queued as an [`Outcome`] for the coordinator to deliver
//! ([`Group::take_outcomes`]), with the members removed and why.
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
//! - **Empty**: no members. The first JoinGroup starts a delayed join: the join phase lasts the
//!   initial rebalance delay, extended by each new member up to the members' rebalance
//!   timeout, so consumers started together land in one generation.
//! - **PreparingRebalance**: JoinGroups are held. The phase ends as soon as every known member
//!   has rejoined (and no member id handed out with MEMBER_ID_REQUIRED is still to come back),
//!   or at the join deadline (the largest rebalance timeout of the members): members that did
//!   not rejoin by then are removed. The generation goes up by one, a protocol every member
//!   supports is chosen (the leader's first choice among them) and every held JoinGroup is
//!   answered; only the leader gets the member list.
//! - **CompletingRebalance**: SyncGroups are held until the leader's arrives with the
//!   assignments; then every member gets its own (empty bytes if the leader gave it none). A
//!   leader that does not sync within the rebalance timeout is removed with every other member
//!   that did not sync, which starts a new rebalance.
//! - **Stable**: heartbeats and commits succeed. A new member, a leaving or evicted member, the
//!   leader rejoining or a member rejoining with other protocols starts a rebalance.
//!
//! Existing members learn of a rebalance from REBALANCE_IN_PROGRESS on their next heartbeat.
//! Every held request is answered, with an error if need be, when its member is removed or the
//! group rebalances again; members with a held request are not evicted for missing heartbeats
//! (the request's own deadline covers them, as in Kafka).
//!
//! Heartbeat, SyncGroup and OffsetCommit check the generation (ILLEGAL_GENERATION), then the
//! member (UNKNOWN_MEMBER_ID), then the state. As in Kafka, a heartbeat is answered
//! REBALANCE_IN_PROGRESS only while the group is PreparingRebalance (a member that has its join
//! response may heartbeat while CompletingRebalance), and an OffsetCommit of the current
//! generation is accepted while PreparingRebalance (consumers commit revoked partitions before
//! rejoining) but refused with REBALANCE_IN_PROGRESS while CompletingRebalance.
//!
//! Static members (`group_instance_id`): one joining with no member id and the instance id of
//! an existing member replaces it (the old one is fenced with FENCED_INSTANCE_ID), through a
//! rebalance rather than Kafka's rebalance-free replacement.

mod member;
mod outcome;
#[cfg(test)]
mod tests;

pub use member::Member;
pub use outcome::{JoinReply, Joined, JoinedMember, Outcome, Removal, SyncReply, Synced};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The protocol type reported for a group whose members never said theirs.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    /// The name Kafka reports in DescribeGroups and ListGroups.
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

/// What a JoinGroup asks for, once the coordinator has checked its fields.
#[derive(Debug, Clone)]
pub struct JoinSpec {
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    /// How long a rebalance waits for the member (JoinGroup v0 has none: the session timeout).
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    /// (name, metadata) in the member's order of preference, each name once.
    pub protocols: Vec<(String, Bytes)>,
    /// A member without an id is given one to come back with (MEMBER_ID_REQUIRED, JoinGroup
    /// v4+) rather than joining at once. Static members join at once regardless.
    pub id_required: bool,
}

/// Who sends a JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joiner {
    /// A client without a member id, and the id it is to get (ids are made by the caller).
    New(String),
    /// A client with a member id.
    Known(String),
}

/// What a SyncGroup carries, as the group sees it.
#[derive(Debug, Clone, Default)]
pub struct SyncSpec<'a> {
    pub member_id: &'a str,
    pub generation: i32,
    /// The protocol type and name the member states (SyncGroup v5+); checked if given.
    pub protocol_type: Option<&'a str>,
    pub protocol_name: Option<&'a str>,
    /// The leader's assignments by member id; ignored from other members.
    pub assignments: Vec<(String, Bytes)>,
}

/// Which held request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Join,
    Sync,
}

/// One consumer group.
#[derive(Debug)]
pub struct Group {
    state: GroupState,
    generation: i32,
    /// How long the first join of an empty group waits for more members.
    initial_delay: Duration,
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
    /// For the coordinator: [`Group::take_outcomes`].
    outcomes: Vec<Outcome>,
}

impl Group {
    /// An empty group whose first join waits `initial_delay` for more members (Kafka's
    /// `group.initial.rebalance.delay.ms`).
    pub fn new(initial_delay: Duration) -> Group {
        Group {
            state: GroupState::Empty,
            generation: 0,
            initial_delay,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: HashMap::new(),
            pending: HashMap::new(),
            join_deadline: None,
            initial_join_started: None,
            sync_deadline: None,
            next_seq: 0,
            outcomes: Vec::new(),
        }
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The members' protocol type ("consumer" if none ever said).
    pub fn protocol_type(&self) -> &str {
        self.protocol_type
            .as_deref()
            .unwrap_or(CONSUMER_PROTOCOL_TYPE)
    }

    /// The protocol of the current generation.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// The members in join order.
    pub fn members(&self) -> Vec<(&str, &Member)> {
        let mut members: Vec<(&str, &Member)> = self
            .members
            .iter()
            .map(|(id, m)| (id.as_str(), m))
            .collect();
        members.sort_unstable_by_key(|(_, m)| m.seq);
        members
    }

    /// What happened since the last call, in order.
    pub fn take_outcomes(&mut self) -> Vec<Outcome> {
        std::mem::take(&mut self.outcomes)
    }

    /// A JoinGroup.
    pub fn join(&mut self, joiner: Joiner, spec: JoinSpec, now: Instant) -> JoinReply {
        let except = match &joiner {
            Joiner::New(_) => "",
            Joiner::Known(id) => id.as_str(),
        };
        if !self.supports(&spec.protocol_type, &spec.protocols, except) {
            return JoinReply::Failed(ResponseError::InconsistentGroupProtocol);
        }
        match joiner {
            Joiner::New(id) => {
                if let Some(instance_id) = &spec.instance_id {
                    // A static member restarting replaces its previous incarnation. Joining
                    // first keeps the group from emptying (and restarting the initial delay).
                    let previous = self.member_with_instance(instance_id);
                    let reply = self.join_new_member(id, spec, now);
                    if let Some(previous) = previous {
                        let fenced = ResponseError::FencedInstanceId;
                        self.remove_member(&previous, fenced, Removal::Fenced, now);
                    }
                    reply
                } else if spec.id_required {
                    self.pending.insert(id.clone(), now + spec.session_timeout);
                    JoinReply::MemberIdRequired(id)
                } else {
                    self.join_new_member(id, spec, now)
                }
            }
            Joiner::Known(id) => {
                if self.pending.remove(&id).is_some() {
                    self.join_new_member(id, spec, now)
                } else if self.members.contains_key(&id) {
                    self.rejoin_member(id, spec, now)
                } else {
                    JoinReply::Failed(ResponseError::UnknownMemberId)
                }
            }
        }
    }

    /// A SyncGroup. The leader's completes the rebalance: every held SyncGroup is answered
    /// with its member's assignment, the leader's own included.
    pub fn sync(&mut self, spec: SyncSpec<'_>, now: Instant) -> SyncReply {
        if spec.generation != self.generation {
            return SyncReply::Failed(ResponseError::IllegalGeneration);
        }
        if !self.members.contains_key(spec.member_id) {
            return SyncReply::Failed(ResponseError::UnknownMemberId);
        }
        let type_differs = spec
            .protocol_type
            .is_some_and(|t| t != self.protocol_type());
        let name_differs = spec
            .protocol_name
            .is_some_and(|n| Some(n) != self.protocol());
        if type_differs || name_differs {
            return SyncReply::Failed(ResponseError::InconsistentGroupProtocol);
        }
        let m = self
            .members
            .get_mut(spec.member_id)
            .expect("checked member");
        match self.state {
            GroupState::Empty => SyncReply::Failed(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => SyncReply::Failed(ResponseError::RebalanceInProgress),
            GroupState::Stable => {
                m.touch(now);
                let assignment = m.assignment.clone();
                SyncReply::Synced(self.synced(assignment))
            }
            GroupState::CompletingRebalance => {
                m.synced = true;
                m.sync_held = true;
                m.touch(now);
                if self.leader.as_deref() == Some(spec.member_id) {
                    self.complete_sync(spec.assignments, now);
                }
                SyncReply::Held
            }
        }
    }

    /// A Heartbeat.
    pub fn heartbeat(
        &mut self,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        let m = self
            .members
            .get_mut(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        m.touch(now);
        match self.state {
            GroupState::Empty => Err(ResponseError::UnknownMemberId),
            GroupState::PreparingRebalance => Err(ResponseError::RebalanceInProgress),
            GroupState::CompletingRebalance | GroupState::Stable => Ok(()),
        }
    }

    /// One member of a LeaveGroup: by member id (which must match `instance_id` if both are
    /// given), or by instance id when the member id is empty. The others rebalance.
    pub fn leave(
        &mut self,
        member_id: &str,
        instance_id: Option<&str>,
        now: Instant,
    ) -> Result<(), ResponseError> {
        let id = if !member_id.is_empty() {
            if self.pending.remove(member_id).is_some() {
                self.try_complete_join(now);
                return Ok(());
            }
            match self.members.get(member_id) {
                None => return Err(ResponseError::UnknownMemberId),
                Some(m) if instance_id.is_some() && m.instance_id.as_deref() != instance_id => {
                    return Err(ResponseError::FencedInstanceId)
                }
                Some(_) => member_id.to_owned(),
            }
        } else {
            instance_id
                .and_then(|i| self.member_with_instance(i))
                .ok_or(ResponseError::UnknownMemberId)?
        };
        self.remove_member(&id, ResponseError::UnknownMemberId, Removal::Left, now);
        Ok(())
    }

    /// Forgets a held request whose requester is gone: the member's session timeout applies
    /// again.
    pub fn abandon(&mut self, member_id: &str, request: Request) {
        if let Some(m) = self.members.get_mut(member_id) {
            match request {
                Request::Join => m.join_held = false,
                Request::Sync => m.sync_held = false,
            }
        }
    }

    /// Answers every held request with `error` (the coordinator is stopping).
    pub fn fail_held(&mut self, error: ResponseError) {
        for id in self.ids(|_| true) {
            let m = self.members.get_mut(&id).expect("listed member");
            m.fail_held(&id, error, &mut self.outcomes);
        }
    }

    /// Acts on every deadline due at `now`: handed-out member ids expire, members past their
    /// session timeout are removed, the join and sync phases end. Returns when the next
    /// deadline is due.
    pub fn sweep(&mut self, now: Instant) -> Option<Instant> {
        let pending = self.pending.len();
        self.pending.retain(|_, expires| *expires > now);
        if self.pending.len() != pending {
            self.try_complete_join(now);
        }
        for id in self.ids(|m| !m.awaiting() && m.expires <= now) {
            let error = ResponseError::UnknownMemberId;
            self.remove_member(&id, error, Removal::SessionTimeout, now);
        }
        if self.state == GroupState::PreparingRebalance
            && self.join_deadline.is_some_and(|d| d <= now)
        {
            self.complete_join(now);
        }
        if self.state == GroupState::CompletingRebalance
            && self.sync_deadline.is_some_and(|d| d <= now)
        {
            for id in self.ids(|m| !m.synced) {
                let error = ResponseError::UnknownMemberId;
                self.remove_member(&id, error, Removal::NotSynced, now);
            }
        }
        self.next_deadline()
    }

    /// Whether `member_id` of `generation` may commit offsets now; the member's session is
    /// renewed if so. See also [`check_commit_without_group`].
    pub fn check_commit(
        &mut self,
        member_id: &str,
        generation: i32,
        now: Instant,
    ) -> Result<(), ResponseError> {
        if self.members.is_empty() && generation < 0 {
            // A "simple" commit, from a consumer that assigns itself partitions.
            return Ok(());
        }
        if generation != self.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        let m = self
            .members
            .get_mut(member_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        match self.state {
            GroupState::Empty => Err(ResponseError::UnknownMemberId),
            // Consumers commit what they are giving up before they rejoin.
            GroupState::Stable | GroupState::PreparingRebalance => {
                m.touch(now);
                Ok(())
            }
            GroupState::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        let sessions = self
            .members
            .values()
            .filter(|m| !m.awaiting())
            .map(|m| m.expires);
        let phase = match self.state {
            GroupState::PreparingRebalance => self.join_deadline,
            GroupState::CompletingRebalance => self.sync_deadline,
            GroupState::Empty | GroupState::Stable => None,
        };
        self.pending
            .values()
            .copied()
            .chain(sessions)
            .chain(phase)
            .min()
    }

    fn max_rebalance_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
    }

    /// The ids of the members `which` selects, in join order (so that outcomes come in an
    /// order that does not depend on hashing).
    fn ids(&self, which: impl Fn(&Member) -> bool) -> Vec<String> {
        self.members()
            .into_iter()
            .filter(|(_, m)| which(m))
            .map(|(id, _)| id.to_owned())
            .collect()
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
        let others: Vec<&Member> = self
            .members
            .iter()
            .filter(|(id, _)| id.as_str() != except)
            .map(|(_, m)| m)
            .collect();
        if others.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
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

    /// `member_id`'s view of the current generation.
    fn joined(&self, member_id: &str) -> Joined {
        let leader = self.leader.clone().unwrap_or_default();
        let protocol = self.protocol.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members()
                .into_iter()
                .map(|(id, m)| JoinedMember {
                    id: id.to_owned(),
                    instance_id: m.instance_id.clone(),
                    metadata: m.metadata_for(&protocol),
                })
                .collect()
        } else {
            Vec::new()
        };
        Joined {
            generation: self.generation,
            protocol_type: self.protocol_type().to_owned(),
            protocol,
            leader,
            member_id: member_id.to_owned(),
            members,
        }
    }

    fn synced(&self, assignment: Bytes) -> Synced {
        Synced {
            protocol_type: self.protocol_type().to_owned(),
            protocol: self.protocol.clone().unwrap_or_default(),
            assignment,
        }
    }

    /// Enters PreparingRebalance: held SyncGroups fail with REBALANCE_IN_PROGRESS, assignments
    /// are dropped and every member has to rejoin. `initial` is for an empty group's first join.
    fn prepare_rebalance(&mut self, now: Instant, initial: bool) {
        for id in self.ids(|_| true) {
            let m = self.members.get_mut(&id).expect("listed member");
            if std::mem::take(&mut m.sync_held) {
                self.outcomes.push(Outcome::Sync {
                    member: id,
                    result: Err(ResponseError::RebalanceInProgress),
                });
            }
            m.joined = false;
            m.synced = false;
            m.assignment = Bytes::new();
        }
        self.state = GroupState::PreparingRebalance;
        self.sync_deadline = None;
        if initial {
            self.initial_join_started = Some(now);
            self.join_deadline = Some(now + self.initial_delay);
        } else {
            self.initial_join_started = None;
            self.join_deadline = Some(now + self.max_rebalance_timeout());
        }
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
        for id in self.ids(|m| !m.joined) {
            self.drop_member(&id, ResponseError::UnknownMemberId, Removal::NotRejoined);
        }
        self.join_deadline = None;
        self.initial_join_started = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.become_empty();
            return;
        }
        let ids = self.ids(|_| true);
        let leader = match &self.leader {
            Some(leader) if self.members.contains_key(leader) => leader.clone(),
            _ => ids[0].clone(),
        };
        let Some(protocol) = self.select_protocol(&leader) else {
            // Unreachable: joins are checked against the other members' protocols.
            for id in ids {
                let error = ResponseError::InconsistentGroupProtocol;
                self.drop_member(&id, error, Removal::NoCommonProtocol);
            }
            self.become_empty();
            return;
        };
        self.leader = Some(leader);
        self.protocol = Some(protocol);
        self.state = GroupState::CompletingRebalance;
        self.sync_deadline = Some(now + self.max_rebalance_timeout());
        for id in ids {
            let joined = self.joined(&id);
            let m = self.members.get_mut(&id).expect("listed member");
            m.synced = false;
            m.touch(now);
            if std::mem::take(&mut m.join_held) {
                self.outcomes.push(Outcome::Join {
                    member: id,
                    result: Ok(joined),
                });
            }
        }
    }

    /// Ends the sync phase with the leader's assignments: the group is Stable.
    fn complete_sync(&mut self, assignments: Vec<(String, Bytes)>, now: Instant) {
        let mut assignments: HashMap<String, Bytes> = assignments.into_iter().collect();
        for (id, m) in self.members.iter_mut() {
            m.assignment = assignments.remove(id).unwrap_or_default();
        }
        self.state = GroupState::Stable;
        self.sync_deadline = None;
        for id in self.ids(|_| true) {
            let synced = self.synced(self.members[&id].assignment.clone());
            let m = self.members.get_mut(&id).expect("listed member");
            m.touch(now);
            if std::mem::take(&mut m.sync_held) {
                self.outcomes.push(Outcome::Sync {
                    member: id,
                    result: Ok(synced),
                });
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

    /// Takes a member out, answering its held requests with `error`; nothing else changes.
    fn drop_member(&mut self, id: &str, error: ResponseError, why: Removal) -> bool {
        let Some(mut m) = self.members.remove(id) else {
            return false;
        };
        m.fail_held(id, error, &mut self.outcomes);
        self.outcomes.push(Outcome::Removed {
            member: id.to_owned(),
            why,
        });
        true
    }

    /// Removes a member, answers its held requests with `error` and rebalances the rest.
    fn remove_member(&mut self, id: &str, error: ResponseError, why: Removal, now: Instant) {
        if !self.drop_member(id, error, why) {
            return;
        }
        if self.leader.as_deref() == Some(id) {
            self.leader = None;
        }
        if matches!(
            self.state,
            GroupState::Stable | GroupState::CompletingRebalance
        ) {
            self.prepare_rebalance(now, false);
        }
        self.try_complete_join(now);
    }

    /// Adds a member that joined with a new member id, and holds its JoinGroup.
    fn join_new_member(&mut self, id: String, spec: JoinSpec, now: Instant) -> JoinReply {
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
                join_held: true,
                sync_held: false,
            },
        );
        match self.state {
            GroupState::Empty => self.prepare_rebalance(now, true),
            GroupState::PreparingRebalance => {
                if let Some(started) = self.initial_join_started {
                    // Another member during the initial delay: wait as long again, within the
                    // rebalance timeout.
                    let extended = (now + self.initial_delay)
                        .min(started + self.max_rebalance_timeout().max(self.initial_delay));
                    self.join_deadline = self.join_deadline.max(Some(extended));
                }
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.prepare_rebalance(now, false)
            }
        }
        // prepare_rebalance clears every `joined`; this member has.
        if let Some(m) = self.members.get_mut(&id) {
            m.joined = true;
        }
        self.try_complete_join(now);
        JoinReply::Held { member: id }
    }

    /// A JoinGroup of an existing member.
    fn rejoin_member(&mut self, id: String, spec: JoinSpec, now: Instant) -> JoinReply {
        let is_leader = self.leader.as_deref() == Some(id.as_str());
        let m = self.members.get_mut(&id).expect("checked member");
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
                return JoinReply::Joined(self.joined(&id))
            }
            GroupState::Stable if !changed && !is_leader => {
                return JoinReply::Joined(self.joined(&id))
            }
            GroupState::Empty | GroupState::CompletingRebalance | GroupState::Stable => {
                self.prepare_rebalance(now, false)
            }
        }
        let m = self.members.get_mut(&id).expect("checked member");
        m.joined = true;
        m.join_held = true;
        self.try_complete_join(now);
        JoinReply::Held { member: id }
    }
}

/// Whether a commit of `generation` is accepted for a group with no members in memory (say,
/// after a restart): a "simple" commit (generation -1) is; any other is from a stale generation.
pub fn check_commit_without_group(generation: i32) -> Result<(), ResponseError> {
    if generation < 0 {
        Ok(())
    } else {
        Err(ResponseError::IllegalGeneration)
    }
}
