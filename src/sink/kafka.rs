//! A Kafka cluster as the sink (`log.backend: kafka`, `delivery: direct`), through rdkafka.
//!
//! An append resolves once Kafka acknowledged every record (acks=all, idempotent producer).
//! Appends are submitted in call order to one task, which makes sure each record's topic exists
//! (creating it when `create_topics` says so) and hands the records to librdkafka in that
//! order; librdkafka keeps it per partition. Tributary picks each partition itself, with the
//! router's murmur2 over the partition count Kafka reports, so a key lands where the Java
//! client and the embedded log would put it.
//!
//! Nothing is dropped: a record librdkafka gives up on (a timeout while Kafka is away) fails its
//! append with a retryable error, and the pipeline produces it again, in order, once the sink
//! is resumed. A record Kafka refuses for good (too large, a forbidden or invalid topic) fails
//! with a permanent error, which the pipeline turns into a dead letter.

use super::{Sink, SinkError};
use crate::config::{KafkaConfig, TopicsConfig};
use crate::log::Offset;
use crate::record::Record;
use crate::route::PartitionCounts;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a metadata request or a topic creation may take before the append is retried.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the start waits for Kafka's metadata before going on without it.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `close` waits for records in flight.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// The producer settings that make the guarantee; `properties` may add to them, not undo them
/// (`config` refuses acks other than all and a transactional id). `enable.idempotence: false`
/// is allowed, for brokers without idempotent producers: at-least-once holds, but a retried
/// batch may then be stored twice.
const DEFAULTS: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("compression.type", "lz4"),
    ("linger.ms", "5"),
    ("partitioner", "murmur2_random"),
    // Never give up on a record: while Kafka is away librdkafka keeps retrying, in order per
    // partition, and the appends wait (backpressure). A `message.timeout.ms` of your own makes
    // timed-out appends fail instead; the pipeline then produces them again.
    ("message.timeout.ms", "0"),
    // librdkafka sleeps up to this between reconnects (10 s by default), and only then notices
    // that Kafka is back or that records timed out.
    ("reconnect.backoff.max.ms", "1000"),
    // Tributary creates topics itself, with the configured partition counts.
    ("allow.auto.create.topics", "false"),
];

/// Properties whose values are never printed, even in an error about them.
fn is_secret(key: &str) -> bool {
    ["password", "secret", "key", "token", "jaas", "credential"]
        .iter()
        .any(|s| key.contains(s))
}

/// The librdkafka configuration: the defaults, then `properties` as they are.
fn client_config(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap_servers);
    for (key, value) in DEFAULTS {
        client.set(*key, *value);
    }
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
}

/// A consumer's librdkafka configuration (egress): the cluster and `properties` (TLS, SASL),
/// the group, offsets committed by hand only after delivery, and where a new group starts.
/// `instance` makes it a static member (KIP-345): restarted with the same one, it gets its
/// partitions back at once instead of waiting for the old member's session to time out.
pub fn consumer_config(
    config: &KafkaConfig,
    group: &str,
    instance: &str,
    earliest: bool,
) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.bootstrap_servers);
    for (key, value) in &config.properties {
        client.set(key, value);
    }
    client
        .set("group.id", group)
        .set("group.instance.id", instance)
        .set("session.timeout.ms", "10000")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set(
            "auto.offset.reset",
            if earliest { "earliest" } else { "latest" },
        )
        // A topic made after the route started is found within seconds, not minutes.
        .set("topic.metadata.refresh.interval.ms", "2000");
    client
}

/// Checks every property with librdkafka itself (names and values), without connecting.
pub fn check_properties(config: &KafkaConfig) -> Vec<(String, String)> {
    let mut issues = Vec::new();
    for (key, value) in &config.properties {
        let mut one = ClientConfig::new();
        one.set(key, value);
        if let Err(KafkaError::ClientConfig(_, description, _, _)) = one.create_native_config() {
            let message = match is_secret(key) {
                true => {
                    "librdkafka refuses this property or its value (not shown: it may be a secret)"
                        .to_string()
                }
                false => format!("librdkafka refuses it: {description}"),
            };
            issues.push((format!("log.kafka.properties.{key}"), message));
        }
    }
    issues
}

/// How often one librdkafka message may be logged (an unreachable broker repeats it each second).
const LOG_EVERY: Duration = Duration::from_secs(30);

/// librdkafka's own log lines and errors (a broker unreachable, authentication failing) as
/// tracing events, each distinct line at most once per [`LOG_EVERY`].
#[derive(Default)]
pub struct LogContext {
    last: std::sync::Mutex<HashMap<String, std::time::Instant>>,
}

impl LogContext {
    fn first_in_a_while(&self, line: &str) -> bool {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        match last.get(line) {
            Some(at) if now.duration_since(*at) < LOG_EVERY => false,
            _ => {
                if last.len() > 1000 {
                    last.clear();
                }
                last.insert(line.to_string(), now);
                true
            }
        }
    }
}

impl ClientContext for LogContext {
    fn log(&self, level: RDKafkaLogLevel, facility: &str, line: &str) {
        if !self.first_in_a_while(line) {
            return;
        }
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => tracing::error!(facility, "librdkafka: {line}"),
            RDKafkaLogLevel::Warning => tracing::warn!(facility, "librdkafka: {line}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(facility, "librdkafka: {line}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(facility, "librdkafka: {line}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.first_in_a_while(reason) {
            tracing::warn!(%error, "Kafka: {reason}");
        }
    }
}

/// Egress consumers log through it too; rebalances need nothing more.
impl rdkafka::consumer::ConsumerContext for LogContext {}

/// The Kafka sink. Clones share one producer.
#[derive(Clone)]
pub struct KafkaSink {
    shared: Arc<Shared>,
    submit: mpsc::UnboundedSender<Command>,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("fenced", &self.shared.fenced.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What the submitting task and every clone share.
struct Shared {
    /// Partition counts Kafka reported; a topic not here gets `topics`' count.
    known: RwLock<HashMap<String, u32>>,
    /// The configured counts, for topics Kafka does not have (reloads replace them).
    topics: RwLock<TopicsConfig>,
    /// Set when an append failed: later ones fail at once until `resume`, so none is stored
    /// ahead of one that will be retried.
    fenced: AtomicBool,
}

impl Shared {
    fn known(&self, topic: &str) -> Option<u32> {
        self.known
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .copied()
    }

    fn configured(&self, topic: &str) -> u32 {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics.get(topic).partitions
    }

    fn learn(&self, topic: &str, partitions: u32) {
        self.known
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_string(), partitions);
    }
}

enum Command {
    Append {
        records: Vec<Record>,
        done: oneshot::Sender<Result<Vec<DeliveryFuture>, SinkError>>,
    },
    Learn {
        topic: String,
        done: oneshot::Sender<Result<u32, SinkError>>,
    },
    Resume,
    Close(oneshot::Sender<()>),
}

impl KafkaSink {
    /// Creates the producer and learns the cluster's topics. Kafka need not be up: the sink
    /// starts anyway and its appends fail (retryably) until Kafka answers.
    /// The topics of `at_start` (those the routes name literally, and the dead-letter topic)
    /// are created now when missing and `create_topics` allows, if Kafka answers.
    pub async fn open(
        config: &KafkaConfig,
        topics: &TopicsConfig,
        at_start: &[String],
    ) -> Result<KafkaSink, SinkError> {
        let client = client_config(config);
        let producer = client
            .create_with_context(LogContext::default())
            .map_err(|e| permanent(&e))?;
        let admin: AdminClient<DefaultClientContext> =
            client.create().map_err(|e| permanent(&e))?;
        let shared = Arc::new(Shared {
            known: RwLock::new(HashMap::new()),
            topics: RwLock::new(topics.clone()),
            fenced: AtomicBool::new(false),
        });
        let mut submitter = Submitter {
            client,
            producer,
            admin,
            create_topics: config.create_topics,
            shared: shared.clone(),
        };
        match submitter.metadata(None, STARTUP_TIMEOUT).await {
            Ok(counts) => {
                for (topic, n) in counts {
                    shared.learn(&topic, n);
                }
                for topic in at_start {
                    if let Err(e) = submitter.learn(topic).await {
                        tracing::warn!(topic, error = %e, "could not make the topic at start; trying again when a record goes to it");
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, servers = %config.bootstrap_servers, "Kafka does not answer yet; appends wait for it")
            }
        }
        let (submit, commands) = mpsc::unbounded_channel();
        tokio::spawn(submitter.run(commands));
        Ok(KafkaSink { shared, submit })
    }
}

impl KafkaSink {
    /// Takes a reloaded config's `topics`: the counts of topics created from now on.
    pub fn set_topics(&self, topics: &TopicsConfig) {
        *self
            .shared
            .topics
            .write()
            .unwrap_or_else(|e| e.into_inner()) = topics.clone();
    }

    /// `topic`'s partition count in Kafka, creating the topic when it is missing and
    /// `create_topics` allows (the forwarder of buffered delivery asks before it produces).
    pub async fn topic_partitions(&self, topic: &str) -> Result<u32, SinkError> {
        if let Some(known) = self.shared.known(topic) {
            return Ok(known);
        }
        let (done, answer) = oneshot::channel();
        let learn = Command::Learn {
            topic: topic.to_string(),
            done,
        };
        self.submit.send(learn).map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

impl PartitionCounts for KafkaSink {
    fn partitions(&self, topic: &str) -> u32 {
        self.shared
            .known(topic)
            .unwrap_or_else(|| self.shared.configured(topic))
    }
}

impl Sink for KafkaSink {
    fn append(
        &self,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Vec<Offset>, SinkError>> + Send + 'static {
        let (done, submitted) = oneshot::channel();
        let refused = match self.shared.fenced.load(Ordering::SeqCst) {
            true => Some(SinkError::Fenced),
            false => self
                .submit
                .send(Command::Append { records, done })
                .err()
                .map(|_| closed()),
        };
        let shared = self.shared.clone();
        async move {
            if let Some(error) = refused {
                return Err(error);
            }
            let result = async {
                let deliveries = submitted.await.map_err(|_| closed())??;
                let mut offsets = Vec::with_capacity(deliveries.len());
                for delivery in deliveries {
                    match delivery.await {
                        Ok(Ok(d)) => offsets.push(Offset(d.offset.max(0) as u64)),
                        Ok(Err((e, _))) => return Err(classify(&e)),
                        Err(_) => return Err(closed()),
                    }
                }
                Ok(offsets)
            }
            .await;
            if result.as_ref().is_err_and(SinkError::is_retryable) {
                shared.fenced.store(true, Ordering::SeqCst);
            }
            result
        }
    }

    fn resume(&self) {
        self.shared.fenced.store(false, Ordering::SeqCst);
        let _ = self.submit.send(Command::Resume);
    }

    /// A record Kafka refuses at delivery leaves the others of its append stored.
    fn takes_batches(&self) -> bool {
        false
    }

    async fn partition_counts(&self) -> Result<BTreeMap<String, u32>, SinkError> {
        let known = self.shared.known.read().unwrap_or_else(|e| e.into_inner());
        Ok(known.iter().map(|(t, &n)| (t.clone(), n)).collect())
    }

    async fn close(self) -> Result<(), SinkError> {
        let (done, closed) = oneshot::channel();
        if self.submit.send(Command::Close(done)).is_ok() {
            let _ = closed.await;
        }
        Ok(())
    }
}

/// The task that hands records to librdkafka, in the order appends were made.
struct Submitter {
    client: ClientConfig,
    producer: FutureProducer<LogContext>,
    admin: AdminClient<DefaultClientContext>,
    create_topics: bool,
    shared: Arc<Shared>,
}

impl Submitter {
    async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while let Some(command) = commands.recv().await {
            match command {
                Command::Append { records, done } => {
                    let result = match self.shared.fenced.load(Ordering::SeqCst) {
                        true => Err(SinkError::Fenced),
                        false => self.submit(records).await,
                    };
                    if result.as_ref().is_err_and(SinkError::is_retryable) {
                        self.shared.fenced.store(true, Ordering::SeqCst);
                    }
                    let _ = done.send(result);
                }
                Command::Learn { topic, done } => {
                    let _ = done.send(self.learn(&topic).await);
                }
                Command::Resume => self.renew_if_fatal(),
                Command::Close(done) => {
                    let producer = self.producer.clone();
                    let flushed =
                        tokio::task::spawn_blocking(move || producer.flush(FLUSH_TIMEOUT)).await;
                    if !matches!(flushed, Ok(Ok(()))) {
                        tracing::warn!("Kafka records still unacknowledged at shutdown; their messages were not acked and come again");
                    }
                    let _ = done.send(());
                    return;
                }
            }
        }
    }

    /// Makes sure every record's topic exists with the partition count it was routed by, then
    /// queues them all.
    async fn submit(&mut self, records: Vec<Record>) -> Result<Vec<DeliveryFuture>, SinkError> {
        for record in &records {
            let partitions = self.ensure_topic(&record.topic).await?;
            if record.partition >= partitions {
                return Err(SinkError::Kafka {
                    message: format!(
                        "topic {} has {partitions} partitions; there is no partition {}",
                        record.topic, record.partition
                    ),
                    permanent: true,
                });
            }
        }
        let mut deliveries = Vec::with_capacity(records.len());
        for record in &records {
            deliveries.push(self.produce(record).await?);
        }
        Ok(deliveries)
    }

    /// Learns `topic`'s partition count, creating the topic first when allowed. A count other
    /// than the one the record was routed by fails the append (retryably): the pipeline routes
    /// it again with the count now known.
    async fn ensure_topic(&mut self, topic: &str) -> Result<u32, SinkError> {
        if let Some(known) = self.shared.known(topic) {
            return Ok(known);
        }
        let assumed = self.shared.configured(topic);
        let real = self.learn(topic).await?;
        if real != assumed {
            tracing::warn!(
                topic,
                partitions = real,
                configured = assumed,
                "Kafka's partition count wins over the config; routing again"
            );
            return Err(SinkError::Kafka {
                message: format!(
                    "topic {topic} has {real} partitions in Kafka, not {assumed}: routing again"
                ),
                permanent: false,
            });
        }
        Ok(real)
    }

    /// `topic`'s partition count in Kafka, creating the topic (with the configured count) when
    /// it is missing and `create_topics` allows; remembered from then on.
    async fn learn(&mut self, topic: &str) -> Result<u32, SinkError> {
        if let Some(known) = self.shared.known(topic) {
            return Ok(known);
        }
        let assumed = self.shared.configured(topic);
        let real = match self.create_topics {
            true => {
                self.create(topic, assumed).await?;
                self.created_count(topic).await?
            }
            false => match self.metadata(Some(topic), ADMIN_TIMEOUT).await?.get(topic) {
                Some(&real) => real,
                None => {
                    return Err(SinkError::Kafka {
                        message: format!("topic {topic} does not exist and log.kafka.create_topics is false; create it, or set create_topics: true"),
                        permanent: true,
                    })
                }
            },
        };
        self.shared.learn(topic, real);
        Ok(real)
    }

    async fn create(&self, topic: &str, partitions: u32) -> Result<(), SinkError> {
        let new = NewTopic::new(
            topic,
            i32::try_from(partitions).unwrap_or(i32::MAX),
            TopicReplication::Fixed(-1),
        );
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results =
            tokio::time::timeout(ADMIN_TIMEOUT, self.admin.create_topics([&new], &options))
                .await
                .map_err(|_| {
                    retryable(format!(
                        "creating topic {topic}: no answer from Kafka in {ADMIN_TIMEOUT:?}"
                    ))
                })?
                .map_err(|e| classify(&e))?;
        for result in results {
            match result {
                Ok(_) => tracing::info!(topic, partitions, "created Kafka topic"),
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((_, code)) => {
                    return Err(classify(&KafkaError::AdminOp(code)));
                }
            }
        }
        Ok(())
    }

    /// The partition count of a topic just created (or found to exist): a new topic shows in
    /// the metadata once its partitions have leaders, shortly after the creation returns.
    async fn created_count(&self, topic: &str) -> Result<u32, SinkError> {
        let deadline = tokio::time::Instant::now() + ADMIN_TIMEOUT;
        loop {
            if let Some(&n) = self.metadata(Some(topic), ADMIN_TIMEOUT).await?.get(topic) {
                return Ok(n);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(retryable(format!(
                    "topic {topic} was created but has no partitions in Kafka's metadata yet"
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Partition counts from Kafka's metadata: every topic, or one.
    async fn metadata(
        &self,
        topic: Option<&str>,
        timeout: Duration,
    ) -> Result<HashMap<String, u32>, SinkError> {
        let producer = self.producer.clone();
        let topic = topic.map(str::to_string);
        let metadata = tokio::task::spawn_blocking(move || {
            producer.client().fetch_metadata(topic.as_deref(), timeout)
        })
        .await
        .map_err(|e| retryable(e.to_string()))?
        .map_err(|e| classify(&e))?;
        Ok(metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| (t.name().to_string(), t.partitions().len() as u32))
            .collect())
    }

    /// Queues one record, waiting while librdkafka's queue is full (backpressure).
    async fn produce(&self, record: &Record) -> Result<DeliveryFuture, SinkError> {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for h in &record.headers {
            headers = headers.insert(Header {
                key: h.key.as_ref(),
                value: Some(&h.value[..]),
            });
        }
        let mut next = FutureRecord::<[u8], [u8]>::to(&record.topic)
            .partition(i32::try_from(record.partition).unwrap_or(i32::MAX))
            .payload(&record.value[..])
            .timestamp(record.timestamp_ms)
            .headers(headers);
        if let Some(key) = &record.key {
            next = next.key(&key[..]);
        }
        loop {
            match self.producer.send_result(next) {
                Ok(delivery) => return Ok(delivery),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    next = back;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((e, _)) => return Err(classify(&e)),
            }
        }
    }

    /// After a fatal error (an idempotence state librdkafka cannot recover), the producer is
    /// unusable: start a new one; what was not acknowledged is produced again.
    fn renew_if_fatal(&mut self) {
        if let Some((code, reason)) = self.producer.client().fatal_error() {
            tracing::error!(
                ?code,
                reason,
                "the Kafka producer hit a fatal error; starting a new one"
            );
            match self.client.create_with_context(LogContext::default()) {
                Ok(producer) => self.producer = producer,
                Err(e) => tracing::error!(error = %e, "could not start a new Kafka producer"),
            }
        }
    }
}

fn retryable(message: String) -> SinkError {
    SinkError::Kafka {
        message,
        permanent: false,
    }
}

fn permanent(e: &KafkaError) -> SinkError {
    SinkError::Kafka {
        message: e.to_string(),
        permanent: true,
    }
}

fn closed() -> SinkError {
    retryable("the Kafka sink is closed".into())
}

/// Errors about a record itself are permanent (its message goes to the dead-letter topic);
/// everything else (Kafka away, timeouts, leaders moving) is retried.
fn classify(e: &KafkaError) -> SinkError {
    use RDKafkaErrorCode as C;
    let permanent = matches!(
        e.rdkafka_error_code(),
        Some(
            C::MessageSizeTooLarge
                | C::InvalidTopic
                | C::TopicAuthorizationFailed
                | C::InvalidRecord
                | C::UnknownTopic
        )
    );
    SinkError::Kafka {
        message: e.to_string(),
        permanent,
    }
}
