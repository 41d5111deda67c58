//! The coordinator around the groups' state machines: the groups under one lock, the held
//! JoinGroup and SyncGroup requests (a oneshot channel each, answered as the state machine
//! says), the clock and the task that fires the deadlines, and member ids.
//!
//! Every held request is answered: as its group decides, with NOT_COORDINATOR when
//! [`Coordinator::run`] stops (new ones are then refused with COORDINATOR_NOT_AVAILABLE), or
//! with REBALANCE_IN_PROGRESS when the same member sends the same request again before the
//! first is answered (the last one wins). A held request whose requester is gone no longer
//! keeps its member from timing out.

use super::membership::{join_error, join_response, sync_error, sync_response};
use super::state::{Group, GroupState, Outcome, Removal, Request};
use crate::log::offsets::GroupOffsets;
use kafka_protocol::messages::{JoinGroupResponse, SyncGroupResponse};
use kafka_protocol::ResponseError;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, Notify};
use tokio_util::sync::CancellationToken;

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
    pub(super) offsets: Arc<GroupOffsets>,
    pub(super) options: CoordinatorOptions,
    pub(super) groups: Mutex<Groups>,
    /// Wakes [`Coordinator::run`] when a deadline may have moved earlier.
    pub(super) wake: Notify,
    /// Feeds member ids.
    member_seq: AtomicU64,
    clock: Clock,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("options", &self.options)
            .field("groups", &lock(&self.groups).by_id.len())
            .finish()
    }
}

/// Where the coordinator reads the time: tokio's clock, or one the tests move by hand.
pub(super) enum Clock {
    Tokio,
    #[cfg(test)]
    Manual(Arc<Mutex<Instant>>),
}

impl Clock {
    fn now(&self) -> Instant {
        match self {
            Clock::Tokio => tokio::time::Instant::now().into_std(),
            #[cfg(test)]
            Clock::Manual(now) => *lock(now),
        }
    }
}

/// Every group, behind the coordinator's lock.
#[derive(Default)]
pub(super) struct Groups {
    pub(super) by_id: HashMap<String, Entry>,
    /// Set when [`Coordinator::run`] stops: timers no longer fire, so JoinGroup and SyncGroup
    /// are refused rather than held.
    pub(super) closed: bool,
}

/// A group and its held requests, by member id.
pub(super) struct Entry {
    pub(super) group: Group,
    joins: HashMap<String, Waiter<JoinGroupResponse>>,
    syncs: HashMap<String, Waiter<SyncGroupResponse>>,
    /// The group's state and generation when last logged.
    logged: (GroupState, i32),
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
}

impl Entry {
    pub(super) fn new(initial_delay: Duration) -> Entry {
        let group = Group::new(initial_delay);
        Entry {
            logged: (group.state(), group.generation()),
            group,
            joins: HashMap::new(),
            syncs: HashMap::new(),
        }
    }

    /// Holds `member`'s JoinGroup until its group answers it.
    pub(super) fn hold_join(
        &mut self,
        member: &str,
        version: i16,
    ) -> oneshot::Receiver<JoinGroupResponse> {
        let (tx, rx) = oneshot::channel();
        if let Some(old) = self.joins.insert(member.to_owned(), Waiter { tx, version }) {
            let response = join_error(old.version, ResponseError::RebalanceInProgress, member);
            old.answer(response);
        }
        rx
    }

    /// Holds `member`'s SyncGroup until its group answers it.
    pub(super) fn hold_sync(
        &mut self,
        member: &str,
        version: i16,
    ) -> oneshot::Receiver<SyncGroupResponse> {
        let (tx, rx) = oneshot::channel();
        if let Some(old) = self.syncs.insert(member.to_owned(), Waiter { tx, version }) {
            old.answer(sync_error(ResponseError::RebalanceInProgress));
        }
        rx
    }

    /// Acts on what the group decided since the last call: answers held requests, and logs
    /// removals and changes of state. Call it after every change to the group.
    pub(super) fn settle(&mut self, group_id: &str) {
        for outcome in self.group.take_outcomes() {
            match outcome {
                Outcome::Join { member, result } => {
                    if let Some(w) = self.joins.remove(&member) {
                        let response = match result {
                            Ok(joined) => join_response(&joined),
                            Err(error) => join_error(w.version, error, &member),
                        };
                        w.answer(response);
                    }
                }
                Outcome::Sync { member, result } => {
                    if let Some(w) = self.syncs.remove(&member) {
                        w.answer(result.map_or_else(sync_error, sync_response));
                    }
                }
                Outcome::Removed { member, why } => log_removal(group_id, &member, why),
            }
        }
        let now = (self.group.state(), self.group.generation());
        if now != self.logged {
            self.logged = now;
            tracing::debug!(
                group = group_id,
                state = now.0.name(),
                generation = now.1,
                members = self.group.members().len(),
                "group changes state"
            );
        }
    }

    /// Tells the group of held requests whose requesters are gone.
    fn forget_abandoned(&mut self) {
        let group = &mut self.group;
        self.joins.retain(|member, w| {
            let gone = w.tx.is_closed();
            if gone {
                group.abandon(member, Request::Join);
            }
            !gone
        });
        self.syncs.retain(|member, w| {
            let gone = w.tx.is_closed();
            if gone {
                group.abandon(member, Request::Sync);
            }
            !gone
        });
    }
}

fn log_removal(group: &str, member: &str, why: Removal) {
    match why {
        Removal::Left => tracing::debug!(group, member, "member leaves"),
        Removal::Fenced => {
            tracing::debug!(group, member, "member replaced by one with its instance id")
        }
        Removal::SessionTimeout => {
            tracing::info!(group, member, "member session timed out: removed")
        }
        Removal::NotRejoined => {
            tracing::info!(group, member, "member did not rejoin in time: removed")
        }
        Removal::NotSynced => tracing::info!(group, member, "member did not sync in time: removed"),
        Removal::NoCommonProtocol => {
            tracing::warn!(group, member, "no protocol common to every member: removed")
        }
    }
}

impl Coordinator {
    /// A coordinator keeping committed offsets in `offsets`. Spawn [`Coordinator::run`] for its
    /// timers.
    pub fn new(offsets: Arc<GroupOffsets>, options: CoordinatorOptions) -> Arc<Self> {
        Self::with_clock(offsets, options, Clock::Tokio)
    }

    pub(super) fn with_clock(
        offsets: Arc<GroupOffsets>,
        options: CoordinatorOptions,
        clock: Clock,
    ) -> Arc<Self> {
        Arc::new(Coordinator {
            offsets,
            options,
            groups: Mutex::new(Groups::default()),
            wake: Notify::new(),
            member_seq: AtomicU64::new(0),
            clock,
        })
    }

    pub(super) fn now(&self) -> Instant {
        self.clock.now()
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
                    Some(at) => tokio::time::sleep_until(at.into()).await,
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
    pub(super) fn sweep(&self) -> Option<Instant> {
        let now = self.clock.now();
        let mut groups = lock(&self.groups);
        let next = groups
            .by_id
            .iter_mut()
            .filter_map(|(id, entry)| {
                entry.forget_abandoned();
                let next = entry.group.sweep(now);
                entry.settle(id);
                next
            })
            .min();
        // Never spin: whatever is due now has been handled.
        next.map(|at| at.max(now + Duration::from_millis(1)))
    }

    fn close(&self) {
        let mut groups = lock(&self.groups);
        groups.closed = true;
        for (id, entry) in groups.by_id.iter_mut() {
            entry.group.fail_held(ResponseError::NotCoordinator);
            entry.settle(id);
        }
    }

    /// A new member id, `<prefix>-<uuid>` as in Kafka.
    pub(super) fn new_member_id(&self, prefix: &str) -> String {
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

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section leaves the state consistent between statements that can panic.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
