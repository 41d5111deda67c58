//! What the commands print; `main.rs` only parses arguments.

pub mod consume;
pub mod passwd;

use crate::config::{Backend, Config, EgressStart, EmbeddedConfig, FsyncPolicy, MqttVersion};
use crate::message::Qos;
use crate::record::Record;
use crate::route::Router;
use serde_json::{json, Map, Value};
use std::fmt::Write;

/// How the Kafka listener is reached: `kafka://` or `kafka+tls://`, its SASL and whether it
/// takes writes.
fn kafka_listener(addr: std::net::SocketAddr, e: &EmbeddedConfig) -> String {
    let mut text = match &e.kafka_tls {
        None => format!("kafka://{addr}"),
        Some(t) if t.client_ca_file.is_some() => {
            format!("kafka+tls://{addr}, client certificates required")
        }
        Some(_) => format!("kafka+tls://{addr}"),
    };
    match &e.kafka_auth {
        Some(a) => {
            let _ = write!(
                text,
                ", SASL {} users from {}",
                a.mechanism.name(),
                a.users_file.display()
            );
        }
        None => text.push_str(", no authentication"),
    }
    if !e.kafka_produce {
        text.push_str(", read-only");
    }
    text
}

/// The `check` report: the MQTT faces (listener, broker client), what it writes, each route
/// and the broker subscriptions.
pub fn check_report(file: &str, config: &Config, router: &Router) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{file}: valid");
    if let Some(l) = &config.listener {
        let mut on = Vec::new();
        if let Some(addr) = l.listen {
            on.push(format!("mqtt://{addr}"));
        }
        if let Some(addr) = l.tls.listen {
            let mutual = if l.tls.client_ca_file.is_some() {
                ", client certificates required"
            } else {
                ""
            };
            on.push(format!("mqtts://{addr}{mutual}"));
        }
        let auth = match (&l.auth.users_file, l.auth.allow_anonymous) {
            (Some(f), false) => format!("users from {}", f.display()),
            (Some(f), true) => format!("users from {}, anonymous allowed", f.display()),
            (None, _) => "anonymous".to_string(),
        };
        let _ = writeln!(
            out,
            "listener: {} (MQTT 5 and 3.1.1; {auth}; up to {} connections, {} in flight each)",
            on.join(" and "),
            l.max_connections,
            l.max_inflight
        );
    }
    if let Some(m) = &config.mqtt {
        let version = match m.version {
            MqttVersion::V5 => "MQTT 5",
            MqttVersion::V3 => "MQTT 3.1.1",
        };
        let session = if m.clean_start {
            "clean start"
        } else {
            "persistent session"
        };
        let _ = writeln!(
            out,
            "mqtt: {} ({version}, client id {:?}, {session}, max {} in flight)",
            m.url, m.client_id, m.max_inflight
        );
    }
    let _ = match config.log.backend {
        Backend::Embedded => {
            let e = &config.log.embedded;
            let fsync = match e.fsync {
                FsyncPolicy::Always => "fsync always".to_string(),
                FsyncPolicy::Interval => format!("fsync every {}", e.fsync_interval),
                FsyncPolicy::Never => "fsync never".to_string(),
            };
            let listener = match e.kafka_listener {
                None => "off".to_string(),
                Some(addr) => kafka_listener(addr, e),
            };
            let _ = writeln!(
                out,
                "log: embedded in {} ({fsync}; Kafka listener {listener})",
                e.dir.display()
            );
            match e.kafka_exposure_warning() {
                Some(warning) => writeln!(out, "warning: {warning}"),
                None => Ok(()),
            }
        }
        Backend::Kafka => writeln!(out, "log: Kafka at {}", config.log.kafka.bootstrap_servers),
    };
    let _ = writeln!(out, "routes:");
    for route in router.routes() {
        let c = route.config();
        // A templated `to` has no one partition count to show.
        let partitions = match c.to.contains('{') {
            false => format!(" ({} partitions)", router.partitions(&c.to)),
            true => String::new(),
        };
        let _ = write!(out, "  {}: {} -> {}{partitions}", route.name, c.from, c.to);
        if let Some(key) = &c.key {
            let _ = write!(out, ", key {key}");
        }
        let _ = writeln!(out, ", qos {}", u8::from(c.qos));
        for (name, value) in &c.headers {
            let _ = writeln!(out, "    header {name}: {value}");
        }
        let client = config.mqtt.is_some();
        if client && c.qos == Qos::ExactlyOnce {
            let _ = writeln!(out, "    note: qos 2 is subscribed as qos 1 (at-least-once into the log; rumqttc's QoS 2 breaks across reconnects)");
        }
        if client && c.qos == Qos::AtMostOnce {
            let _ = writeln!(
                out,
                "    note: qos 0 is lossy: messages are not acked and are lost if Tributary stops"
            );
        }
    }
    let _ = writeln!(out, "dead letters: {}", config.dead_letter.topic);
    if !config.egress.is_empty() {
        let mut via = Vec::new();
        if config.mqtt.is_some() {
            via.push("the broker client");
        }
        if config.listener.is_some() && config.log.backend == Backend::Embedded {
            via.push("the listener's subscribers");
        }
        let _ = writeln!(out, "egress (to {}):", via.join(" and "));
        for e in &config.egress {
            let start = match e.start {
                EgressStart::Earliest => "earliest",
                EgressStart::Latest => "latest",
            };
            let retain = if e.retain { ", retain" } else { "" };
            let _ = writeln!(
                out,
                "  {}: {} -> {}, qos {}{retain}, starts at {start}",
                e.name(),
                e.from,
                e.to,
                u8::from(e.qos)
            );
        }
    }
    if let Some(m) = &config.mqtt {
        let _ = writeln!(out, "subscriptions:");
        for sub in router.subscriptions() {
            let _ = writeln!(
                out,
                "  {} (qos {})",
                m.broker_filter(&sub.filter),
                u8::from(sub.qos)
            );
        }
    }
    out
}

/// One `route` dry-run line: `{"route","topic","partition","key","headers","value"}`, the value
/// as text, or base64 under `value_b64` when it is not UTF-8.
pub fn record_json(record: &Record) -> Value {
    let mut line = Map::new();
    line.insert("route".into(), json!(&*record.route));
    line.insert("topic".into(), json!(record.topic));
    line.insert("partition".into(), json!(record.partition));
    line.insert(
        "key".into(),
        record
            .key
            .as_ref()
            .map_or(Value::Null, |k| json!(String::from_utf8_lossy(k))),
    );
    let headers: Map<String, Value> = record
        .headers
        .iter()
        .map(|h| (h.key.to_string(), json!(String::from_utf8_lossy(&h.value))))
        .collect();
    line.insert("headers".into(), Value::Object(headers));
    consume::insert_bytes(&mut line, "value", Some(&record.value));
    Value::Object(line)
}

/// One `egress-route` dry-run line: the PUBLISH an egress route makes of a record
/// (`{"route","topic","qos","retain","payload"}`), or the dead letter it would be
/// (`{"route","dead_letter"}` with the reason).
pub fn egress_json(
    route: &crate::egress::EgressRoute,
    record: &crate::log::batch::DecodedRecord,
    partition: u32,
) -> Value {
    let mut line = Map::new();
    line.insert("route".into(), json!(&*route.name));
    match route.outgoing(record, partition) {
        Ok(publish) => {
            line.insert("topic".into(), json!(publish.topic));
            line.insert("qos".into(), json!(u8::from(publish.qos)));
            line.insert("retain".into(), json!(publish.retain));
            consume::insert_bytes(&mut line, "payload", Some(&publish.payload));
        }
        Err(why) => {
            line.insert("dead_letter".into(), json!(why));
        }
    }
    Value::Object(line)
}
