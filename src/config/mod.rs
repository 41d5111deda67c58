//! Configuration: `bridge.yaml` plus `TRIBUTARY_*` environment variables, validated whole.
//!
//! [`load`] reads and checks everything it can before start and reports every problem at once,
//! each naming the file (or variable), the key path and what would be valid.

mod egress;
mod listener;
mod load;
mod units;
mod validate;

pub use egress::{EgressRouteConfig, EgressStart};
pub use listener::{ListenerAuthConfig, ListenerConfig, ListenerTlsConfig};
pub use load::{
    load, load_checked, load_figment, load_figment_checked, with_env, ConfigError, Issue,
    ENV_PREFIX,
};
pub use units::{ByteSize, HumanDuration};
pub use validate::MqttEndpoint;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The whole validated configuration.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Config {
    /// The client of an existing broker: on when the section is present.
    pub mqtt: Option<MqttConfig>,
    /// The MQTT server face devices connect to: on when the section is present.
    pub listener: Option<ListenerConfig>,
    pub log: LogConfig,
    pub topics: TopicsConfig,
    pub routes: Vec<RouteConfig>,
    pub dead_letter: DeadLetterConfig,
    /// Log topics back to MQTT devices; none by default.
    pub egress: Vec<EgressRouteConfig>,
    pub http: HttpConfig,
}

impl Config {
    /// The largest payload the router stores; larger ones become dead letters. Each face
    /// has its `max_payload` (the listener refuses larger PUBLISHes itself); with both on,
    /// `check` makes them agree.
    pub fn max_payload(&self) -> ByteSize {
        match (&self.mqtt, &self.listener) {
            (Some(m), _) => m.max_payload,
            (None, Some(l)) => l.max_payload,
            (None, None) => MqttConfig::default().max_payload,
        }
    }

    /// The key [`Config::max_payload`] comes from, for messages.
    pub fn max_payload_key(&self) -> &'static str {
        match self.mqtt {
            Some(_) => "mqtt.max_payload",
            None => "listener.max_payload",
        }
    }
}

/// `Debug` shows whether a password is set, never the password.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct MqttConfig {
    pub url: String,
    #[serde(deserialize_with = "scalar::string")]
    pub client_id: String,
    #[serde(deserialize_with = "scalar::via_number")]
    pub version: MqttVersion,
    #[serde(deserialize_with = "scalar::boolean")]
    pub clean_start: bool,
    pub session_expiry: HumanDuration,
    pub keep_alive: HumanDuration,
    #[serde(deserialize_with = "scalar::via_number")]
    pub max_inflight: u32,
    pub max_payload: ByteSize,
    #[serde(deserialize_with = "scalar::opt_string")]
    pub shared_group: Option<String>,
    #[serde(deserialize_with = "scalar::opt_string")]
    pub username: Option<String>,
    #[serde(deserialize_with = "scalar::opt_string", skip_serializing)]
    pub password: Option<String>,
    pub tls: TlsConfig,
}

impl Default for MqttConfig {
    fn default() -> Self {
        MqttConfig {
            url: "mqtt://127.0.0.1:1883".into(),
            client_id: "tributary".into(),
            version: MqttVersion::V5,
            clean_start: false,
            session_expiry: HumanDuration::from_secs(3600),
            keep_alive: HumanDuration::from_secs(30),
            max_inflight: 1024,
            max_payload: ByteSize::mib(1),
            shared_group: None,
            username: None,
            password: None,
            tls: TlsConfig::default(),
        }
    }
}

impl fmt::Debug for MqttConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttConfig")
            .field("url", &self.url)
            .field("client_id", &self.client_id)
            .field("version", &self.version)
            .field("clean_start", &self.clean_start)
            .field("session_expiry", &self.session_expiry)
            .field("keep_alive", &self.keep_alive)
            .field("max_inflight", &self.max_inflight)
            .field("max_payload", &self.max_payload)
            .field("shared_group", &self.shared_group)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| Hidden))
            .field("tls", &self.tls)
            .finish()
    }
}

/// Stands for a secret in `Debug` output.
struct Hidden;

impl fmt::Debug for Hidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<hidden>")
    }
}

impl MqttConfig {
    /// The filter as sent to the broker: `$share/<group>/<filter>` when `shared_group` is set.
    pub fn broker_filter(&self, filter: &str) -> String {
        match &self.shared_group {
            Some(group) => format!("$share/{group}/{filter}"),
            None => filter.to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(into = "u8")]
pub enum MqttVersion {
    /// MQTT 3.1.1
    V3,
    V5,
}

impl TryFrom<u64> for MqttVersion {
    type Error = String;
    fn try_from(v: u64) -> Result<Self, String> {
        match v {
            3 | 4 => Ok(MqttVersion::V3),
            5 => Ok(MqttVersion::V5),
            other => Err(format!(
                "MQTT version {other} is not supported; use 5 or 3 (3.1.1)"
            )),
        }
    }
}

impl From<MqttVersion> for u8 {
    fn from(v: MqttVersion) -> u8 {
        match v {
            MqttVersion::V3 => 3,
            MqttVersion::V5 => 5,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TlsConfig {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some() || self.key_file.is_some()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    pub backend: Backend,
    pub embedded: EmbeddedConfig,
    pub kafka: KafkaConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Embedded,
    Kafka,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct EmbeddedConfig {
    pub dir: PathBuf,
    pub segment_bytes: ByteSize,
    pub fsync: FsyncPolicy,
    pub fsync_interval: HumanDuration,
    pub retention: RetentionConfig,
    pub kafka_listener: Option<SocketAddr>,
    /// `host:port` the Kafka listener tells clients to connect to (Metadata); when null, the
    /// address each client connected to. Set it when clients reach Tributary through another
    /// name, as in a container.
    #[serde(deserialize_with = "scalar::opt_string")]
    pub kafka_advertised: Option<String>,
    /// SASL before any other request; null: no authentication.
    pub kafka_auth: Option<KafkaAuthConfig>,
    /// TLS on `kafka_listener` (then TLS only); null: plaintext.
    pub kafka_tls: Option<KafkaTlsConfig>,
    /// False: a read-only face (Produce, CreateTopics and InitProducerId refused).
    #[serde(deserialize_with = "scalar::boolean")]
    pub kafka_produce: bool,
}

/// The Kafka listener's SASL: one mechanism, users from a file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KafkaAuthConfig {
    pub mechanism: SaslMechanism,
    /// Lines `user:<hash>` (`tributary passwd USER [--mechanism SCRAM-SHA-256]` prints one);
    /// SCRAM needs lines of its own mechanism, PLAIN takes any.
    pub users_file: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name clients ask for in SaslHandshake.
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// The Kafka listener's TLS; with `client_ca_file`, clients must present a certificate it
/// signed (mutual TLS).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KafkaTlsConfig {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
}

impl EmbeddedConfig {
    /// A warning when the Kafka listener is reachable beyond this host without SASL: `check`
    /// prints it and `run` logs it.
    pub fn kafka_exposure_warning(&self) -> Option<String> {
        let addr = self.kafka_listener?;
        if addr.ip().is_loopback() || self.kafka_auth.is_some() {
            return None;
        }
        let access = match self.kafka_produce {
            true => "read and write every topic",
            false => "read every topic",
        };
        Some(format!(
            "log.embedded.kafka_listener {addr} is reachable beyond this host without kafka_auth: any client that reaches it can {access}; set kafka_auth (and kafka_tls), or listen on 127.0.0.1"
        ))
    }

    /// `kafka_advertised` split into host and port.
    pub fn advertised(&self) -> Result<Option<(String, u16)>, String> {
        let Some(a) = &self.kafka_advertised else {
            return Ok(None);
        };
        match a.rsplit_once(':').map(|(h, p)| {
            (
                h.trim_start_matches('[').trim_end_matches(']'),
                p.parse::<u16>(),
            )
        }) {
            Some((host, Ok(port))) if !host.is_empty() => Ok(Some((host.to_string(), port))),
            _ => Err(format!(
                "{a:?} is not HOST:PORT, e.g. tributary.iot.svc:9092"
            )),
        }
    }
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            dir: PathBuf::from("./data"),
            segment_bytes: ByteSize::mib(128),
            fsync: FsyncPolicy::Interval,
            fsync_interval: HumanDuration::from_millis(5),
            retention: RetentionConfig::default(),
            kafka_listener: Some(SocketAddr::from(([127, 0, 0, 1], 9092))),
            kafka_advertised: None,
            kafka_auth: None,
            kafka_tls: None,
            kafka_produce: true,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// fsync before every append resolves.
    Always,
    /// Group commit: one fsync covers every append within `fsync_interval`.
    #[default]
    Interval,
    /// Leave flushing to the OS: fast, and a machine crash can lose acked records.
    Never,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    pub time: Option<HumanDuration>,
    pub bytes: Option<ByteSize>,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            time: Some(HumanDuration::from_secs(7 * 86_400)),
            bytes: None,
        }
    }
}

/// `Debug` shows the names of `properties`, never their values.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct KafkaConfig {
    pub bootstrap_servers: String,
    pub delivery: KafkaDelivery,
    pub buffer: BufferConfig,
    /// Create missing topics with the partition counts of `topics`.
    #[serde(deserialize_with = "scalar::boolean")]
    pub create_topics: bool,
    /// Passed to librdkafka as they are (TLS, SASL, tuning). Never printed: they may hold
    /// credentials.
    #[serde(deserialize_with = "scalar::string_map", skip_serializing)]
    pub properties: BTreeMap<String, String>,
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let properties: BTreeMap<&str, Hidden> = self
            .properties
            .keys()
            .map(|k| (k.as_str(), Hidden))
            .collect();
        f.debug_struct("KafkaConfig")
            .field("bootstrap_servers", &self.bootstrap_servers)
            .field("delivery", &self.delivery)
            .field("buffer", &self.buffer)
            .field("create_topics", &self.create_topics)
            .field("properties", &properties)
            .finish()
    }
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            bootstrap_servers: "127.0.0.1:9092".into(),
            delivery: KafkaDelivery::Direct,
            buffer: BufferConfig::default(),
            create_topics: true,
            properties: BTreeMap::new(),
        }
    }
}

/// When a message is acked with the Kafka backend.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KafkaDelivery {
    /// Once Kafka acknowledged every record (acks=all).
    #[default]
    Direct,
    /// Once the local buffer log fsynced it; a forwarder ships the buffer to Kafka in order.
    Buffered,
}

/// The local log that buffers records for Kafka (`delivery: buffered`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct BufferConfig {
    pub dir: PathBuf,
    /// When full, acks and reading stop until the forwarder frees room: never a drop.
    pub max_bytes: ByteSize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            dir: PathBuf::from("./spool"),
            max_bytes: ByteSize::gib(10),
        }
    }
}

/// Per-topic settings; topics not listed get `default`.
#[derive(Debug, Clone, Serialize)]
pub struct TopicsConfig {
    pub default: TopicConfig,
    pub topics: BTreeMap<String, TopicConfig>,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        TopicsConfig {
            default: TopicConfig { partitions: 4 },
            topics: BTreeMap::new(),
        }
    }
}

impl TopicsConfig {
    pub fn get(&self, topic: &str) -> &TopicConfig {
        self.topics.get(topic).unwrap_or(&self.default)
    }
}

impl<'de> Deserialize<'de> for TopicsConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut topics = BTreeMap::<String, TopicConfig>::deserialize(d)?;
        let default = topics
            .remove("default")
            .unwrap_or(TopicsConfig::default().default);
        Ok(TopicsConfig { default, topics })
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TopicConfig {
    #[serde(deserialize_with = "scalar::via_number")]
    pub partitions: u32,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig { partitions: 4 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RouteConfig {
    /// Where the route stands in the file's `routes` list (set by the loader): its default
    /// name, and the key path of its errors.
    #[serde(skip)]
    pub index: usize,
    /// Defaults to `route-<index>`.
    #[serde(default, deserialize_with = "scalar::opt_string")]
    pub name: Option<String>,
    pub from: String,
    #[serde(default = "default_qos", deserialize_with = "scalar::via_number")]
    pub qos: Qos,
    pub to: String,
    #[serde(default, deserialize_with = "scalar::opt_string")]
    pub key: Option<String>,
    #[serde(default)]
    pub format: Option<PayloadFormat>,
    #[serde(default, deserialize_with = "scalar::string_map")]
    pub headers: BTreeMap<String, String>,
}

fn default_qos() -> Qos {
    Qos::AtLeastOnce
}

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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// The payload is stored as it came.
    #[default]
    Raw,
    /// The payload must be JSON; anything else goes to the dead-letter topic.
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct DeadLetterConfig {
    pub topic: String,
}

impl Default for DeadLetterConfig {
    fn default() -> Self {
        DeadLetterConfig {
            topic: "tributary.dead-letter".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpConfig {
    pub listen: Option<SocketAddr>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
        }
    }
}

/// Scalars written either way: environment variables are always text (`"2048"`), and YAML
/// reads `client_id: 42` as a number.
mod scalar {
    use serde::{de::Error, Deserialize, Deserializer};
    use serde_json::Value;
    use std::collections::BTreeMap;
    use std::fmt::Display;

    /// A whole number, given as a number or as its text, converted to `T` (`u32`, `Qos`, ...).
    pub fn via_number<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<u64>,
        T::Error: Display,
    {
        let n = match Value::deserialize(d)? {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
        .ok_or_else(|| D::Error::custom("expected a whole number"))?;
        T::try_from(n).map_err(|e| D::Error::custom(e.to_string()))
    }

    pub fn boolean<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        match Value::deserialize(d)? {
            Value::Bool(b) => Ok(b),
            Value::String(s) if s.trim() == "true" => Ok(true),
            Value::String(s) if s.trim() == "false" => Ok(false),
            other => Err(D::Error::custom(format!(
                "expected true or false, found {other}"
            ))),
        }
    }

    fn text<E: Error>(v: Value) -> Result<String, E> {
        match v {
            Value::String(s) => Ok(s),
            Value::Number(n) => Ok(n.to_string()),
            Value::Bool(b) => Ok(b.to_string()),
            other => Err(E::custom(format!("expected text, found {other}"))),
        }
    }

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        text(Value::deserialize(d)?)
    }

    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        match Value::deserialize(d)? {
            Value::Null => Ok(None),
            v => text(v).map(Some),
        }
    }

    pub fn string_map<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        BTreeMap::<String, Value>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| Ok((k, text(v)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_a_secret() {
        let mut config = Config {
            mqtt: Some(MqttConfig {
                username: Some("user".into()),
                password: Some("mqtt-s3cret".into()),
                ..MqttConfig::default()
            }),
            ..Config::default()
        };
        config
            .log
            .kafka
            .properties
            .insert("sasl.password".into(), "kafka-s3cret".into());
        let shown = format!("{config:?} {config:#?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("password: Some(<hidden>)"), "{shown}");
        assert!(shown.contains("\"sasl.password\": <hidden>"), "{shown}");
    }

    #[test]
    fn a_kafka_listener_beyond_loopback_without_auth_is_warned_about() {
        let listening = |addr: [u8; 4], auth: bool, produce: bool| EmbeddedConfig {
            kafka_listener: Some(SocketAddr::from((addr, 9092))),
            kafka_auth: auth.then(|| KafkaAuthConfig {
                mechanism: SaslMechanism::ScramSha256,
                users_file: "users".into(),
            }),
            kafka_produce: produce,
            ..EmbeddedConfig::default()
        };
        let warning = listening([0, 0, 0, 0], false, true).kafka_exposure_warning();
        let warning = warning.expect("0.0.0.0 without auth");
        assert!(warning.contains("0.0.0.0:9092"), "{warning}");
        assert!(warning.contains("read and write every topic"), "{warning}");
        let read_only = listening([10, 0, 0, 5], false, false).kafka_exposure_warning();
        assert!(read_only.is_some_and(|w| w.contains("can read every topic;")));
        assert_eq!(
            listening([0, 0, 0, 0], true, true).kafka_exposure_warning(),
            None
        );
        assert_eq!(
            listening([127, 0, 0, 1], false, true).kafka_exposure_warning(),
            None
        );
        let off = EmbeddedConfig {
            kafka_listener: None,
            ..EmbeddedConfig::default()
        };
        assert_eq!(off.kafka_exposure_warning(), None);
    }
}
