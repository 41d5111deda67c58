//! `Message`: one MQTT PUBLISH as an ingress face hands it to the router, and `Delivery`: the
//! message with the way to acknowledge it once it is stored.

pub use crate::config::Qos;
use bytes::Bytes;

/// One received PUBLISH. Its ack lives beside it in a [`Delivery`], so the router stays pure.
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

/// How a face acknowledges a message (PUBACK, PUBREC, or nothing at QoS 0) once every record
/// made from it is durable. Each face has its own; the pipeline knows only this.
pub trait Ack: Send {
    /// Every record made from the message is durable.
    fn stored(self: Box<Self>);
}

/// A received message on its way through the pipeline. Dropping it without `stored` leaves
/// the message unacked: the sender sends it again (after a reconnect).
pub struct Delivery {
    pub message: Message,
    ack: Box<dyn Ack>,
}

impl Delivery {
    pub fn new(message: Message, ack: Box<dyn Ack>) -> Self {
        Delivery { message, ack }
    }

    /// Every record made from the message is durable: acknowledge it.
    pub fn stored(self) {
        self.ack.stored()
    }
}
