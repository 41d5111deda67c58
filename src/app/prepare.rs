//! Everything checked and built before the gateway starts, shared by `check`, `route` and `run`
//! so that they never disagree: the checks that need more than one module's rules, the sink,
//! and the router that asks the sink for partition counts.

use crate::config::{self, Backend, ByteSize, Config, ConfigError, Issue};
use crate::log::batch::MAX_BATCH_LEN;
use crate::mqtt::server;
use crate::record::check_topic_name;
use crate::route::{compile_routes, PartitionCounts, Router};
use crate::sink::{self, AnySink, Sink, SinkError};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;

/// Loads `path` with every check, config's own and [`check`]'s, reported together.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    config::load_checked(path, check)
}

/// The checks that need another module's rules: routes compile, topic names are legal for the
/// log, a payload fits one log batch, and the backend is one this build has.
pub fn check(config: &Config) -> Vec<Issue> {
    let (_, mut issues) = compile_routes(&config.routes);
    if let Err(e) = check_topic_name(&config.dead_letter.topic) {
        issues.push(Issue::new("dead_letter.topic", e));
    }
    for name in config.topics.topics.keys() {
        if let Err(e) = check_topic_name(name) {
            issues.push(Issue::new(format!("topics.{name}"), e));
        }
    }
    // A record must fit one log batch, with room for its headers.
    let max_payload = ByteSize(MAX_BATCH_LEN as u64 / 2);
    let faces = [
        (
            "mqtt.max_payload",
            config.mqtt.as_ref().map(|m| m.max_payload),
        ),
        (
            "listener.max_payload",
            config.listener.as_ref().map(|l| l.max_payload),
        ),
    ];
    for (key, payload) in faces {
        if let Some(payload) = payload.filter(|p| p.0 == 0 || *p > max_payload) {
            issues.push(Issue::new(
                key,
                format!("{payload} is out of range; use 1B to {max_payload}"),
            ));
        }
    }
    // The users file and the certificates are read as `run` reads them.
    if let Some(listener) = &config.listener {
        let files_exist = [
            &listener.auth.users_file,
            &listener.tls.cert_file,
            &listener.tls.key_file,
            &listener.tls.client_ca_file,
        ]
        .iter()
        .all(|f| f.as_ref().is_none_or(|p| p.is_file()));
        // A missing file is config's own issue, reported already.
        if files_exist {
            if let Err(e) = server::load(listener) {
                let message = e.to_string();
                let (key, message) = message.split_once(": ").unwrap_or(("listener", &message));
                issues.push(Issue::new(key, message));
            }
        }
    }
    // The Kafka listener's users file and certificates, likewise.
    let e = &config.log.embedded;
    let kafka_files_exist = [
        e.kafka_auth.as_ref().map(|a| &a.users_file),
        e.kafka_tls.as_ref().map(|t| &t.cert_file),
        e.kafka_tls.as_ref().map(|t| &t.key_file),
        e.kafka_tls.as_ref().and_then(|t| t.client_ca_file.as_ref()),
    ]
    .iter()
    .all(|f| f.is_none_or(|p| p.is_file()));
    if config.log.backend == Backend::Embedded && e.kafka_listener.is_some() && kafka_files_exist {
        if let Err(message) = crate::kafka_api::Security::load(e) {
            let (key, message) = message
                .split_once(": ")
                .unwrap_or(("log.embedded", &message));
            issues.push(Issue::new(key, message));
        }
    }
    issues.extend(crate::egress::check(config));
    if config.log.backend == Backend::Kafka {
        let kafka = &config.log.kafka;
        for (path, message) in sink::kafka::check_properties(kafka) {
            issues.push(Issue::new(path, message));
        }
    }
    issues
}

/// What [`prepare`] opens the backend for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read what exists without taking the writer's place (`check`, `route`).
    Inspect,
    /// Open it as the single writer (`run`).
    Write,
}

#[derive(Debug, Error)]
pub enum PrepareError {
    /// The config is wrong, or contradicts what the backend holds: exit code 2.
    #[error("{} problem(s) in the configuration", .0.len())]
    Invalid(Vec<Issue>),
    #[error(transparent)]
    Sink(#[from] SinkError),
}

/// The checked config's parts, ready to start.
#[derive(Debug)]
pub struct Prepared {
    pub router: Arc<Router>,
    /// The open sink, with [`Access::Write`].
    pub sink: Option<AnySink>,
}

/// Checks `config` whole, against the backend too, and builds the router on the backend's
/// partition counts.
pub async fn prepare(config: &Config, access: Access) -> Result<Prepared, PrepareError> {
    let issues = check(config);
    if !issues.is_empty() {
        return Err(PrepareError::Invalid(issues));
    }
    let sink = match access {
        Access::Inspect => None,
        Access::Write => Some(sink::open(config).await?),
    };
    let (existing, partitions): (_, Arc<dyn PartitionCounts>) = match &sink {
        Some(opened) => (opened.partition_counts().await?, Arc::new(opened.clone())),
        None => {
            let inspected = sink::inspect(&config.log, &config.topics)?;
            (inspected.existing.clone(), Arc::new(inspected))
        }
    };
    let issues = partition_conflicts(config, &existing);
    if !issues.is_empty() {
        drop(partitions);
        if let Some(opened) = sink {
            opened.close().await?;
        }
        return Err(PrepareError::Invalid(issues));
    }
    let router = Router::new(config, partitions).map_err(PrepareError::Invalid)?;
    Ok(Prepared {
        router: Arc::new(router),
        sink,
    })
}

/// A topic's partition count is fixed once it exists (keys would move): the config must agree.
/// In a Kafka cluster the cluster's count wins and the config's only says how to create a
/// topic, so there a disagreement is logged, not refused.
pub(super) fn partition_conflicts(config: &Config, existing: &BTreeMap<String, u32>) -> Vec<Issue> {
    let conflicts = existing
        .iter()
        .filter_map(|(topic, &n)| {
            let configured = config.topics.topics.get(topic)?.partitions;
            (configured != n).then(|| {
                Issue::new(
                    format!("topics.{topic}.partitions"),
                    format!("{configured} but the log already holds {topic} with {n} partitions; a topic's partition count cannot change (keys would move). Set it to {n}, or route to a new topic"),
                )
            })
        })
        .collect();
    match config.log.backend {
        Backend::Embedded => conflicts,
        Backend::Kafka => {
            for issue in conflicts {
                tracing::warn!(key = %issue.path, "{}; Kafka's count is used", issue.message);
            }
            Vec::new()
        }
    }
}
