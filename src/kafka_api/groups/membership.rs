//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup: each request checked and turned into a call
//! on its group's state machine, and the reply into a response (held ones awaited).

use super::coordinator::{lock, Coordinator, Entry};
use super::state::{JoinReply, JoinSpec, Joined, Joiner, SyncReply, SyncSpec, Synced};
use crate::kafka_api::{error_code, str_bytes};
use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::time::Duration;
use tokio::sync::oneshot;

/// A response now, or one to await.
enum Held<T> {
    Ready(T),
    Wait(oneshot::Receiver<T>),
}

impl Coordinator {
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
        let held = self.join_now(req, version, client_id, client_host);
        // Deadlines may have moved earlier (a join phase started, a member id handed out).
        self.wake.notify_one();
        match held {
            Held::Ready(response) => response,
            Held::Wait(rx) => rx.await.unwrap_or_else(|_| {
                join_error(version, ResponseError::CoordinatorNotAvailable, &member_id)
            }),
        }
    }

    fn join_now(
        &self,
        req: JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> Held<JoinGroupResponse> {
        let member_id = req.member_id.to_string();
        let fail = |error| Held::Ready(join_error(version, error, &member_id));
        let now = self.now();
        let mut groups = lock(&self.groups);
        if groups.closed {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        let group_id = req.group_id.0.to_string();
        if group_id.is_empty() {
            return fail(ResponseError::InvalidGroupId);
        }
        let spec = match self.join_spec(req, version, client_id, client_host) {
            Ok(spec) => spec,
            Err(error) => return fail(error),
        };
        let joiner = if member_id.is_empty() {
            let prefix = spec.instance_id.as_deref().unwrap_or(client_id);
            Joiner::New(self.new_member_id(prefix))
        } else {
            Joiner::Known(member_id.clone())
        };
        let delay = self.options.initial_rebalance_delay;
        let entry = groups
            .by_id
            .entry(group_id.clone())
            .or_insert_with(|| Entry::new(delay));
        let held = match entry.group.join(joiner, spec, now) {
            JoinReply::Joined(joined) => Held::Ready(join_response(&joined)),
            JoinReply::Failed(error) => fail(error),
            JoinReply::MemberIdRequired(id) => {
                let error = ResponseError::MemberIdRequired;
                Held::Ready(join_error(version, error, &id))
            }
            JoinReply::Held { member } => Held::Wait(entry.hold_join(&member, version)),
        };
        entry.settle(&group_id);
        held
    }

    /// The JoinGroup's fields, checked: the session timeout within the bounds, a protocol type
    /// and at least one protocol.
    fn join_spec(
        &self,
        req: JoinGroupRequest,
        version: i16,
        client_id: &str,
        client_host: &str,
    ) -> Result<JoinSpec, ResponseError> {
        let session_timeout = millis(req.session_timeout_ms)
            .filter(|t| {
                (self.options.min_session_timeout..=self.options.max_session_timeout).contains(t)
            })
            .ok_or(ResponseError::InvalidSessionTimeout)?;
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
            return Err(ResponseError::InconsistentGroupProtocol);
        }
        Ok(JoinSpec {
            instance_id: req
                .group_instance_id
                .filter(|_| version >= 5)
                .map(|id| id.to_string()),
            client_id: client_id.to_owned(),
            client_host: client_host.to_owned(),
            session_timeout,
            rebalance_timeout,
            protocol_type,
            protocols,
            id_required: version >= 4,
        })
    }

    /// SyncGroup (v0–5). A follower's is held until the leader's arrives with the assignments.
    pub async fn sync_group(&self, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
        match self.sync_now(req, version) {
            Held::Ready(response) => response,
            Held::Wait(rx) => {
                self.wake.notify_one();
                rx.await
                    .unwrap_or_else(|_| sync_error(ResponseError::CoordinatorNotAvailable))
            }
        }
    }

    fn sync_now(&self, req: SyncGroupRequest, version: i16) -> Held<SyncGroupResponse> {
        let fail = |error| Held::Ready(sync_error(error));
        let now = self.now();
        let mut groups = lock(&self.groups);
        if groups.closed {
            return fail(ResponseError::CoordinatorNotAvailable);
        }
        let Some(entry) = groups.by_id.get_mut(req.group_id.as_str()) else {
            return fail(ResponseError::UnknownMemberId);
        };
        let spec = SyncSpec {
            member_id: req.member_id.as_str(),
            generation: req.generation_id,
            protocol_type: req.protocol_type.as_deref().filter(|_| version >= 5),
            protocol_name: req.protocol_name.as_deref().filter(|_| version >= 5),
            assignments: req
                .assignments
                .iter()
                .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                .collect(),
        };
        let held = match entry.group.sync(spec, now) {
            SyncReply::Synced(synced) => Held::Ready(sync_response(synced)),
            SyncReply::Failed(error) => fail(error),
            SyncReply::Held => Held::Wait(entry.hold_sync(req.member_id.as_str(), version)),
        };
        entry.settle(req.group_id.as_str());
        held
    }

    /// Heartbeat (v0–4).
    pub fn heartbeat(&self, req: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
        let now = self.now();
        let mut groups = lock(&self.groups);
        let result = match groups.by_id.get_mut(req.group_id.as_str()) {
            None => Err(ResponseError::UnknownMemberId),
            Some(entry) => {
                let member_id = req.member_id.as_str();
                entry.group.heartbeat(member_id, req.generation_id, now)
            }
        };
        HeartbeatResponse::default().with_error_code(error_code(result))
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
        let now = self.now();
        let mut results = Vec::with_capacity(leaving.len());
        {
            let mut groups = lock(&self.groups);
            let mut entry = groups.by_id.get_mut(req.group_id.as_str());
            for (member_id, instance_id) in leaving {
                let result = match entry.as_deref_mut() {
                    None => Err(ResponseError::UnknownMemberId),
                    Some(e) => e.group.leave(&member_id, instance_id.as_deref(), now),
                };
                results.push((member_id, instance_id, error_code(result)));
            }
            if let Some(entry) = entry {
                entry.settle(req.group_id.as_str());
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
            let error = results.first().map_or(0, |r| r.2);
            LeaveGroupResponse::default().with_error_code(error)
        }
    }
}

/// A JoinGroup response for the generation `joined` describes.
pub(super) fn join_response(joined: &Joined) -> JoinGroupResponse {
    let members = joined
        .members
        .iter()
        .map(|m| {
            JoinGroupResponseMember::default()
                .with_member_id(str_bytes(m.id.as_str()))
                .with_group_instance_id(m.instance_id.clone().map(StrBytes::from_string))
                .with_metadata(m.metadata.clone())
        })
        .collect();
    JoinGroupResponse::default()
        .with_generation_id(joined.generation)
        .with_protocol_type(Some(str_bytes(joined.protocol_type.as_str())))
        .with_protocol_name(Some(str_bytes(joined.protocol.as_str())))
        .with_leader(str_bytes(joined.leader.as_str()))
        .with_member_id(str_bytes(joined.member_id.as_str()))
        .with_members(members)
}

/// A failed JoinGroup: generation -1, and a null protocol name from v7 (where it is nullable),
/// an empty one before, as Kafka does.
pub(super) fn join_error(version: i16, error: ResponseError, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(error.code())
        .with_generation_id(-1)
        .with_protocol_name((version < 7).then(StrBytes::new))
        .with_member_id(str_bytes(member_id))
}

pub(super) fn sync_response(synced: Synced) -> SyncGroupResponse {
    SyncGroupResponse::default()
        .with_protocol_type(Some(str_bytes(synced.protocol_type)))
        .with_protocol_name(Some(str_bytes(synced.protocol)))
        .with_assignment(synced.assignment)
}

pub(super) fn sync_error(error: ResponseError) -> SyncGroupResponse {
    SyncGroupResponse::default().with_error_code(error.code())
}

/// A non-negative millisecond count as a duration.
fn millis(ms: i32) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}
