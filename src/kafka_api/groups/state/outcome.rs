//! What a group's methods give back: the replies to JoinGroup and SyncGroup, and the outcomes
//! queued for the coordinator (held requests to answer, members removed).

use bytes::Bytes;
use kafka_protocol::ResponseError;

/// A JoinGroup's reply.
#[derive(Debug, Clone, PartialEq)]
pub enum JoinReply {
    /// The current generation, at once: for a member asking again for a reply it missed.
    Joined(Joined),
    Failed(ResponseError),
    /// Not a member yet: come back with this id (MEMBER_ID_REQUIRED).
    MemberIdRequired(String),
    /// Held until the join phase ends; answered by an [`Outcome::Join`] for `member`.
    Held {
        member: String,
    },
}

/// A SyncGroup's reply.
#[derive(Debug, Clone, PartialEq)]
pub enum SyncReply {
    Synced(Synced),
    Failed(ResponseError),
    /// Held until the leader's SyncGroup; answered by an [`Outcome::Sync`] for the member.
    Held,
}

/// A member's view of the generation its JoinGroup completed.
#[derive(Debug, Clone, PartialEq)]
pub struct Joined {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// Every member with its metadata for the chosen protocol, in join order; for the leader
    /// only, empty for the others.
    pub members: Vec<JoinedMember>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinedMember {
    pub id: String,
    pub instance_id: Option<String>,
    pub metadata: Bytes,
}

/// A member's assignment for the current generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Synced {
    pub protocol_type: String,
    pub protocol: String,
    pub assignment: Bytes,
}

/// Something the coordinator has to act on, in the order it happened.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Answer the member's held JoinGroup.
    Join {
        member: String,
        result: Result<Joined, ResponseError>,
    },
    /// Answer the member's held SyncGroup.
    Sync {
        member: String,
        result: Result<Synced, ResponseError>,
    },
    /// The member is no longer in the group.
    Removed { member: String, why: Removal },
}

/// Why a member was removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    Left,
    /// Not heard from within its session timeout.
    SessionTimeout,
    /// Did not rejoin before the join deadline.
    NotRejoined,
    /// Did not sync before the sync deadline.
    NotSynced,
    /// Replaced by a new member with the same instance id.
    Fenced,
    /// No protocol was common to every member.
    NoCommonProtocol,
}
