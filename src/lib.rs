//! Tributary bridges MQTT devices to a partitioned, durable, replayable Kafka-style log.
//!
//! # Layout
//! - [`config`]: `bridge.yaml` + `TRIBUTARY_*` environment, validated whole.
//! - [`message`]: a received MQTT message, as the router sees it.
//! - [`route`]: filters, templates and partitioning: `Message` -> `Record`s (pure).
//! - [`record`]: a record bound for the log.
//! - [`log`]: the embedded log: segments, indexes, recovery, group commit, group offsets.
//! - [`sink`]: the `Sink` trait the pipeline appends through, and its implementations.
//! - [`cli`]: what the commands print.

pub mod alloc;
pub mod app;
pub mod cli;
pub mod config;
pub mod kafka_api;
pub mod log;
pub mod message;
pub mod mqtt;
pub mod pipeline;
pub mod record;
pub mod route;
pub mod sink;
