//! The Kafka API listener with real clients only: rdkafka (librdkafka), kcat, confluent-kafka
//! and kafka-python read exactly the records the log holds (keys, headers, timestamps); an
//! rdkafka producer's batches, compressed or not, are stored as sent and served back byte for
//! byte; idempotent producers (rdkafka, confluent-kafka) over cut connections store each record
//! once; malformed, truncated, oversized and fuzzed frames close only their own connection;
//! idle connections close; connections past the limit are refused.
//!
//! Outside tools: kcat, mosquitto, and the Python clients confluent-kafka and kafka-python:
//! `scripts/test` installs them; a test whose tool is missing fails with the install command.

// The binary's allocator: a request declaring a 2^31-element array is reserved rather than
// aborting the process (src/alloc.rs), and the robustness tests below send such requests.
#[global_allocator]
static ALLOC: tributary::alloc::Allocator = tributary::alloc::Allocator;

#[path = "../support/mod.rs"]
mod support;

mod clients;
mod frames;
mod proxy;
mod records;
mod server;

mod consumers;
mod fuzz;
mod gateway;
mod idempotent;
mod kcat;
mod producer;
mod python;
mod robustness;
mod sasl_frames;
