//! The Grafana dashboard: its PromQL names only metrics of DESIGN §9's table, groups by their
//! labels, and covers the panels the README describes.

use crate::common::read;
use serde_json::Value;
use std::collections::BTreeSet;

fn json_file(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: invalid JSON: {e}"))
}

/// DESIGN §9's metrics and their labels.
const METRICS: &[(&str, &str, &[&str])] = &[
    ("tributary_messages_received_total", "counter", &["face"]),
    ("tributary_messages_acked_total", "counter", &["face"]),
    ("tributary_messages_unrouted_total", "counter", &[]),
    ("tributary_records_appended_total", "counter", &["topic"]),
    ("tributary_dead_letters_total", "counter", &["reason"]),
    ("tributary_inflight_messages", "gauge", &[]),
    ("tributary_mqtt_connected", "gauge", &[]),
    ("tributary_listener_connections", "gauge", &[]),
    ("tributary_append_duration_seconds", "histogram", &[]),
    ("tributary_ack_latency_seconds", "histogram", &[]),
    ("tributary_sink_errors_total", "counter", &["reason"]),
    ("tributary_log_end_offset", "gauge", &["topic", "partition"]),
    ("tributary_kafka_forward_lag_records", "gauge", &["topic"]),
    ("tributary_egress_delivered_total", "counter", &["route"]),
    ("tributary_consumer_group_lag", "gauge", &["group", "topic"]),
];

/// The labels every scraped series has, besides the metric's own.
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// The metric a series name belongs to, and its labels (a histogram's series add `le`).
fn metric_of(series: &str) -> Option<(&'static str, Vec<&'static str>)> {
    METRICS.iter().find_map(|(name, kind, labels)| {
        let mut labels = labels.to_vec();
        if series == *name && *kind != "histogram" {
            return Some((*name, labels));
        }
        let suffix = series.strip_prefix(name)?;
        if *kind == "histogram" && ["_bucket", "_sum", "_count"].contains(&suffix) {
            if suffix == "_bucket" {
                labels.push("le");
            }
            return Some((*name, labels));
        }
        None
    })
}

fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        out.push(panel);
        for inner in panel["panels"].as_array().into_iter().flatten() {
            out.push(inner);
        }
    }
    out
}

/// The label names in `by (...)`, `without (...)`, `on (...)`, `ignoring (...)` and in
/// `{...}` matchers of a PromQL expression.
fn labels_used(expr: &str) -> Vec<String> {
    let mut labels = Vec::new();
    for keyword in ["by", "without", "on", "ignoring"] {
        let mut rest = expr;
        while let Some(at) = rest.find(&format!("{keyword} (")) {
            let start = at + keyword.len() + 2;
            let word_start =
                at == 0 || !rest[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_');
            if !word_start {
                rest = &rest[start..];
                continue;
            }
            let end = start + rest[start..].find(')').unwrap();
            labels.extend(rest[start..end].split(',').map(|l| l.trim().to_string()));
            rest = &rest[end..];
        }
    }
    let mut rest = expr;
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}').expect("unclosed {");
        for matcher in rest[open + 1..close]
            .split(',')
            .filter(|m| !m.trim().is_empty())
        {
            let name: String = matcher
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            labels.push(name);
        }
        rest = &rest[close + 1..];
    }
    labels.into_iter().filter(|l| !l.is_empty()).collect()
}

#[test]
fn grafana_dashboard_queries_only_design_metrics() {
    let path = "deploy/grafana/tributary.json";
    let dashboard = json_file(path);
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["uid"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(dashboard["schemaVersion"].as_u64().is_some());

    // Template variables the queries use exist.
    let variables: BTreeSet<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert!(variables.contains("datasource"), "{variables:?}");

    let mut used = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut titles = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().unwrap();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{title}: gridPos");
        if panel["type"] == "row" {
            continue;
        }
        titles.push(title);
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        assert!(
            !panel["description"].as_str().unwrap_or("").is_empty(),
            "{title}: a description of what to look at"
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            let mut depth = 0i32;
            for c in expr.chars() {
                depth += match c {
                    '(' | '[' | '{' => 1,
                    ')' | ']' | '}' => -1,
                    _ => 0,
                };
                assert!(depth >= 0, "{title}: unbalanced: {expr}");
            }
            assert_eq!(depth, 0, "{title}: unbalanced: {expr}");
            for variable in expr.match_indices('$').map(|(i, _)| {
                expr[i + 1..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect::<String>()
            }) {
                if variable != "__rate_interval" {
                    assert!(
                        variables.contains(variable.as_str()),
                        "{title}: ${variable}"
                    );
                }
            }
            let series: Vec<&str> = expr
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("tributary_"))
                .collect();
            assert!(!series.is_empty(), "{title}: no tributary metric in {expr}");
            let mut allowed: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
            for s in series {
                let (metric, labels) = metric_of(s)
                    .unwrap_or_else(|| panic!("{title}: {s} is not in DESIGN §9's table"));
                used.insert(metric);
                allowed.extend(labels);
            }
            for label in labels_used(expr) {
                assert!(
                    allowed.contains(label.as_str()),
                    "{title}: label {label} is not one of {allowed:?}: {expr}"
                );
            }
        }
    }

    // The panels the README describes.
    for metric in [
        "tributary_messages_received_total",
        "tributary_ack_latency_seconds",
        "tributary_inflight_messages",
        "tributary_dead_letters_total",
        "tributary_sink_errors_total",
        "tributary_mqtt_connected",
        "tributary_consumer_group_lag",
        "tributary_kafka_forward_lag_records",
        "tributary_log_end_offset",
    ] {
        assert!(used.contains(metric), "no panel shows {metric}");
    }
    let readme = read("README.md");
    for title in titles {
        assert!(
            readme.contains(&format!("**{title}**")),
            "README's Dashboard section does not describe the panel {title:?}"
        );
    }
}
