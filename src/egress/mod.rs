//! Egress: log topics back to MQTT devices (commands, configuration), at-least-once.
//!
//! Each egress route reads its log topic, one task per partition, in offset order: a record
//! becomes one MQTT PUBLISH on the route's `to` template. The route's position in a partition
//! is committed durably (`<log dir>/@egress/<route>/<topic>-<partition>`) only once the MQTT side
//! confirmed every record before it, so after a crash delivery resumes there: duplicates are
//! bounded by what was in flight, and nothing is lost. A record whose template cannot be filled
//! goes to the dead-letter topic with the reason, and the position moves on.
//!
//! - `template`: the `to` template (pure).
//! - `publisher`: delivery through the broker client's own egress session.
//!
//! This release reads the embedded log and delivers through the broker (`mqtt:`); reading a
//! Kafka cluster and delivering to the listener's subscribers come next (`check` says so).

pub mod publisher;
pub mod template;

use crate::config::{Config, EgressRouteConfig, EgressStart, Issue, Qos};
use crate::log::batch::DecodedRecord;
use crate::log::positions::Positions;
use crate::log::{Log, Offset, PartitionShared};
use crate::ops::Metrics;
use crate::record::{Header, Record};
use crate::route::partition::partition_for_key;
use crate::sink::Sink;
use bytes::Bytes;
use publisher::{BrokerPublisher, Outgoing};
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
    if config.log.backend != crate::config::Backend::Embedded {
        issues.push(Issue::new("egress", "egress reads the embedded log in this release; with log.backend: kafka, consume the topic with your own client for now"));
    }
    if config.mqtt.is_none() {
        issues.push(Issue::new("egress", "egress publishes through the broker client in this release: add the mqtt section (delivery to the listener's subscribers comes later)"));
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

/// The running egress routes.
pub struct Egress {
    tasks: TaskTracker,
    stop: CancellationToken,
    publisher: Arc<BrokerPublisher>,
}

/// What the routes share: the log they read, the sink and topic for dead letters, metrics.
#[derive(Clone)]
pub struct Wiring<S> {
    pub log: Arc<Log>,
    /// `log.embedded.dir`: the positions live in it.
    pub log_dir: std::path::PathBuf,
    pub sink: S,
    pub dead_letter_topic: String,
    pub metrics: Option<Arc<Metrics>>,
}

impl Egress {
    /// Starts every route: a task per route that finds the partitions of its topic and a task
    /// per partition that delivers.
    pub fn start<S: Sink + Clone + 'static>(
        routes: Vec<EgressRoute>,
        publisher: BrokerPublisher,
        wiring: Wiring<S>,
    ) -> Egress {
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let publisher = Arc::new(publisher);
        for route in routes {
            let route = Arc::new(route);
            tasks.spawn(discover(
                route,
                publisher.clone(),
                wiring.clone(),
                tasks.clone(),
                stop.clone(),
            ));
        }
        Egress {
            tasks,
            stop,
            publisher,
        }
    }

    /// Stops delivering: rounds in flight finish (or are left uncommitted), then the session
    /// disconnects.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("egress routes did not stop in 10s");
        }
        if let Ok(publisher) = Arc::try_unwrap(self.publisher) {
            publisher.stop().await;
        }
    }
}

/// Watches the route's topic for partitions and starts a delivery task for each new one.
async fn discover<S: Sink + Clone + 'static>(
    route: Arc<EgressRoute>,
    publisher: Arc<BrokerPublisher>,
    wiring: Wiring<S>,
    tasks: TaskTracker,
    stop: CancellationToken,
) {
    let positions = Arc::new(Positions::egress(&wiring.log_dir, &route.name));
    let mut started = BTreeSet::new();
    loop {
        let count = wiring.log.existing_partitions(&route.from).unwrap_or(0);
        for p in 0..count {
            if started.contains(&p) {
                continue;
            }
            let Some(partition) = wiring.log.partition(&route.from, p) else {
                continue;
            };
            started.insert(p);
            tasks.spawn(deliver(
                route.clone(),
                partition,
                positions.clone(),
                publisher.clone(),
                wiring.clone(),
                stop.clone(),
            ));
        }
        tokio::select! {
            _ = tokio::time::sleep(DISCOVER) => {}
            _ = stop.cancelled() => return,
        }
    }
}

/// Delivers one partition in offset order, committing after each confirmed round.
async fn deliver<S: Sink + Clone>(
    route: Arc<EgressRoute>,
    partition: Arc<PartitionShared>,
    positions: Arc<Positions>,
    publisher: Arc<BrokerPublisher>,
    wiring: Wiring<S>,
    stop: CancellationToken,
) {
    let (topic, p) = (route.from.clone(), partition.partition);
    let stored = loop {
        match positions.load(&topic, p) {
            Ok(position) => break position,
            Err(e) => {
                tracing::error!(route = %route.name, %topic, partition = p, error = %e, "egress position unreadable; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    };
    let mut position = match stored {
        Some(position) => position.max(partition.start_offset()),
        None => {
            let first = match route.start {
                EgressStart::Earliest => partition.start_offset(),
                EgressStart::Latest => partition.end_offset(),
            };
            // Fixed now, so `latest` means the end when the route first ran.
            commit(&positions, &route, &topic, p, first, &stop).await;
            first
        }
    };
    let mut appended = partition.subscribe();
    let counters = wiring.metrics.as_ref().map(|m| m.egress(&route.name));
    // This partition's part of the route's lag gauge.
    let mut lag = 0i64;
    let mut show_lag = |position: Offset| {
        if let Some((_, gauge)) = &counters {
            let now = partition.end_offset().0.saturating_sub(position.0) as i64;
            gauge.add(now - lag);
            lag = now;
        }
    };
    loop {
        show_lag(position);
        let mut round = Vec::with_capacity(ROUND);
        let mut records = partition.records(position);
        for record in records.by_ref() {
            match record {
                Ok(r) => {
                    round.push(r);
                    if round.len() == ROUND {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(route = %route.name, %topic, partition = p, error = %e, "egress skips records it cannot read")
                }
            }
        }
        let next = records.position();
        drop(records);
        if round.is_empty() {
            if next > position {
                // Only unreadable batches: move past them.
                position = next;
                commit(&positions, &route, &topic, p, position, &stop).await;
                continue;
            }
            tokio::select! {
                changed = appended.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
            }
            continue;
        }
        let mut confirmations = Vec::with_capacity(round.len());
        let mut dead = Vec::new();
        for record in &round {
            match route.outgoing(record, p) {
                Ok(message) => confirmations.push(publisher.publish(message).await),
                Err(why) => dead.push(dead_letter(&route, &topic, p, record, &why, &wiring)),
            }
        }
        if !dead.is_empty() {
            store(&wiring.sink, dead, &stop).await;
            if stop.is_cancelled() {
                return;
            }
        }
        let delivered = confirmations.len() as u64;
        for confirmation in confirmations {
            tokio::select! {
                confirmed = confirmation => if confirmed.is_err() { return },
                _ = stop.cancelled() => return,
            }
        }
        if let Some((count, _)) = &counters {
            count.inc_by(delivered);
        }
        position = Offset(next.0.max(position.0 + 1));
        commit(&positions, &route, &topic, p, position, &stop).await;
    }
}

/// Stores the position, retrying until it is stored (or egress stops).
async fn commit(
    positions: &Positions,
    route: &EgressRoute,
    topic: &str,
    partition: u32,
    offset: Offset,
    stop: &CancellationToken,
) {
    let mut say = true;
    loop {
        let positions = positions.clone();
        let t = topic.to_string();
        let stored = tokio::task::spawn_blocking(move || positions.store(&t, partition, offset))
            .await
            .unwrap_or_else(|e| {
                Err(crate::log::LogError::Closed(format!(
                    "position store task: {e}"
                )))
            });
        match stored {
            Ok(()) => return,
            Err(e) => {
                if say {
                    tracing::error!(route = %route.name, topic, partition, error = %e, "cannot store the egress position; retrying");
                    say = false;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => return,
                }
            }
        }
    }
}

/// The dead-letter record of a record the route cannot deliver.
fn dead_letter<S>(
    route: &EgressRoute,
    topic: &str,
    partition: u32,
    record: &DecodedRecord,
    why: &str,
    wiring: &Wiring<S>,
) -> Record {
    let dl = &wiring.dead_letter_topic;
    let partitions = wiring.log.partitions(dl).max(1);
    let key = record.key.clone();
    let to = match &key {
        Some(k) => partition_for_key(k, partitions),
        None => partition % partitions,
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
        format!("{topic}-{partition}@{}", record.offset),
    ));
    Record {
        route: route.name.clone(),
        topic: dl.clone(),
        partition: to,
        key,
        value: record.value.clone().unwrap_or_default(),
        headers,
        timestamp_ms: crate::message::now_ms(),
        dead_letter: Some(crate::record::DeadLetterReason::MissingField),
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
