//! Routing: one MQTT [`Message`] becomes zero or more [`Record`]s, one per matching route, or
//! dead-letter records when a route cannot make its record. Pure: no I/O, no clocks.
//!
//! - `filter`: MQTT filters with `{name}` captures, and MQTT matching rules.
//! - `trie`: every route's filter in one trie, so matching cost does not grow with routes.
//! - `template`: `to`, `key` and header templates.
//! - `partition`: Kafka's murmur2 partitioner.

pub mod filter;
pub mod partition;
pub mod template;
mod trie;

use crate::config::{Config, Issue, PayloadFormat, RouteConfig, TopicsConfig};
use crate::message::{Message, Qos};
use crate::record::{check_topic_name, DeadLetterReason, Header, Record};
use bytes::Bytes;
use filter::Filter;
use smallvec::SmallVec;
use std::collections::HashSet;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use template::{Context, Template};
use trie::FilterTrie;

/// How much of an oversized payload a dead-letter record keeps.
pub const DEAD_LETTER_TRUNCATE: usize = 1024;

/// One compiled route. What routing reads per message is kept together; the rest is boxed
/// apart, so that with thousands of routes a match touches few cache lines.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    source: Box<(Filter, RouteConfig)>,
    to: Template,
    key: Option<Template>,
    headers: Vec<(String, Template)>,
    /// The payload must parse as JSON (`format: json`, or a `{payload.…}` template).
    json: bool,
}

/// A broker subscription: the union of the routes' filters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub filter: String,
    pub qos: Qos,
}

/// The partition count of a log topic, as the log that holds it says: the count a topic has,
/// or the one it will be created with. The router asks for every record, so a topic created
/// at run time (by a Kafka client's CreateTopics, say) is routed by its real count.
pub trait PartitionCounts: Send + Sync + std::fmt::Debug {
    fn partitions(&self, topic: &str) -> u32;
}

/// The config alone: for dry runs and benchmarks, where no log is open.
impl PartitionCounts for TopicsConfig {
    fn partitions(&self, topic: &str) -> u32 {
        self.get(topic).partitions
    }
}

/// Compiles routes, checking each field and the routes against each other; returns what
/// compiled and every issue found (key paths use each route's index in the file).
pub fn compile_routes<'a>(
    routes: impl IntoIterator<Item = &'a RouteConfig>,
) -> (Vec<Route>, Vec<Issue>) {
    let mut compiled = Vec::new();
    let mut issues = Vec::new();
    let mut names = HashSet::new();
    for config in routes {
        let index = config.index;
        let name = config
            .name
            .clone()
            .unwrap_or_else(|| format!("route-{index}"));
        if name.is_empty() {
            issues.push(Issue::new(
                format!("routes[{index}].name"),
                "cannot be empty; name the route, e.g. telemetry",
            ));
        } else if !names.insert(name.clone()) {
            issues.push(Issue::new(
                format!("routes[{index}].name"),
                format!("{name:?} is used by an earlier route; route names must be unique"),
            ));
        }
        if let Some(route) = Route::compile(index, name, config, &mut issues) {
            compiled.push(route);
        }
    }
    (compiled, issues)
}

impl Route {
    pub fn filter(&self) -> &Filter {
        &self.source.0
    }

    /// The route as written in the config.
    pub fn config(&self) -> &RouteConfig {
        &self.source.1
    }

    fn compile(
        index: usize,
        name: String,
        config: &RouteConfig,
        issues: &mut Vec<Issue>,
    ) -> Option<Route> {
        let at = |field: &str| format!("routes[{index}].{field}");
        let before = issues.len();
        let filter = match Filter::parse(&config.from) {
            Ok(f) => f,
            Err(e) => {
                issues.push(Issue::new(at("from"), e.to_string()));
                return None;
            }
        };
        let mut template = |field: String, raw: &str| match Template::parse(raw, &filter) {
            Ok(t) => Some(t),
            Err(e) => {
                issues.push(Issue::new(field, e.to_string()));
                None
            }
        };
        let to = template(at("to"), &config.to);
        let key = config.key.as_deref().map(|k| template(at("key"), k));
        let headers: Vec<(String, Option<Template>)> = config
            .headers
            .iter()
            .map(|(h, raw)| (h.clone(), template(format!("{}.{h}", at("headers")), raw)))
            .collect();
        if let Some(to) = &to {
            check_topic_template(to, &at("to"), issues);
        }
        for (h, _) in &headers {
            if h.is_empty() {
                issues.push(Issue::new(at("headers"), "a header name cannot be empty"));
            }
        }
        let uses_payload = to
            .iter()
            .chain(key.iter().flatten())
            .chain(headers.iter().filter_map(|(_, t)| t.as_ref()))
            .any(Template::uses_payload);
        if uses_payload && config.format == Some(PayloadFormat::Raw) {
            issues.push(Issue::new(at("format"), "raw, but a template reads {payload.…}; use format: json, or drop the payload field"));
        }
        if issues.len() > before {
            return None;
        }
        Some(Route {
            name: name.into(),
            json: uses_payload || config.format == Some(PayloadFormat::Json),
            to: to?,
            key: key.flatten(),
            headers: headers
                .into_iter()
                .map(|(h, t)| Some((h, t?)))
                .collect::<Option<_>>()?,
            source: Box::new((filter, config.clone())),
        })
    }
}

/// Checks what can be checked of a topic template before messages arrive: the whole name
/// when it is literal, else that its literal parts use only legal characters.
fn check_topic_template(to: &Template, path: &str, issues: &mut Vec<Issue>) {
    if let Some(name) = to.as_literal() {
        if let Err(e) = check_topic_name(name) {
            issues.push(Issue::new(path, e));
        }
        return;
    }
    for literal in to.literals() {
        if let Some(c) = literal
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            issues.push(Issue::new(
                path,
                format!("has {c:?}; topic names allow letters, digits, '.', '_' and '-'"),
            ));
        }
    }
}

/// Routes messages to records. Shared by every ingress task; `route` takes `&self`.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
    trie: FilterTrie,
    /// The log's partition counts: it owns them.
    partitions: Arc<dyn PartitionCounts>,
    dead_letter_topic: String,
    max_payload: usize,
    /// The key that sets it, named in dead letters.
    max_payload_key: &'static str,
    /// Round-robin position for unkeyed records.
    next_partition: AtomicU32,
}

impl Router {
    /// The router for `config`'s routes, asking `partitions` for partition counts.
    pub fn new(
        config: &Config,
        partitions: Arc<dyn PartitionCounts>,
    ) -> Result<Router, Vec<Issue>> {
        let (routes, issues) = compile_routes(&config.routes);
        if !issues.is_empty() {
            return Err(issues);
        }
        let mut trie = FilterTrie::default();
        for (id, route) in routes.iter().enumerate() {
            trie.insert(route.filter(), id as u32);
        }
        Ok(Router {
            routes,
            trie,
            partitions,
            dead_letter_topic: config.dead_letter.topic.clone(),
            max_payload: usize::try_from(config.max_payload().0).unwrap_or(usize::MAX),
            max_payload_key: config.max_payload_key(),
            next_partition: AtomicU32::new(0),
        })
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// Partition count of a log topic.
    pub fn partitions(&self, topic: &str) -> u32 {
        self.partitions.partitions(topic)
    }

    /// The broker subscriptions: each distinct filter once at the highest QoS its routes ask
    /// (capped at 1, see DESIGN §5), leaving out filters another one already covers.
    pub fn subscriptions(&self) -> Vec<Subscription> {
        let mut subs: Vec<(Filter, Qos)> = Vec::new();
        for route in &self.routes {
            let qos = route.config().qos.min(Qos::AtLeastOnce);
            let plain = route.filter().plain();
            match subs.iter_mut().find(|(f, _)| *f == plain) {
                Some((_, q)) => *q = (*q).max(qos),
                None => subs.push((plain, qos)),
            }
        }
        let covered = |i: usize| {
            let (f, q) = &subs[i];
            subs.iter()
                .enumerate()
                .any(|(j, (g, p))| j != i && p >= q && g.covers(f) && !(f.covers(g) && j > i))
        };
        (0..subs.len())
            .filter(|&i| !covered(i))
            .map(|i| Subscription {
                filter: subs[i].0.subscription(),
                qos: subs[i].1,
            })
            .collect()
    }

    /// The records `msg` becomes: one per matching route, in route order, dead letters
    /// included. Empty when no route matches.
    pub fn route(&self, msg: &Message) -> Vec<Record> {
        let levels: SmallVec<[&str; 8]> = msg.topic.split('/').collect();
        let ids = self.trie.matches(&levels);
        let mut records = Vec::with_capacity(ids.len());
        if msg.payload.len() > self.max_payload {
            let why = format!("payload is {} bytes, over {} ({} bytes); value cut to its first {DEAD_LETTER_TRUNCATE} bytes", msg.payload.len(), self.max_payload_key, self.max_payload);
            for &id in &ids {
                records.push(self.dead_letter(
                    msg,
                    &self.routes[id as usize],
                    DeadLetterReason::PayloadTooLarge,
                    &why,
                ));
            }
            return records;
        }
        let mut json: Option<Result<serde_json::Value, String>> = None;
        for &id in &ids {
            let route = &self.routes[id as usize];
            let payload = if route.json {
                match json.get_or_insert_with(|| {
                    serde_json::from_slice(&msg.payload).map_err(|e| format!("invalid JSON: {e}"))
                }) {
                    Ok(value) => Some(&*value),
                    Err(why) => {
                        records.push(self.dead_letter(
                            msg,
                            route,
                            DeadLetterReason::InvalidJson,
                            why,
                        ));
                        continue;
                    }
                }
            } else {
                None
            };
            let ctx = Context {
                topic: &msg.topic,
                levels: &levels,
                payload,
            };
            match self.record(msg, route, &ctx) {
                Ok(record) => records.push(record),
                Err((reason, why)) => records.push(self.dead_letter(msg, route, reason, &why)),
            }
        }
        records
    }

    fn record(
        &self,
        msg: &Message,
        route: &Route,
        ctx: &Context<'_>,
    ) -> Result<Record, (DeadLetterReason, String)> {
        let missing = |e: template::RenderError| (DeadLetterReason::MissingField, e.to_string());
        let topic = route.to.render_string(ctx).map_err(missing)?;
        if route.to.as_literal().is_none() {
            check_topic_name(&topic).map_err(|e| {
                (
                    DeadLetterReason::InvalidTopic,
                    format!("route's to template made an illegal topic: {e}"),
                )
            })?;
        }
        let key = match &route.key {
            Some(t) => Some(Bytes::from(t.render_string(ctx).map_err(missing)?)),
            None => None,
        };
        let mut headers = base_headers(msg, route.headers.len());
        for (name, t) in &route.headers {
            headers.push(Header::new(
                name.clone(),
                t.render_string(ctx).map_err(missing)?,
            ));
        }
        let partition = self.partition(&topic, key.as_deref());
        Ok(Record {
            route: route.name.clone(),
            topic,
            partition,
            key,
            value: msg.payload.clone(),
            headers,
            timestamp_ms: msg.received_at_ms,
            dead_letter: None,
        })
    }

    fn dead_letter(
        &self,
        msg: &Message,
        route: &Route,
        reason: DeadLetterReason,
        why: &str,
    ) -> Record {
        self.dead_letter_named(msg, &route.name, reason, why)
    }

    /// The dead letter for a message whose records the sink refused for good: the payload cut
    /// to its first 1 KiB (it may be why), `route` naming every route it matched.
    pub fn rejected(&self, msg: &Message, routes: &[Record], why: &str) -> Record {
        let names: Vec<&str> = routes.iter().map(|r| &*r.route).collect();
        let name: Arc<str> = names.join(",").into();
        self.dead_letter_named(msg, &name, DeadLetterReason::SinkRejected, why)
    }

    fn dead_letter_named(
        &self,
        msg: &Message,
        route: &Arc<str>,
        reason: DeadLetterReason,
        why: &str,
    ) -> Record {
        let mut headers = base_headers(msg, 2);
        headers.push(Header::new("error", why.to_string()));
        headers.push(Header::new("route", route.to_string()));
        let value = match reason {
            DeadLetterReason::PayloadTooLarge | DeadLetterReason::SinkRejected => msg
                .payload
                .slice(..DEAD_LETTER_TRUNCATE.min(msg.payload.len())),
            _ => msg.payload.clone(),
        };
        Record {
            route: route.clone(),
            topic: self.dead_letter_topic.clone(),
            partition: self.partition(&self.dead_letter_topic, None),
            key: None,
            value,
            headers,
            timestamp_ms: msg.received_at_ms,
            dead_letter: Some(reason),
        }
    }

    /// Kafka's default partitioner for keys; round-robin without one.
    fn partition(&self, topic: &str, key: Option<&[u8]>) -> u32 {
        // A log never reports 0; should one, partition 0 beats a division by zero.
        let partitions = self.partitions(topic).max(1);
        match key {
            Some(key) => partition::partition_for_key(key, partitions),
            None => self.next_partition.fetch_add(1, Ordering::Relaxed) % partitions,
        }
    }
}

/// The headers every record carries: `mqtt.topic`, `mqtt.qos`, `mqtt.retain`, the MQTT 5 user
/// properties and `content-type`; `extra` reserves room for what follows.
fn base_headers(msg: &Message, extra: usize) -> Vec<Header> {
    let mut headers = Vec::with_capacity(3 + msg.user_properties.len() + 1 + extra);
    headers.push(Header::new("mqtt.topic", msg.topic.clone()));
    headers.push(Header::new(
        "mqtt.qos",
        Bytes::from_static(msg.qos.as_str().as_bytes()),
    ));
    headers.push(Header::new(
        "mqtt.retain",
        Bytes::from_static(if msg.retain { b"true" } else { b"false" }),
    ));
    for (k, v) in &msg.user_properties {
        headers.push(Header::new(k.clone(), v.clone()));
    }
    if let Some(ct) = &msg.content_type {
        headers.push(Header::new("content-type", ct.clone()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{load_figment, ByteSize};
    use figment::providers::{Format, Yaml};
    use figment::Figment;

    fn router(routes_yaml: &str) -> Router {
        let yaml = format!("listener:\ntopics: {{ default: {{ partitions: 4 }}, telemetry: {{ partitions: 12 }} }}\nroutes:\n{routes_yaml}");
        let config = load_figment("test.yaml", Figment::new().merge(Yaml::string(&yaml))).unwrap();
        Router::new(&config, Arc::new(config.topics.clone())).unwrap()
    }

    fn header<'r>(record: &'r Record, key: &str) -> Option<&'r str> {
        record
            .headers
            .iter()
            .find(|h| h.key == key)
            .map(|h| std::str::from_utf8(&h.value).unwrap())
    }

    #[test]
    fn one_record_per_matching_route_in_route_order() {
        let r = router(
            r##"
  - { name: all, from: "#", to: everything }
  - { name: tel, from: "devices/{device}/telemetry/{*rest}", to: telemetry, key: "{device}" }
  - { name: none, from: "other/#", to: other }
  - { name: dev, from: "devices/+/+/+", to: "dev.{topic.1}" }
"##,
        );
        let records = r.route(&Message::new("devices/d1/telemetry/temp", "21.5"));
        let names: Vec<&str> = records.iter().map(|r| &*r.route).collect();
        assert_eq!(names, ["all", "tel", "dev"]);
        let tel = &records[1];
        assert_eq!(tel.topic, "telemetry");
        assert_eq!(tel.key.as_deref(), Some(&b"d1"[..]));
        assert_eq!(tel.partition, partition::partition_for_key(b"d1", 12));
        assert_eq!(tel.value, "21.5");
        assert_eq!(records[2].topic, "dev.d1");
        assert_eq!(
            r.route(&Message::new("nothing/here", "x")).len(),
            1,
            "only '#' matches"
        );
        assert!(records.iter().all(|r| r.dead_letter.is_none()));
    }

    #[test]
    fn headers_in_documented_order() {
        let r = router(
            r##"  - { name: t, from: "d/{id}", to: t, headers: { b: "{id}", a: "{payload.site}" } }"##,
        );
        let mut msg = Message::new("d/x", r##"{"site":"s1"}"##);
        msg.qos = Qos::AtMostOnce;
        msg.retain = true;
        msg.user_properties = vec![("unit".into(), "C".into()), ("unit".into(), "K".into())];
        msg.content_type = Some("application/json".into());
        msg.received_at_ms = 1_700_000_000_123;
        let records = r.route(&msg);
        assert_eq!(records.len(), 1);
        let headers: Vec<(&str, &str)> = records[0]
            .headers
            .iter()
            .map(|h| (&*h.key, std::str::from_utf8(&h.value).unwrap()))
            .collect();
        assert_eq!(
            headers,
            [
                ("mqtt.topic", "d/x"),
                ("mqtt.qos", "0"),
                ("mqtt.retain", "true"),
                ("unit", "C"),
                ("unit", "K"),
                ("content-type", "application/json"),
                ("a", "s1"),
                ("b", "x"),
            ]
        );
        assert_eq!(records[0].timestamp_ms, 1_700_000_000_123);
    }

    #[test]
    fn dead_letters_carry_error_and_route() {
        let r = router(
            r##"
  - { name: j, from: "j/#", to: t, format: json }
  - { name: field, from: "f/#", to: t, key: "{payload.id}" }
  - { name: raw, from: "j/#", to: raw }
  - { name: dyn, from: "x/{name}", to: "t.{name}" }
  - { name: lvl, from: "l/#", to: "t{topic.3}" }
"##,
        );
        let records = r.route(&Message::new("j/1", "not json"));
        assert_eq!(records.len(), 2, "the raw route still gets its record");
        assert_eq!(records[0].topic, "tributary.dead-letter");
        assert_eq!(records[0].dead_letter, Some(DeadLetterReason::InvalidJson));
        assert!(
            header(&records[0], "error")
                .unwrap()
                .starts_with("invalid JSON: expected ident"),
            "{:?}",
            header(&records[0], "error")
        );
        assert_eq!(header(&records[0], "route"), Some("j"));
        assert_eq!(header(&records[0], "mqtt.topic"), Some("j/1"));
        assert_eq!(records[0].value, "not json");
        assert_eq!(records[1].topic, "raw");

        let records = r.route(&Message::new("f/1", r##"{"other":1}"##));
        assert_eq!(records[0].dead_letter, Some(DeadLetterReason::MissingField));
        assert_eq!(
            header(&records[0], "error"),
            Some("payload has no field id")
        );

        let records = r.route(&Message::new("x/a b", "v"));
        assert_eq!(records[0].dead_letter, Some(DeadLetterReason::InvalidTopic));
        assert!(header(&records[0], "error").unwrap().contains("has ' '"));

        let records = r.route(&Message::new("l/1", "v"));
        assert_eq!(records[0].dead_letter, Some(DeadLetterReason::MissingField));
        assert_eq!(
            header(&records[0], "error"),
            Some("topic \"l/1\" has no level 3")
        );
        assert_eq!(r.route(&Message::new("l/1/2/3", "v"))[0].topic, "t3");
    }

    #[test]
    fn oversized_payload_is_cut_and_dead_lettered() {
        let yaml = "mqtt: { max_payload: 2KiB }\nroutes: [{ name: a, from: \"#\", to: t }, { name: b, from: \"x\", to: u }]";
        let config = load_figment("t.yaml", Figment::new().merge(Yaml::string(yaml))).unwrap();
        assert_eq!(config.max_payload(), ByteSize::kib(2));
        let r = Router::new(&config, Arc::new(config.topics.clone())).unwrap();
        let big = vec![7u8; 2049];
        let records = r.route(&Message::new("x", big.clone()));
        assert_eq!(records.len(), 2, "one dead letter per matching route");
        for (record, route) in records.iter().zip(["a", "b"]) {
            assert_eq!(record.dead_letter, Some(DeadLetterReason::PayloadTooLarge));
            assert_eq!(record.value.len(), DEAD_LETTER_TRUNCATE);
            assert_eq!(header(record, "route"), Some(route));
            assert!(header(record, "error")
                .unwrap()
                .starts_with("payload is 2049 bytes, over mqtt.max_payload (2048 bytes)"));
        }
        assert_eq!(r.route(&Message::new("x", vec![7u8; 2048])).len(), 2);
        assert!(r
            .route(&Message::new("x", vec![7u8; 2048]))
            .iter()
            .all(|r| r.dead_letter.is_none()));
    }

    #[test]
    fn unkeyed_records_round_robin() {
        let r = router(r##"  - { name: t, from: "#", to: other }"##);
        let partitions: Vec<u32> = (0..8)
            .map(|_| r.route(&Message::new("a", "v"))[0].partition)
            .collect();
        assert_eq!(partitions, [0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn subscriptions_are_deduplicated_and_covered_filters_dropped() {
        let r = router(
            r##"
  - { name: a, from: "devices/{device}/telemetry", to: t, qos: 0 }
  - { name: b, from: "devices/+/telemetry", to: t, qos: 1 }
  - { name: c, from: "devices/{id}/#", to: t, qos: 1 }
  - { name: d, from: "devices/x/status", to: t, qos: 2 }
  - { name: e, from: "$SYS/#", to: t, qos: 0 }
  - { name: f, from: "alerts/{*all}", to: t, qos: 0 }
  - { name: g, from: "alerts/high", to: t, qos: 1 }
"##,
        );
        let subs: Vec<(String, u8)> = r
            .subscriptions()
            .into_iter()
            .map(|s| (s.filter, s.qos.into()))
            .collect();
        assert_eq!(
            subs,
            [
                ("devices/+/#".to_string(), 1),
                ("$SYS/#".to_string(), 0),
                ("alerts/#".to_string(), 0),
                ("alerts/high".to_string(), 1),
            ]
        );
    }

    /// A log whose topics appear while the router runs.
    #[derive(Debug, Default)]
    struct LiveCounts(std::sync::Mutex<std::collections::HashMap<String, u32>>);

    impl PartitionCounts for LiveCounts {
        fn partitions(&self, topic: &str) -> u32 {
            *self.0.lock().unwrap().get(topic).unwrap_or(&4)
        }
    }

    #[test]
    fn partitions_come_from_the_log_at_routing_time() {
        let yaml = "listener:\nroutes: [{ from: \"{kind}/{id}\", to: \"{kind}\", key: \"{id}\" }]";
        let config = load_figment("t.yaml", Figment::new().merge(Yaml::string(yaml))).unwrap();
        let counts = Arc::new(LiveCounts::default());
        let r = Router::new(&config, counts.clone()).unwrap();
        let key = (0..100)
            .map(|i| format!("dev-{i}"))
            .find(|k| {
                partition::partition_for_key(k.as_bytes(), 4)
                    != partition::partition_for_key(k.as_bytes(), 7)
            })
            .unwrap();
        let msg = Message::new(format!("orders/{key}"), "{}");
        assert_eq!(
            r.route(&msg)[0].partition,
            partition::partition_for_key(key.as_bytes(), 4)
        );
        counts.0.lock().unwrap().insert("orders".into(), 7);
        assert_eq!(r.partitions("orders"), 7);
        assert_eq!(
            r.route(&msg)[0].partition,
            partition::partition_for_key(key.as_bytes(), 7)
        );
    }
}
