//! Test support: a real Mosquitto per test on a free port, the real `tributary` binary, an
//! MQTT publisher, reading back what the gateway stored, and `require`: the one way a test
//! finds a program it runs beside the gateway. Shared by the MQTT and Kafka API test files.
#![allow(dead_code)]
pub mod kafka;
pub mod kafka_read;

use bytes::Bytes;
use std::collections::BTreeMap;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use tributary::log::{batch, LogReader, Offset};

pub const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 20 ms until it returns true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// The program `name` (on PATH, or a path), for a test to run. A test whose peer is missing
/// fails here with the command that installs it (`install`); it never passes by skipping.
/// `scripts/test` installs every peer before it runs the tests.
#[track_caller]
pub fn require(name: &str, install: &str) -> PathBuf {
    match find_program(name) {
        Some(path) => path,
        None => panic!("{name} not found: run scripts/test, or {install}"),
    }
}

fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let path = PathBuf::from(name);
        return runnable(&path).then_some(path);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| runnable(p))
}

/// The Python interpreter the tests run (`TRIBUTARY_PYTHON`, a virtualenv's say; default
/// `python3`), once every `(module, PyPI package)` imports in it; else fails with the command
/// that installs what is missing.
#[track_caller]
pub fn require_python(modules: &[(&str, &str)]) -> PathBuf {
    let name = std::env::var("TRIBUTARY_PYTHON").unwrap_or_else(|_| "python3".into());
    let python = require(&name, "apt-get install -y python3 python3-pip");
    let missing: Vec<&str> = modules
        .iter()
        .filter(|(module, _)| {
            !Command::new(&python)
                .args(["-c", &format!("import {module}")])
                // Cargo's LD_LIBRARY_PATH leads to rdkafka-sys's librdkafka: the Python
                // clients load their own.
                .env_remove("LD_LIBRARY_PATH")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, package)| *package)
        .collect();
    assert!(
        missing.is_empty(),
        "Python packages {missing:?} not found for {name}: run scripts/test, or {name} -m pip install {}",
        missing.join(" ")
    );
    python
}

/// Sends `sig` (libc::SIGTERM, ...) to the process `pid`.
pub fn signal_pid(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers; a process gone already only gives ESRCH.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    signal_pid(child.id(), sig);
}

/// A Mosquitto broker on a free loopback port, configured for lossless tests
/// (`max_queued_messages 0`), stopped when dropped.
pub struct Mosquitto {
    pub port: u16,
    child: Option<Child>,
    pub dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// With extra lines for mosquitto.conf (listener options, persistence, TLS files...).
    pub fn start_with(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = format!(
            "user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_queued_messages 0\nmax_inflight_messages 0\npersistence_location {}/\n{extra}\n",
            dir.path().display()
        );
        std::fs::write(dir.path().join("mosquitto.conf"), conf).unwrap();
        let mut m = Mosquitto {
            port,
            child: None,
            dir,
        };
        m.spawn();
        m
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("mosquitto.log"))
            .unwrap();
        let child = Command::new(require("mosquitto", "apt-get install -y mosquitto"))
            .arg("-c")
            .arg(self.dir.path().join("mosquitto.conf"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("mosquitto starts");
        self.child = Some(child);
        let port = self.port;
        assert!(
            wait_until(Duration::from_secs(10), || std::net::TcpStream::connect((
                "127.0.0.1",
                port
            ))
            .is_ok()),
            "mosquitto did not start"
        );
    }

    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// Stops with SIGTERM (Mosquitto saves its persistence file then) and waits.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGTERM);
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with the same config.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The `tributary` binary running `run` with a config in its own temp dir.
pub struct Gateway {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    starts: usize,
}

impl Gateway {
    /// `yaml` may say `DATA_DIR` where the log directory goes.
    pub fn new(yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let yaml = yaml.replace("DATA_DIR", &dir.path().join("data").display().to_string());
        std::fs::write(dir.path().join("bridge.yaml"), yaml).unwrap();
        Gateway {
            dir,
            child: None,
            starts: 0,
        }
    }

    /// A config for the broker at `url` with `routes` (YAML list items) and extra `mqtt` keys.
    pub fn config(url: &str, client_id: &str, mqtt_extra: &str, routes: &str) -> String {
        format!(
            "mqtt: {{ url: \"{url}\", client_id: {client_id}, keep_alive: 5s {mqtt_extra} }}\n\
             log: {{ embedded: {{ dir: DATA_DIR, fsync_interval: 2ms, kafka_listener: null }} }}\n\
             topics: {{ default: {{ partitions: 3 }} }}\n\
             http: {{ listen: null }}\n\
             routes:\n{routes}\n"
        )
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("bridge.yaml")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("gateway-{}.log", self.starts))
    }

    /// Starts `tributary run` and waits until it has subscribed (its log says it connected).
    pub fn start(&mut self) {
        self.spawn();
        let path = self.log_path();
        let ok = wait_until(Duration::from_secs(15), || {
            std::fs::read_to_string(&path)
                .unwrap_or_default()
                .contains("MQTT connected")
        });
        assert!(ok, "gateway did not connect:\n{}", self.log());
        // The SUBSCRIBE goes out right after the CONNACK.
        std::thread::sleep(Duration::from_millis(200));
    }

    /// Starts `tributary run` without waiting for anything.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        self.starts += 1;
        let log = std::fs::File::create(self.log_path()).unwrap();
        let child = Command::new(BIN)
            .args(["run", "-c"])
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .env_remove("TRIBUTARY_MQTT__URL")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL: no drain, no clean shutdown.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit (at most 30 s).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "gateway did not exit after SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the process to exit by itself (at most `limit`).
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Everything the gateway has logged, over every start.
    pub fn log(&self) -> String {
        let mut all = String::new();
        for i in 1..=self.starts {
            let mut s = String::new();
            if let Ok(mut f) = std::fs::File::open(self.dir.path().join(format!("gateway-{i}.log")))
            {
                let _ = f.read_to_string(&mut s);
            }
            all.push_str(&format!("--- start {i} ---\n{s}"));
        }
        all
    }

    /// Every record stored in `topic`, by partition (read-only: works while running).
    pub fn records(&self, topic: &str) -> BTreeMap<u32, Vec<Stored>> {
        read_topic(&self.data_dir(), topic)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A record read back from the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub offset: u64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<(String, String)>,
}

impl Stored {
    pub fn header(&self, key: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
    pub fn value_str(&self) -> &str {
        std::str::from_utf8(&self.value).unwrap()
    }
}

/// Every record of `topic` in the log at `dir`; empty when the topic does not exist yet.
pub fn read_topic(dir: &Path, topic: &str) -> BTreeMap<u32, Vec<Stored>> {
    let mut out = BTreeMap::new();
    let Ok(reader) = LogReader::open(dir) else {
        return out;
    };
    let Some(&partitions) = reader.topic_names().get(topic) else {
        return out;
    };
    for p in 0..partitions {
        let part = reader.partition(topic, p).unwrap();
        let mut records = Vec::new();
        let mut offset = part.start_offset().0;
        loop {
            let bytes = part.read(Offset(offset), 1 << 20).unwrap();
            if bytes.is_empty() {
                break;
            }
            for item in batch::batches(&bytes) {
                let (h, whole) = item.unwrap();
                for r in batch::decode(whole).unwrap().records {
                    if r.offset as u64 >= offset {
                        records.push(Stored {
                            offset: r.offset as u64,
                            timestamp_ms: r.timestamp_ms,
                            key: r.key,
                            value: r.value.unwrap_or_default(),
                            headers: r
                                .headers
                                .into_iter()
                                .map(|h| {
                                    (
                                        h.key,
                                        String::from_utf8_lossy(&h.value.unwrap_or_default())
                                            .into_owned(),
                                    )
                                })
                                .collect(),
                        });
                    }
                }
                offset = offset.max(h.next_offset() as u64);
            }
        }
        out.insert(p, records);
    }
    out
}

/// Publishes every `(topic, payload)` at `qos` with MQTT 5 through rumqttc and waits until the
/// broker has acknowledged all of them (QoS 1) or they are written (QoS 0).
pub async fn publish(port: u16, client_id: &str, qos: u8, messages: Vec<(String, Vec<u8>)>) {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(30));
    options.set_outgoing_inflight_upper_limit(100);
    let (client, mut eventloop) = AsyncClient::new(options, 1000);
    let total = messages.len();
    let qos = if qos == 0 {
        QoS::AtMostOnce
    } else {
        QoS::AtLeastOnce
    };
    let sender = tokio::spawn(async move {
        for (topic, payload) in messages {
            client.publish(topic, qos, false, payload).await.unwrap();
        }
        client
    });
    let mut acked = 0;
    let mut sent = 0;
    while (qos == QoS::AtLeastOnce && acked < total) || (qos == QoS::AtMostOnce && sent < total) {
        match tokio::time::timeout(Duration::from_secs(30), eventloop.poll())
            .await
            .expect("publisher stalled")
            .unwrap()
        {
            Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(_)) => acked += 1,
            Event::Outgoing(rumqttc::Outgoing::Publish(_)) => sent += 1,
            _ => {}
        }
    }
    let client = sender.await.unwrap();
    let _ = client.disconnect().await;
    // Let the DISCONNECT (and any QoS 0 bytes) go out.
    for _ in 0..5 {
        if tokio::time::timeout(Duration::from_millis(200), eventloop.poll())
            .await
            .is_err()
        {
            break;
        }
    }
}

/// How many records `topic` holds now (end minus start offset of each partition), without
/// decoding them. 0 while the log or topic does not exist; a partition whose directory is not
/// there yet (the topic is being created: its `topic.json` comes first) counts as empty.
pub fn count_records(dir: &Path, topic: &str) -> usize {
    let Ok(reader) = LogReader::open(dir) else {
        return 0;
    };
    let Some(&partitions) = reader.topic_names().get(topic) else {
        return 0;
    };
    (0..partitions)
        .map(|p| match reader.partition(topic, p) {
            Ok(part) => (part.end_offset().0 - part.start_offset().0) as usize,
            Err(_) if !dir.join(topic).join(p.to_string()).is_dir() => 0,
            Err(e) => panic!("{topic}/{p}: {e}"),
        })
        .sum()
}
