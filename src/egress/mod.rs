//! Egress: log topics back to MQTT devices (commands, configuration), at-least-once.
//!
//! Each egress route reads its log topic, one task per partition, in offset order: a record
//! becomes one MQTT PUBLISH on the route's `to` template. The route's position in a partition
//! is committed durably (`<log dir>/@egress/<route>/<topic>-<partition>`) only once the MQTT side
//! confirmed every record before it, so after a crash delivery resumes there: duplicates are
//! bounded by what was in flight (a few rounds), and nothing is lost. A record whose template cannot be filled
//! goes to the dead-letter topic with the reason, and the position moves on.
//!
//! - `template`: the `to` template (pure).
//! - `source`: where records come from: the embedded log, or a Kafka cluster (consumer group).
//! - `publisher`: delivery through the broker client's own egress session (with `mqtt:`).
//! - `subscribers`: delivery to devices subscribed on the listener (with `listener:`), from
//!   the embedded log, each session at its own position.

pub mod publisher;
pub mod source;
pub mod subscribers;
pub mod template;

use crate::config::{Config, EgressRouteConfig, EgressStart, Issue, KafkaConfig, Qos};
use crate::log::batch::DecodedRecord;
use crate::log::positions::Positions;
use crate::log::Log;
use crate::ops::Metrics;
use crate::record::{DeadLetterReason, Header, Record};
use crate::route::partition::partition_for_key;
use crate::route::PartitionCounts;
use crate::sink::Sink;
use bytes::Bytes;
use publisher::{BrokerPublisher, Outgoing};
use source::{EmbeddedSource, KafkaSource, Source, SourceRecord};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use template::{RecordView, TopicTemplate};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Records read and published per round, before the position is committed.
const ROUND: usize = 512;
/// How often a route looks for partitions (and topics) that appeared.
const DISCOVER: Duration = Duration::from_secs(1);

/// A checked egress route.
#[derive(Debug, Clone)]
pub struct EgressRoute {
    pub name: Arc<str>,
    pub from: String,
    pub to: TopicTemplate,
    pub qos: Qos,
    pub retain: bool,
    pub start: EgressStart,
}

/// Compiles the egress routes; every problem is an issue with its key path.
pub fn compile(routes: &[EgressRouteConfig]) -> (Vec<EgressRoute>, Vec<Issue>) {
    let mut compiled = Vec::new();
    let mut issues = Vec::new();
    for route in routes {
        let at = |key: &str| format!("egress[{}].{key}", route.index);
        let name = route.name();
        if let Err(e) = crate::record::check_topic_name(&name) {
            issues.push(Issue::new(
                at("name"),
                format!("{e} (the name names a folder of positions)"),
            ));
        }
        if let Err(e) = crate::record::check_topic_name(&route.from) {
            issues.push(Issue::new(at("from"), e));
        }
        match TopicTemplate::parse(&route.to) {
            Ok(to) => compiled.push(EgressRoute {
                name: name.into(),
                from: route.from.clone(),
                to,
                qos: route.qos,
                retain: route.retain,
                start: route.start,
            }),
            Err(e) => issues.push(Issue::new(at("to"), e.to_string())),
        }
    }
    (compiled, issues)
}

/// What this release can run: egress needs the embedded log and the broker client.
pub fn check(config: &Config) -> Vec<Issue> {
    let mut issues = compile(&config.egress).1;
    if config.egress.is_empty() {
        return issues;
    }
    let embedded = config.log.backend == crate::config::Backend::Embedded;
    match (&config.mqtt, &config.listener) {
        (None, None) => {}
        (None, Some(_)) if !embedded => issues.push(Issue::new("egress", "delivery to the listener's subscribers reads the embedded log; with log.backend: kafka, egress publishes through a broker: add the mqtt section")),
        _ => {}
    }
    issues
}

impl EgressRoute {
    /// The PUBLISH `record` becomes, or why it cannot (a dead letter).
    pub fn outgoing(&self, record: &DecodedRecord, partition: u32) -> Result<Outgoing, String> {
        let headers: Vec<(String, Option<Bytes>)> = record
            .headers
            .iter()
            .map(|h| (h.key.clone(), h.value.clone()))
            .collect();
        let view = RecordView {
            key: record.key.as_deref(),
            headers: &headers,
            value: record.value.as_deref(),
            partition,
        };
        Ok(Outgoing {
            topic: self.to.render(&view)?,
            payload: record.value.clone().unwrap_or_default(),
            qos: self.qos,
            retain: self.retain,
        })
    }
}

/// What the routes share: where they read, the sink and topic for dead letters, metrics.
#[derive(Clone)]
pub struct Wiring<S> {
    pub from: Origin,
    pub sink: S,
    /// The partition counts dead letters are spread over (the sink's).
    pub partitions: Arc<dyn PartitionCounts>,
    pub dead_letter_topic: String,
    pub metrics: Option<Arc<Metrics>>,
}

/// Where egress routes read.
#[derive(Clone)]
pub enum Origin {
    /// The embedded log; the positions live in its dir (`log.embedded.dir`).
    Embedded {
        log: Arc<Log>,
        dir: std::path::PathBuf,
    },
    /// A Kafka cluster (`log.kafka`), read by a consumer group per route in which this
    /// gateway is the static member `instance`.
    Kafka {
        kafka: KafkaConfig,
        instance: String,
    },
}

/// The running egress routes.
pub struct Egress {
    tasks: TaskTracker,
    stop: CancellationToken,
    publisher: Option<Arc<BrokerPublisher>>,
}

impl Egress {
    /// Starts every route: from the embedded log, a task per route that finds the partitions
    /// of its topic and a delivery task per partition; from Kafka, one consumer per route.
    /// Without a `publisher` (no broker client: the listener's sessions read for themselves)
    /// the routes still read every record, so that those whose topic cannot be made become
    /// dead letters, once.
    pub fn start<S: Sink + Clone + 'static>(
        routes: Vec<EgressRoute>,
        publisher: Option<BrokerPublisher>,
        wiring: Wiring<S>,
    ) -> Result<Egress, String> {
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let publisher = publisher.map(Arc::new);
        for route in routes {
            let route = Arc::new(route);
            match &wiring.from {
                Origin::Embedded { .. } => {
                    tasks.spawn(discover(
                        route,
                        publisher.clone(),
                        wiring.clone(),
                        tasks.clone(),
                        stop.clone(),
                    ));
                }
                Origin::Kafka { kafka, instance } => {
                    let source = KafkaSource::open(
                        route.name.clone(),
                        &route.from,
                        kafka,
                        instance,
                        route.start,
                    )?;
                    tasks.spawn(deliver(
                        route,
                        source,
                        publisher.clone(),
                        wiring.clone(),
                        stop.clone(),
                    ));
                }
            }
        }
        Ok(Egress {
            tasks,
            stop,
            publisher,
        })
    }

    /// Stops delivering: rounds in flight are left uncommitted (delivered again after the
    /// restart), then the session disconnects.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("egress routes did not stop in 10s");
        }
        if let Some(Ok(publisher)) = self.publisher.map(Arc::try_unwrap) {
            publisher.stop().await;
        }
    }
}

/// Watches the route's topic in the embedded log and starts a delivery task for each new
/// partition.
async fn discover<S: Sink + Clone + 'static>(
    route: Arc<EgressRoute>,
    publisher: Option<Arc<BrokerPublisher>>,
    wiring: Wiring<S>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let Origin::Embedded { log, dir } = &wiring.from else {
        return;
    };
    let positions = Arc::new(Positions::egress(dir, &route.name));
    let mut started = BTreeSet::new();
    loop {
        let count = log.existing_partitions(&route.from).unwrap_or(0);
        for p in 0..count {
            if started.contains(&p) {
                continue;
            }
            let Some(partition) = log.partition(&route.from, p) else {
                continue;
            };
            started.insert(p);
            let (route, publisher, wiring, stop) = (
                route.clone(),
                publisher.clone(),
                wiring.clone(),
                stop.clone(),
            );
            let positions = positions.clone();
            tasks.spawn(async move {
                let opened = EmbeddedSource::open(
                    route.name.clone(),
                    partition,
                    positions,
                    route.start,
                    &stop,
                )
                .await;
                if let Some(source) = opened {
                    deliver(route, source, publisher, wiring, stop).await;
                }
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(DISCOVER) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Rounds published and awaiting confirmation at once, per source: the next round goes out
/// while the last one's PUBACKs come back, so delivery never idles at a round's end.
const ROUNDS_IN_FLIGHT: usize = 2;

/// Delivers what `source` hands out, round by round: publishes each record (or stores its
/// dead letter), and hands the round's confirmations with its checkpoint to a committer that
/// commits, in order, once every confirmation of a round is in.
async fn deliver<Src: Source, S: Sink + Clone>(
    route: Arc<EgressRoute>,
    mut source: Src,
    publisher: Option<Arc<BrokerPublisher>>,
    wiring: Wiring<S>,
    stop: CancellationToken,
) {
    let counters = wiring.metrics.as_ref().map(|m| m.egress(&route.name));
    let (rounds, confirmed) = tokio::sync::mpsc::channel(ROUNDS_IN_FLIGHT - 1);
    let committer = tokio::spawn(commit_in_order(
        confirmed,
        counters.as_ref().map(|(c, _)| c.clone()),
        stop.clone(),
    ));
    // This source's part of the route's lag gauge.
    let mut lag = 0i64;
    loop {
        if let (Some((_, gauge)), Some(now)) = (&counters, source.lag()) {
            let now = now as i64;
            gauge.add(now - lag);
            lag = now;
        }
        let Some(round) = source.next(ROUND, &stop).await else {
            break;
        };
        let mut confirmations = Vec::with_capacity(round.len());
        let mut dead = Vec::new();
        for r in &round {
            match route.outgoing(&r.record, r.partition) {
                Ok(message) => {
                    if let Some(publisher) = &publisher {
                        confirmations.push(publisher.publish(message).await);
                    }
                }
                Err(why) => dead.push(dead_letter(&route, r, &why, &wiring)),
            }
        }
        if !dead.is_empty() {
            store(&wiring.sink, dead, &stop).await;
        }
        if stop.is_cancelled()
            || rounds
                .send((confirmations, source.checkpoint()))
                .await
                .is_err()
        {
            break;
        }
    }
    drop(rounds);
    let _ = committer.await;
}

/// Waits for every confirmation of a round, in order; false if one fails (its publisher or
/// connection is gone) or egress stops first.
pub(crate) async fn all_confirmed(
    confirmations: Vec<publisher::Confirmation>,
    stop: &CancellationToken,
) -> bool {
    for confirmation in confirmations {
        tokio::select! {
            confirmed = confirmation => if confirmed.is_err() { return false },
            _ = stop.cancelled() => return false,
        }
    }
    true
}

/// Commits each round's checkpoint once all its confirmations are in, in round order; stops
/// at the first confirmation that fails (the publisher stopped) or at `stop`, committing
/// nothing more.
async fn commit_in_order(
    mut rounds: tokio::sync::mpsc::Receiver<(Vec<publisher::Confirmation>, source::Checkpoint)>,
    delivered: Option<prometheus::IntCounter>,
    stop: CancellationToken,
) {
    while let Some((confirmations, checkpoint)) = rounds.recv().await {
        let count = confirmations.len() as u64;
        if !all_confirmed(confirmations, &stop).await {
            return;
        }
        checkpoint.commit(&stop).await;
        if let Some(delivered) = &delivered {
            delivered.inc_by(count);
        }
    }
}

/// The dead-letter record of a record the route cannot deliver.
fn dead_letter<S>(route: &EgressRoute, r: &SourceRecord, why: &str, wiring: &Wiring<S>) -> Record {
    let dl = &wiring.dead_letter_topic;
    let partitions = wiring.partitions.partitions(dl).max(1);
    let record = &r.record;
    let key = record.key.clone();
    let to = match &key {
        Some(k) => partition_for_key(k, partitions),
        None => r.partition % partitions,
    };
    let mut headers: Vec<Header> = record
        .headers
        .iter()
        .filter_map(|h| Some(Header::new(h.key.clone(), h.value.clone()?)))
        .collect();
    headers.push(Header::new("error", why.to_string()));
    headers.push(Header::new("route", route.name.to_string()));
    headers.push(Header::new(
        "egress.from",
        format!("{}-{}@{}", route.from, r.partition, record.offset),
    ));
    Record {
        route: route.name.clone(),
        topic: dl.clone(),
        partition: to,
        key,
        value: record.value.clone().unwrap_or_default(),
        headers,
        timestamp_ms: crate::message::now_ms(),
        dead_letter: Some(DeadLetterReason::MissingField),
    }
}

/// Appends `records`, retrying until stored: a position never moves past an unstored dead
/// letter.
async fn store<S: Sink>(sink: &S, records: Vec<Record>, stop: &CancellationToken) {
    let mut backoff = Duration::from_millis(50);
    loop {
        match sink.append(records.clone()).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "egress dead letter not stored; retrying");
                sink.resume();
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}
