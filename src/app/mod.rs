//! The composition root: the one place that knows every module and wires them.
//!
//! - `prepare`: the checks that need more than one module's rules, the sink
//!   ([`crate::sink::open`]) and the router on the sink's partition counts; `check`, `route`
//!   and `run` all go through it, so they never disagree.
//! - `run`: starts the tasks (ingress, pipeline, Kafka API listener, the `http.listen`
//!   endpoint with its metrics and probes) and drains them in order on shutdown.

mod prepare;
mod run;

pub use prepare::{check, load, prepare, Access, PrepareError, Prepared};
pub use run::{run, AppError};
