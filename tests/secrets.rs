//! No secret is ever printed: the real binary, given an MQTT password by environment and SASL
//! and key passwords in the YAML's Kafka properties, prints none of them in `check` (valid or
//! not), in `run`'s logs (text and JSON, at trace level), in its errors, or on `/metrics` and
//! `/readyz`; and with `--log-format json` every line it writes to stderr parses as JSON.

mod support;

use rdkafka::mocking::MockCluster;
use serde_json::Value;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Mosquitto, BIN};

const MQTT_SECRET: &str = "mqtt-pw-5ecr3t";
const SASL_SECRET: &str = "sasl-pw-5ecr3t";
const KEY_SECRET: &str = "key-pw-5ecr3t";
const SECRETS: [&str; 3] = [MQTT_SECRET, SASL_SECRET, KEY_SECRET];

/// What one run of the binary printed.
#[derive(Debug)]
struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    #[track_caller]
    fn assert_no_secret(&self, what: &str) {
        for secret in SECRETS {
            assert!(
                !self.stdout.contains(secret) && !self.stderr.contains(secret),
                "{what}: {secret} printed:\n{self:#?}"
            );
        }
    }

    /// Every stderr line parses as a JSON object; returns them.
    #[track_caller]
    fn json_lines(&self, what: &str) -> Vec<Value> {
        self.stderr
            .lines()
            .map(|line| match serde_json::from_str::<Value>(line) {
                Ok(v) if v.is_object() => v,
                _ => panic!("{what}: not a JSON object: {line:?}\n{self:#?}"),
            })
            .collect()
    }
}

fn yaml(mqtt_url: &str, backend: &str, kafka: &str, data: &Path, http: &str) -> String {
    format!(
        "mqtt: {{ url: \"{mqtt_url}\", client_id: gw-secrets, username: tributary, keep_alive: 5s }}\n\
         log:\n  backend: {backend}\n  embedded: {{ dir: \"{}\", kafka_listener: null }}\n  kafka:\n    bootstrap_servers: \"{kafka}\"\n    properties:\n      security.protocol: SASL_PLAINTEXT\n      sasl.mechanism: PLAIN\n      sasl.username: svc\n      sasl.password: {SASL_SECRET}\n      ssl.key.password: {KEY_SECRET}\n\
         topics: {{ default: {{ partitions: 2 }} }}\n\
         http: {{ listen: {http} }}\n\
         routes:\n  - {{ name: telemetry, from: \"devices/{{device}}/telemetry\", to: telemetry, key: \"{{device}}\" }}\n",
        data.display()
    )
}

/// The binary with `args`, the config `yaml`, the MQTT password in the environment and
/// `RUST_LOG=trace`. `run_for`: let it run that long, then SIGTERM (SIGKILL 20 s later).
fn tributary(
    dir: &Path,
    yaml: &str,
    args: &[&str],
    env: &[(&str, &str)],
    run_for: Option<Duration>,
) -> Output {
    let config = dir.join("bridge.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut command = Command::new(BIN);
    command
        .args(args)
        .arg("-c")
        .arg(&config)
        .env("TRIBUTARY_MQTT__PASSWORD", MQTT_SECRET)
        .env("RUST_LOG", "trace")
        .env_remove("TRIBUTARY_MQTT__URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().unwrap();
    // Read both pipes on threads so that neither fills up.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let stderr = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    if let Some(wait) = run_for {
        std::thread::sleep(wait);
        support::signal_pid(child.id(), libc::SIGTERM);
        let exited = support::wait_until(Duration::from_secs(20), || {
            child.try_wait().unwrap().is_some()
        });
        if !exited {
            let _ = child.kill();
        }
    }
    let status = child.wait().unwrap();
    Output {
        code: status.code(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// `GET path` over plain TCP: the whole response.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn check_prints_no_secret_valid_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let valid = yaml(
        "mqtt://127.0.0.1:1883",
        "kafka",
        "127.0.0.1:9092",
        &data,
        "null",
    );
    for format in ["text", "json"] {
        let out = tributary(
            dir.path(),
            &valid,
            &["check", "--log-format", format],
            &[],
            None,
        );
        assert_eq!(out.code, Some(0), "{out:#?}");
        assert!(out.stdout.contains(": valid"), "{out:#?}");
        out.assert_no_secret(&format!("check --log-format {format}"));
    }

    // Invalid in ways whose errors sit next to the secrets: credentials in the URL, a
    // misspelt password variable, a misspelt SASL property with a secret value.
    let url_with_credentials = yaml(
        &format!("mqtt://user:{MQTT_SECRET}@broker:99999"),
        "kafka",
        "127.0.0.1:9092",
        &data,
        "null",
    );
    let misspelt_property = valid.replace("sasl.password:", "sasl.passwd:");
    let misspelt_variable = [("TRIBUTARY_MQTT__PASWORD", MQTT_SECRET)];
    let cases = [
        ("credentials in mqtt.url", &url_with_credentials, &[][..]),
        (
            "a misspelt password variable",
            &valid,
            &misspelt_variable[..],
        ),
        ("a misspelt SASL property", &misspelt_property, &[][..]),
    ];
    for (what, yaml, env) in cases {
        for format in ["text", "json"] {
            let out = tributary(
                dir.path(),
                yaml,
                &["check", "--log-format", format],
                env,
                None,
            );
            assert_eq!(out.code, Some(2), "{what}: {out:#?}");
            out.assert_no_secret(&format!("check, {what}, {format}"));
            if format == "json" {
                let lines = out.json_lines(what);
                assert!(
                    lines.iter().all(|l| l["level"] == "ERROR"),
                    "{what}: {lines:?}"
                );
            }
        }
    }
}

/// `run` on the embedded log, connected to a real Mosquitto with the password, scraped, then
/// stopped: nothing secret in the text or JSON logs (at trace level) or on the endpoint.
#[test]
fn run_prints_no_secret_and_json_logs_parse() {
    let broker = Mosquitto::start();
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let http = format!("127.0.0.1:{}", support::free_port());
        let yaml = yaml(
            &broker.url(),
            "embedded",
            "127.0.0.1:9092",
            &dir.path().join("data"),
            &format!("\"{http}\""),
        );
        let scrape = {
            let http = http.clone();
            std::thread::spawn(move || {
                let up = support::wait_until(Duration::from_secs(10), || {
                    std::net::TcpStream::connect(&http).is_ok()
                });
                assert!(up, "the endpoint never listened");
                let ready = support::wait_until(Duration::from_secs(10), || {
                    http_get(&http, "/readyz").starts_with("HTTP/1.1 200")
                });
                let metrics = http_get(&http, "/metrics");
                (ready, metrics + &http_get(&http, "/readyz"))
            })
        };
        let out = tributary(
            dir.path(),
            &yaml,
            &["run", "--log-format", format],
            &[],
            Some(Duration::from_secs(4)),
        );
        let (ready, scraped) = scrape.join().unwrap();
        assert!(ready, "never ready: {scraped}\n{out:#?}");
        assert_eq!(out.code, Some(0), "{out:#?}");
        assert!(out.stderr.contains("MQTT connected"), "{out:#?}");
        out.assert_no_secret(&format!("run --log-format {format}"));
        for secret in SECRETS {
            assert!(!scraped.contains(secret), "{scraped}");
        }
        if format == "json" {
            let lines = out.json_lines("run --log-format json");
            assert!(lines.len() >= 3, "{out:#?}");
            assert!(
                lines
                    .iter()
                    .all(|l| l["level"].is_string() && l["timestamp"].is_string()),
                "{lines:?}"
            );
        }
    }
}

/// `run` on the Kafka backend, with the SASL properties, against a Kafka (rdkafka's mock
/// cluster) that does not take them: the warnings it logs while Kafka does not answer (after
/// 10 s of asking) name no secret, and are JSON.
#[test]
fn run_on_kafka_prints_no_secret() {
    let broker = Mosquitto::start();
    let kafka = MockCluster::new(1).expect("mock cluster");
    let dir = tempfile::tempdir().unwrap();
    let yaml = yaml(
        &broker.url(),
        "kafka",
        &kafka.bootstrap_servers(),
        &dir.path().join("data"),
        "null",
    );
    let out = tributary(
        dir.path(),
        &yaml,
        &["run", "--log-format", "json"],
        &[],
        Some(Duration::from_secs(13)),
    );
    assert!(out.stderr.contains("Kafka does not answer yet"), "{out:#?}");
    out.assert_no_secret("run on Kafka");
    out.json_lines("run on Kafka, --log-format json");
}
