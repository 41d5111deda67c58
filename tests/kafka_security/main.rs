//! The Kafka listener's security against the real binary and real clients: SASL (PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512) with `kafka_auth`, TLS and mutual TLS with `kafka_tls`,
//! SASL_SSL, the read-only face (`kafka_produce: false`), and what `tributary check` and
//! `tributary passwd` say. Clients: rdkafka (in the test), kcat, confluent-kafka and
//! kafka-python (client.py), and raw requests written by hand where an exact error code is
//! asserted; certificates are made with the openssl command, SCRAM credentials and proofs are
//! also computed by the test itself (scram.rs).
//!
//! Outside tools: kcat, openssl, and the Python clients confluent-kafka and kafka-python:
//! `scripts/test` installs them; a test whose tool is missing fails with the install command.

#[path = "../support/mod.rs"]
mod support;

mod certs;
mod common;
mod raw;
mod scram;

mod check;
mod read_only;
mod sasl;
mod tls;
