//! Tributary bridges MQTT devices to a partitioned, durable, replayable Kafka-style log.
//!
//! # Layout
//! - [`config`]: `bridge.yaml` + `TRIBUTARY_*` environment, validated whole.
//! - [`message`]: a received MQTT message, as the router sees it.
//! - [`route`]: filters, templates and partitioning: `Message` -> `Record`s (pure).
//! - [`record`]: a record bound for the log.
//! - [`cli`]: what the `check` and `route` commands print.

pub mod cli;
pub mod config;
pub mod log;
pub mod message;
pub mod record;
pub mod route;
