//! Egress through the broker: a session of its own (client id `<mqtt.client_id>-egress`,
//! persistent, so rumqttc sends unacked PUBLISHes again after a reconnect), and a PUBLISH
//! counts as delivered once the broker PUBACKed it (QoS 1) or it went out (QoS 0).
//!
//! rumqttc reports neither which packet id a PUBLISH got nor when it was acked, only events:
//! `PublishSent(pkid)` in the order the PUBLISHes were queued, then `PubAck(pkid)`. So the
//! waiters queue in publish order, each takes the packet id of the next `PublishSent`, and a
//! `PublishSent` whose id is already awaiting its ack is a resend, not a new PUBLISH.

use crate::config::MqttConfig;
use crate::message::Qos;
use crate::mqtt::session::{self, Client, SessionError, SessionEvent};
use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// PUBLISHes awaiting confirmation at once, over every egress route.
const WINDOW: usize = 1024;

/// One MQTT message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
}

/// Resolves once the message is delivered; `Err` when the publisher stopped first.
pub type Confirmation = oneshot::Receiver<()>;

struct Waiter {
    qos: Qos,
    done: oneshot::Sender<()>,
    _slot: OwnedSemaphorePermit,
}

#[derive(Default)]
struct Waiting {
    /// Queued, not yet sent, in queue order.
    queued: VecDeque<Waiter>,
    /// Sent, awaiting PUBACK, by packet id.
    sent: HashMap<u16, Waiter>,
}

pub struct BrokerPublisher {
    client: Client,
    waiting: Arc<Mutex<Waiting>>,
    slots: Arc<Semaphore>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl BrokerPublisher {
    /// Starts the egress session with the broker of `mqtt`.
    pub fn start(mqtt: &MqttConfig) -> Result<BrokerPublisher, SessionError> {
        let config = MqttConfig {
            client_id: format!("{}-egress", mqtt.client_id),
            clean_start: false,
            ..mqtt.clone()
        };
        let (client, session) = session::open(&config)?;
        let waiting = Arc::new(Mutex::new(Waiting::default()));
        let stop = CancellationToken::new();
        let task = tokio::spawn(poll(session, waiting.clone(), stop.clone(), config.url));
        Ok(BrokerPublisher {
            client,
            waiting,
            slots: Arc::new(Semaphore::new(WINDOW)),
            stop,
            task,
        })
    }

    /// Queues `message`; waits while `WINDOW` messages await confirmation.
    pub async fn publish(&self, message: Outgoing) -> Confirmation {
        let (done, confirmation) = oneshot::channel();
        let Ok(slot) = self.slots.clone().acquire_owned().await else {
            return confirmation;
        };
        let mut waiting = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        // Queued under the lock, so waiters keep the order the event loop sends in.
        match self
            .client
            .try_publish(message.topic, message.payload, message.qos, message.retain)
        {
            Ok(()) => waiting.queued.push_back(Waiter {
                qos: message.qos,
                done,
                _slot: slot,
            }),
            Err(e) => tracing::warn!(error = %e, "egress: could not queue a PUBLISH"),
        }
        confirmation
    }

    /// Disconnects; confirmations not received by then fail.
    pub async fn stop(self) {
        let _ = self.client.try_disconnect();
        let wait = std::time::Duration::from_secs(5);
        if tokio::time::timeout(wait, self.task).await.is_err() {
            self.stop.cancel();
        }
    }
}

async fn poll(
    mut session: session::Session,
    waiting: Arc<Mutex<Waiting>>,
    stop: CancellationToken,
    url: String,
) {
    let mut failures = 0u32;
    let mut last_error = String::new();
    loop {
        let event = tokio::select! {
            event = session.poll() => event,
            _ = stop.cancelled() => return,
        };
        match event {
            Ok(SessionEvent::Connected { .. }) => {
                failures = 0;
                last_error.clear();
                tracing::info!(%url, "egress MQTT session connected");
            }
            Ok(SessionEvent::PublishSent { pkid }) => {
                let mut w = waiting.lock().unwrap_or_else(|e| e.into_inner());
                if pkid != 0 && w.sent.contains_key(&pkid) {
                    continue; // a resend after a reconnect
                }
                let Some(waiter) = w.queued.pop_front() else {
                    continue;
                };
                match waiter.qos {
                    Qos::AtMostOnce => {
                        let _ = waiter.done.send(());
                    }
                    _ => {
                        w.sent.insert(pkid, waiter);
                    }
                }
            }
            Ok(SessionEvent::PubAck { pkid }) => {
                let waiter = waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .sent
                    .remove(&pkid);
                if let Some(waiter) = waiter {
                    let _ = waiter.done.send(());
                }
            }
            Ok(SessionEvent::DisconnectSent) => return,
            Ok(_) => {}
            Err(error) => {
                if error != last_error {
                    tracing::warn!(%url, %error, "egress MQTT session lost; reconnecting (unacked PUBLISHes are sent again)");
                    last_error = error;
                }
                tokio::time::sleep(session::backoff(failures)).await;
                failures = failures.saturating_add(1);
            }
        }
    }
}
