//! What a listener session's subscriptions receive. The listener only takes SUBSCRIBEs and
//! sends what a [`Feed`] hands it; egress provides the feed (log records on topics its routes
//! make). Without a feed, every SUBSCRIBE is refused.

use crate::message::Qos;
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// One message for a session, and how to tell the feed it was delivered (PUBACKed at QoS 1,
/// written at QoS 0). Dropping `delivered` unsent means it was not.
#[derive(Debug)]
pub struct Push {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
    pub delivered: oneshot::Sender<()>,
}

/// A connected session to deliver to.
#[derive(Debug)]
pub struct FeedSession {
    pub client_id: String,
    /// Kept after the connection (clean start false): what it is sent is remembered durably.
    pub persistent: bool,
    pub subscriptions: Vec<(String, Qos)>,
    pub pushes: mpsc::Sender<Push>,
}

pub trait Feed: Send + Sync {
    /// Whether anything is ever published to a topic `filter` matches; `Err` says why not.
    fn can_match(&self, filter: &str) -> Result<(), &'static str>;

    /// The subscriptions a persistent session kept, if it has one that has not expired.
    fn restore(&self, client_id: &str) -> Option<Vec<(String, Qos)>>;

    /// Keeps a persistent session's subscriptions, or with `None` forgets the session and what
    /// it was sent.
    fn keep(&self, client_id: &str, subscriptions: Option<&[(String, Qos)]>);

    /// Delivers to `session` until the returned token is cancelled or `pushes` closes.
    fn start(&self, session: FeedSession) -> CancellationToken;
}
