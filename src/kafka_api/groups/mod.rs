//! The classic consumer-group coordinator behind the Kafka API listener: JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup, OffsetCommit, OffsetFetch, DescribeGroups and ListGroups for the single
//! broker (node 0), which coordinates every group.
//!
//! - `state`: one group's state machine (states, generations, leader, protocol, deadlines),
//!   pure: it takes the time as an argument and says which held requests to answer how.
//! - `coordinator`: [`Coordinator`] around it: the groups under a lock, the held requests,
//!   the clock and [`Coordinator::run`], which fires the deadlines; member ids.
//! - `membership`: JoinGroup, SyncGroup, Heartbeat, LeaveGroup requests and responses.
//! - `offsets`: OffsetCommit and OffsetFetch, over the durable store.
//! - `describe`: DescribeGroups and ListGroups.
//!
//! Committed offsets live in [`GroupOffsets`](crate::log::offsets::GroupOffsets): an
//! OffsetCommit is on disk before its response. Group membership is in memory only: after a
//! restart every consumer rejoins.

mod coordinator;
mod describe;
mod membership;
mod offsets;
mod state;

pub use coordinator::{Coordinator, CoordinatorOptions};

#[cfg(test)]
mod tests;
