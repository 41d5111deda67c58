//! The composition root: the one place that knows every module and wires them.
//!
//! - `prepare`: the checks that need more than one module's rules, the sink
//!   ([`crate::sink::open`]) and the router on the sink's partition counts; `check`, `route`
//!   and `run` all go through it, so they never disagree.
//! - `reload`: SIGHUP swaps in a reloaded config's routes, topics and dead-letter topic.
//! - `run`: starts the tasks (ingress, pipeline, Kafka API listener, the `http.listen`
//!   endpoint with its metrics and probes) and drains them in order on shutdown.

mod prepare;
pub mod reload;
mod run;

pub use prepare::{check, load, prepare, Access, PrepareError, Prepared};
pub use run::{run, AppError};
