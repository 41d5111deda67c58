//! The `listener` section: the MQTT server face devices connect to.

use super::scalar;
use super::{ByteSize, HumanDuration};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ListenerConfig {
    /// Plain MQTT (5 and 3.1.1); null leaves only `tls.listen`.
    pub listen: Option<SocketAddr>,
    pub tls: ListenerTlsConfig,
    pub auth: ListenerAuthConfig,
    #[serde(deserialize_with = "scalar::via_number")]
    pub max_connections: u32,
    /// Unacked QoS 1 and 2 messages per connection: MQTT 5's receive maximum; a 3.1.1
    /// connection over it is not read until acks free slots.
    #[serde(deserialize_with = "scalar::via_number")]
    pub max_inflight: u32,
    /// Larger PUBLISHes are refused (MQTT 5 reason 0x95), the connection kept.
    pub max_payload: ByteSize,
    /// The longest a persistent session (clean start false) is kept after its connection
    /// ends; a client asking for longer gets this.
    pub session_expiry_max: HumanDuration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        ListenerConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 1883))),
            tls: ListenerTlsConfig::default(),
            auth: ListenerAuthConfig::default(),
            max_connections: 10_000,
            max_inflight: 1024,
            max_payload: ByteSize::mib(1),
            session_expiry_max: HumanDuration::from_secs(86_400),
        }
    }
}

/// MQTT over TLS; with `client_ca_file`, devices must present a certificate it signed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ListenerTlsConfig {
    pub listen: Option<SocketAddr>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ListenerAuthConfig {
    /// False: CONNECT needs a user and password from `users_file`.
    #[serde(deserialize_with = "scalar::boolean")]
    pub allow_anonymous: bool,
    /// Lines `user:<hash>`, argon2id (`$argon2id$...`) or bcrypt (`$2b$...`); `tributary
    /// passwd USER` prints one.
    pub users_file: Option<PathBuf>,
}

impl Default for ListenerAuthConfig {
    fn default() -> Self {
        ListenerAuthConfig {
            allow_anonymous: true,
            users_file: None,
        }
    }
}
