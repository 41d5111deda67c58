//! One device connection: CONNECT (auth, takeover, session), then PUBLISHes handed to the
//! pipeline in arrival order and acked in that order once stored (the pure [`Inflight`] decides
//! what to send), keep-alive, and the will when the connection ends uncleanly.
//!
//! Reading pauses without closing: publishes decoded while the pipeline is full, or while a
//! 3.1.1 client is over `max_inflight`, wait in order in `held`; reading goes on (so PINGREQs
//! are answered) until `READ_AHEAD` bytes of them wait, then stops until they move, and TCP
//! carries the backpressure to the device.

use super::codec::{self, CodecError, Connect, Inbound, Outbound, Publish, Reason, Version, Will};
use super::feed::{Feed, FeedSession, Push};
use super::inflight::{Admit, Inflight, Pushes, Token};
use super::Shared;
use crate::message::{now_ms, Ack, Delivery, Message, Qos};
use crate::mqtt::server::auth::Verdict;
use bytes::BytesMut;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit};
use tokio_util::sync::CancellationToken;

/// How long a new connection has to send CONNECT (TLS handshake included).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes of decoded publishes that may wait before the socket is no longer read.
const READ_AHEAD: usize = 64 * 1024;
/// Topic aliases a client may set (MQTT 5).
pub const TOPIC_ALIAS_MAXIMUM: u16 = 1024;

/// Why a connection ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// DISCONNECT from the client; MQTT 5 reason 0x04 asks for the will anyway.
    Disconnected { with_will: bool },
    /// The peer closed the socket, or it failed.
    Closed(String),
    /// Tributary closed it with this reason (sent as DISCONNECT to an MQTT 5 client).
    Refused(Reason, String),
    /// Tributary is stopping.
    Shutdown,
}

/// A PUBLISH decoded and waiting its turn.
enum Held {
    Store(Message, u16),
    Refuse(Qos, u16, Reason),
}

/// Serves one connection until it ends.
pub(super) async fn serve<S>(stream: S, peer: SocketAddr, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (reader, writer) = tokio::io::split(stream);
    let mut conn = Conn {
        reader,
        writer,
        // Small for an idle device; `fill` grows it for a busy one.
        buf: BytesMut::with_capacity(1024),
        out: BytesMut::new(),
        peer,
        version: Version::V4,
        max_packet: shared.max_packet(),
        shared,
    };
    let connect = match tokio::time::timeout(CONNECT_TIMEOUT, conn.read_connect()).await {
        Ok(Ok(Some(connect))) => connect,
        Ok(Ok(None)) => return,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "MQTT connection refused");
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "no CONNECT within {CONNECT_TIMEOUT:?}; closing");
            return;
        }
    };
    conn.version = connect.version;
    conn.session(connect).await;
}

struct Conn<R, W> {
    reader: R,
    writer: W,
    /// Bytes read and not yet decoded.
    buf: BytesMut,
    /// Bytes to send.
    out: BytesMut,
    peer: SocketAddr,
    version: Version,
    max_packet: usize,
    shared: Arc<Shared>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Conn<R, W> {
    /// Reads until a whole CONNECT is in; `None` when the peer left first.
    async fn read_connect(&mut self) -> Result<Option<Connect>, CodecError> {
        loop {
            match codec::read_connect(&mut self.buf, self.max_packet) {
                Ok(Some(connect)) => return Ok(Some(connect)),
                Ok(None) => {}
                Err(e) => {
                    if let CodecError::UnsupportedVersion(_) = e {
                        // CONNACK "unacceptable protocol version", in the 3.1.1 form every
                        // version reads.
                        let _ = self.writer.write_all(&[0x20, 0x02, 0x00, 0x01]).await;
                    }
                    return Err(e);
                }
            }
            if !self.fill().await {
                return Ok(None);
            }
        }
    }

    /// Reads more bytes; false when the peer closed or the socket failed.
    async fn fill(&mut self) -> bool {
        if self.buf.capacity() - self.buf.len() < 512 {
            self.buf.reserve(8 * 1024);
        }
        matches!(self.reader.read_buf(&mut self.buf).await, Ok(n) if n > 0)
    }

    fn send(&mut self, packet: &Outbound) {
        codec::write(self.version, packet, &mut self.out);
    }

    async fn flush(&mut self) -> bool {
        if self.out.is_empty() {
            return true;
        }
        let ok = self.writer.write_all(&self.out).await.is_ok();
        self.out.clear();
        ok
    }

    async fn refuse_connect(&mut self, reason: Reason, why: &str) {
        tracing::info!(peer = %self.peer, ?reason, "MQTT CONNECT refused: {why}");
        self.send(&Outbound::ConnAck {
            session_present: false,
            reason,
            limits: Box::default(),
        });
        self.flush().await;
        let _ = self.writer.shutdown().await;
    }

    /// From CONNECT to the end of the connection.
    async fn session(mut self, connect: Connect) {
        let shared = self.shared.clone();
        let config = &shared.config;
        let Connect {
            client_id,
            clean_start,
            keep_alive,
            session_expiry,
            username,
            password,
            will,
            receive_maximum,
            ..
        } = connect;
        let (client_id, assigned) = match (client_id.is_empty(), self.version, clean_start) {
            (false, ..) => (client_id, false),
            (true, Version::V4, false) => {
                self.refuse_connect(
                    Reason::ClientIdentifierNotValid,
                    "an empty client id needs clean session",
                )
                .await;
                return;
            }
            (true, ..) => (shared.assign_client_id(), true),
        };
        if let Some(will) = &will {
            if will.topic.is_empty() || will.topic.contains(['+', '#', '\0']) {
                let why = format!("the will topic {:?} is not a topic name", will.topic);
                match self.version {
                    Version::V5 => self.refuse_connect(Reason::TopicNameInvalid, &why).await,
                    // 3.1.1 has no code for it: a malformed CONNECT is closed unanswered.
                    Version::V4 => {
                        tracing::info!(peer = %self.peer, "MQTT CONNECT refused: {why}")
                    }
                }
                return;
            }
        }
        let auth = shared.auth.clone();
        let verdict = tokio::task::spawn_blocking(move || {
            auth.check(username.as_deref(), password.as_deref())
        })
        .await
        .unwrap_or(Verdict::BadCredentials);
        match verdict {
            Verdict::Allowed => {}
            Verdict::BadCredentials => {
                self.refuse_connect(Reason::BadUserNameOrPassword, "wrong user name or password")
                    .await;
                return;
            }
            Verdict::AnonymousRefused => {
                self.refuse_connect(
                    Reason::NotAuthorized,
                    "no user name, and listener.auth.allow_anonymous is false",
                )
                .await;
                return;
            }
        }
        let registration = shared.register(&client_id).await;
        let granted = session_expiry.min(
            config
                .session_expiry_max
                .0
                .as_secs()
                .min(u64::from(u32::MAX)) as u32,
        );
        let resumed = match clean_start {
            true => {
                shared.forget_session(&client_id);
                None
            }
            false => shared.take_session(&client_id),
        };
        // Subscriptions (egress) outlive the connection in a persistent session.
        let mut subscriptions = Vec::new();
        if let Some(feed) = &shared.feed {
            match clean_start {
                true => feed.keep(&client_id, None),
                false => subscriptions = feed.restore(&client_id).unwrap_or_default(),
            }
        }
        let session_present = resumed.is_some() || !subscriptions.is_empty();
        let mut inflight = Inflight::resume(resumed.unwrap_or_default());
        let limits = codec::ServerLimits {
            receive_maximum: config.max_inflight.min(65_535) as u16,
            maximum_packet_size: self.max_packet as u32,
            topic_alias_maximum: TOPIC_ALIAS_MAXIMUM,
            session_expiry: (granted != session_expiry).then_some(granted),
            assigned_client_id: assigned.then(|| client_id.clone()),
        };
        self.send(&Outbound::ConnAck {
            session_present,
            reason: Reason::Success,
            limits: Box::new(limits),
        });
        if !self.flush().await {
            shared.unregister(&client_id, &registration, None);
            return;
        }
        tracing::debug!(peer = %self.peer, client_id, session_present, "MQTT client connected");
        if let Some(m) = &shared.metrics {
            m.connected.inc();
        }
        let keep_alive = Duration::from_secs(u64::from(keep_alive)) * 3 / 2;
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Token>();
        let (end, granted) = self
            .serve(
                &mut inflight,
                (done_tx, &mut done_rx),
                Subscriber {
                    client_id: &client_id,
                    subscriptions,
                    receive_maximum,
                },
                keep_alive,
                granted,
                &registration.kick,
            )
            .await;
        // A persistent session keeps its QoS 2 ids; those still being stored are waited for
        // (a while), so that the device sending them again after a reconnect is answered
        // PUBREC instead of having them stored twice.
        if granted > 0 && end != End::Shutdown && inflight.storing() > 0 {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while inflight.storing() > 0 {
                match tokio::time::timeout_at(deadline, done_rx.recv()).await {
                    Ok(Some(token)) => drop(inflight.stored(token)),
                    _ => break,
                }
            }
        }
        if let Some(m) = &shared.metrics {
            m.connected.dec();
        }
        match &end {
            End::Disconnected { .. } | End::Shutdown => {
                tracing::debug!(peer = %self.peer, client_id, ?end, "MQTT client left")
            }
            End::Closed(why) => {
                tracing::debug!(peer = %self.peer, client_id, why, "MQTT connection closed")
            }
            End::Refused(reason, why) => {
                tracing::info!(peer = %self.peer, client_id, ?reason, "MQTT connection closed: {why}");
                self.send(&Outbound::Disconnect { reason: *reason });
            }
        }
        if end == End::Shutdown {
            self.send(&Outbound::Disconnect {
                reason: Reason::ServerShuttingDown,
            });
        }
        self.flush().await;
        let _ = self.writer.shutdown().await;
        let publish_will = match end {
            End::Disconnected { with_will } => with_will,
            End::Shutdown => false,
            End::Closed(_) | End::Refused(..) => true,
        };
        let session =
            (granted > 0).then(|| (inflight.recorded(), Duration::from_secs(u64::from(granted))));
        shared.unregister(&client_id, &registration, session);
        if let (true, Some(will)) = (publish_will, will) {
            shared.publish_will(client_id, registration.serial, will, granted);
        }
    }

    /// The packet loop; returns why it ended and the session expiry then in force.
    async fn serve(
        &mut self,
        inflight: &mut Inflight,
        (done_tx, done_rx): (
            mpsc::UnboundedSender<Token>,
            &mut mpsc::UnboundedReceiver<Token>,
        ),
        subscriber: Subscriber<'_>,
        keep_alive: Duration,
        mut granted: u32,
        kick: &CancellationToken,
    ) -> (End, u32) {
        let shared = self.shared.clone();
        let max_inflight = shared.config.max_inflight as usize;
        let max_payload = shared.config.max_payload.0 as usize;
        let mut deliveries = shared.deliveries();
        let mut held: VecDeque<Held> = VecDeque::new();
        // Set once the client is leaving (DISCONNECT, or the socket closed): nothing more is
        // read, and what was read is handed on before the connection ends.
        let mut closing: Option<End> = None;
        let mut held_bytes = 0usize;
        // QoS 1 and 2 publishes in `held` that count against the receive maximum.
        let mut held_unacked = 0usize;
        let mut aliases: HashMap<u16, String> = HashMap::new();
        let mut deadline = tokio::time::Instant::now() + keep_alive;
        let Subscriber {
            client_id,
            mut subscriptions,
            receive_maximum,
        } = subscriber;
        let persistent = granted > 0;
        let mut pushes: Pushes<oneshot::Sender<()>> = Pushes::new(receive_maximum);
        // Delivering to the subscriptions: replaced when they change, stopped when dropped.
        let mut feeding = Feeding::default();
        feeding.restart(&shared, client_id, persistent, &subscriptions);
        loop {
            // Hand on what waits, in order, while the pipeline and the limits allow.
            let mut pipeline_full = false;
            while let Some(next) = held.front() {
                let Some(tx) = &deliveries else { break };
                let slot = match next {
                    Held::Refuse(..) => None,
                    Held::Store(m, _) => {
                        if self.version == Version::V4
                            && m.qos != Qos::AtMostOnce
                            && inflight.unacked() >= max_inflight
                        {
                            break;
                        }
                        match shared.slots.clone().try_acquire_owned() {
                            Ok(slot) => Some(slot),
                            Err(_) => {
                                pipeline_full = true;
                                break;
                            }
                        }
                    }
                };
                let next = held.pop_front().expect("checked");
                match next {
                    Held::Refuse(qos, pkid, reason) => {
                        held_unacked -= 1;
                        for ack in inflight.refuse(qos, pkid, reason) {
                            self.send(&ack);
                        }
                    }
                    Held::Store(message, pkid) => {
                        held_bytes -= message.payload.len() + message.topic.len();
                        let qos = message.qos;
                        let token = match qos {
                            Qos::AtMostOnce => None,
                            _ => {
                                held_unacked -= 1;
                                match inflight.publish(qos, pkid) {
                                    Admit::Store(token) => Some(token),
                                    Admit::Duplicate(reply) => {
                                        if let Some(reply) = reply {
                                            self.send(&reply);
                                        }
                                        continue;
                                    }
                                }
                            }
                        };
                        let ack = ListenerAck {
                            token,
                            done: done_tx.clone(),
                            metrics: shared.metrics.clone(),
                            received: Instant::now(),
                            _slot: slot,
                        };
                        if let Some(m) = &shared.metrics {
                            m.received.inc();
                            m.inflight.inc();
                        }
                        // The channel holds every slot (see `Listener::slots`): a send that fails
                        // means the pipeline is gone (stopping); the publish stays unacked.
                        if tx.try_send(Delivery::new(message, Box::new(ack))).is_err() {
                            deliveries = None;
                        }
                    }
                }
            }
            if closing.is_some() {
                // Nobody reads acks any more.
                self.out.clear();
            }
            if !self.flush().await {
                return (End::Closed("write failed".into()), granted);
            }
            if let Some(end) = closing.take() {
                if held.is_empty() || deliveries.is_none() {
                    return (end, granted);
                }
                closing = Some(end);
            }
            let read = held_bytes < READ_AHEAD && closing.is_none();
            if !read {
                // Not reading is our doing: the client's silence only counts once we read again.
                deadline = tokio::time::Instant::now() + keep_alive;
            }
            let watch_keep_alive = read && !keep_alive.is_zero();
            tokio::select! {
                filled = self.fill(), if read => {
                    if !filled {
                        closing = Some(End::Closed("the peer closed the connection".into()));
                        continue;
                    }
                    deadline = tokio::time::Instant::now() + keep_alive;
                    loop {
                        let packet = match codec::read(self.version, &mut self.buf, self.max_packet) {
                            Ok(Some(packet)) => packet,
                            Ok(None) => break,
                            Err(CodecError::TooLarge { size, max }) => {
                                return (End::Refused(Reason::PacketTooLarge, format!("a packet of {size} bytes is over the maximum packet size {max}")), granted);
                            }
                            Err(e) => return (End::Refused(Reason::MalformedPacket, e.to_string()), granted),
                        };
                        match packet {
                            Inbound::Publish(p) => {
                                let qos = p.qos;
                                let held_item = match self.publish(p, &mut aliases, max_payload) {
                                    Ok(held_item) => held_item,
                                    Err((reason, why)) => return (End::Refused(reason, why), granted),
                                };
                                if qos != Qos::AtMostOnce {
                                    if self.version == Version::V5 && inflight.unacked() + held_unacked >= max_inflight {
                                        return (End::Refused(Reason::ReceiveMaximumExceeded, format!("more than {max_inflight} unacknowledged QoS 1 and 2 publishes (the receive maximum)")), granted);
                                    }
                                    held_unacked += 1;
                                }
                                // None: a QoS 0 publish refused, nothing to answer.
                                if let Some(item) = held_item {
                                    if let Held::Store(m, _) = &item {
                                        held_bytes += m.payload.len() + m.topic.len();
                                    }
                                    held.push_back(item);
                                }
                            }
                            Inbound::PubRel { pkid } => {
                                let reply = inflight.release(pkid);
                                self.send(&reply);
                            }
                            Inbound::PingReq => self.send(&Outbound::PingResp),
                            Inbound::Subscribe { pkid, filters } => {
                                let mut answers = Vec::with_capacity(filters.len());
                                let mut why = "";
                                let mut changed = false;
                                for (filter, qos) in filters {
                                    match subscribable(&shared, &filter) {
                                        Ok(()) => {
                                            // Egress publishes at QoS 1 at most.
                                            let qos = qos.min(Qos::AtLeastOnce);
                                            let entry = (filter, qos);
                                            if !subscriptions.contains(&entry) {
                                                subscriptions.retain(|(f, _)| *f != entry.0);
                                                subscriptions.push(entry);
                                                changed = true;
                                            }
                                            answers.push(Ok(qos));
                                        }
                                        Err((reason, because)) => {
                                            tracing::info!(peer = %self.peer, filter, "SUBSCRIBE refused: {because}");
                                            why = because;
                                            answers.push(Err(reason));
                                        }
                                    }
                                }
                                // Subscribing again to what it has (a persistent session coming
                                // back) changes nothing and does not restart delivery.
                                if changed {
                                    self.subscriptions_changed(client_id, persistent, &subscriptions);
                                    feeding.restart(&shared, client_id, persistent, &subscriptions);
                                }
                                self.send(&Outbound::SubAck { pkid, answers, why });
                            }
                            Inbound::Unsubscribe { pkid, filters } => {
                                let existed: Vec<bool> = filters
                                    .iter()
                                    .map(|filter| {
                                        let before = subscriptions.len();
                                        subscriptions.retain(|(f, _)| f != filter);
                                        subscriptions.len() < before
                                    })
                                    .collect();
                                if existed.iter().any(|e| *e) {
                                    self.subscriptions_changed(client_id, persistent, &subscriptions);
                                    feeding.restart(&shared, client_id, persistent, &subscriptions);
                                }
                                self.send(&Outbound::UnsubAck { pkid, existed });
                            }
                            Inbound::PubAck { pkid } => {
                                if let Some(delivered) = pushes.acked(pkid) {
                                    let _ = delivered.send(());
                                }
                            }
                            Inbound::Disconnect { with_will, session_expiry } => {
                                if let Some(expiry) = session_expiry {
                                    let max = shared.config.session_expiry_max.0.as_secs().min(u64::from(u32::MAX)) as u32;
                                    granted = expiry.min(max);
                                }
                                closing = Some(End::Disconnected { with_will });
                                break;
                            }
                            Inbound::Unexpected(what) => {
                                return (End::Refused(Reason::ProtocolError, format!("{what} is not expected from a client here")), granted);
                            }
                        }
                    }
                }
                Some(token) = done_rx.recv() => {
                    let mut acks = inflight.stored(token);
                    while let Ok(token) = done_rx.try_recv() {
                        acks.extend(inflight.stored(token));
                    }
                    for ack in acks {
                        self.send(&ack);
                    }
                }
                // A message for a subscription, while the client takes more.
                Some(push) = feeding.next(), if feeding.is_on() && pushes.has_room() && closing.is_none() => {
                    let pkid = match push.qos {
                        Qos::AtMostOnce => {
                            let _ = push.delivered.send(());
                            0
                        }
                        _ => pushes.send(push.delivered),
                    };
                    self.send(&Outbound::Publish {
                        topic: push.topic,
                        payload: push.payload,
                        qos: push.qos,
                        retain: push.retain,
                        pkid,
                    });
                }
                // Wakes when the pipeline has room again for what waits.
                _ = shared.slots.acquire(), if pipeline_full => {}
                _ = tokio::time::sleep_until(deadline), if watch_keep_alive => {
                    return (End::Refused(Reason::KeepAliveTimeout, format!("nothing received for {keep_alive:?} (1.5 x keep-alive)")), granted);
                }
                _ = kick.cancelled() => {
                    return (End::Refused(Reason::SessionTakenOver, "another connection took over the client id".into()), granted);
                }
                _ = shared.stop_reading.cancelled(), if deliveries.is_some() => {
                    // Publishes not handed on stay unacked: the device sends them again.
                    deliveries = None;
                    held.clear();
                    held_bytes = 0;
                    held_unacked = 0;
                }
                _ = shared.close.cancelled() => {
                    // The pipeline has drained by now: the acks it reported go out first.
                    while let Ok(token) = done_rx.try_recv() {
                        for ack in inflight.stored(token) {
                            self.send(&ack);
                        }
                    }
                    return (End::Shutdown, granted);
                }
            }
        }
    }

    /// A persistent session's subscriptions are kept by the feed as they change.
    fn subscriptions_changed(&self, client_id: &str, persistent: bool, subs: &[(String, Qos)]) {
        if let (true, Some(feed)) = (persistent, &self.shared.feed) {
            feed.keep(client_id, Some(subs));
        }
    }

    /// Checks a PUBLISH and resolves its topic alias: `Ok(None)` for a QoS 0 publish refused,
    /// `Err` when the connection must close.
    fn publish(
        &self,
        p: Publish,
        aliases: &mut HashMap<u16, String>,
        max_payload: usize,
    ) -> Result<Option<Held>, (Reason, String)> {
        let topic = match (p.topic.is_empty(), p.topic_alias) {
            (_, Some(alias)) if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM => {
                return Err((
                    Reason::TopicAliasInvalid,
                    format!("topic alias {alias} is out of 1..={TOPIC_ALIAS_MAXIMUM}"),
                ))
            }
            (true, Some(alias)) => match aliases.get(&alias) {
                Some(topic) => topic.clone(),
                None => {
                    return Err((
                        Reason::ProtocolError,
                        format!("topic alias {alias} was never set"),
                    ))
                }
            },
            (false, Some(alias)) => {
                aliases.insert(alias, p.topic.clone());
                p.topic
            }
            (false, None) => p.topic,
            (true, None) => {
                return Err((Reason::TopicNameInvalid, "empty topic name".into()));
            }
        };
        if topic.contains(['+', '#', '\0']) {
            return Err((
                Reason::TopicNameInvalid,
                format!("{topic:?} is not a topic name (wildcards are for filters)"),
            ));
        }
        if p.qos != Qos::AtMostOnce && p.pkid == 0 {
            return Err((Reason::ProtocolError, "packet id 0".into()));
        }
        // MQTT 5 has a reason code for it; a 3.1.1 publish goes on, and the router makes it
        // a dead letter (its limit is this one).
        if self.version == Version::V5 && p.payload.len() > max_payload {
            tracing::info!(peer = %self.peer, topic, bytes = p.payload.len(), "PUBLISH over listener.max_payload refused (0x97)");
            return Ok(match p.qos {
                Qos::AtMostOnce => None,
                qos => Some(Held::Refuse(qos, p.pkid, Reason::QuotaExceeded)),
            });
        }
        let message = Message {
            topic,
            payload: p.payload,
            qos: p.qos,
            retain: p.retain,
            user_properties: p.user_properties,
            content_type: p.content_type,
            received_at_ms: now_ms(),
        };
        Ok(Some(Held::Store(message, p.pkid)))
    }
}

/// Who the connection delivers to: its client id, its subscriptions (restored with a
/// persistent session), and how many QoS 1 PUBLISHes it takes unacked.
struct Subscriber<'a> {
    client_id: &'a str,
    subscriptions: Vec<(String, Qos)>,
    receive_maximum: u16,
}

/// A persistent session's feed, client id and subscriptions.
type Kept = (Arc<dyn Feed>, String, Vec<(String, Qos)>);

/// The feed delivering to this connection's subscriptions, stopped when replaced or dropped.
#[derive(Default)]
struct Feeding {
    stop: Option<CancellationToken>,
    /// Where the feed sends; made with the first subscription (an idle device's connection
    /// needs none).
    pushes: Option<(mpsc::Sender<Push>, mpsc::Receiver<Push>)>,
    /// A persistent session's: kept again when the connection ends, so its expiry counts
    /// from then.
    kept: Option<Kept>,
}

impl Feeding {
    fn restart(
        &mut self,
        shared: &Shared,
        client_id: &str,
        persistent: bool,
        subscriptions: &[(String, Qos)],
    ) {
        if let Some(old) = self.stop.take() {
            old.cancel();
        }
        let Some(feed) = &shared.feed else { return };
        if persistent {
            self.kept = Some((feed.clone(), client_id.to_string(), subscriptions.to_vec()));
        }
        if !subscriptions.is_empty() {
            let (pushes, _) = self.pushes.get_or_insert_with(|| mpsc::channel(256));
            self.stop = Some(feed.start(FeedSession {
                client_id: client_id.to_string(),
                persistent,
                subscriptions: subscriptions.to_vec(),
                pushes: pushes.clone(),
            }));
        }
    }

    fn is_on(&self) -> bool {
        self.pushes.is_some()
    }

    /// The next message for the subscriptions (waits forever before the first subscription).
    async fn next(&mut self) -> Option<Push> {
        match &mut self.pushes {
            Some((_, rx)) => rx.recv().await,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Feeding {
    fn drop(&mut self) {
        if let Some(token) = self.stop.take() {
            token.cancel();
        }
        if let Some((feed, client_id, subscriptions)) = self.kept.take() {
            if !subscriptions.is_empty() {
                feed.keep(&client_id, Some(&subscriptions));
            }
        }
    }
}

/// Whether a SUBSCRIBE filter is taken: a valid filter some egress route can publish to.
fn subscribable(shared: &Shared, filter: &str) -> Result<(), (Reason, &'static str)> {
    let Some(feed) = &shared.feed else {
        return Err((
            Reason::ImplementationSpecific,
            "no egress route delivers to this listener: it takes publishes only",
        ));
    };
    if !rumqttc::mqttbytes::valid_filter(filter) || filter.starts_with("$share/") {
        return Err((
            Reason::TopicFilterInvalid,
            "not a topic filter (shared subscriptions are not offered)",
        ));
    }
    feed.can_match(filter)
        .map_err(|why| (Reason::ImplementationSpecific, why))
}

/// A listener message's ack: reports the stored publish to its connection, which sends the
/// acks due in order. A connection that is gone has nobody to ack: the device sends again.
struct ListenerAck {
    token: Option<Token>,
    done: mpsc::UnboundedSender<Token>,
    metrics: Option<crate::ops::FaceMetrics>,
    received: Instant,
    /// The message's place among the listener's messages in the pipeline.
    _slot: Option<OwnedSemaphorePermit>,
}

impl Ack for ListenerAck {
    fn stored(self: Box<Self>) {
        if let Some(m) = &self.metrics {
            m.inflight.dec();
            m.acked.inc();
            m.ack_latency.observe(self.received.elapsed().as_secs_f64());
        }
        if let Some(token) = self.token {
            let _ = self.done.send(token);
        }
    }
}

/// The message a will becomes.
pub(super) fn will_message(will: Will) -> Message {
    Message {
        topic: will.topic,
        payload: will.payload,
        qos: will.qos,
        retain: will.retain,
        user_properties: will.user_properties,
        content_type: will.content_type,
        received_at_ms: now_ms(),
    }
}
