//! The client face: one session with an existing broker, kept up across failures, handing each PUBLISH on
//! as a [`Delivery`] and sending its ack once the pipeline reports it stored.
//!
//! - `session`: rumqttc behind one face for MQTT 5 and 3.1.1.
//! - `super::acks`: the in-order ack tracker (pure).
//!
//! The event loop runs in its own task and is never blocked on the pipeline for long: the
//! pipeline holds at most `mqtt.max_inflight` messages (a semaphore), and MQTT 5's
//! `receive_maximum` keeps the broker within that for QoS 1. A message keeps its slot until
//! its ack is released in order, not merely until it is stored, so the bound holds even against
//! a broker that sends past the receive maximum (Mosquitto 2.0.11 does, after the first PUBACK).

pub mod session;

use super::acks::{AckTracker, Token};
use crate::config::MqttConfig;
use crate::message::{Ack, Delivery, Qos};
use crate::ops::FaceMetrics;
use crate::route::Subscription;
use session::{Client, Session, SessionEvent};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A message's ack on this face: its place in the tracker.
struct ClientAck {
    acker: Arc<Acker>,
    token: Token,
}

impl Ack for ClientAck {
    fn stored(self: Box<Self>) {
        self.acker.complete(self.token);
    }
}

/// Sends acks in arrival order, for the current connection only.
pub struct Acker {
    state: Mutex<AckState>,
    metrics: Option<FaceMetrics>,
}

struct AckState {
    tracker: AckTracker,
    client: Client,
    /// One per message in the tracker, in arrival order, freed as the tracker releases the
    /// message: a message stored behind an older one still waiting keeps its slot.
    slots: VecDeque<Slot>,
}

/// A message's place in the pipeline.
struct Slot {
    _permit: OwnedSemaphorePermit,
    /// When it came, with metrics on (for the ack latency).
    received: Option<Instant>,
    /// The tracker's generation when it came: acked on release only if still current.
    generation: u64,
}

impl Acker {
    /// The message's records are all durable: ack it (and any now unblocked) in order.
    fn complete(&self, token: Token) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let before = state.tracker.inflight();
        let acks = state.tracker.completed(token);
        let released = before - state.tracker.inflight();
        let generation = state.tracker.generation();
        match &self.metrics {
            Some(m) if released > 0 => {
                let now = Instant::now();
                let mut acked = 0;
                for slot in state.slots.drain(..released) {
                    if slot.generation == generation {
                        acked += 1;
                        if let Some(received) = slot.received {
                            let latency = now.saturating_duration_since(received);
                            m.ack_latency.observe(latency.as_secs_f64());
                        }
                    }
                }
                m.acked.inc_by(acked);
                m.inflight.sub(released as i64);
            }
            _ => {
                state.slots.drain(..released);
            }
        }
        for pkid in acks {
            // Queued under the same lock a lost connection takes, so no ack of an old
            // connection can slip into the next one.
            if let Err(e) = state.client.try_ack(pkid) {
                tracing::warn!(pkid, error = %e, "could not queue an ack; the broker will redeliver the message");
            }
        }
    }

    /// Messages received and not yet released.
    pub fn inflight(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .tracker
            .inflight()
    }
}

/// The running ingress.
pub struct Ingress {
    client: Client,
    acker: Arc<Acker>,
    stop_reading: CancellationToken,
    task: JoinHandle<()>,
    connected: watch::Receiver<bool>,
    /// The broker filters to hold; the poller subscribes and unsubscribes as they change.
    filters: watch::Sender<Vec<(String, Qos)>>,
    shared_group: Option<String>,
}

impl Ingress {
    /// Starts the session task; returns the ingress and the stream of deliveries.
    /// With `metrics`, counts what it receives and acks (metrics off: `None`).
    pub fn start(
        config: &MqttConfig,
        subscriptions: &[Subscription],
        metrics: Option<FaceMetrics>,
    ) -> Result<(Ingress, mpsc::Receiver<Delivery>), session::SessionError> {
        let (tx, rx) = mpsc::channel(config.max_inflight as usize);
        Ok((Self::start_into(config, subscriptions, tx, metrics)?, rx))
    }

    /// As [`Ingress::start`], handing deliveries to `deliveries` (shared with the listener);
    /// the channel should hold `max_inflight` of them.
    pub fn start_into(
        config: &MqttConfig,
        subscriptions: &[Subscription],
        tx: mpsc::Sender<Delivery>,
        metrics: Option<FaceMetrics>,
    ) -> Result<Ingress, session::SessionError> {
        let (client, session) = session::open(config)?;
        let acker = Arc::new(Acker {
            state: Mutex::new(AckState {
                tracker: AckTracker::new(),
                client: client.clone(),
                slots: VecDeque::new(),
            }),
            metrics: metrics.clone(),
        });
        let capacity = config.max_inflight as usize;
        let (filters_tx, filters) = watch::channel(broker_filters(config, subscriptions));
        let (connected_tx, connected) = watch::channel(false);
        let stop_reading = CancellationToken::new();
        let poller = Poller {
            session,
            client: client.clone(),
            acker: acker.clone(),
            deliveries: Some(tx),
            permits: Arc::new(Semaphore::new(capacity)),
            held: Vec::new(),
            subscribed: Vec::new(),
            filters,
            connected: connected_tx,
            stop_reading: stop_reading.clone(),
            url: config.url.clone(),
            metrics,
        };
        let task = tokio::spawn(poller.run());
        Ok(Ingress {
            client,
            acker,
            stop_reading,
            task,
            connected,
            filters: filters_tx,
            shared_group: config.shared_group.clone(),
        })
    }

    /// Holds `subscriptions` from now on: the new filters are subscribed before the ones no
    /// longer wanted are unsubscribed, on the live session, and after every reconnect.
    pub fn resubscribe(&self, subscriptions: &[Subscription]) {
        let config = MqttConfig {
            shared_group: self.shared_group.clone(),
            ..MqttConfig::default()
        };
        self.filters
            .send_replace(broker_filters(&config, subscriptions));
    }

    pub fn acker(&self) -> Arc<Acker> {
        self.acker.clone()
    }

    /// Whether the session is up now; changes as it goes down and comes back.
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Stops handing on new messages (they stay unacked; the broker keeps them for the next
    /// session) and ends the delivery stream. The session stays up so acks still go out.
    pub fn stop_reading(&self) {
        self.stop_reading.cancel();
    }

    /// Sends DISCONNECT after every ack queued so far, and waits (up to `wait`) for the session
    /// task to end.
    pub async fn disconnect(self, wait: std::time::Duration) {
        self.stop_reading.cancel();
        if self.client.try_disconnect().is_err()
            || tokio::time::timeout(wait, self.task).await.is_err()
        {
            tracing::warn!("MQTT disconnect did not complete in {wait:?}");
        }
    }
}

/// The filters as sent to the broker (with the shared-subscription prefix).
fn broker_filters(config: &MqttConfig, subscriptions: &[Subscription]) -> Vec<(String, Qos)> {
    subscriptions
        .iter()
        .map(|s| (config.broker_filter(&s.filter), s.qos))
        .collect()
}

struct Poller {
    session: Session,
    client: Client,
    acker: Arc<Acker>,
    deliveries: Option<mpsc::Sender<Delivery>>,
    permits: Arc<Semaphore>,
    filters: watch::Receiver<Vec<(String, Qos)>>,
    /// What the last SUBSCRIBE asked for, to name refused filters.
    subscribed: Vec<(String, Qos)>,
    /// The filters held now.
    held: Vec<(String, Qos)>,
    connected: watch::Sender<bool>,
    stop_reading: CancellationToken,
    url: String,
    metrics: Option<FaceMetrics>,
}

impl Poller {
    fn subscribe(&mut self, filters: Vec<(String, Qos)>) {
        if filters.is_empty() {
            return;
        }
        if let Err(e) = self.client.try_subscribe(&filters) {
            tracing::error!(error = %e, "could not subscribe");
        }
        self.subscribed = filters;
    }

    /// The routes changed: subscribe what is new (first, so nothing wanted by both is missed),
    /// then unsubscribe what is no longer wanted. A filter whose QoS changed is subscribed
    /// again, which replaces it.
    fn change_subscriptions(&mut self) {
        let wanted = self.filters.borrow_and_update().clone();
        let added: Vec<(String, Qos)> = wanted
            .iter()
            .filter(|f| !self.held.contains(f))
            .cloned()
            .collect();
        let removed: Vec<String> = self
            .held
            .iter()
            .filter(|(f, _)| !wanted.iter().any(|(w, _)| w == f))
            .map(|(f, _)| f.clone())
            .collect();
        if !added.is_empty() || !removed.is_empty() {
            tracing::info!(?added, ?removed, "changing subscriptions");
        }
        self.subscribe(added);
        if !removed.is_empty() {
            if let Err(e) = self.client.try_unsubscribe(&removed) {
                tracing::error!(error = %e, "could not unsubscribe");
            }
        }
        self.held = wanted;
    }

    /// Sets the connected flag (and gauge).
    fn set_connected(&self, up: bool) {
        self.connected.send_replace(up);
        if let Some(m) = &self.metrics {
            m.connected.set(i64::from(up));
        }
    }

    async fn run(mut self) {
        let mut failures = 0u32;
        let mut last_error = String::new();
        let mut qos0_dropped = 0u64;
        loop {
            if self.stop_reading.is_cancelled() && self.deliveries.take().is_some() {
                tracing::info!("MQTT ingress stopped reading; finishing messages in flight");
            }
            let event = tokio::select! {
                event = self.session.poll() => event,
                changed = self.filters.changed() => {
                    if changed.is_ok() {
                        self.change_subscriptions();
                    }
                    continue;
                }
                // Wake to drop the delivery stream promptly when told to stop reading.
                _ = self.stop_reading.cancelled(), if self.deliveries.is_some() => continue,
            };
            match event {
                Ok(SessionEvent::Connected { session_present }) => {
                    failures = 0;
                    last_error.clear();
                    self.set_connected(true);
                    tracing::info!(url = %self.url, session_present, "MQTT connected");
                    // A persistent session keeps its subscriptions; subscribing again is
                    // harmless and covers a session the broker lost.
                    self.held = self.filters.borrow().clone();
                    self.subscribe(self.held.clone());
                }
                Ok(SessionEvent::Subscribed { refused }) => {
                    for i in refused {
                        let filter = self.subscribed.get(i).map_or("?", |f| f.0.as_str());
                        tracing::error!(filter, "the broker refused the subscription (not authorized, or an invalid filter)");
                    }
                }
                Ok(SessionEvent::Publish { message, pkid }) => {
                    let Some(deliveries) = &self.deliveries else {
                        continue; // stopping: left unacked for the next session
                    };
                    let qos = message.qos;
                    let permit = match qos {
                        // QoS 0 is lossy by contract: with the pipeline full, drop it rather
                        // than stall the event loop.
                        Qos::AtMostOnce => match self.permits.clone().try_acquire_owned() {
                            Ok(p) => p,
                            Err(_) => {
                                qos0_dropped += 1;
                                if let Some(m) = &self.metrics {
                                    m.dropped.inc();
                                }
                                if qos0_dropped.is_power_of_two() {
                                    tracing::warn!(
                                        qos0_dropped,
                                        "pipeline full: dropping QoS 0 messages"
                                    );
                                }
                                continue;
                            }
                        },
                        // MQTT 5's receive maximum keeps QoS 1 within the permits; a 3.1.1
                        // broker that sends more makes this wait (see the README).
                        _ => match self.permits.clone().acquire_owned().await {
                            Ok(p) => p,
                            Err(_) => return,
                        },
                    };
                    let received = self.metrics.is_some().then(Instant::now);
                    let token = {
                        let mut state = self.acker.state.lock().unwrap_or_else(|e| e.into_inner());
                        let generation = state.tracker.generation();
                        state.slots.push_back(Slot {
                            _permit: permit,
                            received,
                            generation,
                        });
                        state
                            .tracker
                            .received((qos != Qos::AtMostOnce).then_some(pkid))
                    };
                    if let Some(m) = &self.metrics {
                        m.received.inc();
                        m.inflight.inc();
                    }
                    let ack = Box::new(ClientAck {
                        acker: self.acker.clone(),
                        token,
                    });
                    if deliveries.send(Delivery::new(message, ack)).await.is_err() {
                        self.deliveries = None;
                    }
                }
                Ok(SessionEvent::DisconnectSent) => {
                    self.set_connected(false);
                    tracing::info!("MQTT disconnected");
                    return;
                }
                Ok(
                    SessionEvent::Other
                    | SessionEvent::PublishSent { .. }
                    | SessionEvent::PubAck { .. },
                ) => {}
                Err(error) => {
                    {
                        let mut state = self.acker.state.lock().unwrap_or_else(|e| e.into_inner());
                        state.tracker.connection_lost();
                        self.session.clean();
                    }
                    self.set_connected(false);
                    if error != last_error {
                        tracing::warn!(url = %self.url, error = %error, "MQTT connection lost or refused; retrying with backoff");
                        last_error = error;
                    }
                    tokio::time::sleep(session::backoff(failures)).await;
                    failures = failures.saturating_add(1);
                }
            }
        }
    }
}
