//! What every test here uses: the gateway with an MQTT listener and the embedded log's Kafka
//! listener (with the security keys under test), the records it stored, the real clients
//! (rdkafka, kcat, the Python clients through client.py) set up for each security protocol,
//! and commands run with a time limit.

use crate::support::{self, Gateway};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a call that should succeed may take.
pub const CALL: Duration = Duration::from_secs(10);
/// How long a client that should fail is given (its message and socket timeouts).
pub const FAIL_MS: u64 = 3000;

/// MQTT devices' telemetry, one log topic.
pub const ROUTES: &str = "routes:\n  \
  - { name: telemetry, from: \"devices/{device}/telemetry\", to: telemetry, key: \"{device}\" }\n";

/// `tributary run` with the MQTT listener and the Kafka listener, each on a free loopback port.
pub struct Face {
    pub gw: Gateway,
    pub mqtt: u16,
    pub kafka: u16,
}

/// The whole config; `embedded`: more `log.embedded` keys, each after a comma.
pub fn config(mqtt: u16, kafka_listener: &str, embedded: &str) -> String {
    format!(
        "listener: {{ listen: \"127.0.0.1:{mqtt}\" }}\n\
         log: {{ embedded: {{ dir: DATA_DIR, fsync_interval: 2ms, kafka_listener: \"{kafka_listener}\"{embedded} }} }}\n\
         topics: {{ default: {{ partitions: 2 }} }}\n\
         http: {{ listen: null }}\n{ROUTES}"
    )
}

impl Face {
    pub fn start(embedded: &str) -> Face {
        let (mqtt, kafka) = (support::free_port(), support::free_port());
        let mut gw = Gateway::new(&config(mqtt, &format!("127.0.0.1:{kafka}"), embedded));
        gw.spawn();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if gw.log().contains("tributary running")
                && TcpStream::connect(("127.0.0.1", kafka)).is_ok()
            {
                break;
            }
            if let Some(status) = gw.wait_exit(Duration::from_millis(50)) {
                panic!("gateway exited ({status}) before running:\n{}", gw.log());
            }
            assert!(
                Instant::now() < deadline,
                "gateway not running after 20 s:\n{}",
                gw.log()
            );
        }
        Face { gw, mqtt, kafka }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka)
    }

    /// Every record stored in `topic`, sorted by partition and offset.
    pub fn recs(&self, topic: &str) -> Vec<Rec> {
        let mut all: Vec<Rec> = self
            .gw
            .records(topic)
            .into_iter()
            .flat_map(|(p, records)| {
                records.into_iter().map(move |r| Rec {
                    partition: p as i32,
                    offset: r.offset as i64,
                    value: r.value_str().to_string(),
                    key: r.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
                    headers: r.headers,
                })
            })
            .collect();
        all.sort();
        all
    }

    pub fn count(&self, topic: &str) -> usize {
        support::count_records(&self.gw.data_dir(), topic)
    }

    /// The topics the log holds.
    pub fn topics(&self) -> Vec<String> {
        let mut names: Vec<String> = tributary::log::LogReader::open(&self.gw.data_dir())
            .map(|r| r.topic_names().keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }

    /// The process is still running and nothing in it panicked.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.gw.wait_exit(Duration::from_millis(1)) {
            panic!("the gateway exited ({status}):\n{}", self.gw.log());
        }
        assert!(
            !self.gw.log().contains("panicked"),
            "a task panicked:\n{}",
            self.gw.log()
        );
    }
}

/// A record as stored or as consumed (text keys, values and headers: the tests write text).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rec {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: String,
    pub headers: Vec<(String, String)>,
}

impl Rec {
    /// What a producer sent for it.
    pub fn sent(&self) -> Sent {
        Sent {
            key: self.key.clone().unwrap_or_default(),
            value: self.value.clone(),
            headers: self.headers.clone(),
        }
    }
}

/// A record to produce.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sent {
    pub key: String,
    pub value: String,
    pub headers: Vec<(String, String)>,
}

/// `n` records tagged `tag`: keys k0..k2, values `tag-i`, a header `seq: i` and one naming the
/// tag.
pub fn batch(tag: &str, n: usize) -> Vec<Sent> {
    (0..n)
        .map(|i| Sent {
            key: format!("k{}", i % 3),
            value: format!("{tag}-{i}"),
            headers: vec![("seq".into(), i.to_string()), ("by".into(), tag.into())],
        })
        .collect()
}

/// The records stored are exactly `sent` (each once, nothing else), and each key's records
/// are in the order sent (one key, one partition).
#[track_caller]
pub fn assert_exact(stored: &[Rec], sent: &[Sent], what: &str) {
    let mut got: Vec<Sent> = stored.iter().map(Rec::sent).collect();
    got.sort();
    let mut want = sent.to_vec();
    want.sort();
    assert_eq!(got, want, "{what}: the records stored");
    let mut by_key: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for r in stored {
        by_key
            .entry(r.key.as_deref().unwrap_or_default())
            .or_default()
            .push(&r.value);
    }
    for (key, values) in by_key {
        let partitions: HashSet<i32> = stored
            .iter()
            .filter(|r| r.key.as_deref() == Some(key))
            .map(|r| r.partition)
            .collect();
        assert_eq!(partitions.len(), 1, "{what}: key {key} in one partition");
        let order: Vec<&str> = sent
            .iter()
            .filter(|s| s.key == key)
            .map(|s| s.value.as_str())
            .collect();
        assert_eq!(values, order, "{what}: key {key} in the order sent");
    }
}

/// How a client connects: TLS (a CA to trust, maybe a certificate of its own) and SASL.
#[derive(Debug, Clone, Default)]
pub struct Client {
    pub ca: Option<String>,
    pub cert: Option<(String, String)>,
    pub sasl: Option<(String, String, String)>,
}

impl Client {
    /// Plain text, no SASL.
    pub fn plain() -> Client {
        Client::default()
    }

    pub fn sasl(mechanism: &str, user: &str, password: &str) -> Client {
        Client::default().with_sasl(mechanism, user, password)
    }

    pub fn tls(ca: &str) -> Client {
        Client {
            ca: Some(ca.into()),
            ..Client::default()
        }
    }

    pub fn with_sasl(mut self, mechanism: &str, user: &str, password: &str) -> Client {
        self.sasl = Some((mechanism.into(), user.into(), password.into()));
        self
    }

    pub fn with_cert(mut self, cert: &str, key: &str) -> Client {
        self.cert = Some((cert.into(), key.into()));
        self
    }

    pub fn protocol(&self) -> &'static str {
        match (self.ca.is_some(), self.sasl.is_some()) {
            (false, false) => "PLAINTEXT",
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        }
    }

    /// librdkafka's settings: for rdkafka, kcat (`-X`) and confluent-kafka.
    pub fn librdkafka(&self) -> Vec<(String, String)> {
        let mut p = vec![("security.protocol".to_string(), self.protocol().to_string())];
        if let Some(ca) = &self.ca {
            p.push(("ssl.ca.location".into(), ca.clone()));
        }
        if let Some((cert, key)) = &self.cert {
            p.push(("ssl.certificate.location".into(), cert.clone()));
            p.push(("ssl.key.location".into(), key.clone()));
        }
        if let Some((mechanism, user, password)) = &self.sasl {
            p.push(("sasl.mechanisms".into(), mechanism.clone()));
            p.push(("sasl.username".into(), user.clone()));
            p.push(("sasl.password".into(), password.clone()));
        }
        p
    }

    /// kafka-python's keyword arguments.
    pub fn kafka_python(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        m.insert("security_protocol".into(), self.protocol().into());
        if let Some(ca) = &self.ca {
            m.insert("ssl_cafile".into(), ca.as_str().into());
            m.insert("ssl_check_hostname".into(), true.into());
        }
        if let Some((cert, key)) = &self.cert {
            m.insert("ssl_certfile".into(), cert.as_str().into());
            m.insert("ssl_keyfile".into(), key.as_str().into());
        }
        if let Some((mechanism, user, password)) = &self.sasl {
            m.insert("sasl_mechanism".into(), mechanism.as_str().into());
            m.insert("sasl_plain_username".into(), user.as_str().into());
            m.insert("sasl_plain_password".into(), password.as_str().into());
        }
        m.into()
    }

    fn rdkafka(&self, bootstrap: &str, extra: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", bootstrap)
            .set("client.id", "kafka-security-test")
            .set_log_level(RDKafkaLogLevel::Warning);
        for (k, v) in self.librdkafka() {
            c.set(k, v);
        }
        for (k, v) in extra {
            c.set(*k, *v);
        }
        c
    }
}

/// An error a client reported: its code, if any, and its text.
pub type Reported = (Option<RDKafkaErrorCode>, String);

/// One result per topic of CreateTopics.
pub type TopicResults = Vec<Result<String, (String, RDKafkaErrorCode)>>;

/// The errors (and warnings) an rdkafka client reported on the side.
#[derive(Clone, Default)]
pub struct Seen {
    errors: Arc<Mutex<Vec<Reported>>>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Seen {
    pub fn errors(&self) -> Vec<Reported> {
        self.errors.lock().unwrap().clone()
    }

    /// Whether an error with `code` was reported whose text has every one of `words`.
    pub fn has(&self, code: RDKafkaErrorCode, words: &[&str]) -> bool {
        self.errors()
            .iter()
            .any(|(c, text)| *c == Some(code) && words.iter().all(|w| text.contains(w)))
    }

    /// Errors and log lines, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "errors: {:#?}\nlogs:\n{}",
            self.errors(),
            self.logs.lock().unwrap().join("\n")
        )
    }
}

impl ClientContext for Seen {
    fn log(&self, _level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.logs.lock().unwrap().push(format!("{fac}: {message}"));
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.errors
            .lock()
            .unwrap()
            .push((error.rdkafka_error_code(), format!("{error}: {reason}")));
    }
}

impl ConsumerContext for Seen {}

/// Runs a future to its end on a runtime of its own (rdkafka's futures need no more).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// What a producer got back.
pub struct Produced {
    /// Per record: (partition, offset) or the delivery error.
    pub results: Vec<Result<(i32, i64), KafkaError>>,
    /// The producer's fatal error, if it has one.
    pub fatal: Option<(RDKafkaErrorCode, String)>,
    pub seen: Seen,
}

impl Produced {
    #[track_caller]
    pub fn assert_all_ok(&self, what: &str) {
        let failed: Vec<_> = self.results.iter().filter(|r| r.is_err()).collect();
        assert!(
            failed.is_empty(),
            "{what}: deliveries failed: {failed:?}\n{}",
            self.seen.report()
        );
    }

    /// Every delivery failed (none stored, as far as the client knows).
    #[track_caller]
    pub fn assert_all_failed(&self, what: &str) {
        let ok: Vec<_> = self.results.iter().filter(|r| r.is_ok()).collect();
        assert!(
            ok.is_empty(),
            "{what}: deliveries succeeded: {ok:?}\n{}",
            self.seen.report()
        );
    }

    /// The error codes of the deliveries.
    pub fn codes(&self) -> Vec<Option<RDKafkaErrorCode>> {
        self.results
            .iter()
            .map(|r| r.as_ref().err().and_then(KafkaError::rdkafka_error_code))
            .collect()
    }
}

/// rdkafka (acks=all) sends `records` to `topic` and waits for every delivery report.
pub fn produce(
    bootstrap: &str,
    client: &Client,
    topic: &str,
    records: &[Sent],
    extra: &[(&str, &str)],
) -> Produced {
    let seen = Seen::default();
    let mut config = client.rdkafka(
        bootstrap,
        &[
            ("acks", "all"),
            ("linger.ms", "2"),
            ("message.timeout.ms", "10000"),
        ],
    );
    for (k, v) in extra {
        config.set(*k, *v);
    }
    let producer: FutureProducer<Seen> = config
        .create_with_context(seen.clone())
        .expect("rdkafka producer");
    let results = block_on(async {
        let sends = records.iter().map(|r| {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v.as_bytes()),
                });
            }
            let record = FutureRecord::to(topic)
                .key(&r.key)
                .payload(&r.value)
                .headers(headers);
            let send = producer.send(record, Duration::from_secs(5));
            async move {
                send.await
                    .map(|d| (d.partition, d.offset))
                    .map_err(|(e, _)| e)
            }
        });
        futures::future::join_all(sends).await
    });
    let fatal = producer.client().fatal_error();
    drop(producer);
    Produced {
        results,
        fatal,
        seen,
    }
}

/// [`produce`] with a client that is expected to fail: short timeouts.
pub fn produce_failing(
    bootstrap: &str,
    client: &Client,
    topic: &str,
    records: &[Sent],
) -> Produced {
    let ms = FAIL_MS.to_string();
    produce(
        bootstrap,
        client,
        topic,
        records,
        &[
            ("message.timeout.ms", &ms),
            ("socket.timeout.ms", &ms),
            ("reconnect.backoff.max.ms", "500"),
        ],
    )
}

/// rdkafka reads every partition of `topic` from the beginning to its end (no group joined);
/// Err with what the client reported when the metadata or a fetch fails.
pub fn consume(
    bootstrap: &str,
    client: &Client,
    topic: &str,
    limit: Duration,
) -> Result<Vec<Rec>, String> {
    let seen = Seen::default();
    let ms = limit.as_millis().to_string();
    let consumer: BaseConsumer<Seen> = client
        .rdkafka(
            bootstrap,
            &[
                ("group.id", "kafka-security-never-joined"),
                ("enable.auto.commit", "false"),
                ("enable.partition.eof", "true"),
                ("fetch.wait.max.ms", "100"),
                ("socket.timeout.ms", &ms),
            ],
        )
        .create_with_context(seen.clone())
        .expect("rdkafka consumer");
    let md = consumer
        .fetch_metadata(Some(topic), limit)
        .map_err(|e| format!("metadata: {e}\n{}", seen.report()))?;
    let t = &md.topics()[0];
    if let Some(e) = t.error() {
        return Err(format!("metadata of {topic}: {e:?}\n{}", seen.report()));
    }
    let partitions: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    let mut tpl = TopicPartitionList::new();
    for &p in &partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + limit;
    let mut at_end = HashSet::new();
    let mut got = Vec::new();
    while at_end.len() < partitions.len() {
        if Instant::now() > deadline {
            return Err(format!(
                "{} records, at the end of {at_end:?} of {partitions:?} after {limit:?}\n{}",
                got.len(),
                seen.report()
            ));
        }
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Ok(m)) => {
                at_end.remove(&m.partition());
                let text = |b: Option<&[u8]>| b.map(|b| String::from_utf8_lossy(b).into_owned());
                got.push(Rec {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: text(m.key()),
                    value: text(m.payload()).unwrap_or_default(),
                    headers: m
                        .headers()
                        .map(|h| {
                            h.iter()
                                .map(|h| (h.key.to_string(), text(h.value).unwrap_or_default()))
                                .collect()
                        })
                        .unwrap_or_default(),
                });
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => return Err(format!("consume: {e}\n{}", seen.report())),
        }
    }
    got.sort();
    Ok(got)
}

/// A consumer of `group` (subscribe: FindCoordinator, JoinGroup, SyncGroup, Fetch,
/// OffsetCommit, OffsetFetch) reads `n` records of `topic` from the earliest, commits, and
/// returns their values, sorted, with the sum of the offsets the group then has committed.
pub fn group_read(
    bootstrap: &str,
    client: &Client,
    group: &str,
    topic: &str,
    n: usize,
) -> (Vec<String>, i64) {
    let seen = Seen::default();
    let consumer: BaseConsumer<Seen> = client
        .rdkafka(
            bootstrap,
            &[
                ("group.id", group),
                ("auto.offset.reset", "earliest"),
                ("enable.auto.commit", "false"),
                ("session.timeout.ms", "6000"),
            ],
        )
        .create_with_context(seen.clone())
        .expect("rdkafka group consumer");
    consumer.subscribe(&[topic]).unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while values.len() < n {
        assert!(
            Instant::now() < deadline,
            "group {group} got {values:?} of {n}\n{}",
            seen.report()
        );
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap_or_else(|e| panic!("group {group}: {e}\n{}", seen.report()));
            values.push(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    values.sort();
    consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .unwrap_or_else(|e| panic!("group {group} commit: {e}\n{}", seen.report()));
    // The list goes before the consumer: its elements hold librdkafka partition references,
    // and rd_kafka_destroy waits for them (forever).
    let committed: i64 = {
        let list = consumer.committed(CALL).unwrap();
        list.elements()
            .iter()
            .map(|e| e.offset().to_raw().unwrap_or(0).max(0))
            .sum()
    };
    (values, committed)
}

/// The rdkafka AdminClient creates `topics` (name, partitions); one result per topic.
pub fn create_topics(
    bootstrap: &str,
    client: &Client,
    topics: &[(&str, i32)],
    limit: Duration,
) -> (Result<TopicResults, KafkaError>, Seen) {
    let seen = Seen::default();
    let ms = limit.as_millis().to_string();
    let admin: AdminClient<Seen> = client
        .rdkafka(bootstrap, &[("socket.timeout.ms", &ms)])
        .create_with_context(seen.clone())
        .expect("rdkafka admin client");
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|(name, n)| NewTopic::new(name, *n, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new()
        .request_timeout(Some(limit))
        .operation_timeout(Some(limit));
    let result = block_on(admin.create_topics(&new, &options));
    (result, seen)
}

/// Creates `topics` and asserts each was made.
#[track_caller]
pub fn create_ok(bootstrap: &str, client: &Client, topics: &[(&str, i32)]) {
    let (result, seen) = create_topics(bootstrap, client, topics, CALL);
    let made = result.unwrap_or_else(|e| panic!("create_topics: {e}\n{}", seen.report()));
    assert!(
        made.iter().all(Result::is_ok),
        "create_topics {topics:?}: {made:?}\n{}",
        seen.report()
    );
}

/// A command's exit status and output.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs `cmd` with `stdin`, killed (and the test failed) when it takes over `limit`. Cargo's
/// LD_LIBRARY_PATH (rdkafka-sys's build outputs) is removed: kcat and Python load their own
/// librdkafka.
pub fn run(cmd: &mut Command, stdin: &[u8], limit: Duration) -> Ran {
    let mut child = cmd
        .env_remove("LD_LIBRARY_PATH")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin);
    drop(input);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => {
            let out = out.unwrap();
            Ran {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        Err(_) => {
            support::signal_pid(pid, libc::SIGKILL);
            panic!("{cmd:?} still running after {limit:?}");
        }
    }
}

/// kcat against `bootstrap` as `client`, with `args`; `stdin` for -P.
pub fn kcat(bootstrap: &str, client: &Client, args: &[&str], stdin: &[u8]) -> Ran {
    let mut cmd = Command::new(support::require("kcat", "apt-get install -y kcat"));
    cmd.args(["-b", bootstrap]);
    for (k, v) in client.librdkafka() {
        cmd.arg("-X").arg(format!("{k}={v}"));
    }
    cmd.args(args);
    run(&mut cmd, stdin, Duration::from_secs(30))
}

/// What client.py printed.
#[derive(Debug)]
pub struct PyRun {
    /// Per record: Ok((partition, offset)) or Err(error name).
    pub produced: Vec<Result<(i32, i64), String>>,
    pub consumed: Option<Vec<Rec>>,
    pub errors: Vec<String>,
    pub exception: Option<String>,
    /// Shown in failure messages (kafka-python logs there).
    #[allow(dead_code)]
    pub stderr: String,
}

/// How client.py runs.
pub struct PyOpts {
    /// More producer settings.
    pub producer: serde_json::Value,
    /// Read the topic back after producing.
    pub consume: bool,
    /// Seconds for each step.
    pub timeout_s: f64,
}

impl PyOpts {
    /// Produce, then read back; 10 s per step.
    pub fn both() -> PyOpts {
        PyOpts {
            producer: serde_json::json!({}),
            consume: true,
            timeout_s: 10.0,
        }
    }

    /// Produce only, expecting a failure: 3 s.
    pub fn failing() -> PyOpts {
        PyOpts {
            producer: serde_json::json!({}),
            consume: false,
            timeout_s: FAIL_MS as f64 / 1000.0,
        }
    }

    pub fn producer(mut self, settings: serde_json::Value) -> PyOpts {
        self.producer = settings;
        self
    }
}

/// Runs tests/kafka_security/client.py: `python_client` ("confluent" or "kafka-python") as
/// `client` produces `records` to `topic`, then reads the topic back if asked.
pub fn python(
    python_client: &str,
    bootstrap: &str,
    client: &Client,
    topic: &str,
    records: &[Sent],
    opts: PyOpts,
) -> PyRun {
    let PyOpts {
        producer,
        consume,
        timeout_s,
    } = opts;
    let interpreter = support::require_python(match python_client {
        "confluent" => &[("confluent_kafka", "confluent-kafka")],
        "kafka-python" => &[("kafka", "kafka-python")],
        other => panic!("no Python client {other}"),
    });
    let security = match python_client {
        "confluent" => serde_json::Value::Object(
            client
                .librdkafka()
                .into_iter()
                .map(|(k, v)| (k, v.into()))
                .collect(),
        ),
        _ => client.kafka_python(),
    };
    let produce: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::json!([r.key, r.value, r.headers]))
        .collect();
    let args = serde_json::json!({
        "client": python_client,
        "bootstrap": bootstrap,
        "topic": topic,
        "security": security,
        "producer": producer,
        "produce": produce,
        "consume": consume,
        "timeout": timeout_s,
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/kafka_security/client.py"
    );
    let mut cmd = Command::new(interpreter);
    cmd.arg(script).arg(args.to_string());
    let out = run(
        &mut cmd,
        b"",
        Duration::from_secs_f64(timeout_s * 3.0 + 30.0),
    );
    let v: serde_json::Value = out
        .stdout
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("client.py {python_client}: no JSON line: {out:?}"));
    let text = |v: &serde_json::Value| v.as_str().map(String::from);
    PyRun {
        produced: v["produced"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| match r["error"].as_str() {
                Some(e) => Err(format!("{e} {}", r["text"].as_str().unwrap_or_default())),
                None => Ok((r["p"].as_i64().unwrap() as i32, r["o"].as_i64().unwrap())),
            })
            .collect(),
        consumed: v["consumed"].as_array().map(|all| {
            let mut recs: Vec<Rec> = all
                .iter()
                .map(|r| Rec {
                    partition: r["p"].as_i64().unwrap() as i32,
                    offset: r["o"].as_i64().unwrap(),
                    key: text(&r["key"]),
                    value: text(&r["value"]).unwrap_or_default(),
                    headers: r["headers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|h| (text(&h[0]).unwrap(), text(&h[1]).unwrap_or_default()))
                        .collect(),
                })
                .collect();
            recs.sort();
            recs
        }),
        errors: v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap().to_string())
            .collect(),
        exception: text(&v["exception"]),
        stderr: out.stderr,
    }
}

/// `tributary check -c FILE` in a scratch directory.
pub fn check(config: &Path) -> Ran {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(support::BIN);
    cmd.arg("check")
        .arg("-c")
        .arg(config)
        .current_dir(cwd.path());
    run(&mut cmd, b"", Duration::from_secs(20))
}

/// `tributary passwd USER [--mechanism M]` with the password on stdin; its one line.
pub fn passwd(user: &str, password: &str, mechanism: Option<&str>) -> String {
    let mut cmd = Command::new(support::BIN);
    cmd.args(["passwd", user]);
    if let Some(m) = mechanism {
        cmd.args(["--mechanism", m]);
    }
    let out = run(
        &mut cmd,
        format!("{password}\n").as_bytes(),
        Duration::from_secs(30),
    );
    assert!(
        out.status.success(),
        "tributary passwd {user} {mechanism:?}: {out:?}"
    );
    assert_eq!(out.stdout.lines().count(), 1, "one line: {out:?}");
    assert!(
        !out.stdout.contains(password) && !out.stderr.contains(password),
        "the password is never printed: {out:?}"
    );
    out.stdout.trim_end().to_string()
}
