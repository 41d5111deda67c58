//! `Message`: one MQTT PUBLISH as the ingress hands it to the router.

pub use crate::config::Qos;
use bytes::Bytes;

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
