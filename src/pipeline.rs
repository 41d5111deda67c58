//! The pipeline: deliveries from the ingress go through the router to the sink, and each is
//! acked once every record made from it is durable.
//!
//! Appends are made in arrival order (the sink queues them at call time), so records bound
//! for one partition keep the order their messages arrived in, while many messages are in
//! flight at once. The messages waiting when one is taken go with it in one append. When an append fails, reading stops (no new deliveries), what is in flight
//! finishes, and the failed messages are retried in arrival order with backoff until they are
//! stored; only then does reading resume. Nothing is acked that was not stored. The sink
//! refuses appends made after a failed one until `Sink::resume`, so none overtakes it.

use crate::message::Delivery;
use crate::ops::Metrics;
use crate::route::Router;
use crate::sink::{Sink, SinkError};
use futures::stream::{FuturesUnordered, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What the pipeline did, for the shutdown log line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PipelineStats {
    pub messages: u64,
    pub records: u64,
    pub dead_letters: u64,
    /// Messages no route matched: acked and counted, not stored.
    pub unrouted: u64,
    /// Appends that failed and were retried.
    pub retries: u64,
}

/// The router messages are routed by, replaced whole when the routes are reloaded: each
/// message is routed by one router, the one current when it is taken.
#[derive(Debug, Clone)]
pub struct LiveRouter(watch::Receiver<Arc<Router>>);

impl LiveRouter {
    /// A router that `set` replaces.
    pub fn new(router: Arc<Router>) -> (LiveRouter, watch::Sender<Arc<Router>>) {
        let (set, current) = watch::channel(router);
        (LiveRouter(current), set)
    }

    pub fn current(&self) -> Arc<Router> {
        self.0.borrow().clone()
    }
}

/// A router that never changes.
impl From<Arc<Router>> for LiveRouter {
    fn from(router: Arc<Router>) -> Self {
        let (live, set) = LiveRouter::new(router);
        // The receiver keeps the last value when the sender goes.
        drop(set);
        live
    }
}

/// Runs until the delivery stream ends and everything received is stored and acked. With
/// `metrics`, counts unrouted messages (the sink and the ingress count the rest).
pub async fn run<S: Sink>(
    mut deliveries: mpsc::Receiver<Delivery>,
    router: impl Into<LiveRouter>,
    sink: S,
    metrics: Option<Arc<Metrics>>,
) -> PipelineStats {
    let router = router.into();
    let limit = if sink.takes_batches() { BATCH } else { 1 };
    let mut stats = PipelineStats::default();
    let mut inflight = FuturesUnordered::new();
    let mut failed: Vec<Failed> = Vec::new();
    let mut seq = 0u64;
    let mut open = true;
    loop {
        if !failed.is_empty() && inflight.is_empty() {
            // Nothing is in flight, so everything after the first failure has failed too (the
            // sink fences): retry them all, in arrival order, until every one is stored.
            failed.sort_by_key(|f| f.seq);
            recover(
                std::mem::take(&mut failed),
                &router.current(),
                &sink,
                &mut stats,
            )
            .await;
            continue;
        }
        if !open && inflight.is_empty() {
            return stats;
        }
        tokio::select! {
            delivery = deliveries.recv(), if open && failed.is_empty() => {
                let Some(first) = delivery else {
                    open = false;
                    continue;
                };
                // This message and those already waiting behind it (up to BATCH) go in one
                // append: one call, one group commit, far less work per message.
                let router = router.current();
                let mut batch = Vec::new();
                let mut records = Vec::new();
                let mut bytes = 0usize;
                let mut next = Some(first);
                while let Some(delivery) = next.take() {
                    stats.messages += 1;
                    let routed = router.route(&delivery.message);
                    if routed.is_empty() {
                        stats.unrouted += 1;
                        if let Some(m) = &metrics {
                            m.messages_unrouted.inc();
                        }
                        delivery.stored();
                    } else {
                        bytes += delivery.message.payload.len();
                        stats.records += routed.len() as u64;
                        stats.dead_letters += routed.iter().filter(|r| r.dead_letter.is_some()).count() as u64;
                        records.extend(routed);
                        batch.push(delivery);
                    }
                    if batch.len() < limit && bytes < BATCH_BYTES {
                        next = deliveries.try_recv().ok();
                    }
                }
                if batch.is_empty() {
                    continue;
                }
                let append = sink.append(records);
                let n = seq;
                seq += 1;
                inflight.push(async move { (n, batch, append.await) });
            }
            Some((n, batch, result)) = inflight.next(), if !inflight.is_empty() => match result {
                Ok(_) => batch.into_iter().for_each(Delivery::stored),
                Err(error) => {
                    if failed.is_empty() {
                        tracing::warn!(error = %error, "append failed: pausing intake and retrying in order");
                    }
                    // Retried one message at a time, in arrival order (the sort is stable). A
                    // refusal of a batch does not say which message was refused.
                    let alone = batch.len() == 1;
                    for delivery in batch {
                        failed.push(Failed { seq: n, delivery, error: error.clone(), alone });
                    }
                }
            }
        }
    }
}

/// A message whose append failed, waiting to be tried again.
struct Failed {
    /// The append it was in, for arrival order.
    seq: u64,
    delivery: Delivery,
    error: SinkError,
    /// The append held this message's records only, so the error is about them.
    alone: bool,
}

/// Retries failed messages in rounds until all are stored: each round lifts the sink's fence
/// and submits every one still failing, in arrival order (so they keep that order in each
/// partition), backing off between rounds. A message the sink refuses for good (in an append
/// of its own: a refused batch is first retried message by message) goes to the dead-letter
/// topic instead; one whose dead letter is refused too stays unacked and is tried
/// again, holding back the rest, for nothing is acked that was not stored (DESIGN §5).
async fn recover<S: Sink>(
    mut failed: Vec<Failed>,
    router: &Router,
    sink: &S,
    stats: &mut PipelineStats,
) {
    let mut round = 0u32;
    while !failed.is_empty() {
        if round > 0 {
            tokio::time::sleep(backoff(round - 1)).await;
        }
        // Loud, but not a line per message per round: the first round, then ever more rarely.
        let say = round == 0 || round.is_power_of_two();
        sink.resume();
        let attempts: Vec<_> = failed
            .drain(..)
            .map(|Failed { seq, delivery, error, alone }| {
                stats.retries += 1;
                let mut records = router.route(&delivery.message);
                let dead_letter = !error.is_retryable() && alone;
                if dead_letter {
                    if say {
                        tracing::error!(topic = %delivery.message.topic, error = %error, "the sink refused a message's records for good; sending it to the dead-letter topic");
                    }
                    records = vec![router.rejected(&delivery.message, &records, &error.to_string())];
                }
                let append = sink.append(records);
                (seq, delivery, dead_letter, append)
            })
            .collect();
        let mut dead_letters_refused = 0usize;
        for (seq, delivery, dead_letter, append) in attempts {
            match append.await {
                Ok(_) => {
                    stats.dead_letters += u64::from(dead_letter);
                    delivery.stored();
                }
                Err(e) => {
                    dead_letters_refused += usize::from(dead_letter && !e.is_retryable());
                    failed.push(Failed {
                        seq,
                        delivery,
                        error: e,
                        alone: true,
                    });
                }
            }
        }
        if say && dead_letters_refused > 0 {
            tracing::error!(error = %failed[0].error, messages = dead_letters_refused, round, "dead letters refused too: these messages stay unacked and are retried, holding back the rest; fix the dead-letter topic or the sink");
        } else if say && !failed.is_empty() {
            tracing::warn!(error = %failed[0].error, waiting = failed.len(), round, "appends still failing; retrying");
        }
        round = round.saturating_add(1);
    }
}

/// Messages taken into one append at most, when that many are waiting...
const BATCH: usize = 256;
/// ...and payload bytes, past which no more join (a partition's records of one append are one
/// log batch, at most 64 MiB).
const BATCH_BYTES: usize = 1 << 20;

/// 50 ms doubling to 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50)
        .saturating_mul(1 << attempt.min(7))
        .min(Duration::from_secs(5))
}
