//! The embedded log: per-partition segments of Kafka RecordBatch v2 batches, stored byte for
//! byte as Kafka stores them, so the Kafka API listener serves file bytes as they are.

pub mod batch;
