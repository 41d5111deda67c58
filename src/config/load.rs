//! Reading the config: figment merges the YAML file and the environment, then each section is
//! deserialized on its own so one run reports every unknown key and bad value, not the first.

use super::{
    validate, BufferConfig, Config, DeadLetterConfig, EgressRouteConfig, EmbeddedConfig,
    HttpConfig, KafkaAuthConfig, KafkaConfig, KafkaTlsConfig, ListenerAuthConfig, ListenerConfig,
    ListenerTlsConfig, LogConfig, MqttConfig, RetentionConfig, RouteConfig, TlsConfig, TopicConfig,
};
use figment::providers::{Format, Serialized, Yaml};
use figment::Figment;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::fmt;
use std::path::Path;
use thiserror::Error;

/// The prefix of configuration environment variables; `__` separates nested keys.
pub const ENV_PREFIX: &str = "TRIBUTARY_";

/// One problem with the configuration: where, and what would be valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Key path, like `routes[1].key`; empty for the document itself.
    pub path: String,
    pub message: String,
}

impl Issue {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Issue {
            path: path.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file is missing or is not YAML.
    #[error("{file}: {reason}")]
    Unreadable { file: String, reason: String },
    /// The file parsed, and these keys are wrong.
    #[error("{}", render_issues(file, issues))]
    Invalid { file: String, issues: Vec<Issue> },
}

impl ConfigError {
    /// The issues found in `file` (the composition root's checks come back this way too).
    pub fn invalid(file: impl Into<String>, issues: Vec<Issue>) -> Self {
        ConfigError::Invalid {
            file: file.into(),
            issues,
        }
    }
}

fn render_issues(file: &str, issues: &[Issue]) -> String {
    let lines: Vec<String> = issues
        .iter()
        .map(|i| match (origin(file, &i.path), i.path.is_empty()) {
            (origin, true) => format!("{origin}: {}", i.message),
            (origin, false) => format!("{origin}: {}: {}", i.path, i.message),
        })
        .collect();
    lines.join("\n")
}

/// Where a key's value came from: its environment variable when one is set, else the file.
fn origin(file: &str, path: &str) -> String {
    std::env::vars()
        .find(|(name, _)| env_key(name).as_deref() == Some(path))
        .map_or_else(
            || file.to_string(),
            |(name, _)| format!("environment {name}"),
        )
}

/// The config key a variable sets: `TRIBUTARY_MQTT__URL` sets `mqtt.url`.
fn env_key(name: &str) -> Option<String> {
    let key = name.strip_prefix(ENV_PREFIX)?;
    Some(key.split("__").collect::<Vec<_>>().join(".").to_lowercase())
}

/// Loads `path` merged with `TRIBUTARY_*` environment variables, with the checks config can
/// make alone.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_checked(path, |_| Vec::new())
}

/// As [`load`], adding the issues `check` finds in a config that parsed: the checks that need
/// other modules' rules (routes, topic names), which the composition root brings, so that one
/// run reports every problem.
pub fn load_checked(
    path: &Path,
    check: impl FnOnce(&Config) -> Vec<Issue>,
) -> Result<Config, ConfigError> {
    let file = path.display().to_string();
    let unreadable = |reason: String| ConfigError::Unreadable {
        file: file.clone(),
        reason,
    };
    if !path.is_file() {
        return Err(unreadable(
            "no such file; pass --config FILE, or start from the bridge.yaml in the repository"
                .into(),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| unreadable(e.to_string()))?;
    // figment keeps the last of two equal keys; serde_yaml's own mapping refuses duplicates.
    serde_yaml::from_str::<serde_yaml::Value>(&text).map_err(|e| unreadable(e.to_string()))?;
    load_figment_checked(
        &file,
        with_env(Figment::new().merge(Yaml::string(&text)), std::env::vars()),
        check,
    )
}

/// Merges `TRIBUTARY_A__B=v` variables over `figment` as key `a.b`, each value as its exact
/// text: fields parse it (figment's own `Env` would turn `007` into the number 7).
pub fn with_env(mut figment: Figment, vars: impl IntoIterator<Item = (String, String)>) -> Figment {
    for (name, value) in vars {
        if let Some(key) = env_key(&name) {
            figment = figment.merge(Serialized::default(&key, value));
        }
    }
    figment
}

/// Validates the configuration `figment` holds; `file` names it in messages.
pub fn load_figment(file: &str, figment: Figment) -> Result<Config, ConfigError> {
    load_figment_checked(file, figment, |_| Vec::new())
}

/// As [`load_figment`], adding the issues `check` finds (see [`load_checked`]).
pub fn load_figment_checked(
    file: &str,
    figment: Figment,
    check: impl FnOnce(&Config) -> Vec<Issue>,
) -> Result<Config, ConfigError> {
    let root: Value = figment.extract().map_err(|e| ConfigError::Unreadable {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    let mut issues = Vec::new();
    let config = sections(root, &mut issues).inspect(|config| {
        validate::check(config, &mut issues);
        issues.extend(check(config));
    });
    match config {
        Some(config) if issues.is_empty() => Ok(config),
        _ => Err(ConfigError::invalid(file, issues)),
    }
}

const TOP_KEYS: &[&str] = &[
    "mqtt",
    "listener",
    "log",
    "topics",
    "routes",
    "dead_letter",
    "http",
];

/// Deserializes each section apart; `None` when the document is not a mapping at all.
/// Routes that fail are left out; each kept one knows its index in the file.
fn sections(root: Value, issues: &mut Vec<Issue>) -> Option<Config> {
    let mut root = match root {
        Value::Object(map) => map,
        Value::Null => Map::new(),
        other => {
            issues.push(Issue::new(
                "",
                format!(
                    "expected a mapping of sections ({}), found {other}",
                    TOP_KEYS.join(", ")
                ),
            ));
            return None;
        }
    };
    let mut config = Config {
        mqtt: optional_section(&mut root, "mqtt", issues),
        listener: optional_section(&mut root, "listener", issues),
        log: section(&mut root, "log", issues),
        topics: section(&mut root, "topics", issues),
        dead_letter: section(&mut root, "dead_letter", issues),
        http: section(&mut root, "http", issues),
        routes: Vec::new(),
        egress: Vec::new(),
    };
    match root.remove("egress") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let path = format!("egress[{i}]");
                if let Some(route) = deserialize::<EgressRouteConfig>(&path, item, issues) {
                    config.egress.push(EgressRouteConfig { index: i, ..route });
                }
            }
        }
        Some(other) => issues.push(Issue::new(
            "egress",
            format!("expected a list of egress routes, found {other}"),
        )),
    }
    match root.remove("routes") {
        None | Some(Value::Null) => issues.push(Issue::new(
            "routes",
            "at least one route is required, e.g. [{from: \"devices/{device}/telemetry\", to: telemetry, key: \"{device}\"}]",
        )),
        Some(Value::Array(items)) if items.is_empty() => {
            issues.push(Issue::new("routes", "at least one route is required"))
        }
        Some(Value::Array(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let path = format!("routes[{i}]");
                if let Some(route) = deserialize::<RouteConfig>(&path, item, issues) {
                    config.routes.push(RouteConfig { index: i, ..route });
                }
            }
        }
        Some(other) => issues.push(Issue::new("routes", format!("expected a list of routes, found {other}"))),
    }
    for key in root.keys() {
        issues.push(unknown_key("", key));
    }
    Some(config)
}

fn section<T: DeserializeOwned + Default>(
    root: &mut Map<String, Value>,
    key: &str,
    issues: &mut Vec<Issue>,
) -> T {
    match root.remove(key) {
        None | Some(Value::Null) => T::default(),
        Some(value) => deserialize(key, value, issues).unwrap_or_default(),
    }
}

/// A section that switches a part on by being present; `key:` with nothing under it turns
/// it on with its defaults.
fn optional_section<T: DeserializeOwned + Default>(
    root: &mut Map<String, Value>,
    key: &str,
    issues: &mut Vec<Issue>,
) -> Option<T> {
    match root.remove(key)? {
        Value::Null => Some(T::default()),
        value => Some(deserialize(key, value, issues).unwrap_or_default()),
    }
}

/// Deserializes `value` found at `path`, recording every unknown key and every bad value: after
/// a bad value, the key is dropped (its default applies) and the rest is read again, so one
/// run reports them all.
fn deserialize<T: DeserializeOwned>(
    path: &str,
    mut value: Value,
    issues: &mut Vec<Issue>,
) -> Option<T> {
    loop {
        let mut unknown = Vec::new();
        let mut on_ignored = |p: serde_ignored::Path<'_>| unknown.push(ignored_path(&p));
        let de = serde_ignored::Deserializer::new(value.clone(), &mut on_ignored);
        let result: Result<T, _> = serde_path_to_error::deserialize(de);
        let retry = match &result {
            Ok(_) => false,
            Err(e) => {
                let at = e.path().to_string();
                let at = if at == "." { String::new() } else { at };
                issues.push(Issue::new(join(path, &at), e.inner().to_string()));
                remove_at(&mut value, e.path())
            }
        };
        if !retry {
            issues.extend(
                unknown
                    .into_iter()
                    .map(|(parent, key)| unknown_key(&join(path, &parent), &key)),
            );
            return result.ok();
        }
    }
}

/// Removes the map entry at `path`; false when the path does not end in a map key.
fn remove_at(value: &mut Value, path: &serde_path_to_error::Path) -> bool {
    use serde_path_to_error::Segment;
    let segments: Vec<&Segment> = path.iter().collect();
    let Some((Segment::Map { key }, parents)) = segments.split_last() else {
        return false;
    };
    let mut node = value;
    for segment in parents {
        node = match (segment, node) {
            (Segment::Map { key }, Value::Object(map)) => match map.get_mut(key) {
                Some(v) => v,
                None => return false,
            },
            (Segment::Seq { index }, Value::Array(items)) => match items.get_mut(*index) {
                Some(v) => v,
                None => return false,
            },
            _ => return false,
        };
    }
    match node {
        Value::Object(map) => map.remove(key).is_some(),
        _ => false,
    }
}

fn join(parent: &str, child: &str) -> String {
    match (parent.is_empty(), child.is_empty()) {
        (_, true) => parent.to_string(),
        (true, false) => child.to_string(),
        (false, false) if child.starts_with('[') => format!("{parent}{child}"),
        (false, false) => format!("{parent}.{child}"),
    }
}

/// Splits an ignored key's path into (parent path, key).
fn ignored_path(p: &serde_ignored::Path<'_>) -> (String, String) {
    fn render(p: &serde_ignored::Path<'_>) -> String {
        use serde_ignored::Path::*;
        match p {
            Root => String::new(),
            Seq { parent, index } => format!("{}[{index}]", render(parent)),
            Map { parent, key } => join(&render(parent), key),
            Some { parent } | NewtypeStruct { parent } | NewtypeVariant { parent } => {
                render(parent)
            }
        }
    }
    match p {
        serde_ignored::Path::Map { parent, key } => (render(parent), key.clone()),
        other => (render(other), String::new()),
    }
}

fn unknown_key(parent: &str, key: &str) -> Issue {
    let path = join(parent, key);
    let Some(valid) = valid_keys(parent) else {
        return Issue::new(path, "unknown key");
    };
    let mut message = format!("unknown key; valid keys here: {}", valid.join(", "));
    if let Some(best) = valid
        .iter()
        .map(|v| (strsim::jaro_winkler(key, v), v))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
    {
        message = format!(
            "unknown key; did you mean {}? valid keys here: {}",
            best.1,
            valid.join(", ")
        );
    }
    Issue::new(path, message)
}

/// The keys a mapping at `parent` accepts, read from the config structs themselves.
fn valid_keys(parent: &str) -> Option<&'static [&'static str]> {
    let shape: String = parent
        .split('[')
        .map(|s| s.split_once(']').map_or(s, |(_, rest)| rest))
        .collect::<Vec<_>>()
        .join("[]");
    Some(match shape.as_str() {
        "" => TOP_KEYS,
        "mqtt" => fields::<MqttConfig>(),
        "mqtt.tls" => fields::<TlsConfig>(),
        "listener" => fields::<ListenerConfig>(),
        "listener.tls" => fields::<ListenerTlsConfig>(),
        "listener.auth" => fields::<ListenerAuthConfig>(),
        "log" => fields::<LogConfig>(),
        "log.embedded" => fields::<EmbeddedConfig>(),
        "log.embedded.retention" => fields::<RetentionConfig>(),
        "log.embedded.kafka_auth" => fields::<KafkaAuthConfig>(),
        "log.embedded.kafka_tls" => fields::<KafkaTlsConfig>(),
        "log.kafka" => fields::<KafkaConfig>(),
        "log.kafka.buffer" => fields::<BufferConfig>(),
        "routes[]" => fields::<RouteConfig>(),
        "egress[]" => fields::<EgressRouteConfig>(),
        "dead_letter" => fields::<DeadLetterConfig>(),
        "http" => fields::<HttpConfig>(),
        s if s.starts_with("topics.") && !s["topics.".len()..].contains('.') => {
            fields::<TopicConfig>()
        }
        _ => return None,
    })
}

/// The field names serde derives for a struct, learned by asking it to deserialize.
fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    use serde::de::{self, Visitor};
    struct Probe<'a>(&'a mut &'static [&'static str]);
    impl<'de> de::Deserializer<'de> for Probe<'_> {
        type Error = de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("probed"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Probe(&mut fields));
    fields
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}
