//! One MQTT session over rumqttc, MQTT 5 or 3.1.1 behind one face: the options built from
//! `mqtt.*`, the event loop's events reduced to what the ingress needs, and the client calls
//! it makes (ack, subscribe, disconnect).

use crate::config::{MqttConfig, MqttEndpoint, MqttVersion};
use crate::message::{now_ms, Message, Qos};
use rumqttc::v5;
use rumqttc::{TlsConfiguration, Transport};
use std::time::Duration;
use thiserror::Error;

/// MQTT's largest packet: payloads are checked by the router (dead letters), not refused here,
/// where a refused packet would only come back at every reconnect.
const MAX_PACKET: u32 = 268_435_455;
/// Room for every packet id of the session plus a few subscribe and disconnect requests, so
/// an ack never finds the request channel full.
const REQUEST_CHANNEL: usize = u16::MAX as usize + 64;

#[derive(Debug, Error)]
pub enum SessionError {
    #[error("mqtt.url: {0}")]
    Url(String),
    #[error("{path}: {error}")]
    TlsFile { path: String, error: std::io::Error },
    #[error("MQTT request channel: {0}")]
    Client(String),
}

/// What the event loop reported.
#[derive(Debug)]
pub enum SessionEvent {
    Connected {
        session_present: bool,
    },
    /// The broker answered a SUBSCRIBE; lists the filters (by index) it refused.
    Subscribed {
        refused: Vec<usize>,
    },
    Publish {
        message: Message,
        pkid: u16,
    },
    /// One of our PUBLISHes went out (0 at QoS 0); a packet id seen again is a resend.
    PublishSent {
        pkid: u16,
    },
    /// The broker acknowledged our QoS 1 PUBLISH.
    PubAck {
        pkid: u16,
    },
    /// Our DISCONNECT went out: the session is over.
    DisconnectSent,
    Other,
}

#[derive(Clone)]
pub enum Client {
    V5(v5::AsyncClient),
    V3(rumqttc::AsyncClient),
}

// One per process: boxing the larger event loop would save nothing.
#[allow(clippy::large_enum_variant)]
pub enum Session {
    V5(v5::EventLoop),
    V3(rumqttc::EventLoop),
}

/// Builds the client and its event loop from the config; nothing connects until `poll`.
pub fn open(config: &MqttConfig) -> Result<(Client, Session), SessionError> {
    let endpoint = MqttEndpoint::parse(&config.url).map_err(SessionError::Url)?;
    let transport = transport(config, endpoint.tls)?;
    let keep_alive = config.keep_alive.0;
    let credentials = (config.username.is_some() || config.password.is_some()).then(|| {
        (
            config.username.clone().unwrap_or_default(),
            config.password.clone().unwrap_or_default(),
        )
    });
    Ok(match config.version {
        MqttVersion::V5 => {
            let mut o = v5::MqttOptions::new(&config.client_id, &endpoint.host, endpoint.port);
            o.set_keep_alive(keep_alive)
                .set_clean_start(config.clean_start)
                .set_manual_acks(true)
                .set_transport(transport)
                .set_max_packet_size(Some(MAX_PACKET))
                // The broker keeps at most this many QoS 1 messages unacked towards us.
                .set_receive_maximum(Some(config.max_inflight.min(u16::MAX as u32) as u16))
                // Our own PUBLISHes (egress) unacked at once; without it rumqttc sizes its
                // table for 65,535 (14 MiB).
                .set_outgoing_inflight_upper_limit(config.max_inflight.min(u16::MAX as u32) as u16)
                .set_connection_timeout(10);
            let expiry = if config.clean_start {
                0
            } else {
                config.session_expiry.0.as_secs().min(u32::MAX as u64) as u32
            };
            o.set_session_expiry_interval(Some(expiry));
            if let Some((user, pass)) = credentials {
                o.set_credentials(user, pass);
            }
            let (client, eventloop) = v5::AsyncClient::new(o, REQUEST_CHANNEL);
            (Client::V5(client), Session::V5(eventloop))
        }
        MqttVersion::V3 => {
            let mut o = rumqttc::MqttOptions::new(&config.client_id, &endpoint.host, endpoint.port);
            o.set_keep_alive(keep_alive)
                .set_clean_session(config.clean_start)
                .set_manual_acks(true)
                .set_transport(transport)
                .set_max_packet_size(MAX_PACKET as usize, 1 << 20)
                .set_inflight(config.max_inflight.min(u16::MAX as u32) as u16);
            if let Some((user, pass)) = credentials {
                o.set_credentials(user, pass);
            }
            let (client, mut eventloop) = rumqttc::AsyncClient::new(o, REQUEST_CHANNEL);
            eventloop.network_options.set_connection_timeout(10);
            (Client::V3(client), Session::V3(eventloop))
        }
    })
}

fn transport(config: &MqttConfig, tls: bool) -> Result<Transport, SessionError> {
    if !tls {
        return Ok(Transport::tcp());
    }
    let read = |path: &std::path::Path| {
        std::fs::read(path).map_err(|error| SessionError::TlsFile {
            path: path.display().to_string(),
            error,
        })
    };
    let Some(ca) = &config.tls.ca_file else {
        // The system's trusted roots.
        return Ok(Transport::tls_with_default_config());
    };
    let client_auth = match (&config.tls.cert_file, &config.tls.key_file) {
        (Some(cert), Some(key)) => Some((read(cert)?, read(key)?)),
        _ => None,
    };
    Ok(Transport::tls_with_config(TlsConfiguration::Simple {
        ca: read(ca)?,
        alpn: None,
        client_auth,
    }))
}

fn qos(q: Qos) -> (rumqttc::QoS, v5::mqttbytes::QoS) {
    match q {
        Qos::AtMostOnce => (rumqttc::QoS::AtMostOnce, v5::mqttbytes::QoS::AtMostOnce),
        _ => (rumqttc::QoS::AtLeastOnce, v5::mqttbytes::QoS::AtLeastOnce),
    }
}

impl Client {
    /// Queues a PUBACK for `pkid`; the event loop sends it.
    pub fn try_ack(&self, pkid: u16) -> Result<(), SessionError> {
        let err = |e: rumqttc::ClientError| SessionError::Client(e.to_string());
        match self {
            Client::V5(c) => {
                let mut p =
                    v5::mqttbytes::v5::Publish::new("", v5::mqttbytes::QoS::AtLeastOnce, "", None);
                p.pkid = pkid;
                c.try_ack(&p)
                    .map_err(|e| SessionError::Client(e.to_string()))
            }
            Client::V3(c) => {
                let mut p = rumqttc::Publish::new("", rumqttc::QoS::AtLeastOnce, "");
                p.pkid = pkid;
                c.try_ack(&p).map_err(err)
            }
        }
    }

    /// Queues one SUBSCRIBE for all `filters` (broker filters with their QoS, at most 1).
    pub fn try_subscribe(&self, filters: &[(String, Qos)]) -> Result<(), SessionError> {
        let result = match self {
            Client::V5(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| v5::mqttbytes::v5::Filter::new(f.clone(), qos(*q).1)),
                )
                .map_err(|e| e.to_string()),
            Client::V3(c) => c
                .try_subscribe_many(
                    filters
                        .iter()
                        .map(|(f, q)| rumqttc::SubscribeFilter::new(f.clone(), qos(*q).0)),
                )
                .map_err(|e| e.to_string()),
        };
        result.map_err(SessionError::Client)
    }

    /// Queues an UNSUBSCRIBE for each of `filters` (broker filters).
    pub fn try_unsubscribe(&self, filters: &[String]) -> Result<(), SessionError> {
        for filter in filters {
            let result = match self {
                Client::V5(c) => c.try_unsubscribe(filter.clone()).map_err(|e| e.to_string()),
                Client::V3(c) => c.try_unsubscribe(filter.clone()).map_err(|e| e.to_string()),
            };
            result.map_err(SessionError::Client)?;
        }
        Ok(())
    }

    /// Queues a PUBLISH; its packet id shows in `PublishSent`, its PUBACK in `PubAck`.
    pub fn try_publish(
        &self,
        topic: String,
        payload: bytes::Bytes,
        qos: Qos,
        retain: bool,
    ) -> Result<(), SessionError> {
        let result = match self {
            Client::V5(c) => c
                .try_publish(topic, self::qos(qos).1, retain, payload)
                .map_err(|e| e.to_string()),
            Client::V3(c) => c
                .try_publish(topic, self::qos(qos).0, retain, payload.to_vec())
                .map_err(|e| e.to_string()),
        };
        result.map_err(SessionError::Client)
    }

    pub fn try_disconnect(&self) -> Result<(), SessionError> {
        let result = match self {
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V3(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
        result.map_err(SessionError::Client)
    }
}

impl Session {
    /// The next event; an `Err` is a lost or failed connection (the next call reconnects).
    pub async fn poll(&mut self) -> Result<SessionEvent, String> {
        match self {
            Session::V5(el) => {
                use v5::mqttbytes::v5::{Packet, SubscribeReasonCode as C};
                use v5::Event;
                Ok(match el.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(c)) => SessionEvent::Connected {
                        session_present: c.session_present,
                    },
                    Event::Incoming(Packet::SubAck(s)) => SessionEvent::Subscribed {
                        refused: s
                            .return_codes
                            .iter()
                            .enumerate()
                            .filter(|(_, c)| !matches!(c, C::Success(_)))
                            .map(|(i, _)| i)
                            .collect(),
                    },
                    Event::Incoming(Packet::Publish(p)) => {
                        let (user_properties, content_type) = match p.properties {
                            Some(props) => (props.user_properties, props.content_type),
                            None => (Vec::new(), None),
                        };
                        let message = Message {
                            topic: String::from_utf8_lossy(&p.topic).into_owned(),
                            payload: p.payload,
                            qos: if p.qos == v5::mqttbytes::QoS::AtMostOnce {
                                Qos::AtMostOnce
                            } else {
                                Qos::AtLeastOnce
                            },
                            retain: p.retain,
                            user_properties,
                            content_type,
                            received_at_ms: now_ms(),
                        };
                        SessionEvent::Publish {
                            message,
                            pkid: p.pkid,
                        }
                    }
                    Event::Incoming(Packet::PubAck(a)) => SessionEvent::PubAck { pkid: a.pkid },
                    Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => {
                        SessionEvent::PublishSent { pkid }
                    }
                    Event::Outgoing(rumqttc::Outgoing::Disconnect) => SessionEvent::DisconnectSent,
                    _ => SessionEvent::Other,
                })
            }
            Session::V3(el) => {
                use rumqttc::{Event, Packet, SubscribeReasonCode as C};
                Ok(match el.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Packet::ConnAck(c)) => SessionEvent::Connected {
                        session_present: c.session_present,
                    },
                    Event::Incoming(Packet::SubAck(s)) => SessionEvent::Subscribed {
                        refused: s
                            .return_codes
                            .iter()
                            .enumerate()
                            .filter(|(_, c)| matches!(c, C::Failure))
                            .map(|(i, _)| i)
                            .collect(),
                    },
                    Event::Incoming(Packet::Publish(p)) => {
                        let message = Message {
                            topic: p.topic,
                            payload: p.payload,
                            qos: if p.qos == rumqttc::QoS::AtMostOnce {
                                Qos::AtMostOnce
                            } else {
                                Qos::AtLeastOnce
                            },
                            retain: p.retain,
                            user_properties: Vec::new(),
                            content_type: None,
                            received_at_ms: now_ms(),
                        };
                        SessionEvent::Publish {
                            message,
                            pkid: p.pkid,
                        }
                    }
                    Event::Incoming(Packet::PubAck(a)) => SessionEvent::PubAck { pkid: a.pkid },
                    Event::Outgoing(rumqttc::Outgoing::Publish(pkid)) => {
                        SessionEvent::PublishSent { pkid }
                    }
                    Event::Outgoing(rumqttc::Outgoing::Disconnect) => SessionEvent::DisconnectSent,
                    _ => SessionEvent::Other,
                })
            }
        }
    }

    /// After a lost connection: drops events read before the loss (their messages will be
    /// redelivered) and acks still queued for the old connection, so neither leaks into the
    /// next one.
    pub fn clean(&mut self) {
        match self {
            Session::V5(el) => {
                el.clean();
                el.state.events.clear();
                el.pending.retain(|r| !matches!(r, v5::Request::PubAck(_)));
            }
            Session::V3(el) => {
                el.clean();
                el.state.events.clear();
                el.pending
                    .retain(|r| !matches!(r, rumqttc::Request::PubAck(_)));
            }
        }
    }
}

/// Backoff before reconnecting: doubling from 100 ms to 10 s, with jitter so replicas do not
/// reconnect in step.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_millis(100)
        .saturating_mul(1 << attempt.min(7))
        .min(Duration::from_secs(10));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    // 50% to 100% of the step.
    base.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
}
