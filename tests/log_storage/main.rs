//! Adversarial storage tests of the embedded log (DESIGN.md §6): round trips of every record
//! shape, random appends and reads against a model, crash recovery after a torn or damaged
//! tail, damaged sealed segments and indexes, the clean-shutdown marker, the read-only reader,
//! retention, time lookups, tail following, the writer lock and the persisted partition count.
//!
//! Expected outcomes are computed independently of the log's own bookkeeping: batch boundaries
//! come from walking the `.log` files with `batch::batches`, records from a model of what was
//! appended.

mod helpers;

mod damage;
mod indexes;
mod model;
mod reader;
mod recovery;
mod retention;
mod round_trips;
mod tail;
mod writer;
