//! The MQTT listener's connection handling and security, against the real binary on loopback:
//! users-file auth (argon2id from `tributary passwd`, bcrypt), TLS and mutual TLS, many idle
//! connections and `max_connections`, malformed input, keep-alive, client-id takeover, wills,
//! topic aliases, refused SUBSCRIBE, and what `tributary check` says about the `listener:`
//! section. Raw packets are built with rumqttc's `mqttbytes` and read back byte for byte, so
//! every reason code is asserted exactly; mosquitto_pub/mosquitto_sub stand for real devices.

#[path = "../support/mod.rs"]
mod support;

mod common;

mod aliases;
mod auth;
mod check;
mod connections;
mod keep_alive;
mod malformed;
mod subscribe;
mod takeover;
mod tls;
mod wills;
