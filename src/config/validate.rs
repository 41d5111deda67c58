//! Checks that need more than types and nothing beyond the config: ranges, URLs, files, and
//! listeners that clash. Routes, topic names and the log's limits are other modules' rules:
//! the composition root (`app::check`) checks those.

use super::{
    Backend, Config, FsyncPolicy, Issue, KafkaDelivery, ListenerConfig, MqttConfig, MqttVersion,
    Qos,
};
use std::net::SocketAddr;
use std::time::Duration;

/// Appends every issue in `config`.
pub fn check(config: &Config, issues: &mut Vec<Issue>) {
    match (&config.mqtt, &config.listener) {
        (None, None) => issues.push(Issue::new(
            "",
            "no MQTT face is on: add `listener:` (devices connect to Tributary, e.g. listen: 127.0.0.1:1883) or `mqtt:` (subscribe to an existing broker, e.g. url: mqtt://broker:1883)",
        )),
        (Some(m), Some(l)) if m.max_payload != l.max_payload => issues.push(Issue::new(
            "listener.max_payload",
            format!(
                "{} differs from mqtt.max_payload {}; with both faces on, one limit applies to every message: set them equal",
                l.max_payload, m.max_payload
            ),
        )),
        _ => {}
    }
    if let Some(m) = &config.mqtt {
        mqtt(m, issues);
    }
    if let Some(l) = &config.listener {
        listener(l, issues);
    }
    log(config, issues);
    topics(config, issues);
    egress(config, issues);
    listeners_apart(config, issues);
}

fn egress(config: &Config, issues: &mut Vec<Issue>) {
    let mut names = std::collections::BTreeSet::new();
    for route in &config.egress {
        let at = |key: &str| format!("egress[{}].{key}", route.index);
        if route.qos == Qos::ExactlyOnce {
            issues.push(Issue::new(
                at("qos"),
                "egress publishes at QoS 0 or 1 (at-least-once to devices); use 1",
            ));
        }
        if route.from.is_empty() {
            issues.push(Issue::new(
                at("from"),
                "name the log topic to read, e.g. commands",
            ));
        }
        if !names.insert(route.name()) {
            issues.push(Issue::new(at("name"), format!("{:?} is the name of an earlier egress route; each needs its own (it names the committed positions)", route.name())));
        }
    }
}

/// Every socket Tributary listens on needs its own address.
fn listeners_apart(config: &Config, issues: &mut Vec<Issue>) {
    let mut taken: Vec<(&str, SocketAddr)> = Vec::new();
    let listener = config.listener.as_ref();
    let embedded = config.log.backend == Backend::Embedded;
    for (key, addr) in [
        ("listener.listen", listener.and_then(|l| l.listen)),
        ("listener.tls.listen", listener.and_then(|l| l.tls.listen)),
        (
            "log.embedded.kafka_listener",
            config.log.embedded.kafka_listener.filter(|_| embedded),
        ),
        ("http.listen", config.http.listen),
    ] {
        let Some(addr) = addr else { continue };
        match taken.iter().find(|(_, a)| *a == addr) {
            Some((other, _)) => issues.push(Issue::new(
                key,
                format!("{addr} is also {other}; give each its own port"),
            )),
            None => taken.push((key, addr)),
        }
    }
}

fn listener(l: &ListenerConfig, issues: &mut Vec<Issue>) {
    let mut push = |key: &str, msg: String| issues.push(Issue::new(format!("listener.{key}"), msg));
    if l.listen.is_none() && l.tls.listen.is_none() {
        push(
            "listen",
            "is null and tls.listen is not set: the listener would accept nothing; set listen (e.g. 127.0.0.1:1883) or tls.listen (e.g. 0.0.0.0:8883)".into(),
        );
    }
    let tls = &l.tls;
    for (key, file) in [
        ("tls.cert_file", &tls.cert_file),
        ("tls.key_file", &tls.key_file),
        ("tls.client_ca_file", &tls.client_ca_file),
        ("auth.users_file", &l.auth.users_file),
    ] {
        if let Some(path) = file {
            if !path.is_file() {
                push(
                    key,
                    format!("{} does not exist or is not a file", path.display()),
                );
            }
        }
    }
    match tls.listen {
        Some(_) if tls.cert_file.is_none() || tls.key_file.is_none() => push(
            "tls",
            "tls.listen needs cert_file and key_file (the server's certificate chain and key, PEM)".into(),
        ),
        None if tls.cert_file.is_some() || tls.key_file.is_some() || tls.client_ca_file.is_some() => push(
            "tls.listen",
            "TLS files are set but tls.listen is not: set it (e.g. 0.0.0.0:8883) or remove the files".into(),
        ),
        _ => {}
    }
    if !l.auth.allow_anonymous && l.auth.users_file.is_none() {
        push(
            "auth.users_file",
            "allow_anonymous is false, so CONNECT needs a user from users_file: set it (lines from `tributary passwd USER`)".into(),
        );
    }
    if l.max_connections == 0 {
        push("max_connections", "must be at least 1".into());
    }
    if l.max_inflight == 0 || l.max_inflight > 65_535 {
        push(
            "max_inflight",
            format!("{} is out of range; use 1 to 65535", l.max_inflight),
        );
    }
    if l.session_expiry_max.0 > Duration::from_secs(u64::from(u32::MAX)) {
        push(
            "session_expiry_max",
            format!(
                "{} is over MQTT's limit of {}s",
                l.session_expiry_max,
                u32::MAX
            ),
        );
    }
}

fn mqtt(m: &MqttConfig, issues: &mut Vec<Issue>) {
    let mut push = |key: &str, msg: String| issues.push(Issue::new(format!("mqtt.{key}"), msg));
    let tls_url = match MqttEndpoint::parse(&m.url) {
        Ok(endpoint) => Some(endpoint.tls),
        Err(e) => {
            push("url", e);
            None
        }
    };
    if m.client_id.is_empty() {
        push(
            "client_id",
            "cannot be empty: a persistent session needs a stable client id".into(),
        );
    } else if m.client_id.len() > 65_535 {
        push("client_id", "is longer than MQTT's 65535 bytes".into());
    }
    let keep_alive = m.keep_alive.0;
    if keep_alive < Duration::from_secs(1) || keep_alive > Duration::from_secs(65_535) {
        push(
            "keep_alive",
            format!("{} is out of range; use 1s to 18h (65535s)", m.keep_alive),
        );
    }
    if m.session_expiry.0 > Duration::from_secs(u64::from(u32::MAX)) {
        push(
            "session_expiry",
            format!("{} is over MQTT's limit of {}s", m.session_expiry, u32::MAX),
        );
    }
    if m.max_inflight == 0 || m.max_inflight > 65_535 {
        push(
            "max_inflight",
            format!("{} is out of range; use 1 to 65535", m.max_inflight),
        );
    }
    // max_payload's range is the log's (a record fits one batch): `app::check` checks it.
    if let Some(group) = &m.shared_group {
        if group.is_empty() || group.contains(['/', '+', '#']) {
            push("shared_group", format!("{group:?} is not a share name; use a non-empty name without '/', '+' or '#', e.g. tributary"));
        }
    }
    if m.password.is_some() && m.username.is_none() && m.version == MqttVersion::V3 {
        push(
            "password",
            "MQTT 3.1.1 sends a password only with a username; set mqtt.username too".into(),
        );
    }
    let tls = &m.tls;
    for (key, file) in [
        ("tls.ca_file", &tls.ca_file),
        ("tls.cert_file", &tls.cert_file),
        ("tls.key_file", &tls.key_file),
    ] {
        if let Some(path) = file {
            if !path.is_file() {
                push(
                    key,
                    format!("{} does not exist or is not a file", path.display()),
                );
            }
        }
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        push(
            "tls",
            "cert_file and key_file go together (mutual TLS); set both or neither".into(),
        );
    }
    if tls.is_set() && tls_url == Some(false) {
        push(
            "tls",
            format!(
                "TLS files are set but the url {} is plain MQTT; use mqtts://",
                m.url
            ),
        );
    }
}

/// Where the broker is, as `mqtt.url` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttEndpoint {
    pub host: String,
    pub port: u16,
    pub tls: bool,
}

impl MqttEndpoint {
    /// Parses `mqtt://host[:port]` (port 1883) or `mqtts://host[:port]` (port 8883).
    pub fn parse(raw: &str) -> Result<MqttEndpoint, String> {
        let expected =
            "expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT], e.g. mqtt://127.0.0.1:1883";
        // Quoted in errors without any credentials it may hold.
        let shown = without_userinfo(raw);
        let url = url::Url::parse(raw)
            .map_err(|e| format!("{shown:?} is not a URL ({e}); {expected}"))?;
        let (tls, default_port) = match url.scheme() {
            "mqtt" | "tcp" => (false, 1883),
            "mqtts" | "ssl" => (true, 8883),
            other => return Err(format!("scheme {other}:// is not supported; {expected}")),
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => return Err(format!("{shown:?} has no host; {expected}")),
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err("credentials do not belong in the url; set mqtt.username and mqtt.password (TRIBUTARY_MQTT__PASSWORD)".into());
        }
        if !(url.path().is_empty() || url.path() == "/")
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(format!("{shown:?} has a path or query; {expected}"));
        }
        Ok(MqttEndpoint {
            host,
            port: url.port().unwrap_or(default_port),
            tls,
        })
    }
}

/// `raw` with whatever stands before an `@` in its authority (`user:password@`) replaced by
/// `***@`, so that an error quoting a URL never prints a password.
fn without_userinfo(raw: &str) -> String {
    let Some((scheme, rest)) = raw.split_once("://") else {
        return raw.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{scheme}://***{}", &rest[at..]),
        None => raw.to_string(),
    }
}

fn log(config: &Config, issues: &mut Vec<Issue>) {
    let e = &config.log.embedded;
    let mut push = |key: &str, msg: String| issues.push(Issue::new(format!("log.{key}"), msg));
    if e.dir.as_os_str().is_empty() {
        push("embedded.dir", "cannot be empty; e.g. ./data".into());
    }
    if e.segment_bytes.0 < 1024 || e.segment_bytes.0 > 1 << 31 {
        push(
            "embedded.segment_bytes",
            format!("{} is out of range; use 1KiB to 2GiB", e.segment_bytes),
        );
    }
    if e.fsync == FsyncPolicy::Interval
        && (e.fsync_interval.0.is_zero() || e.fsync_interval.0 > Duration::from_secs(10))
    {
        push(
            "embedded.fsync_interval",
            format!(
                "{} is out of range; use 1ms to 10s (acks wait for it), or fsync: always",
                e.fsync_interval
            ),
        );
    }
    if let Err(why) = e.advertised() {
        push("embedded.kafka_advertised", why);
    }
    let files = [
        e.kafka_auth
            .as_ref()
            .map(|a| ("kafka_auth.users_file", &a.users_file)),
        e.kafka_tls
            .as_ref()
            .map(|t| ("kafka_tls.cert_file", &t.cert_file)),
        e.kafka_tls
            .as_ref()
            .map(|t| ("kafka_tls.key_file", &t.key_file)),
        e.kafka_tls
            .as_ref()
            .and_then(|t| Some(("kafka_tls.client_ca_file", t.client_ca_file.as_ref()?))),
    ];
    for (key, path) in files.into_iter().flatten() {
        if !path.is_file() {
            push(
                &format!("embedded.{key}"),
                format!("{} does not exist or is not a file", path.display()),
            );
        }
    }
    if e.retention.time.is_some_and(|t| t.0.is_zero()) {
        push(
            "embedded.retention.time",
            "must be above zero; null keeps records forever".into(),
        );
    }
    if e.retention.bytes.is_some_and(|b| b.0 == 0) {
        push(
            "embedded.retention.bytes",
            "must be above zero; null sets no size limit".into(),
        );
    }
    if config.log.backend == Backend::Kafka {
        let servers = &config.log.kafka.bootstrap_servers;
        let bad: Vec<&str> = servers
            .split(',')
            .map(str::trim)
            .filter(|s| {
                s.rsplit_once(':')
                    .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            })
            .collect();
        if servers.trim().is_empty() || !bad.is_empty() {
            push(
                "kafka.bootstrap_servers",
                format!("{servers:?} is not a list of HOST:PORT; e.g. kafka-1:9092,kafka-2:9092"),
            );
        }
        let k = &config.log.kafka;
        if k.delivery == KafkaDelivery::Buffered {
            if k.buffer.dir.as_os_str().is_empty() {
                push("kafka.buffer.dir", "cannot be empty; e.g. ./spool".into());
            }
            if k.buffer.max_bytes.0 < 1 << 20 {
                push(
                    "kafka.buffer.max_bytes",
                    format!("{} is too small; use 1MiB or more", k.buffer.max_bytes),
                );
            }
        }
        for (key, value) in &k.properties {
            // What keeps the guarantee is not the user's to change (DESIGN §5).
            let why = match key.as_str() {
                "acks" | "request.required.acks" if !matches!(value.trim(), "all" | "-1") => Some(
                    "acks other than all can lose acked records; leave it out (Tributary sets acks=all)",
                ),
                "transactional.id" => Some(
                    "transactions are not supported: Tributary acks per message, not per transaction; remove it",
                ),
                _ => None,
            };
            if let Some(why) = why {
                push(&format!("kafka.properties.{key}"), why.into());
            }
        }
    }
}

fn topics(config: &Config, issues: &mut Vec<Issue>) {
    const MAX_PARTITIONS: u32 = 10_000;
    let entries = std::iter::once(("default", &config.topics.default))
        .chain(config.topics.topics.iter().map(|(k, v)| (k.as_str(), v)));
    for (name, topic) in entries {
        if topic.partitions == 0 || topic.partitions > MAX_PARTITIONS {
            issues.push(Issue::new(
                format!("topics.{name}.partitions"),
                format!(
                    "{} is out of range; use 1 to {MAX_PARTITIONS}",
                    topic.partitions
                ),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mqtt_endpoints() {
        let ok = [
            ("mqtt://127.0.0.1:1883", "127.0.0.1", 1883, false),
            ("mqtt://broker", "broker", 1883, false),
            ("mqtts://broker.example", "broker.example", 8883, true),
            ("mqtts://[::1]:9999", "::1", 9999, true),
        ];
        for (raw, host, port, tls) in ok {
            assert_eq!(
                MqttEndpoint::parse(raw),
                Ok(MqttEndpoint {
                    host: host.into(),
                    port,
                    tls
                }),
                "{raw}"
            );
        }
        let bad = [
            ("http://broker", "scheme http:// is not supported"),
            ("broker:1883", "scheme broker:// is not supported"),
            ("mqtt://", "has no host"),
            ("mqtt://u:p@broker", "credentials do not belong"),
            ("mqtt://broker/x", "has a path"),
            ("mqtt://broker:99999", "is not a URL"),
        ];
        for (raw, why) in bad {
            let err = MqttEndpoint::parse(raw).unwrap_err();
            assert!(err.contains(why), "{raw}: {err}");
        }
    }

    #[test]
    fn errors_quote_a_url_without_its_credentials() {
        for (raw, why) in [
            ("mqtt://u:s3cret@broker:99999", "is not a URL"),
            ("mqtt://u:s3cret@", "empty host"),
            ("mqtt://u:s3cret@broker:1 2", "is not a URL"),
        ] {
            let err = MqttEndpoint::parse(raw).unwrap_err();
            assert!(err.contains(why), "{raw}: {err}");
            assert!(!err.contains("s3cret"), "{raw}: {err}");
            assert!(err.contains("\"mqtt://***@"), "{raw}: {err}");
        }
        assert_eq!(without_userinfo("mqtt://broker/a@b"), "mqtt://broker/a@b");
        assert_eq!(without_userinfo("not a url"), "not a url");
    }
}
