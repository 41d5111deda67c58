//! A member of a group: who it is, its timeouts and protocols, its assignment, and where it
//! stands in the current rebalance.

use super::Outcome;
use bytes::Bytes;
use kafka_protocol::ResponseError;
use std::time::{Duration, Instant};

/// A member of a group.
#[derive(Debug)]
pub struct Member {
    /// Join order: the first joiner leads.
    pub(super) seq: u64,
    pub(super) instance_id: Option<String>,
    pub(super) client_id: String,
    pub(super) client_host: String,
    pub(super) session_timeout: Duration,
    pub(super) rebalance_timeout: Duration,
    /// (name, metadata) in the member's order of preference.
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) assignment: Bytes,
    /// When the session times out unless the member is heard from.
    pub(super) expires: Instant,
    /// Has (re)joined in the current PreparingRebalance.
    pub(super) joined: bool,
    /// Has sent SyncGroup in the current CompletingRebalance.
    pub(super) synced: bool,
    /// Has a JoinGroup held.
    pub(super) join_held: bool,
    /// Has a SyncGroup held.
    pub(super) sync_held: bool,
}

impl Member {
    pub fn instance_id(&self) -> Option<&str> {
        self.instance_id.as_deref()
    }

    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    pub fn client_host(&self) -> &str {
        &self.client_host
    }

    /// What the leader assigned the member in the current generation.
    pub fn assignment(&self) -> &Bytes {
        &self.assignment
    }

    /// The member's metadata for `protocol` (empty if it does not support it).
    pub fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, metadata)| metadata.clone())
            .unwrap_or_default()
    }

    /// Whether a request of the member is held: such members are not evicted for missing
    /// heartbeats, the join or sync deadline covers them.
    pub(super) fn awaiting(&self) -> bool {
        self.join_held || self.sync_held
    }

    pub(super) fn touch(&mut self, now: Instant) {
        self.expires = now + self.session_timeout;
    }

    /// Answers the member's held requests with `error`.
    pub(super) fn fail_held(
        &mut self,
        id: &str,
        error: ResponseError,
        outcomes: &mut Vec<Outcome>,
    ) {
        if std::mem::take(&mut self.join_held) {
            outcomes.push(Outcome::Join {
                member: id.to_owned(),
                result: Err(error),
            });
        }
        if std::mem::take(&mut self.sync_held) {
            outcomes.push(Outcome::Sync {
                member: id.to_owned(),
                result: Err(error),
            });
        }
    }
}
