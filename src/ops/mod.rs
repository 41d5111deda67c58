//! Operations: what an operator watches.
//!
//! - `metrics`: every metric in one place ([`Metrics`], its own registry, handed by `Arc` to
//!   whoever counts).
//! - `ready`: readiness as a pure decision over facts and the time, and [`Probes`], which
//!   gathers the facts.
//! - `watched`: [`WatchedSink`], the wrapper that counts and times every append and reports it
//!   to readiness.
//! - `http`: the `http.listen` endpoint: `/metrics`, `/healthz`, `/readyz`.

pub mod http;
pub mod metrics;
pub mod ready;
pub mod watched;

pub use metrics::{Face, FaceMetrics, Metrics};
pub use ready::{AppendWatch, Probes, Readiness};
pub use watched::{Watch, WatchedSink};
