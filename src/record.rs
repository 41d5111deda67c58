//! `Record`: one entry bound for the log, as the router makes it and a sink appends it.

use bytes::Bytes;
use std::borrow::Cow;
use std::sync::Arc;

/// A record header: a name and raw bytes, as in Kafka. Fixed names (`mqtt.topic`) cost no
/// allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Cow<'static, str>,
    pub value: Bytes,
}

impl Header {
    pub fn new(key: impl Into<Cow<'static, str>>, value: impl Into<Bytes>) -> Self {
        Header {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// Why a message became a dead-letter record; the `reason` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeadLetterReason {
    /// The route needs JSON and the payload is not.
    InvalidJson,
    /// A template names a payload field or topic level the message lacks.
    MissingField,
    /// The payload is over `mqtt.max_payload`.
    PayloadTooLarge,
    /// The `to` template expanded to a name Kafka does not allow.
    InvalidTopic,
    /// The sink refused the records for good (not a passing failure).
    SinkRejected,
}

impl DeadLetterReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::InvalidJson => "invalid_json",
            DeadLetterReason::MissingField => "missing_field",
            DeadLetterReason::PayloadTooLarge => "payload_too_large",
            DeadLetterReason::InvalidTopic => "invalid_topic",
            DeadLetterReason::SinkRejected => "sink_rejected",
        }
    }
}

/// One record for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Name of the route that made it (metrics label, dry-run output).
    pub route: Arc<str>,
    pub topic: String,
    pub partition: u32,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<Header>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    /// Set when this is a dead-letter record.
    pub dead_letter: Option<DeadLetterReason>,
}

/// Kafka's rule for topic names: 1 to 249 of `[a-zA-Z0-9._-]`, and not `.` or `..`.
/// Topic names also become directory names in the embedded log, so the rule matters twice.
pub fn check_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a topic name cannot be empty".into());
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters; Kafka allows 249",
            name.len()
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a legal topic name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {name:?} has {c:?}; Kafka allows letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["telemetry", "a.b-c_D9", &"x".repeat(249)] {
            assert_eq!(check_topic_name(ok), Ok(()), "{ok}");
        }
        let bad = [
            ("", "cannot be empty"),
            (".", "not a legal"),
            ("..", "not a legal"),
            ("a/b", "has '/'"),
            ("a b", "has ' '"),
            ("é", "has 'é'"),
        ];
        for (name, why) in bad {
            let err = check_topic_name(name).unwrap_err();
            assert!(err.contains(why), "{name:?}: {err}");
        }
        assert!(check_topic_name(&"x".repeat(250))
            .unwrap_err()
            .contains("249"));
    }
}
