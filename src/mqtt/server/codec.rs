//! MQTT packets as the listener sees them, for 3.1.1 and 5 alike.
//!
//! Decoding uses rumqttc's `mqttbytes` (v4 and v5), which reads every packet type, the
//! client-to-server ones included; this module turns them into one small set of version-free
//! [`Inbound`] packets. The few packets the server sends are written here by hand (acks are the
//! hot path, and MQTT 5 needs reason codes rumqttc's types lack, such as PUBACK 0x95), except
//! CONNACK, which rumqttc writes with its properties.
//!
//! A malformed packet is an error for its connection only; the decoders never panic on
//! arbitrary bytes (fuzzed below).

use crate::message::Qos;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use rumqttc::mqttbytes::v4;
use rumqttc::v5::mqttbytes::v5;
use thiserror::Error;

/// QoS 1 PUBLISHes sent unacked to a 3.1.1 client, which cannot say how many it takes.
pub const RECEIVE_MAXIMUM_V4: u16 = 64;

/// The protocol a connection speaks, from its CONNECT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// MQTT 3.1.1 (protocol level 4).
    V4,
    V5,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("malformed packet: {0}")]
    Malformed(String),
    #[error("packet of {size} bytes is over the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("protocol version {0} is not supported (3.1.1 and 5 are)")]
    UnsupportedVersion(u8),
}

/// A CONNECT, whichever version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    pub version: Version,
    pub client_id: String,
    pub clean_start: bool,
    /// Seconds; 0 turns keep-alive off.
    pub keep_alive: u16,
    /// Seconds the session should outlive the connection: MQTT 5's property (0 when absent);
    /// for 3.1.1, `u32::MAX` without clean session ("until cleaned") and 0 with it.
    pub session_expiry: u32,
    pub username: Option<String>,
    pub password: Option<Bytes>,
    pub will: Option<Will>,
    /// How many of our QoS 1 PUBLISHes the client takes unacked (MQTT 5; 3.1.1: a default).
    pub receive_maximum: u16,
}

/// A will: published by the server when the connection ends without a normal DISCONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
    pub user_properties: Vec<(String, String)>,
    pub content_type: Option<String>,
    /// Seconds to wait before publishing it (MQTT 5).
    pub delay: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// Empty when the publisher names the topic by alias only.
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
    pub dup: bool,
    /// 0 at QoS 0.
    pub pkid: u16,
    pub topic_alias: Option<u16>,
    pub user_properties: Vec<(String, String)>,
    pub content_type: Option<String>,
}

/// What a client sends after CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    Publish(Publish),
    PubRel {
        pkid: u16,
    },
    /// The client acknowledged one of our PUBLISHes (egress).
    PubAck {
        pkid: u16,
    },
    PingReq,
    /// Filters with the QoS asked for.
    Subscribe {
        pkid: u16,
        filters: Vec<(String, Qos)>,
    },
    Unsubscribe {
        pkid: u16,
        filters: Vec<String>,
    },
    Disconnect {
        /// MQTT 5 reason 0x04: publish the will anyway.
        with_will: bool,
        /// MQTT 5: the client changes its session expiry on the way out.
        session_expiry: Option<u32>,
    },
    /// A second CONNECT, or a packet only a server sends (or PUBREC, PUBCOMP, AUTH: the
    /// listener publishes at QoS 1 at most and offers no enhanced auth): a protocol error.
    Unexpected(&'static str),
}

/// Reason codes the listener sends (MQTT 5; 3.1.1 maps what it can).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reason {
    Success = 0x00,
    UnspecifiedError = 0x80,
    MalformedPacket = 0x81,
    ProtocolError = 0x82,
    ImplementationSpecific = 0x83,
    UnsupportedProtocolVersion = 0x84,
    ClientIdentifierNotValid = 0x85,
    BadUserNameOrPassword = 0x86,
    NotAuthorized = 0x87,
    ServerShuttingDown = 0x8B,
    BadAuthenticationMethod = 0x8C,
    KeepAliveTimeout = 0x8D,
    SessionTakenOver = 0x8E,
    TopicFilterInvalid = 0x8F,
    TopicNameInvalid = 0x90,
    PacketIdentifierNotFound = 0x92,
    ReceiveMaximumExceeded = 0x93,
    TopicAliasInvalid = 0x94,
    PacketTooLarge = 0x95,
    QuotaExceeded = 0x97,
}

/// What CONNACK tells an MQTT 5 client about this server.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServerLimits {
    pub receive_maximum: u16,
    pub maximum_packet_size: u32,
    pub topic_alias_maximum: u16,
    /// Set when the server changed the client's request.
    pub session_expiry: Option<u32>,
    /// Set when the server chose the client id.
    pub assigned_client_id: Option<String>,
}

/// What the listener sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    ConnAck {
        session_present: bool,
        reason: Reason,
        limits: Box<ServerLimits>,
    },
    PubAck {
        pkid: u16,
        reason: Reason,
    },
    PubRec {
        pkid: u16,
        reason: Reason,
    },
    PubComp {
        pkid: u16,
        reason: Reason,
    },
    /// One answer per filter: the QoS granted, or refused with a reason (3.1.1: 0x80), and
    /// (MQTT 5) why, when any is refused.
    SubAck {
        pkid: u16,
        answers: Vec<Result<Qos, Reason>>,
        why: &'static str,
    },
    /// Per filter, whether it was subscribed (MQTT 5 0x00, else 0x11).
    UnsubAck {
        pkid: u16,
        existed: Vec<bool>,
    },
    PingResp,
    /// A message to a subscriber (egress); `pkid` 0 at QoS 0.
    Publish {
        topic: String,
        payload: Bytes,
        qos: Qos,
        retain: bool,
        pkid: u16,
    },
    /// MQTT 5 only: a 3.1.1 server closes without a word.
    Disconnect {
        reason: Reason,
    },
}

/// Reads the first packet of a connection, which must be a CONNECT of either version.
/// `Ok(None)` until the whole packet is in `buf`.
pub fn read_connect(buf: &mut BytesMut, max_size: usize) -> Result<Option<Connect>, CodecError> {
    let Some(frame) = frame(buf, max_size)? else {
        return Ok(None);
    };
    if buf[0] >> 4 != 1 {
        return Err(CodecError::Malformed(
            "the first packet must be CONNECT".into(),
        ));
    }
    // Variable header: protocol name (2-byte length + "MQTT"), then the level.
    let level = buf.get(frame.header_len + 6).copied().unwrap_or(0);
    let mut packet = buf.split_to(frame.header_len + frame.body_len);
    match level {
        4 => match v4::Packet::read(&mut packet, max_size) {
            Ok(v4::Packet::Connect(c)) => Ok(Some(connect_v4(c))),
            Ok(_) => Err(CodecError::Malformed("expected CONNECT".into())),
            Err(e) => Err(CodecError::Malformed(e.to_string())),
        },
        5 => match v5::Packet::read(&mut packet, Some(max_size as u32)) {
            Ok(v5::Packet::Connect(c, will, login)) => Ok(Some(connect_v5(c, will, login)?)),
            Ok(_) => Err(CodecError::Malformed("expected CONNECT".into())),
            Err(e) => Err(CodecError::Malformed(e.to_string())),
        },
        other => Err(CodecError::UnsupportedVersion(other)),
    }
}

/// Reads the next packet after CONNECT; `Ok(None)` until a whole packet is in `buf`.
pub fn read(
    version: Version,
    buf: &mut BytesMut,
    max_size: usize,
) -> Result<Option<Inbound>, CodecError> {
    let Some(frame) = frame(buf, max_size)? else {
        return Ok(None);
    };
    // An MQTT 5 DISCONNECT may stop after its reason code, or have no body at all (reason
    // 0x00; MQTT-3.14.2.1); rumqttc wants the property length too.
    if version == Version::V5 && buf[0] == 0xE0 && frame.body_len <= 1 {
        let reason = match frame.body_len {
            0 => 0x00,
            _ => buf[frame.header_len],
        };
        buf.advance(frame.header_len + frame.body_len);
        return Ok(Some(Inbound::Disconnect {
            with_will: reason == 0x04,
            session_expiry: None,
        }));
    }
    let mut packet = buf.split_to(frame.header_len + frame.body_len);
    let malformed = |e: &dyn std::fmt::Display| CodecError::Malformed(e.to_string());
    Ok(Some(match version {
        Version::V4 => match v4::Packet::read(&mut packet, max_size).map_err(|e| malformed(&e))? {
            v4::Packet::Publish(p) => Inbound::Publish(Publish {
                topic: p.topic,
                payload: p.payload,
                qos: qos(p.qos as u8),
                retain: p.retain,
                dup: p.dup,
                pkid: p.pkid,
                topic_alias: None,
                user_properties: Vec::new(),
                content_type: None,
            }),
            v4::Packet::PubRel(r) => Inbound::PubRel { pkid: r.pkid },
            v4::Packet::PubAck(a) => Inbound::PubAck { pkid: a.pkid },
            v4::Packet::PingReq => Inbound::PingReq,
            v4::Packet::Subscribe(s) => Inbound::Subscribe {
                pkid: s.pkid,
                filters: s
                    .filters
                    .into_iter()
                    .map(|f| (f.path, qos(f.qos as u8)))
                    .collect(),
            },
            v4::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
                pkid: u.pkid,
                filters: u.topics,
            },
            v4::Packet::Disconnect => Inbound::Disconnect {
                with_will: false,
                session_expiry: None,
            },
            v4::Packet::Connect(_) => Inbound::Unexpected("a second CONNECT"),
            other => Inbound::Unexpected(v4_name(&other)),
        },
        Version::V5 => {
            match v5::Packet::read(&mut packet, Some(max_size as u32)).map_err(|e| malformed(&e))? {
                v5::Packet::Publish(p) => {
                    let topic = String::from_utf8(p.topic.to_vec())
                        .map_err(|_| CodecError::Malformed("topic is not UTF-8".into()))?;
                    let properties = p.properties.unwrap_or_default();
                    Inbound::Publish(Publish {
                        topic,
                        payload: p.payload,
                        qos: qos(p.qos as u8),
                        retain: p.retain,
                        dup: p.dup,
                        pkid: p.pkid,
                        topic_alias: properties.topic_alias,
                        user_properties: properties.user_properties,
                        content_type: properties.content_type,
                    })
                }
                v5::Packet::PubRel(r) => Inbound::PubRel { pkid: r.pkid },
                v5::Packet::PubAck(a) => Inbound::PubAck { pkid: a.pkid },
                v5::Packet::PingReq(_) => Inbound::PingReq,
                v5::Packet::Subscribe(s) => Inbound::Subscribe {
                    pkid: s.pkid,
                    filters: s
                        .filters
                        .into_iter()
                        .map(|f| (f.path, qos(f.qos as u8)))
                        .collect(),
                },
                v5::Packet::Unsubscribe(u) => Inbound::Unsubscribe {
                    pkid: u.pkid,
                    filters: u.filters,
                },
                v5::Packet::Disconnect(d) => Inbound::Disconnect {
                    with_will: d.reason_code == v5::DisconnectReasonCode::DisconnectWithWillMessage,
                    session_expiry: d.properties.and_then(|p| p.session_expiry_interval),
                },
                v5::Packet::Connect(..) => Inbound::Unexpected("a second CONNECT"),
                other => Inbound::Unexpected(v5_name(&other)),
            }
        }
    }))
}

/// Appends `packet` to `buf`.
pub fn write(version: Version, packet: &Outbound, buf: &mut BytesMut) {
    let v5 = version == Version::V5;
    match packet {
        Outbound::ConnAck {
            session_present,
            reason,
            limits,
        } => match version {
            Version::V4 => {
                buf.put_slice(&[0x20, 0x02, u8::from(*session_present), connack_v4(*reason)]);
            }
            Version::V5 => {
                let properties = (*reason == Reason::Success).then(|| v5::ConnAckProperties {
                    session_expiry_interval: limits.session_expiry,
                    receive_max: Some(limits.receive_maximum),
                    max_qos: None,
                    retain_available: None,
                    max_packet_size: Some(limits.maximum_packet_size),
                    assigned_client_identifier: limits.assigned_client_id.clone(),
                    topic_alias_max: Some(limits.topic_alias_maximum),
                    reason_string: None,
                    user_properties: Vec::new(),
                    wildcard_subscription_available: None,
                    subscription_identifiers_available: Some(0),
                    shared_subscription_available: Some(0),
                    server_keep_alive: None,
                    response_information: None,
                    server_reference: None,
                    authentication_method: None,
                    authentication_data: None,
                });
                let connack = v5::ConnAck {
                    session_present: *session_present,
                    code: connack_v5(*reason),
                    properties,
                };
                // Writing into a BytesMut cannot fail; the properties are small.
                let _ = connack.write(buf);
            }
        },
        Outbound::PubAck { pkid, reason } => ack(buf, 0x40, *pkid, *reason, v5),
        Outbound::PubRec { pkid, reason } => ack(buf, 0x50, *pkid, *reason, v5),
        Outbound::PubComp { pkid, reason } => ack(buf, 0x70, *pkid, *reason, v5),
        Outbound::SubAck { pkid, answers, why } => {
            let codes: Vec<u8> = answers
                .iter()
                .map(|a| match a {
                    Ok(qos) => *qos as u8,
                    Err(reason) if v5 => *reason as u8,
                    Err(_) => 0x80,
                })
                .collect();
            let refused = answers.iter().any(Result::is_err);
            let why = if refused { *why } else { "" };
            with_codes(buf, 0x90, *pkid, &codes, v5.then_some(why));
        }
        Outbound::UnsubAck { pkid, existed } => {
            let codes: Vec<u8> = match v5 {
                true => existed
                    .iter()
                    .map(|e| if *e { 0x00 } else { 0x11 })
                    .collect(),
                false => Vec::new(),
            };
            with_codes(buf, 0xB0, *pkid, &codes, v5.then_some(""));
        }
        Outbound::PingResp => buf.put_slice(&[0xD0, 0x00]),
        Outbound::Publish {
            topic,
            payload,
            qos,
            retain,
            pkid,
        } => {
            let qos = *qos as u8;
            let id = if qos > 0 { 2 } else { 0 };
            let len = 2 + topic.len() + id + usize::from(v5) + payload.len();
            buf.put_u8(0x30 | (qos << 1) | u8::from(*retain));
            write_remaining_length(buf, len);
            buf.put_u16(topic.len() as u16);
            buf.put_slice(topic.as_bytes());
            if qos > 0 {
                buf.put_u16(*pkid);
            }
            if v5 {
                buf.put_u8(0); // no properties
            }
            buf.put_slice(payload);
        }
        Outbound::Disconnect { reason } => {
            // With the (empty) property length: some clients (rumqttc) read no shorter form.
            if v5 {
                buf.put_slice(&[0xE0, 0x02, *reason as u8, 0x00]);
            }
        }
    }
}

/// PUBACK, PUBREC or PUBCOMP: 3.1.1 has no reason code; MQTT 5 leaves out a success code.
fn ack(buf: &mut BytesMut, first: u8, pkid: u16, reason: Reason, v5: bool) {
    buf.put_u8(first);
    if v5 && reason != Reason::Success {
        buf.put_u8(3);
        buf.put_u16(pkid);
        buf.put_u8(reason as u8);
    } else {
        buf.put_u8(2);
        buf.put_u16(pkid);
    }
}

/// SUBACK or UNSUBACK: packet id, (MQTT 5) properties with the reason string when there is
/// one, one code per filter.
fn with_codes(buf: &mut BytesMut, first: u8, pkid: u16, codes: &[u8], v5_why: Option<&str>) {
    // Property 0x1F: reason string (2-byte length + UTF-8).
    let why = v5_why.map(|w| &w.as_bytes()[..w.len().min(1024)]);
    let properties = why.map_or(0, |w| if w.is_empty() { 0 } else { 3 + w.len() });
    let len = 2 + why.map_or(0, |_| 1 + properties) + codes.len();
    buf.put_u8(first);
    write_remaining_length(buf, len);
    buf.put_u16(pkid);
    if let Some(why) = why {
        buf.put_u8(properties as u8);
        if !why.is_empty() {
            buf.put_u8(0x1F);
            buf.put_u16(why.len() as u16);
            buf.put_slice(why);
        }
    }
    buf.put_slice(codes);
}

fn write_remaining_length(buf: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if len == 0 {
            return;
        }
    }
}

/// Where a whole packet lies at the front of `buf`.
struct Frame {
    header_len: usize,
    body_len: usize,
}

/// `Ok(None)` until the fixed header and the body are all in `buf`.
fn frame(buf: &BytesMut, max_size: usize) -> Result<Option<Frame>, CodecError> {
    let mut body_len = 0usize;
    for i in 0..4 {
        let Some(&byte) = buf.get(1 + i) else {
            return Ok(None);
        };
        body_len += usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let header_len = 2 + i;
            if body_len > max_size {
                return Err(CodecError::TooLarge {
                    size: header_len + body_len,
                    max: max_size,
                });
            }
            if buf.len() < header_len + body_len {
                return Ok(None);
            }
            return Ok(Some(Frame {
                header_len,
                body_len,
            }));
        }
    }
    Err(CodecError::Malformed(
        "the remaining length takes more than 4 bytes".into(),
    ))
}

fn qos(n: u8) -> Qos {
    match n {
        0 => Qos::AtMostOnce,
        1 => Qos::AtLeastOnce,
        _ => Qos::ExactlyOnce,
    }
}

fn connect_v4(c: v4::Connect) -> Connect {
    Connect {
        version: Version::V4,
        client_id: c.client_id,
        clean_start: c.clean_session,
        keep_alive: c.keep_alive,
        session_expiry: if c.clean_session { 0 } else { u32::MAX },
        username: c.login.as_ref().map(|l| l.username.clone()),
        password: c.login.map(|l| Bytes::from(l.password)),
        receive_maximum: RECEIVE_MAXIMUM_V4,
        will: c.last_will.map(|w| Will {
            topic: w.topic,
            payload: w.message,
            qos: qos(w.qos as u8),
            retain: w.retain,
            user_properties: Vec::new(),
            content_type: None,
            delay: 0,
        }),
    }
}

fn connect_v5(
    c: v5::Connect,
    will: Option<v5::LastWill>,
    login: Option<v5::Login>,
) -> Result<Connect, CodecError> {
    let properties = c.properties.unwrap_or_default();
    if properties.authentication_method.is_some() {
        return Err(CodecError::Malformed(
            "enhanced authentication (AUTH) is not supported".into(),
        ));
    }
    let will = match will {
        None => None,
        Some(w) => {
            let topic = String::from_utf8(w.topic.to_vec())
                .map_err(|_| CodecError::Malformed("will topic is not UTF-8".into()))?;
            let (user_properties, content_type, delay) = match w.properties {
                Some(p) => (p.user_properties, p.content_type, p.delay_interval),
                None => (Vec::new(), None, None),
            };
            Some(Will {
                topic,
                payload: w.message,
                qos: qos(w.qos as u8),
                retain: w.retain,
                user_properties,
                content_type,
                delay: delay.unwrap_or(0),
            })
        }
    };
    Ok(Connect {
        version: Version::V5,
        client_id: c.client_id,
        clean_start: c.clean_start,
        keep_alive: c.keep_alive,
        session_expiry: properties.session_expiry_interval.unwrap_or(0),
        username: login.as_ref().map(|l| l.username.clone()),
        password: login.map(|l| Bytes::from(l.password)),
        receive_maximum: properties.receive_maximum.unwrap_or(u16::MAX),
        will,
    })
}

fn connack_v4(reason: Reason) -> u8 {
    match reason {
        Reason::Success => 0,
        Reason::UnsupportedProtocolVersion => 1,
        Reason::ClientIdentifierNotValid => 2,
        Reason::BadUserNameOrPassword => 4,
        Reason::NotAuthorized => 5,
        _ => 3, // server unavailable
    }
}

fn connack_v5(reason: Reason) -> v5::ConnectReturnCode {
    use v5::ConnectReturnCode as C;
    match reason {
        Reason::Success => C::Success,
        Reason::MalformedPacket => C::MalformedPacket,
        Reason::ProtocolError => C::ProtocolError,
        Reason::UnsupportedProtocolVersion => C::UnsupportedProtocolVersion,
        Reason::ClientIdentifierNotValid => C::ClientIdentifierNotValid,
        Reason::BadUserNameOrPassword => C::BadUserNamePassword,
        Reason::NotAuthorized => C::NotAuthorized,
        Reason::BadAuthenticationMethod => C::BadAuthenticationMethod,
        Reason::PacketTooLarge => C::PacketTooLarge,
        Reason::QuotaExceeded => C::QuotaExceeded,
        Reason::TopicNameInvalid => C::TopicNameInvalid,
        Reason::ServerShuttingDown => C::ServerUnavailable,
        _ => C::UnspecifiedError,
    }
}

fn v4_name(p: &v4::Packet) -> &'static str {
    match p {
        v4::Packet::ConnAck(_) => "CONNACK",
        v4::Packet::PubAck(_) => "PUBACK",
        v4::Packet::PubRec(_) => "PUBREC",
        v4::Packet::PubComp(_) => "PUBCOMP",
        v4::Packet::SubAck(_) => "SUBACK",
        v4::Packet::UnsubAck(_) => "UNSUBACK",
        v4::Packet::PingResp => "PINGRESP",
        _ => "an unexpected packet",
    }
}

fn v5_name(p: &v5::Packet) -> &'static str {
    match p {
        v5::Packet::Auth(_) => "AUTH",
        v5::Packet::ConnAck(_) => "CONNACK",
        v5::Packet::PubAck(_) => "PUBACK",
        v5::Packet::PubRec(_) => "PUBREC",
        v5::Packet::PubComp(_) => "PUBCOMP",
        v5::Packet::SubAck(_) => "SUBACK",
        v5::Packet::UnsubAck(_) => "UNSUBACK",
        v5::Packet::PingResp(_) => "PINGRESP",
        _ => "an unexpected packet",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn connect_bytes(version: u8, client_id: &str) -> BytesMut {
        let mut buf = BytesMut::new();
        match version {
            4 => {
                let mut c = v4::Connect::new(client_id);
                c.keep_alive = 30;
                c.clean_session = false;
                c.set_login("u", "p");
                v4::Packet::Connect(c).write(&mut buf, 1 << 20).unwrap();
            }
            _ => {
                let c = v5::Connect {
                    keep_alive: 30,
                    client_id: client_id.into(),
                    clean_start: true,
                    properties: Some(v5::ConnectProperties {
                        session_expiry_interval: Some(60),
                        ..v5::ConnectProperties::new()
                    }),
                };
                let login = Some(v5::Login::new("u", "p"));
                v5::Packet::Connect(c, None, login)
                    .write(&mut buf, None)
                    .unwrap();
            }
        }
        buf
    }

    #[test]
    fn connect_of_either_version_is_read_whole_or_not_at_all() {
        for (level, version) in [(4, Version::V4), (5, Version::V5)] {
            let whole = connect_bytes(level, "dev-1");
            for cut in 0..whole.len() {
                let mut part = BytesMut::from(&whole[..cut]);
                assert_eq!(read_connect(&mut part, 1024), Ok(None), "cut at {cut}");
                assert_eq!(part.len(), cut, "nothing consumed");
            }
            let mut buf = whole.clone();
            let c = read_connect(&mut buf, 1024).unwrap().unwrap();
            assert!(buf.is_empty());
            assert_eq!(c.version, version);
            assert_eq!(c.client_id, "dev-1");
            assert_eq!(c.keep_alive, 30);
            assert_eq!(c.username.as_deref(), Some("u"));
            assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
            let expected = if level == 4 { u32::MAX } else { 60 };
            assert_eq!(c.session_expiry, expected);
        }
    }

    #[test]
    fn other_protocol_levels_and_first_packets_are_refused() {
        let mut buf = connect_bytes(4, "x");
        let level_at = 2 + 6;
        buf[level_at] = 3;
        assert_eq!(
            read_connect(&mut buf, 1024),
            Err(CodecError::UnsupportedVersion(3))
        );
        let mut ping = BytesMut::from(&[0xC0u8, 0x00][..]);
        assert!(matches!(
            read_connect(&mut ping, 1024),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn publish_v5_carries_alias_and_properties() {
        let mut buf = BytesMut::new();
        let mut p = v5::Publish::new("a/b", rumqttc::v5::mqttbytes::QoS::ExactlyOnce, "hi", None);
        p.pkid = 9;
        p.properties = Some(v5::PublishProperties {
            topic_alias: Some(3),
            user_properties: vec![("k".into(), "v".into())],
            content_type: Some("text/plain".into()),
            ..Default::default()
        });
        v5::Packet::Publish(p).write(&mut buf, None).unwrap();
        let Some(Inbound::Publish(p)) = read(Version::V5, &mut buf, 1024).unwrap() else {
            panic!("not a publish");
        };
        assert_eq!(
            (p.topic.as_str(), &p.payload[..], p.qos, p.pkid),
            ("a/b", &b"hi"[..], Qos::ExactlyOnce, 9)
        );
        assert_eq!(p.topic_alias, Some(3));
        assert_eq!(p.user_properties, vec![("k".into(), "v".into())]);
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn short_v5_disconnects_are_read_as_sent() {
        // No body (0x00), a reason code alone (0x00, then 0x04), then a PINGREQ.
        let bytes = [0xE0u8, 0x00, 0xE0, 0x01, 0x00, 0xE0, 0x01, 0x04, 0xC0, 0x00];
        let mut buf = BytesMut::from(&bytes[..]);
        for with_will in [false, false, true] {
            assert_eq!(
                read(Version::V5, &mut buf, 1024),
                Ok(Some(Inbound::Disconnect {
                    with_will,
                    session_expiry: None
                }))
            );
        }
        assert_eq!(
            read(Version::V5, &mut buf, 1024),
            Ok(Some(Inbound::PingReq))
        );
    }

    #[test]
    fn a_packet_over_the_limit_is_refused_before_it_is_read() {
        // PUBLISH announcing 2 MiB with only the header here.
        let mut buf = BytesMut::from(&[0x30u8, 0x80, 0x80, 0x80, 0x01][..]);
        assert_eq!(
            read(Version::V4, &mut buf, 1 << 20),
            Err(CodecError::TooLarge {
                size: 5 + (1 << 21),
                max: 1 << 20
            })
        );
        let mut endless = BytesMut::from(&[0x30u8, 0xFF, 0xFF, 0xFF, 0xFF, 0x01][..]);
        assert!(matches!(
            read(Version::V4, &mut endless, usize::MAX),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn acks_are_written_as_each_version_expects() {
        let mut buf = BytesMut::new();
        write(
            Version::V4,
            &Outbound::PubAck {
                pkid: 0x0102,
                reason: Reason::PacketTooLarge,
            },
            &mut buf,
        );
        write(
            Version::V5,
            &Outbound::PubAck {
                pkid: 0x0102,
                reason: Reason::Success,
            },
            &mut buf,
        );
        write(
            Version::V5,
            &Outbound::PubRec {
                pkid: 7,
                reason: Reason::PacketTooLarge,
            },
            &mut buf,
        );
        write(
            Version::V5,
            &Outbound::SubAck {
                pkid: 3,
                answers: vec![
                    Err(Reason::ImplementationSpecific),
                    Err(Reason::ImplementationSpecific),
                ],
                why: "no",
            },
            &mut buf,
        );
        write(
            Version::V4,
            &Outbound::UnsubAck {
                pkid: 4,
                existed: vec![false, true],
            },
            &mut buf,
        );
        assert_eq!(
            &buf[..],
            &[
                0x40, 2, 1, 2, // 3.1.1 PUBACK
                0x40, 2, 1, 2, // MQTT 5 success: no reason byte
                0x50, 3, 0, 7, 0x95, // PUBREC 0x95
                0x90, 10, 0, 3, 5, 0x1F, 0, 2, b'n', b'o', 0x83,
                0x83, // SUBACK, refused twice
                0xB0, 2, 0, 4, // 3.1.1 UNSUBACK
            ][..]
        );
    }

    #[test]
    fn publish_is_readable_by_client_decoders() {
        for version in [Version::V4, Version::V5] {
            let mut buf = BytesMut::new();
            let publish = Outbound::Publish {
                topic: "devices/d1/commands".into(),
                payload: Bytes::from_static(b"reboot"),
                qos: Qos::AtLeastOnce,
                retain: true,
                pkid: 42,
            };
            write(version, &publish, &mut buf);
            let (topic, payload, pkid, retain) = match version {
                Version::V4 => match v4::Packet::read(&mut buf, 1 << 20).unwrap() {
                    v4::Packet::Publish(p) => (p.topic, p.payload, p.pkid, p.retain),
                    other => panic!("{other:?}"),
                },
                Version::V5 => match v5::Packet::read(&mut buf, None).unwrap() {
                    v5::Packet::Publish(p) => (
                        String::from_utf8(p.topic.to_vec()).unwrap(),
                        p.payload,
                        p.pkid,
                        p.retain,
                    ),
                    other => panic!("{other:?}"),
                },
            };
            assert_eq!(topic, "devices/d1/commands");
            assert_eq!(&payload[..], b"reboot");
            assert_eq!((pkid, retain), (42, true));
        }
    }

    #[test]
    fn connack_v5_is_readable_by_a_client_decoder() {
        let mut buf = BytesMut::new();
        let limits = ServerLimits {
            receive_maximum: 16,
            maximum_packet_size: 4096,
            topic_alias_maximum: 10,
            session_expiry: Some(60),
            assigned_client_id: Some("auto-1".into()),
        };
        write(
            Version::V5,
            &Outbound::ConnAck {
                session_present: true,
                reason: Reason::Success,
                limits: Box::new(limits),
            },
            &mut buf,
        );
        let Ok(v5::Packet::ConnAck(ack)) = v5::Packet::read(&mut buf, None) else {
            panic!("not a CONNACK");
        };
        let p = ack.properties.unwrap();
        assert!(ack.session_present);
        assert_eq!(p.receive_max, Some(16));
        assert_eq!(p.max_packet_size, Some(4096));
        assert_eq!(p.topic_alias_max, Some(10));
        assert_eq!(p.assigned_client_identifier.as_deref(), Some("auto-1"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        /// Arbitrary bytes after a CONNECT of either version: every call returns (a packet,
        /// "need more", or an error), none panics, and each packet read consumes bytes.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300), v5 in any::<bool>()) {
            let version = if v5 { Version::V5 } else { Version::V4 };
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = read_connect(&mut buf.clone(), 1 << 16);
            for _ in 0..64 {
                let before = buf.len();
                match read(version, &mut buf, 1 << 16) {
                    Ok(Some(_)) => prop_assert!(buf.len() < before),
                    Ok(None) | Err(_) => break,
                }
            }
        }

        /// Real packets with one byte changed or cut short: no panic.
        #[test]
        fn damaged_packets_never_panic(at in 0usize..64, byte in any::<u8>(), cut in 0usize..64, v5 in any::<bool>()) {
            let mut whole = connect_bytes(if v5 { 5 } else { 4 }, "device");
            let version = if v5 { Version::V5 } else { Version::V4 };
            let mut publish = BytesMut::new();
            if v5 {
                let mut p = v5::Publish::new("t/1", rumqttc::v5::mqttbytes::QoS::AtLeastOnce, "payload", None);
                p.pkid = 1;
                p.properties = Some(v5::PublishProperties { topic_alias: Some(1), ..Default::default() });
                v5::Packet::Publish(p).write(&mut publish, None).unwrap();
            } else {
                let mut p = v4::Publish::new("t/1", rumqttc::QoS::AtLeastOnce, "payload");
                p.pkid = 1;
                v4::Packet::Publish(p).write(&mut publish, 1 << 16).unwrap();
            }
            for buf in [&mut whole, &mut publish] {
                let i = at % buf.len();
                buf[i] = byte;
                buf.truncate(buf.len() - cut % buf.len());
            }
            let _ = read_connect(&mut whole, 1 << 16);
            let _ = read(version, &mut publish, 1 << 16);
        }
    }
}
