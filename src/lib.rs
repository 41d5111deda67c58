//! Tributary bridges MQTT devices to a partitioned, durable, replayable Kafka-style log.
//!
//! # Layout
//! Data flows one way: ingress ([`mqtt`]) -> [`pipeline`] -> [`route`] -> [`sink`] -> acks, and
//! the embedded [`log`] is served to Kafka clients by [`kafka_api`].
//!
//! - [`app`]: the composition root: `prepare` (every cross-module check, the sink, the router)
//!   shared by `check`, `route` and `run`; `run` starts the tasks and drains them in order.
//! - [`config`]: `bridge.yaml` + `TRIBUTARY_*` environment, validated whole; a leaf that
//!   imports no other module.
//! - [`egress`]: log topics back to MQTT devices: egress routes, delivery, committed
//!   positions.
//! - [`message`]: a received MQTT message, as the router sees it.
//! - [`mqtt`]: the ingress faces: the client of an existing broker (session, in-order ack
//!   tracker) and the listener devices connect to (codec, per-connection ack state, auth, TLS).
//! - [`pipeline`]: deliveries through the router to the sink, acked once stored; retries in
//!   order, and never acks what was not stored.
//! - [`route`]: filters, templates and partitioning: `Message` -> `Record`s (pure); asks the
//!   log for partition counts through `PartitionCounts`.
//! - [`record`]: a record bound for the log, and Kafka's topic-name rule.
//! - [`sink`]: the `Sink` trait the pipeline appends through, its implementations, and
//!   `sink::open`, the one place that knows the backends.
//! - [`log`]: the embedded log: segments, indexes, recovery, group commit, group offsets, and
//!   each topic's partition count (its one owner).
//! - [`kafka_api`]: the Kafka wire protocol over the embedded log, for any Kafka client.
//! - [`ops`]: what operators watch: every metric (one `Metrics`, its own registry), readiness
//!   (a pure decision over facts), the sink wrapper that counts appends, and the `http.listen`
//!   endpoint (`/metrics`, `/healthz`, `/readyz`).
//! - [`cli`]: what the commands print.
//! - [`security`]: what both listeners let clients in with: users files, SCRAM, TLS.
//! - [`alloc`]: the binary's allocator, which survives a huge allocation a malformed Kafka
//!   request asks for.

pub mod alloc;
pub mod app;
pub mod cli;
pub mod config;
pub mod egress;
pub mod kafka_api;
pub mod log;
pub mod message;
pub mod mqtt;
pub mod ops;
pub mod pipeline;
pub mod record;
pub mod route;
pub mod security;
pub mod sink;
