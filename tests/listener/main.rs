//! The MQTT listener face's delivery semantics, with real clients on 127.0.0.1 against the
//! real binary (DESIGN.md §5, "Listener face"):
//!
//! - `crash`: SIGKILL twice mid-stream: no PUBACKed message lost, none lost after the devices
//!   republish, duplicates exactly the stored-but-unacked ones, order kept per device.
//! - `qos2`: QoS 2 stored once (paho-mqtt; a PUBLISH re-sent with DUP, on the same connection
//!   and after a reconnect into a persistent session).
//! - `clients`: paho-mqtt, mosquitto_pub and rumqttc (each MQTT version): key, partition
//!   (Kafka's murmur2) and headers of every record.
//! - `flow`: receive maximum = `max_inflight`; PUBACKs in order for a 3.1.1 burst; PINGREQ
//!   answered while publishes wait.
//! - `limits`: unroutable messages acked and counted; payloads over `max_payload` refused
//!   (MQTT 5) or dead-lettered (3.1.1), acked either way.
//! - `metrics`: `tributary_listener_connections` and the `face="listener"` counters.

#[path = "../support/mod.rs"]
mod support;

mod common;

mod clients;
mod crash;
mod flow;
mod limits;
mod metrics;
mod qos2;
