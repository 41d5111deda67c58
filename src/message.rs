//! `Message`: one MQTT PUBLISH as the ingress hands it to the router.

use bytes::Bytes;
use serde::Serialize;

/// MQTT quality of service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(into = "u8")]
pub enum Qos {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl Qos {
    /// The header value written into `mqtt.qos`.
    pub fn as_str(self) -> &'static str {
        match self {
            Qos::AtMostOnce => "0",
            Qos::AtLeastOnce => "1",
            Qos::ExactlyOnce => "2",
        }
    }
}

impl TryFrom<u64> for Qos {
    type Error = String;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        match value {
            0 => Ok(Qos::AtMostOnce),
            1 => Ok(Qos::AtLeastOnce),
            2 => Ok(Qos::ExactlyOnce),
            other => Err(format!("QoS {other} does not exist; use 0, 1 or 2")),
        }
    }
}

impl From<Qos> for u8 {
    fn from(q: Qos) -> u8 {
        q as u8
    }
}

/// One received PUBLISH. The ack token lives beside it in the pipeline, so the router stays pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
    pub qos: Qos,
    pub retain: bool,
    /// MQTT 5 user properties, in the order the publisher sent them.
    pub user_properties: Vec<(String, String)>,
    /// MQTT 5 content type, when the publisher set one.
    pub content_type: Option<String>,
    /// Receive time, milliseconds since the Unix epoch: the record timestamp.
    pub received_at_ms: i64,
}

impl Message {
    /// A QoS 1, non-retained message with no properties, received now.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Message {
            topic: topic.into(),
            payload: payload.into(),
            qos: Qos::AtLeastOnce,
            retain: false,
            user_properties: Vec::new(),
            content_type: None,
            received_at_ms: now_ms(),
        }
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
