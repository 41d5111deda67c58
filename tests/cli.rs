//! The `tributary` command line, run as a real process (DESIGN.md §3 config, §4 routes, §8 CLI).
//!
//! Every test spawns the built binary with an environment cleared of `TRIBUTARY_*` variables
//! (so the developer's shell cannot change results) in a temporary working directory, and
//! asserts exit codes and exact output: error lines are `<origin>: <key path>: <message>`,
//! where the origin is the config file or `environment <VAR>`.

use serde_json::{json, Value};
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use tempfile::TempDir;
use tributary::route::partition::partition_for_key;

/// The repository's example config.
const BRIDGE_YAML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bridge.yaml");

/// The example of bridging an existing broker (the client face).
const BROKER_YAML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/bridge-broker.yaml");

/// The last line of every invalid-config report with one problem.
const ONE_PROBLEM: &str = "1 problem in the configuration; nothing was started";

/// A process that runs longer than this is killed and the test fails (no test here should
/// need a broker or a network).
const TIMEOUT: Duration = Duration::from_secs(60);

/// Appends a valid route to a YAML literal, for configs whose problem lies elsewhere.
macro_rules! with_route {
    ($yaml:literal) => {
        concat!(
            $yaml,
            "\nroutes:\n",
            "  - name: telemetry\n",
            "    from: devices/{device}/telemetry/{*rest}\n",
            "    to: telemetry\n",
            "    key: \"{device}\"\n",
        )
    };
}

// ---------------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------------

/// What one run of the binary did.
struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}---",
            self.code, self.stdout, self.stderr
        )
    }
}

impl Outcome {
    fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    fn stderr_lines(&self) -> Vec<&str> {
        self.stderr.lines().collect()
    }

    /// Each stdout line parsed as a JSON object (the `route` command's records).
    fn records(&self) -> Vec<serde_json::Map<String, Value>> {
        self.stdout_lines()
            .into_iter()
            .map(|line| match serde_json::from_str(line) {
                Ok(Value::Object(map)) => map,
                other => panic!("stdout line {line:?} is not a JSON object: {other:?}\n{self:?}"),
            })
            .collect()
    }

    /// The one stderr line reporting `path`, as `<origin>: <path>: <message>`; returns the
    /// message.
    fn issue(&self, origin: &str, path: &str) -> &str {
        let prefix = format!("{origin}: {path}: ");
        let found: Vec<&str> = self
            .stderr_lines()
            .into_iter()
            .filter_map(|l| l.strip_prefix(&prefix))
            .collect();
        match found.as_slice() {
            [message] => message,
            _ => panic!("expected one stderr line starting {prefix:?}, found {found:?}\n{self:?}"),
        }
    }

    /// Asserts an invalid-config exit: code 2, nothing on stdout, and stderr made of
    /// `problems` lines naming `origin`, then the count line.
    fn assert_invalid(&self, origin: &str, problems: usize) {
        assert_eq!(self.code, 2, "{self:?}");
        assert_eq!(self.stdout, "", "{self:?}");
        let lines = self.stderr_lines();
        let count = match problems {
            1 => ONE_PROBLEM.to_string(),
            n => format!("{n} problems in the configuration; nothing was started"),
        };
        assert_eq!(lines.len(), problems + 1, "{self:?}");
        assert_eq!(lines[problems], count, "{self:?}");
        for line in &lines[..problems] {
            assert!(
                line.starts_with(&format!("{origin}: ")),
                "line {line:?} does not start with {origin:?}\n{self:?}"
            );
        }
    }
}

/// Runs `tributary ARGS` in `cwd`, with `env` added to this process's environment minus every
/// `TRIBUTARY_*` variable (any case: figment matches the prefix case-insensitively).
fn run_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tributary"));
    cmd.args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, _) in std::env::vars_os() {
        if key
            .to_string_lossy()
            .to_ascii_uppercase()
            .starts_with("TRIBUTARY_")
        {
            cmd.env_remove(&key);
        }
    }
    cmd.envs(env.iter().copied());
    let mut child = cmd.spawn().expect("spawn the tributary binary");
    let stdout = drain(child.stdout.take().expect("piped stdout"));
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for tributary") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tributary {args:?} still running after {TIMEOUT:?}; killed");
        }
        thread::sleep(Duration::from_millis(5));
    };
    let text = |h: thread::JoinHandle<Vec<u8>>, what: &str| {
        String::from_utf8(h.join().expect("pipe reader")).unwrap_or_else(|e| {
            panic!("tributary {args:?} wrote non-UTF-8 to {what}: {e}");
        })
    };
    Outcome {
        code: status
            .code()
            .unwrap_or_else(|| panic!("tributary {args:?} was killed by a signal: {status}")),
        stdout: text(stdout, "stdout"),
        stderr: text(stderr, "stderr"),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut out = Vec::new();
        pipe.read_to_end(&mut out).expect("read a pipe");
        out
    })
}

/// Runs `tributary ARGS` in a fresh empty directory.
fn tributary(args: &[&str], env: &[(&str, &str)]) -> Outcome {
    let cwd = TempDir::new().expect("temp dir");
    run_in(cwd.path(), args, env)
}

/// A config file, `bridge.yaml`, in its own temp directory, which is also the working
/// directory of every run. `@DIR@` in the YAML stands for that directory.
struct TempConfig {
    dir: TempDir,
    path: String,
}

impl TempConfig {
    /// A config file holding `yaml`. One that turns on no MQTT face (its subject is elsewhere)
    /// gets `listener:` with its defaults first, as a config needs a face.
    fn new(yaml: &str) -> TempConfig {
        let dir = TempDir::new().expect("temp dir");
        let path = dir.path().join("bridge.yaml");
        let mut yaml = yaml.replace("@DIR@", &dir.path().display().to_string());
        let has_face = yaml
            .lines()
            .any(|l| l.starts_with("mqtt:") || l.starts_with("listener:"));
        if !has_face {
            yaml = format!("listener:\n{yaml}");
        }
        std::fs::write(&path, yaml).expect("write config");
        TempConfig {
            path: path.display().to_string(),
            dir,
        }
    }

    fn dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    /// Writes a file beside the config (payloads, TLS files) and returns its path.
    fn file(&self, name: &str, contents: &[u8]) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write file");
        path.display().to_string()
    }

    /// `tributary ARGS -c <this config>`.
    fn run(&self, args: &[&str]) -> Outcome {
        self.run_env(args, &[])
    }

    fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let mut all = args.to_vec();
        all.extend(["-c", &self.path]);
        run_in(self.dir.path(), &all, env)
    }
}

/// Writes `yaml` to a temp config and runs `tributary ARGS -c FILE`; returns the config (for
/// its path) and what the run did.
fn with_config(yaml: &str, args: &[&str]) -> (TempConfig, Outcome) {
    let config = TempConfig::new(yaml);
    let out = config.run(args);
    (config, out)
}

/// Asserts that `record` has exactly the dry-run fields, in the order of DESIGN §8.
fn assert_record_shape(record: &serde_json::Map<String, Value>, value_key: &str) {
    let keys: Vec<&str> = record.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["route", "topic", "partition", "key", "headers", value_key],
        "{record:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// check: valid configs
// ---------------------------------------------------------------------------------------------

#[test]
fn check_accepts_the_repository_bridge_yaml() {
    let out = tributary(&["check", "-c", BRIDGE_YAML], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stderr, "", "{out:?}");
    let lines = out.stdout_lines();
    assert_eq!(lines[0], format!("{BRIDGE_YAML}: valid"), "{out:?}");
    assert!(
        lines.contains(
            &"  telemetry: devices/{device}/telemetry/{*rest} -> telemetry (12 partitions), key {device}, qos 1"
        ),
        "{out:?}"
    );
    assert_eq!(
        lines[1],
        "listener: mqtt://127.0.0.1:1883 (MQTT 5 and 3.1.1; anonymous; up to 10000 connections, 1024 in flight each)",
        "{out:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with("mqtt:") || *l == "subscriptions:"),
        "no broker client in the default config\n{out:?}"
    );

    let out = tributary(&["check", "-c", BROKER_YAML], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines = out.stdout_lines();
    assert!(!lines.iter().any(|l| l.starts_with("listener:")), "{out:?}");
    let subs = lines
        .iter()
        .position(|l| *l == "subscriptions:")
        .unwrap_or_else(|| panic!("no subscriptions section\n{out:?}"));
    assert_eq!(
        lines[subs + 1..],
        ["  devices/+/telemetry/# (qos 1)"],
        "{out:?}"
    );
}

#[test]
fn check_wants_an_mqtt_face() {
    let config = TempConfig::new("log: { backend: embedded }\nroutes: [{ from: a, to: t }]");
    std::fs::write(
        &config.path,
        "log: { backend: embedded }\nroutes: [{ from: a, to: t }]",
    )
    .unwrap();
    let out = config.run(&["check"]);
    out.assert_invalid(&config.path, 1);
    assert!(
        out.stderr_lines()[0].ends_with(": no MQTT face is on: add `listener:` (devices connect to Tributary, e.g. listen: 127.0.0.1:1883) or `mqtt:` (subscribe to an existing broker, e.g. url: mqtt://broker:1883)"),
        "{out:?}"
    );
    // Both faces at once, with payload limits that disagree.
    std::fs::write(
        &config.path,
        "mqtt: { max_payload: 2KiB }\nlistener: { max_payload: 4KiB }\nroutes: [{ from: a, to: t }]",
    )
    .unwrap();
    let out = config.run(&["check"]);
    out.assert_invalid(&config.path, 1);
    assert!(
        out.issue(&config.path, "listener.max_payload")
            .starts_with("4KiB differs from mqtt.max_payload 2KiB"),
        "{out:?}"
    );
}

#[test]
fn check_prints_merged_subscriptions_and_qos_notes() {
    // `a` is covered by `#` at the same QoS; `a/+` and `a/{x}` are one filter at QoS
    // max(min(2, 1), 1) = 1; `#` at QoS 0 does not cover `a/+` at QoS 1.
    let (config, out) = with_config(
        r##"
mqtt: {}
routes:
  - { name: t, from: a, to: t, qos: 0 }
  - { name: u, from: a/+, to: t, qos: 2 }
  - { name: v, from: "#", to: t, qos: 0 }
  - { name: w, from: "a/{x}", to: t }
"##,
        &["check"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let lines = out.stdout_lines();
    assert_eq!(lines[0], format!("{}: valid", config.path));
    let subs = lines.iter().position(|l| *l == "subscriptions:").unwrap();
    assert_eq!(
        lines[subs + 1..],
        ["  a/+ (qos 1)", "  # (qos 0)"],
        "{out:?}"
    );
    let routes = lines.iter().position(|l| *l == "routes:").unwrap();
    assert_eq!(
        lines[routes + 1..routes + 4],
        [
            "  t: a -> t (4 partitions), qos 0",
            "    note: qos 0 is lossy: messages are not acked and are lost if Tributary stops",
            "  u: a/+ -> t (4 partitions), qos 2",
        ],
        "{out:?}"
    );
    assert!(
        lines[routes + 4].starts_with("    note: qos 2 is subscribed as qos 1"),
        "{out:?}"
    );
}

#[test]
fn check_prefixes_subscriptions_with_the_shared_group() {
    let (_config, out) = with_config(with_route!("mqtt: { shared_group: grp }"), &["check"]);
    assert_eq!(out.code, 0, "{out:?}");
    let lines = out.stdout_lines();
    let subs = lines.iter().position(|l| *l == "subscriptions:").unwrap();
    assert_eq!(
        lines[subs + 1..],
        ["  $share/grp/devices/+/telemetry/# (qos 1)"],
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// check: invalid configs
// ---------------------------------------------------------------------------------------------

#[test]
fn check_reports_an_unknown_key_and_a_bad_capture_together() {
    let (config, out) = with_config(
        r#"
mqtt:
  url: mqtt://127.0.0.1:1883
  client_idd: tributary
routes:
  - name: telemetry
    from: devices/{device}/telemetry/{*rest}
    to: telemetry
    key: "{devce}"
"#,
        &["check"],
    );
    out.assert_invalid(&config.path, 2);
    assert_eq!(
        out.issue(&config.path, "routes[0].key"),
        "unknown capture {devce}; known: device, rest"
    );
    assert!(
        out.issue(&config.path, "mqtt.client_idd")
            .starts_with("unknown key; did you mean client_id? valid keys here: url, client_id,"),
        "{out:?}"
    );
}

/// One bad value per case: (what, YAML, key path, a phrase of the message). `@DIR@` is the
/// config's directory, which also holds an empty `cert.pem`.
const CONFIG_ERRORS: &[(&str, &str, &str, &str)] = &[
    (
        "url scheme",
        with_route!("mqtt: { url: 'http://broker:1883' }"),
        "mqtt.url",
        "scheme http:// is not supported; expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]",
    ),
    (
        "unknown top-level key",
        with_route!("metrics: { port: 9000 }"),
        "metrics",
        "unknown key; valid keys here: mqtt, listener, log, topics, routes, dead_letter, http",
    ),
    (
        "unknown nested key",
        with_route!("mqtt: { keep_alvie: 30s }"),
        "mqtt.keep_alvie",
        "unknown key; did you mean keep_alive? valid keys here: url, client_id,",
    ),
    (
        "unknown deeply nested key",
        with_route!("log: { embedded: { retention: { tme: 7d } } }"),
        "log.embedded.retention.tme",
        "unknown key; did you mean time? valid keys here: time, bytes",
    ),
    (
        "unknown key in a route",
        "routes: [{ name: t, from: a, to: t, keyy: x }]",
        "routes[0].keyy",
        "unknown key; did you mean key? valid keys here: name, from, qos, to, key, format, headers",
    ),
    (
        "unknown key in a topic",
        with_route!("topics: { telemetry: { partitons: 3 } }"),
        "topics.telemetry.partitons",
        "unknown key; did you mean partitions? valid keys here: partitions",
    ),
    (
        "duration text",
        with_route!("mqtt: { keep_alive: soon }"),
        "mqtt.keep_alive",
        "\"soon\" is not a duration; write a number with a unit, like 5ms, 30s, 1h or 7d",
    ),
    (
        "duration as a bare number",
        with_route!("mqtt: { keep_alive: 30 }"),
        "mqtt.keep_alive",
        "expected a duration with a unit, like 5ms, 30s, 1h or 7d",
    ),
    (
        "size",
        with_route!("mqtt: { max_payload: big }"),
        "mqtt.max_payload",
        "\"big\" is not a size; write a number with a unit, like 512KiB, 128MiB or 1GiB",
    ),
    (
        "qos 3",
        "routes: [{ name: t, from: a/b, to: t, qos: 3 }]",
        "routes[0].qos",
        "QoS 3 does not exist; use 0, 1 or 2",
    ),
    (
        "partitions 0",
        with_route!("topics: { telemetry: { partitions: 0 } }"),
        "topics.telemetry.partitions",
        "0 is out of range; use 1 to 10000",
    ),
    (
        "topic name in `to`",
        "routes: [{ name: t, from: a/b, to: tele/metry }]",
        "routes[0].to",
        "topic name \"tele/metry\" has '/'; Kafka allows letters, digits, '.', '_' and '-'",
    ),
    (
        "dead-letter topic name",
        with_route!("dead_letter: { topic: 'dead letter' }"),
        "dead_letter.topic",
        "topic name \"dead letter\" has ' '",
    ),
    (
        "'#' not last",
        "routes: [{ name: t, from: 'a/#/b', to: t }]",
        "routes[0].from",
        "'#' must be the whole last level (level 1 is \"#\")",
    ),
    (
        "{*rest} not last",
        "routes: [{ name: t, from: 'a/{*rest}/b', to: t }]",
        "routes[0].from",
        "{*rest} captures the rest of the topic, so it must be the last level",
    ),
    (
        "duplicate route names",
        "routes: [{ name: t, from: a/b, to: t }, { name: t, from: c/d, to: t }]",
        "routes[1].name",
        "\"t\" is used by an earlier route; route names must be unique",
    ),
    (
        "missing routes",
        "mqtt: { client_id: x }",
        "routes",
        "at least one route is required",
    ),
    (
        "empty routes",
        "routes: []",
        "routes",
        "at least one route is required",
    ),
    (
        "route without `to`",
        "routes: [{ name: t, from: a/b }]",
        "routes[0]",
        "missing field `to`",
    ),
    (
        "tls file that does not exist",
        with_route!("mqtt: { url: 'mqtts://broker', tls: { ca_file: '@DIR@/missing-ca.pem' } }"),
        "mqtt.tls.ca_file",
        "@DIR@/missing-ca.pem does not exist or is not a file",
    ),
    (
        "cert_file without key_file",
        with_route!("mqtt: { url: 'mqtts://broker', tls: { cert_file: '@DIR@/cert.pem' } }"),
        "mqtt.tls",
        "cert_file and key_file go together (mutual TLS); set both or neither",
    ),
    (
        "format raw with a payload template",
        "routes: [{ name: t, from: 'a/{x}', to: t, format: raw, headers: { site: '{payload.x}' } }]",
        "routes[0].format",
        "raw, but a template reads {payload.…}; use format: json",
    ),
    (
        "{topic.5} past a fixed-level filter",
        "routes: [{ name: t, from: 'a/b/{x}', to: t, key: '{topic.5}' }]",
        "routes[0].key",
        "{topic.5} is past the filter's last level; its topics have 3 levels (0 to 2)",
    ),
    (
        "max_inflight 0",
        with_route!("mqtt: { max_inflight: 0 }"),
        "mqtt.max_inflight",
        "0 is out of range; use 1 to 65535",
    ),
    (
        "shared_group with '/'",
        with_route!("mqtt: { shared_group: 'a/b' }"),
        "mqtt.shared_group",
        "\"a/b\" is not a share name; use a non-empty name without '/', '+' or '#'",
    ),
    (
        "same port for http and the Kafka listener",
        with_route!("http: { listen: '127.0.0.1:9092' }"),
        "http.listen",
        "127.0.0.1:9092 is also log.embedded.kafka_listener; give each its own port",
    ),
    (
        "a Kafka property that breaks the guarantee",
        with_route!("log: { backend: kafka, kafka: { properties: { acks: '1' } } }"),
        "log.kafka.properties.acks",
        "acks other than all can lose acked records; leave it out",
    ),
    (
        "a buffer too small to hold anything",
        with_route!("log: { backend: kafka, kafka: { delivery: buffered, buffer: { max_bytes: 64KiB } } }"),
        "log.kafka.buffer.max_bytes",
        "64KiB is too small; use 1MiB or more",
    ),
    (
        "a transactional id",
        with_route!("log: { backend: kafka, kafka: { properties: { transactional.id: t } } }"),
        "log.kafka.properties.transactional.id",
        "transactions are not supported",
    ),
    (
        "a property librdkafka does not know",
        with_route!("log: { backend: kafka, kafka: { properties: { linger.mss: '5' } } }"),
        "log.kafka.properties.linger.mss",
        "librdkafka refuses it: No such configuration property: \"linger.mss\"",
    ),

];

/// Credentials never reach the output, whether the config is valid or not.
#[test]
fn check_never_prints_kafka_or_mqtt_passwords() {
    for extra in ["", ", acks: '0'"] {
        let yaml = format!(
            "mqtt: {{ username: u, password: hunter2-mqtt }}\n\
             log: {{ backend: kafka, kafka: {{ properties: {{ sasl.username: u, sasl.password: hunter2-sasl, ssl.key.password: hunter2-key{extra} }} }} }}\n\
             routes: [{{ from: a, to: t }}]\n"
        );
        let config = TempConfig::new(&yaml);
        let out = config.run_env(&["check"], &[("TRIBUTARY_MQTT__PASSWORD", "hunter2-env")]);
        assert_eq!(out.code, if extra.is_empty() { 0 } else { 2 }, "{out:?}");
        assert!(!format!("{out:?}").contains("hunter2"), "{out:?}");
    }
}

/// `check` and `run` go through the same preparation: what one refuses, the other does too,
/// with the same words and exit code.
#[test]
fn check_and_run_refuse_the_same_config() {
    let config = TempConfig::new(with_route!(
        "log: { backend: kafka, kafka: { properties: { acks: '0' } } }"
    ));
    let check = config.run(&["check"]);
    let run = config.run(&["run"]);
    assert_eq!(check.code, 2, "{check:?}");
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(check.stderr, run.stderr);
}

#[test]
fn check_reports_each_class_of_config_error_with_its_key_path() {
    for &(what, yaml, path, phrase) in CONFIG_ERRORS {
        let config = TempConfig::new(yaml);
        config.file("cert.pem", b"");
        let out = config.run(&["check"]);
        let phrase = phrase.replace("@DIR@", &config.dir());
        assert_eq!(out.code, 2, "{what}: {out:?}");
        assert_eq!(out.stdout, "", "{what}: {out:?}");
        let lines = out.stderr_lines();
        assert_eq!(
            lines.len(),
            2,
            "{what}: expected one problem and the count line\n{out:?}"
        );
        assert_eq!(lines[1], ONE_PROBLEM, "{what}: {out:?}");
        let message = out.issue(&config.path, path);
        assert!(
            message.contains(&phrase),
            "{what}: {path}: {message:?} lacks {phrase:?}"
        );
    }
}

#[test]
fn check_reports_every_problem_in_one_run() {
    let (config, out) = with_config(
        r#"
mqtt: { url: 'http://x', keep_alive: 30, max_inflight: 0, bogus: 1 }
dead_letter: { topic: 'a b' }
routes: [{ name: t, from: 'a/{x}', to: t, key: '{y}', qos: 7 }]
extra: 1
"#,
        &["check"],
    );
    out.assert_invalid(&config.path, 8);
    let expected = [
        ("mqtt.url", "scheme http:// is not supported"),
        ("mqtt.keep_alive", "expected a duration with a unit"),
        ("mqtt.max_inflight", "0 is out of range"),
        ("mqtt.bogus", "unknown key"),
        ("dead_letter.topic", "topic name \"a b\" has ' '"),
        ("routes[0].qos", "QoS 7 does not exist"),
        ("routes[0].key", "unknown capture {y}; known: x"),
        ("extra", "unknown key"),
    ];
    for (path, phrase) in expected {
        let message = out.issue(&config.path, path);
        assert!(
            message.contains(phrase),
            "{path}: {message:?} lacks {phrase:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// check: environment overrides
// ---------------------------------------------------------------------------------------------

#[test]
fn env_override_changes_the_broker_url() {
    let before = tributary(&["check", "-c", BROKER_YAML], &[]);
    assert!(
        before
            .stdout_lines()
            .contains(&"mqtt: mqtt://127.0.0.1:1883 (MQTT 5, client id \"tributary\", persistent session, max 1024 in flight)"),
        "{before:?}"
    );
    let out = tributary(
        &["check", "-c", BROKER_YAML],
        &[("TRIBUTARY_MQTT__URL", "mqtt://broker.example:1999")],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let lines = out.stdout_lines();
    assert_eq!(lines[0], format!("{BROKER_YAML}: valid"));
    assert!(
        lines.contains(&"mqtt: mqtt://broker.example:1999 (MQTT 5, client id \"tributary\", persistent session, max 1024 in flight)"),
        "{out:?}"
    );
    assert!(!out.stdout.contains("127.0.0.1:1883"), "{out:?}");
}

#[test]
fn env_override_wins_over_the_file() {
    // The file's value is invalid; the environment's replaces it.
    let config = TempConfig::new(with_route!("mqtt: { max_inflight: 0 }"));
    let out = config.run_env(&["check"], &[("TRIBUTARY_MQTT__MAX_INFLIGHT", "100")]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(", max 100 in flight)\n"), "{out:?}");
}

#[test]
fn env_errors_name_the_variable() {
    let out = tributary(
        &["check", "-c", BROKER_YAML],
        &[("TRIBUTARY_MQTT__MAX_INFLIGHT", "0")],
    );
    out.assert_invalid("environment TRIBUTARY_MQTT__MAX_INFLIGHT", 1);
    assert_eq!(
        out.issue(
            "environment TRIBUTARY_MQTT__MAX_INFLIGHT",
            "mqtt.max_inflight"
        ),
        "0 is out of range; use 1 to 65535"
    );

    let out = tributary(
        &["check", "-c", BROKER_YAML],
        &[("TRIBUTARY_MQTT__MAX_INFLGHT", "5")],
    );
    out.assert_invalid("environment TRIBUTARY_MQTT__MAX_INFLGHT", 1);
    assert!(
        out.issue(
            "environment TRIBUTARY_MQTT__MAX_INFLGHT",
            "mqtt.max_inflght"
        )
        .starts_with("unknown key; did you mean max_inflight?"),
        "{out:?}"
    );
}

#[test]
fn env_numeric_strings_are_accepted() {
    let out = tributary(
        &["check", "-c", BROKER_YAML],
        &[("TRIBUTARY_MQTT__PASSWORD", "123456")],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout_lines()[0], format!("{BROKER_YAML}: valid"));
    assert!(
        !out.stdout.contains("123456"),
        "check must not print the password\n{out:?}"
    );

    // MQTT 3.1.1 needs a username with a password; a numeric one is text too, and the
    // version arrives as a number.
    let out = tributary(
        &["check", "-c", BROKER_YAML],
        &[
            ("TRIBUTARY_MQTT__VERSION", "3"),
            ("TRIBUTARY_MQTT__USERNAME", "4242"),
            ("TRIBUTARY_MQTT__PASSWORD", "123456"),
        ],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains(" (MQTT 3.1.1, "), "{out:?}");
}

#[test]
fn env_text_values_keep_their_exact_text() {
    // A password or client id like 007 must reach the broker as written.
    for value in ["007", "1.50", "+5"] {
        let out = tributary(
            &["check", "-c", BROKER_YAML],
            &[("TRIBUTARY_MQTT__CLIENT_ID", value)],
        );
        assert_eq!(out.code, 0, "{out:?}");
        assert!(
            out.stdout.contains(&format!("client id \"{value}\",")),
            "{value}: {out:?}"
        );
    }
}

#[test]
fn lowercase_env_var_errors_are_not_blamed_on_the_file() {
    let out = tributary(
        &["check", "-c", BROKER_YAML],
        &[("tributary_mqtt__max_inflight", "0")],
    );
    match out.code {
        // Either the variable is ignored (DESIGN names TRIBUTARY_)...
        0 => assert!(out.stdout.contains(", max 1024 in flight)"), "{out:?}"),
        // ...or its error names it.
        2 => assert!(
            out.stderr_lines()[0].starts_with("environment ")
                && out.stderr_lines()[0].contains(": mqtt.max_inflight: "),
            "{out:?}"
        ),
        _ => panic!("{out:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Unreadable configs
// ---------------------------------------------------------------------------------------------

#[test]
fn missing_config_file_exits_2_naming_it() {
    let cwd = TempDir::new().unwrap();
    let missing = cwd.path().join("nope.yaml").display().to_string();
    for args in [
        vec!["check", "-c", missing.as_str()],
        vec!["route", "a/b", "-c", missing.as_str()],
    ] {
        let out = run_in(cwd.path(), &args, &[]);
        assert_eq!(out.code, 2, "{out:?}");
        assert_eq!(out.stdout, "", "{out:?}");
        assert!(
            out.stderr_lines()[0].starts_with(&format!("{missing}: no such file")),
            "{out:?}"
        );
    }
    // The default is ./bridge.yaml in the working directory.
    let out = run_in(cwd.path(), &["check"], &[]);
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stderr.starts_with("bridge.yaml: no such file"),
        "{out:?}"
    );
}

#[test]
fn invalid_yaml_exits_2_naming_the_file() {
    for yaml in ["mqtt: [\n", "routes: {from: a\n", "- just\n- a list\n"] {
        let (config, out) = with_config(yaml, &["check"]);
        assert_eq!(out.code, 2, "{yaml:?}: {out:?}");
        assert_eq!(out.stdout, "", "{yaml:?}: {out:?}");
        assert!(
            out.stderr.starts_with(&format!("{}: ", config.path)),
            "{yaml:?}: {out:?}"
        );
    }
}

#[test]
fn duplicate_yaml_keys_are_rejected() {
    // YAML requires unique keys; here the first `routes` would silently vanish.
    let (config, out) = with_config(
        r#"
routes: [{ name: a, from: a/b, to: a }]
routes: [{ name: b, from: c/d, to: b }]
"#,
        &["check"],
    );
    assert_eq!(out.code, 2, "{out:?}");
    assert_eq!(out.stdout, "", "{out:?}");
    let first = out.stderr_lines()[0];
    assert!(
        first.starts_with(&format!("{}: ", config.path)) && first.contains("routes"),
        "{out:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// route: the dry run
// ---------------------------------------------------------------------------------------------

#[test]
fn route_prints_one_record_for_the_bridge_yaml() {
    let payload = r#"{"site":"s1"}"#;
    let out = tributary(
        &[
            "route",
            "devices/d1/telemetry/temp",
            "--payload",
            payload,
            "-c",
            BRIDGE_YAML,
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stderr, "", "{out:?}");
    let records = out.records();
    assert_eq!(records.len(), 1, "{out:?}");
    let r = &records[0];
    assert_record_shape(r, "value");
    assert_eq!(r["route"], "telemetry");
    assert_eq!(r["topic"], "telemetry");
    assert_eq!(r["key"], "d1");
    let headers: Vec<(&str, &Value)> = r["headers"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    assert_eq!(
        headers,
        [
            ("mqtt.topic", &json!("devices/d1/telemetry/temp")),
            ("mqtt.qos", &json!("1")),
            ("mqtt.retain", &json!("false")),
        ]
    );
    assert_eq!(r["value"], payload);
    // Kafka's partitioner: (murmur2("d1") & 0x7fffffff) % 12; murmur2("d1") is 1393188025.
    assert_eq!(r["partition"], partition_for_key(b"d1", 12));
    assert_eq!(r["partition"], 1);
}

#[test]
fn route_fans_out_in_route_order() {
    // The trie meets the literal `d1` level before `+`; the output still follows the file.
    let (_config, out) = with_config(
        r#"
topics: { wide: { partitions: 3 } }
routes:
  - { name: wild, from: "devices/+/x", to: wide, key: "{topic.1}" }
  - { name: other, from: "devices/+/y", to: wide }
  - { name: exact, from: devices/d1/x, to: narrow, key: "{topic.1}" }
"#,
        &["route", "devices/d1/x", "--payload", "v"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let records = out.records();
    let summary: Vec<(&Value, &Value, &Value)> = records
        .iter()
        .map(|r| (&r["route"], &r["topic"], &r["partition"]))
        .collect();
    assert_eq!(
        summary,
        [
            (
                &json!("wild"),
                &json!("wide"),
                &json!(partition_for_key(b"d1", 3))
            ),
            (
                &json!("exact"),
                &json!("narrow"),
                &json!(partition_for_key(b"d1", 4))
            ),
        ],
        "{out:?}"
    );
    for r in &records {
        assert_eq!(r["key"], "d1");
        assert_eq!(r["value"], "v");
    }
}

#[test]
fn route_with_no_matching_route_prints_nothing() {
    let out = tributary(
        &[
            "route",
            "sensors/s1/status",
            "--payload",
            "x",
            "-c",
            BRIDGE_YAML,
        ],
        &[],
    );
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout, "", "{out:?}");
}

#[test]
fn route_rest_capture_fills_templates() {
    let yaml = r#"
routes:
  - name: dyn
    from: devices/{device}/telemetry/{*rest}
    to: "t-{device}"
    key: "{device}:{*rest}"
    headers: { rest: "{rest}", level: "{topic.2}" }
"#;
    let config = TempConfig::new(yaml);
    let cases = [
        ("devices/d1/telemetry/a/b", "d1:a/b", "a/b"),
        ("devices/d1/telemetry/ab", "d1:ab", "ab"),
        // `{*rest}` matches the parent level too, capturing nothing.
        ("devices/d1/telemetry", "d1:", ""),
    ];
    for (topic, key, rest) in cases {
        let out = config.run(&["route", topic, "--payload", "p"]);
        assert_eq!(out.code, 0, "{out:?}");
        let records = out.records();
        assert_eq!(records.len(), 1, "{topic}: {out:?}");
        let r = &records[0];
        assert_eq!(r["topic"], "t-d1", "{topic}");
        assert_eq!(r["key"], key, "{topic}");
        assert_eq!(
            r["partition"],
            partition_for_key(key.as_bytes(), 4),
            "{topic}"
        );
        assert_eq!(r["headers"]["rest"], rest, "{topic}");
        assert_eq!(r["headers"]["level"], "telemetry", "{topic}");
        assert_eq!(r["headers"]["mqtt.topic"], topic, "{topic}");
    }
}

#[test]
fn route_payload_field_fills_a_header() {
    let (_config, out) = with_config(
        r#"routes: [{ name: s, from: "sites/{id}", to: sites, headers: { site: "{payload.site}" } }]"#,
        &["route", "sites/x", "--payload", r#"{"site":"s9"}"#],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let records = out.records();
    assert_eq!(records.len(), 1, "{out:?}");
    assert_eq!(records[0]["topic"], "sites");
    assert_eq!(records[0]["headers"]["site"], "s9");
}

/// One message that a route cannot turn into a record.
struct DeadLetterCase {
    what: &'static str,
    yaml: &'static str,
    /// MQTT topic of the message.
    topic: &'static str,
    payload: &'static [u8],
    /// The route the dead letter names.
    route: &'static str,
    /// How its `error` header starts.
    error: &'static str,
    /// Its value.
    value: &'static [u8],
}

const DEAD_LETTERS: &[DeadLetterCase] = &[
    DeadLetterCase {
        what: "invalid JSON for a json route",
        yaml: r#"routes: [{ name: j, from: "devices/{d}", to: t, format: json }]"#,
        topic: "devices/d1",
        payload: b"not json",
        route: "j",
        error: "invalid JSON",
        value: b"not json",
    },
    DeadLetterCase {
        what: "payload field missing",
        yaml: r#"routes: [{ name: s, from: "sites/{id}", to: sites, headers: { site: "{payload.site}" } }]"#,
        topic: "sites/x",
        payload: br#"{"other":1}"#,
        route: "s",
        error: "payload has no field site",
        value: br#"{"other":1}"#,
    },
    DeadLetterCase {
        what: "payload field null",
        yaml: r#"routes: [{ name: s, from: "sites/{id}", to: sites, key: "{payload.site}" }]"#,
        topic: "sites/x",
        payload: br#"{"site":null}"#,
        route: "s",
        error: "payload has no field site",
        value: br#"{"site":null}"#,
    },
    DeadLetterCase {
        what: "`to` template makes an illegal topic",
        yaml: r#"routes: [{ name: r, from: "a/{*rest}", to: "t-{rest}" }]"#,
        topic: "a/b/c",
        payload: b"p",
        route: "r",
        error: "route's to template made an illegal topic: topic name \"t-b/c\" has '/'",
        value: b"p",
    },
];

#[test]
fn route_makes_dead_letters_with_error_and_route_headers() {
    for case in DEAD_LETTERS {
        let DeadLetterCase {
            what,
            yaml,
            topic,
            payload,
            route,
            error,
            value,
        } = *case;
        let config = TempConfig::new(&format!("{yaml}\ndead_letter: {{ topic: dlq }}\n"));
        let file = config.file("payload", payload);
        let out = config.run(&["route", topic, "--payload-file", &file]);
        assert_eq!(out.code, 0, "{what}: {out:?}");
        let records = out.records();
        assert_eq!(records.len(), 1, "{what}: {out:?}");
        let r = &records[0];
        assert_record_shape(r, "value");
        assert_eq!(r["route"], route, "{what}");
        assert_eq!(r["topic"], "dlq", "{what}");
        assert_eq!(r["key"], Value::Null, "{what}");
        assert!(r["partition"].as_u64().unwrap() < 4, "{what}: {r:?}");
        let headers = r["headers"].as_object().unwrap();
        let names: Vec<&str> = headers.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["mqtt.topic", "mqtt.qos", "mqtt.retain", "error", "route"],
            "{what}"
        );
        assert_eq!(headers["mqtt.topic"], topic, "{what}");
        assert_eq!(headers["route"], route, "{what}");
        let got = headers["error"].as_str().unwrap();
        assert!(got.starts_with(error), "{what}: error {got:?}");
        assert_eq!(r["value"], std::str::from_utf8(value).unwrap(), "{what}");
    }
}

#[test]
fn route_invalid_json_dead_letters_only_the_json_route() {
    // One message, two routes: the raw route still gets its record.
    let (_config, out) = with_config(
        r#"
routes:
  - { name: j, from: "devices/{d}/t", to: parsed, key: "{d}", format: json }
  - { name: r, from: "devices/+/t", to: raw, key: "{topic.1}" }
"#,
        &["route", "devices/d1/t", "--payload", "nope"],
    );
    assert_eq!(out.code, 0, "{out:?}");
    let records = out.records();
    let topics: Vec<(&Value, &Value)> =
        records.iter().map(|r| (&r["route"], &r["topic"])).collect();
    assert_eq!(
        topics,
        [
            (&json!("j"), &json!("tributary.dead-letter")),
            (&json!("r"), &json!("raw")),
        ],
        "{out:?}"
    );
    assert!(records[0]["headers"]["error"]
        .as_str()
        .unwrap()
        .starts_with("invalid JSON"));
    assert_eq!(records[0]["headers"]["route"], "j");
    assert_eq!(records[1]["value"], "nope");
}

#[test]
fn route_oversized_payload_is_cut_to_1kib_in_a_dead_letter() {
    let config = TempConfig::new(
        r#"
mqtt: { max_payload: 1KiB }
routes: [{ name: bin, from: "bin/{id}", to: bin, key: "{id}" }]
"#,
    );
    let payload: Vec<u8> = (0..5000u32).map(|i| b'a' + (i % 26) as u8).collect();

    let big = config.file("big", &payload);
    let out = config.run(&["route", "bin/x", "--payload-file", &big]);
    assert_eq!(out.code, 0, "{out:?}");
    let records = out.records();
    assert_eq!(records.len(), 1, "{out:?}");
    let r = &records[0];
    assert_eq!(r["topic"], "tributary.dead-letter");
    assert_eq!(r["route"], "bin");
    assert_eq!(r["key"], Value::Null);
    assert_eq!(r["headers"]["route"], "bin");
    assert_eq!(
        r["headers"]["error"],
        "payload is 5000 bytes, over mqtt.max_payload (1024 bytes); value cut to its first 1024 bytes"
    );
    assert_eq!(r["value"], std::str::from_utf8(&payload[..1024]).unwrap());

    // Exactly at the limit is fine.
    let limit = config.file("limit", &payload[..1024]);
    let out = config.run(&["route", "bin/x", "--payload-file", &limit]);
    let records = out.records();
    assert_eq!(records.len(), 1, "{out:?}");
    assert_eq!(records[0]["topic"], "bin");
    assert_eq!(
        records[0]["value"],
        std::str::from_utf8(&payload[..1024]).unwrap()
    );
}

#[test]
fn route_non_utf8_value_is_base64() {
    let config = TempConfig::new(r#"routes: [{ name: bin, from: "bin/{id}", to: bin }]"#);
    let file = config.file("payload", &[0xff, 0xfe]);
    let out = config.run(&["route", "bin/x", "--payload-file", &file]);
    assert_eq!(out.code, 0, "{out:?}");
    let records = out.records();
    assert_eq!(records.len(), 1, "{out:?}");
    assert_record_shape(&records[0], "value_b64");
    assert_eq!(records[0]["value_b64"], "//4=");
    assert_eq!(records[0]["topic"], "bin");
    assert_eq!(records[0]["key"], Value::Null);
}

#[test]
fn route_without_payload_has_an_empty_value() {
    let out = tributary(&["route", "devices/d1/telemetry", "-c", BRIDGE_YAML], &[]);
    assert_eq!(out.code, 0, "{out:?}");
    let records = out.records();
    assert_eq!(records.len(), 1, "{out:?}");
    assert_eq!(records[0]["value"], "");
}

#[test]
fn route_rejects_topics_no_publisher_can_send() {
    // MQTT 3.1.1 §4.7.1/§4.7.3: a topic name has no '+' or '#' and is at least one character.
    for topic in ["devices/+/telemetry/x", "devices/d1/telemetry/#", ""] {
        let out = tributary(&["route", topic, "--payload", "x", "-c", BRIDGE_YAML], &[]);
        assert_eq!(out.code, 2, "{topic:?}: {out:?}");
        assert_eq!(out.stdout, "", "{topic:?}: {out:?}");
        assert_ne!(out.stderr, "", "{topic:?}: {out:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// Commands not built yet, and usage errors
// ---------------------------------------------------------------------------------------------

#[test]
fn bad_usage_exits_2() {
    let cases: &[&[&str]] = &[
        &["bogus"],
        &["check", "--no-such-flag"],
        &["route"],
        &["route", "a/b", "--payload", "x", "--payload-file", "f"],
        &["consume"],
    ];
    for &args in cases {
        let mut args = args.to_vec();
        args.extend(["-c", BRIDGE_YAML]);
        let out = tributary(&args, &[]);
        assert_eq!(out.code, 2, "{args:?}: {out:?}");
        assert_eq!(out.stdout, "", "{args:?}: {out:?}");
        assert!(out.stderr.starts_with("error: "), "{args:?}: {out:?}");
    }
}
