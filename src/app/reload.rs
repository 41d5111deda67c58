//! Reloading `routes`, `topics` and `dead_letter` while the gateway runs (SIGHUP, or
//! `tributary reload`, which sends it). The file is checked whole, as `check` would, and against
//! what the sink holds; if it passes, the router is replaced at once (each message is routed by
//! one router, old or new) and the subscriptions are changed on the live session. A file that
//! fails keeps the running routes, and its problems are logged. Settings that need a restart
//! (the broker, the backend, listeners) are named in the log and left as they run.

use super::prepare::{check, partition_conflicts};
use crate::config::{Config, ConfigError, Issue};
use crate::route::Router;
use crate::sink::{AnySink, Sink};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::mpsc;

/// The sections a reload applies; every other one needs a restart.
const RELOADED: &[&str] = &["routes", "topics", "dead_letter"];

/// Configs loaded and checked on each SIGHUP, in order; a file that fails is logged and sends
/// nothing.
pub fn on_sighup(path: PathBuf) -> std::io::Result<mpsc::UnboundedReceiver<Config>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!(file = %path.display(), "SIGHUP: reloading routes, topics and dead_letter");
            let loaded = {
                let path = path.clone();
                tokio::task::spawn_blocking(move || super::load(&path)).await
            };
            match loaded {
                Ok(Ok(config)) => {
                    if tx.send(config).is_err() {
                        return;
                    }
                }
                Ok(Err(e)) => refused(&e.to_string()),
                Err(e) => refused(&e.to_string()),
            }
        }
    });
    Ok(rx)
}

fn refused(why: &str) {
    for line in why.lines() {
        tracing::error!("reload refused: {line}");
    }
    tracing::error!("reload refused: the running routes stay");
}

/// What a running gateway takes of `new`: `current` with `new`'s reloadable sections, and the
/// key paths where `new` differs elsewhere (they need a restart).
pub fn merge(current: &Config, new: &Config) -> (Config, Vec<String>) {
    let mut applied = current.clone();
    applied.routes = new.routes.clone();
    applied.topics = new.topics.clone();
    applied.dead_letter = new.dead_letter.clone();
    let mut restart = Vec::new();
    let (old, new) = (
        serde_json::to_value(current).unwrap_or(Value::Null),
        serde_json::to_value(new).unwrap_or(Value::Null),
    );
    if let (Value::Object(old), Value::Object(new)) = (&old, &new) {
        for (section, value) in new {
            if !RELOADED.contains(&section.as_str()) {
                differences(
                    section,
                    old.get(section).unwrap_or(&Value::Null),
                    value,
                    &mut restart,
                );
            }
        }
    }
    restart.sort();
    (applied, restart)
}

/// Key paths below `path` where `old` and `new` differ.
fn differences(path: &str, old: &Value, new: &Value, out: &mut Vec<String>) {
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for key in keys {
                let (x, y) = (
                    a.get(key).unwrap_or(&Value::Null),
                    b.get(key).unwrap_or(&Value::Null),
                );
                differences(&format!("{path}.{key}"), x, y, out);
            }
        }
        (a, b) if a != b => out.push(path.to_string()),
        _ => {}
    }
}

/// The router for `applied` over the running `sink`, after the checks `run` makes at start.
pub async fn router_for(applied: &Config, sink: &AnySink) -> Result<Router, Vec<Issue>> {
    let mut issues = check(applied);
    match sink.partition_counts().await {
        Ok(existing) => issues.extend(partition_conflicts(applied, &existing)),
        Err(e) => issues.push(Issue::new(
            "topics",
            format!("cannot read the sink's topics: {e}"),
        )),
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    sink.set_topics(&applied.topics);
    Router::new(applied, Arc::new(sink.clone()))
}

/// Logs a refused reload's problems, each with the file and key path.
pub fn log_refused(file: &Path, issues: Vec<Issue>) {
    refused(&ConfigError::invalid(file.display().to_string(), issues).to_string());
}

/// `tributary reload`: the running gateways (`tributary run`) whose config is `path`, by pid,
/// read from /proc: each one's arguments, resolved against its working directory.
pub fn running_gateways(path: &Path) -> std::io::Result<Vec<u32>> {
    let target = path.canonicalize()?;
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(config) = gateway_config(&args) else {
            continue;
        };
        let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) else {
            continue;
        };
        if cwd.join(config).canonicalize().is_ok_and(|c| c == target) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// The config file of a `tributary run` command line (`tributary` alone runs too); `None` for
/// any other program or command.
fn gateway_config(args: &[String]) -> Option<PathBuf> {
    let program = Path::new(args.first()?).file_name()?;
    if program != "tributary" {
        return None;
    }
    let mut config = PathBuf::from("bridge.yaml");
    let mut command = None;
    let mut rest = args[1..].iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-c" | "--config" => config = PathBuf::from(rest.next()?),
            a if a.starts_with("--config=") => config = PathBuf::from(&a["--config=".len()..]),
            "--log-format" => {
                rest.next();
            }
            a if a.starts_with('-') => {}
            a if command.is_none() => command = Some(a.to_string()),
            _ => {}
        }
    }
    matches!(command.as_deref(), None | Some("run")).then_some(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_figment;
    use figment::providers::{Format, Yaml};
    use figment::Figment;

    fn config(yaml: &str) -> Config {
        load_figment("t.yaml", Figment::new().merge(Yaml::string(yaml))).unwrap()
    }

    #[test]
    fn merge_takes_routes_topics_and_dead_letter_and_names_the_rest() {
        let current = config("mqtt: { url: 'mqtt://a:1883' }\nroutes: [{ from: a, to: t }]");
        let new = config(
            "mqtt: { url: 'mqtt://b:1883', keep_alive: 10s }\nlog: { backend: kafka }\ntopics: { t: { partitions: 9 } }\ndead_letter: { topic: dl }\nroutes: [{ from: b, to: u }]",
        );
        let (applied, restart) = merge(&current, &new);
        assert_eq!(applied.routes[0].from, "b");
        assert_eq!(applied.topics.get("t").partitions, 9);
        assert_eq!(applied.dead_letter.topic, "dl");
        assert_eq!(
            applied.mqtt.as_ref().map(|m| m.url.as_str()),
            Some("mqtt://a:1883"),
            "the broker stays as it runs"
        );
        assert_eq!(restart, ["log.backend", "mqtt.keep_alive", "mqtt.url"]);
        let (_, none) = merge(&current, &current);
        assert!(none.is_empty());
    }

    #[test]
    fn finds_the_config_of_run_command_lines() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["/usr/bin/tributary"], Some("bridge.yaml")),
            (
                &["tributary", "run", "-c", "/etc/b.yaml"],
                Some("/etc/b.yaml"),
            ),
            (
                &[
                    "./tributary",
                    "--log-format",
                    "json",
                    "run",
                    "--config=x.yaml",
                ],
                Some("x.yaml"),
            ),
            (&["tributary", "-c", "y.yaml"], Some("y.yaml")),
            (&["tributary", "check", "-c", "y.yaml"], None),
            (&["tributary", "reload"], None),
            (&["mosquitto", "-c", "y.yaml"], None),
        ];
        for (line, want) in cases {
            assert_eq!(
                gateway_config(&args(line)),
                want.map(PathBuf::from),
                "{line:?}"
            );
        }
    }
}
