//! Egress to devices connected to the listener: the [`Feed`] of its sessions.
//!
//! A session's subscriptions are served from the embedded log itself, not from a memory queue:
//! for each egress route whose topics a subscription can match, and each partition of the
//! route's topic, a task reads the log from the session's own position, publishes each record
//! whose topic a subscription matches, and commits the position once the device PUBACKed the
//! round. A persistent session (clean start false) keeps its subscriptions and positions in
//! `<log dir>/@egress-sessions/<client id, hex>/`, so a device that was away gets what it missed
//! when it comes back, within `listener.session_expiry_max`. A session that is not persistent
//! starts at the end of the log when it subscribes and keeps its positions in memory.

use super::{EgressRoute, ROUND};
use crate::config::Qos;
use crate::log::positions::Positions;
use crate::log::{write_atomic, Log, Offset, PartitionShared};
use crate::mqtt::server::feed::{Feed, FeedSession, Push};
use crate::ops::Metrics;
use crate::route::filter::Filter;
use prometheus::IntCounter;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// The folder of persistent listener sessions, inside the log dir.
pub const SESSIONS_DIR: &str = "@egress-sessions";
const SUBSCRIPTIONS_FILE: &str = "subscriptions";

/// One session's positions kept in memory, by route and partition.
type MemoryPositions = Arc<Mutex<HashMap<(Arc<str>, u32), Offset>>>;
/// Positions of sessions that are not persistent, by client id.
type Memory = HashMap<String, MemoryPositions>;

pub struct ListenerFeed {
    /// Each route with the topics it makes, as a filter.
    routes: Vec<(Arc<EgressRoute>, Filter)>,
    log: Arc<Log>,
    dir: PathBuf,
    expiry: Duration,
    memory: Mutex<Memory>,
    metrics: Option<Arc<Metrics>>,
}

impl ListenerFeed {
    pub fn new(
        routes: Vec<EgressRoute>,
        log: Arc<Log>,
        log_dir: &Path,
        expiry: Duration,
        metrics: Option<Arc<Metrics>>,
    ) -> ListenerFeed {
        let routes = routes
            .into_iter()
            .filter_map(|r| {
                let pattern = Filter::parse(&r.to.pattern()).ok()?;
                Some((Arc::new(r), pattern))
            })
            .collect();
        ListenerFeed {
            routes,
            log,
            dir: log_dir.join(SESSIONS_DIR),
            expiry,
            memory: Mutex::default(),
            metrics,
        }
    }

    fn session_dir(&self, client_id: &str) -> PathBuf {
        let hex: String = client_id.bytes().map(|b| format!("{b:02x}")).collect();
        self.dir.join(hex)
    }
}

impl Feed for ListenerFeed {
    fn can_match(&self, filter: &str) -> Result<(), &'static str> {
        let filter = Filter::parse(filter).map_err(|_| "not a topic filter")?;
        match self.routes.iter().any(|(_, p)| p.overlaps(&filter)) {
            true => Ok(()),
            false => Err("no egress route publishes to a topic this filter matches"),
        }
    }

    fn restore(&self, client_id: &str) -> Option<Vec<(String, Qos)>> {
        let path = self.session_dir(client_id).join(SUBSCRIPTIONS_FILE);
        let age = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())?;
        if age > self.expiry {
            self.keep(client_id, None);
            return None;
        }
        let text = std::fs::read_to_string(&path).ok()?;
        let subscriptions: Vec<(String, Qos)> = text
            .lines()
            .filter_map(|line| {
                let (qos, filter) = line.split_once(' ')?;
                let qos = match qos {
                    "0" => Qos::AtMostOnce,
                    _ => Qos::AtLeastOnce,
                };
                Some((filter.to_string(), qos))
            })
            .collect();
        (!subscriptions.is_empty()).then_some(subscriptions)
    }

    fn keep(&self, client_id: &str, subscriptions: Option<&[(String, Qos)]>) {
        let dir = self.session_dir(client_id);
        let result = match subscriptions {
            Some(subs) => {
                let text: String = subs
                    .iter()
                    .map(|(f, q)| format!("{} {f}\n", u8::from(*q)))
                    .collect();
                std::fs::create_dir_all(&dir)
                    .map_err(|e| e.to_string())
                    .and_then(|_| {
                        write_atomic(&dir.join(SUBSCRIPTIONS_FILE), text.as_bytes())
                            .map_err(|e| e.to_string())
                    })
            }
            None => {
                self.memory
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(client_id);
                match std::fs::remove_dir_all(&dir) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.to_string()),
                    _ => Ok(()),
                }
            }
        };
        if let Err(e) = result {
            tracing::warn!(client_id, error = %e, "listener session: its subscriptions could not be kept");
        }
    }

    fn start(&self, session: FeedSession) -> CancellationToken {
        let stop = CancellationToken::new();
        let filters: Vec<(Filter, Qos)> = session
            .subscriptions
            .iter()
            .filter_map(|(f, q)| Some((Filter::parse(f).ok()?, *q)))
            .collect();
        let store = match session.persistent {
            true => Store::Durable(self.session_dir(&session.client_id)),
            false => Store::Memory(
                self.memory
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(session.client_id.clone())
                    .or_default()
                    .clone(),
            ),
        };
        let session = Arc::new(Target {
            filters,
            pushes: session.pushes,
            store,
        });
        for (route, pattern) in &self.routes {
            if !session.filters.iter().any(|(f, _)| f.overlaps(pattern)) {
                continue;
            }
            let delivered = self.metrics.as_ref().map(|m| m.egress(&route.name).0);
            tokio::spawn(discover(
                route.clone(),
                self.log.clone(),
                session.clone(),
                delivered,
                stop.clone(),
            ));
        }
        stop
    }
}

/// One session as the push tasks see it.
struct Target {
    filters: Vec<(Filter, Qos)>,
    pushes: tokio::sync::mpsc::Sender<Push>,
    store: Store,
}

/// Where a session's positions live.
enum Store {
    Durable(PathBuf),
    Memory(MemoryPositions),
}

impl Store {
    fn load(&self, route: &EgressRoute, topic: &str, p: u32) -> Option<Offset> {
        match self {
            Store::Durable(dir) => Positions::in_dir(dir.join(&*route.name))
                .load(topic, p)
                .ok()
                .flatten(),
            Store::Memory(map) => map
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(route.name.clone(), p))
                .copied(),
        }
    }

    async fn store(&self, route: &EgressRoute, topic: &str, p: u32, offset: Offset) {
        match self {
            Store::Durable(dir) => {
                let positions = Positions::in_dir(dir.join(&*route.name));
                let topic = topic.to_string();
                let stored =
                    tokio::task::spawn_blocking(move || positions.store(&topic, p, offset)).await;
                if let Ok(Err(e)) = stored {
                    tracing::warn!(route = %route.name, error = %e, "listener session position not stored; what follows it may be delivered again");
                }
            }
            Store::Memory(map) => {
                map.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((route.name.clone(), p), offset);
            }
        }
    }
}

/// Finds the partitions of the route's topic and pushes each to the session.
async fn discover(
    route: Arc<EgressRoute>,
    log: Arc<Log>,
    session: Arc<Target>,
    delivered: Option<IntCounter>,
    stop: CancellationToken,
) {
    let mut started = BTreeSet::new();
    loop {
        let count = log.existing_partitions(&route.from).unwrap_or(0);
        for p in 0..count {
            if !started.contains(&p) {
                if let Some(partition) = log.partition(&route.from, p) {
                    started.insert(p);
                    tokio::spawn(push(
                        route.clone(),
                        partition,
                        session.clone(),
                        delivered.clone(),
                        stop.clone(),
                    ));
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(super::DISCOVER) => {}
            _ = stop.cancelled() => return,
            _ = session.pushes.closed() => return,
        }
    }
}

/// Pushes one partition to the session in offset order, committing after each PUBACKed round.
async fn push(
    route: Arc<EgressRoute>,
    partition: Arc<PartitionShared>,
    session: Arc<Target>,
    count: Option<IntCounter>,
    stop: CancellationToken,
) {
    let (topic, p) = (partition.topic.clone(), partition.partition);
    let mut position = match session.store.load(&route, &topic, p) {
        Some(position) => position.max(partition.start_offset()),
        None => {
            // New to this session: from now on.
            let end = partition.end_offset();
            session.store.store(&route, &topic, p, end).await;
            end
        }
    };
    let mut appended = partition.subscribe();
    let (rounds, delivered) = mpsc::channel(1);
    tokio::spawn(commit_in_order(
        route.clone(),
        topic.clone(),
        p,
        session.clone(),
        delivered,
        count,
        stop.clone(),
    ));
    loop {
        let mut round = Vec::new();
        let mut records = partition.records(position);
        for record in records.by_ref().flatten() {
            round.push(record);
            if round.len() == ROUND {
                break;
            }
        }
        let next = records.position();
        drop(records);
        if round.is_empty() && next == position {
            tokio::select! {
                changed = appended.changed() => if changed.is_err() { return },
                _ = stop.cancelled() => return,
                _ = session.pushes.closed() => return,
            }
            continue;
        }
        let mut delivered = Vec::new();
        for record in &round {
            // A record the template cannot make a topic of is the route's dead letter.
            let Ok(message) = route.outgoing(record, p) else {
                continue;
            };
            let Some(qos) = session
                .filters
                .iter()
                .filter(|(f, _)| f.matches(&message.topic))
                .map(|(_, q)| *q)
                .max()
            else {
                continue;
            };
            let (tx, rx) = oneshot::channel();
            let push = Push {
                topic: message.topic,
                payload: message.payload,
                qos: qos.min(message.qos),
                retain: message.retain,
                delivered: tx,
            };
            tokio::select! {
                sent = session.pushes.send(push) => if sent.is_err() { return },
                _ = stop.cancelled() => return,
            }
            delivered.push(rx);
        }
        position = next;
        // Committed by the committer once the device PUBACKed the round, while the next one
        // goes out.
        if rounds.send((delivered, position)).await.is_err() {
            return;
        }
    }
}

/// Stores each round's position once the device PUBACKed all of it, in round order; stops at
/// the first that fails (the connection is gone) or at `stop`.
async fn commit_in_order(
    route: Arc<EgressRoute>,
    topic: Arc<str>,
    partition: u32,
    session: Arc<Target>,
    mut rounds: mpsc::Receiver<(Vec<oneshot::Receiver<()>>, Offset)>,
    count: Option<IntCounter>,
    stop: CancellationToken,
) {
    while let Some((delivered, position)) = rounds.recv().await {
        let n = delivered.len() as u64;
        if !super::all_confirmed(delivered, &stop).await {
            return;
        }
        if let Some(count) = &count {
            count.inc_by(n);
        }
        session
            .store
            .store(&route, &topic, partition, position)
            .await;
    }
}
