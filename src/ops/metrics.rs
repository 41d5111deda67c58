//! Every metric, in one place: names, help, labels and buckets are defined here and nowhere
//! else. A [`Metrics`] owns its own [`Registry`] (no process-wide statics, so two gateways in
//! one test process never mix their counts) and is handed by `Arc` to whoever counts:
//!
//! - an ingress face takes its [`FaceMetrics`] (`received`, `acked`, `dropped`, in flight,
//!   connected, ack latency), resolved once so counting is one atomic add;
//! - the pipeline counts unrouted messages;
//! - [`super::WatchedSink`] counts what the sink stored (records per topic, dead letters per
//!   reason), its errors and how long appends take;
//! - `render` reads the embedded log's end offsets and the Kafka listener's consumer-group lag
//!   at scrape time, so they cost nothing between scrapes.
//!
//! Labels are low-cardinality only: `face`, `topic` (log topics), `reason`, `partition`,
//! `group`; never a device id or an MQTT topic.

use crate::log::offsets::GroupOffsets;
use crate::log::Log;
use crate::record::DeadLetterReason;
use crate::sink::buffered::Lag;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::sync::Mutex;

/// Seconds: 0.5 ms to 30 s, for appends and for receive-to-ack.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Every dead-letter reason, so each shows (as 0) before the first one happens.
const DEAD_LETTER_REASONS: [DeadLetterReason; 5] = [
    DeadLetterReason::InvalidJson,
    DeadLetterReason::MissingField,
    DeadLetterReason::PayloadTooLarge,
    DeadLetterReason::InvalidTopic,
    DeadLetterReason::SinkRejected,
];

/// An ingress face: the `face` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    /// The client of an existing broker (`mqtt`).
    Client,
    /// The MQTT server face devices connect to (`listener`).
    Listener,
}

impl Face {
    pub fn as_str(self) -> &'static str {
        match self {
            Face::Client => "client",
            Face::Listener => "listener",
        }
    }
}

/// The metrics of one gateway, registered in its own registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    messages_received: IntCounterVec,
    messages_acked: IntCounterVec,
    messages_dropped: IntCounterVec,
    /// Messages no route matched: acked, counted, not stored.
    pub messages_unrouted: IntCounter,
    records_appended: IntCounterVec,
    dead_letters: [IntCounter; DEAD_LETTER_REASONS.len()],
    inflight_messages: IntGauge,
    mqtt_connected: IntGauge,
    listener_connections: IntGauge,
    /// One `Sink::append` call, from the call until its records are durable (or it failed).
    pub append_duration: Histogram,
    ack_latency: Histogram,
    sink_errors: IntCounterVec,
    log_end_offset: IntGaugeVec,
    consumer_group_lag: IntGaugeVec,
    forward_lag: IntGaugeVec,
    egress_delivered: IntCounterVec,
    egress_lag: IntGaugeVec,
    /// One scrape at a time: the scrape-time gauges are cleared and filled again.
    scrape: Mutex<()>,
}

/// What an ingress face counts, resolved once.
#[derive(Debug, Clone)]
pub struct FaceMetrics {
    /// Messages handed to the pipeline (redeliveries count again).
    pub received: IntCounter,
    /// Messages released in order after their records were stored, on the connection they came
    /// on: the QoS 1 PUBACK is queued then (QoS 0 needs none). A message of a lost connection
    /// is not counted: it is not acked, and the broker delivers it again.
    pub acked: IntCounter,
    /// QoS 0 messages dropped because the pipeline was full (QoS 0 is lossy by contract).
    pub dropped: IntCounter,
    /// Messages received and not yet released (shared by every face).
    pub inflight: IntGauge,
    /// The client face: 1 while its session is up. The listener: connections open.
    pub connected: IntGauge,
    /// Receive to release (ack), in seconds.
    pub ack_latency: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique name");
            c
        };
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique name");
            g
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique name");
            g
        };
        let histogram = |name: &str, help: &str| {
            let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
            let h = Histogram::with_opts(opts).expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique name");
            h
        };
        let messages_unrouted = IntCounter::new(
            "tributary_messages_unrouted_total",
            "Messages no route matched: acked and counted, not stored",
        )
        .expect("valid metric");
        registry
            .register(Box::new(messages_unrouted.clone()))
            .expect("unique name");
        let dead_letters_vec = counter_vec(
            "tributary_dead_letters_total",
            "Dead-letter records stored, by why the message could not be routed",
            &["reason"],
        );
        let metrics = Metrics {
            messages_received: counter_vec(
                "tributary_messages_received_total",
                "MQTT messages handed to the pipeline, by ingress face (redeliveries count again)",
                &["face"],
            ),
            messages_acked: counter_vec(
                "tributary_messages_acked_total",
                "MQTT messages acked after every record made from them was stored (QoS 0: released, no ack needed), by ingress face",
                &["face"],
            ),
            messages_dropped: counter_vec(
                "tributary_messages_dropped_total",
                "QoS 0 messages dropped because the pipeline was full (QoS 0 is lossy), by ingress face",
                &["face"],
            ),
            messages_unrouted,
            records_appended: counter_vec(
                "tributary_records_appended_total",
                "Records stored durably, by log topic (dead letters included, under their topic)",
                &["topic"],
            ),
            dead_letters: DEAD_LETTER_REASONS
                .map(|reason| dead_letters_vec.with_label_values(&[reason.as_str()])),
            inflight_messages: gauge(
                "tributary_inflight_messages",
                "Messages received and not yet acked",
            ),
            mqtt_connected: gauge(
                "tributary_mqtt_connected",
                "1 while the session with the MQTT broker is up",
            ),
            listener_connections: gauge(
                "tributary_listener_connections",
                "MQTT connections open on the listener",
            ),
            append_duration: histogram(
                "tributary_append_duration_seconds",
                "Time from an append to the sink until its records are durable (or it failed)",
            ),
            ack_latency: histogram(
                "tributary_ack_latency_seconds",
                "Time from receiving an MQTT message to acking it",
            ),
            sink_errors: counter_vec(
                "tributary_sink_errors_total",
                "Appends the sink failed (each is retried, or its message dead-lettered), by reason",
                &["reason"],
            ),
            log_end_offset: gauge_vec(
                "tributary_log_end_offset",
                "Embedded log: the offset the next record gets, per topic and partition",
                &["topic", "partition"],
            ),
            consumer_group_lag: gauge_vec(
                "tributary_consumer_group_lag",
                "Kafka listener: records past a consumer group's committed offsets, per group and topic",
                &["group", "topic"],
            ),
            forward_lag: gauge_vec(
                "tributary_kafka_forward_lag_records",
                "Buffered delivery: records in the local buffer not yet in Kafka, per topic",
                &["topic"],
            ),
            egress_delivered: counter_vec(
                "tributary_egress_delivered_total",
                "Log records delivered to MQTT by an egress route (PUBACKed at QoS 1)",
                &["route"],
            ),
            egress_lag: gauge_vec(
                "tributary_egress_lag_records",
                "Records of an egress route's topic not yet delivered, over its partitions",
                &["route"],
            ),
            registry,
            scrape: Mutex::new(()),
        };
        metrics.face(Face::Client);
        metrics.face(Face::Listener);
        metrics
    }

    /// The counters of one ingress face (created at 0 if new).
    pub fn face(&self, face: Face) -> FaceMetrics {
        let label = [face.as_str()];
        FaceMetrics {
            received: self.messages_received.with_label_values(&label),
            acked: self.messages_acked.with_label_values(&label),
            dropped: self.messages_dropped.with_label_values(&label),
            inflight: self.inflight_messages.clone(),
            connected: match face {
                Face::Client => self.mqtt_connected.clone(),
                Face::Listener => self.listener_connections.clone(),
            },
            ack_latency: self.ack_latency.clone(),
        }
    }

    /// An egress route's counters: delivered records, and the lag gauge each partition task
    /// moves by its own change.
    pub fn egress(&self, route: &str) -> (IntCounter, IntGauge) {
        (
            self.egress_delivered.with_label_values(&[route]),
            self.egress_lag.with_label_values(&[route]),
        )
    }

    /// The `records_appended_total` counter of a log topic.
    pub fn records_appended(&self, topic: &str) -> IntCounter {
        self.records_appended.with_label_values(&[topic])
    }

    /// The `dead_letters_total` counter of a reason.
    pub fn dead_letters(&self, reason: DeadLetterReason) -> &IntCounter {
        let i = DEAD_LETTER_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        &self.dead_letters[i]
    }

    /// Counts a failed append under its reason (`SinkError::reason`).
    pub fn sink_error(&self, reason: &str) {
        self.sink_errors.with_label_values(&[reason]).inc();
    }

    /// Everything in Prometheus text format, with the scrape-time gauges read now from the
    /// embedded log (`log`) and the Kafka listener's consumer groups (`groups`), where those
    /// run.
    pub fn render(
        &self,
        log: Option<&Log>,
        groups: Option<&GroupOffsets>,
        forward: &[Lag],
    ) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.log_end_offset.reset();
        self.consumer_group_lag.reset();
        self.forward_lag.reset();
        let mut behind: std::collections::BTreeMap<&str, u64> = Default::default();
        for lag in forward {
            *behind.entry(&lag.topic).or_default() += lag.records();
        }
        for (topic, records) in behind {
            self.forward_lag
                .with_label_values(&[topic])
                .set(clamp(records));
        }
        if let Some(log) = log {
            let topics = log.topics();
            for (topic, partitions) in &topics {
                for p in partitions {
                    self.log_end_offset
                        .with_label_values(&[topic.as_str(), &p.partition.to_string()])
                        .set(clamp(p.end.0));
                }
            }
            for group in groups.map(GroupOffsets::groups).unwrap_or_default() {
                let offsets = groups.map(|g| g.group(&group)).unwrap_or_default();
                let mut lag: std::collections::BTreeMap<&str, u64> = Default::default();
                for (topic, partition, committed) in &offsets {
                    let end = topics
                        .get(topic)
                        .and_then(|ps| ps.iter().find(|p| p.partition == *partition))
                        .map_or(0, |p| p.end.0);
                    let behind = end.saturating_sub(committed.offset.max(0) as u64);
                    *lag.entry(topic).or_default() += behind;
                }
                for (topic, behind) in lag {
                    self.consumer_group_lag
                        .with_label_values(&[group.as_str(), topic])
                        .set(clamp(behind));
                }
            }
        }
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name` (with its labels, as printed) in `text`.
    fn sample(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_metric_is_exposed_from_the_start() {
        let m = Metrics::new();
        let text = m.render(None, None, &[]);
        for name in [
            "tributary_messages_received_total{face=\"client\"}",
            "tributary_messages_acked_total{face=\"client\"}",
            "tributary_messages_dropped_total{face=\"client\"}",
            "tributary_messages_unrouted_total",
            "tributary_dead_letters_total{reason=\"invalid_json\"}",
            "tributary_dead_letters_total{reason=\"sink_rejected\"}",
            "tributary_inflight_messages",
            "tributary_mqtt_connected",
            "tributary_listener_connections",
            "tributary_messages_received_total{face=\"listener\"}",
            "tributary_append_duration_seconds_count",
            "tributary_ack_latency_seconds_count",
        ] {
            assert_eq!(sample(&text, name), Some(0.0), "{name} in\n{text}");
        }
        assert!(text.contains("# TYPE tributary_append_duration_seconds histogram"));
        // A labelled metric shows from its first label value on (a topic, an error reason).
        assert!(!text.contains("tributary_records_appended_total"));
    }

    #[test]
    fn counts_show_with_their_labels() {
        let m = Metrics::new();
        let face = m.face(Face::Client);
        face.received.inc_by(3);
        face.acked.inc_by(2);
        face.inflight.inc();
        face.connected.set(1);
        face.ack_latency.observe(0.002);
        m.records_appended("telemetry").inc_by(5);
        m.dead_letters(DeadLetterReason::MissingField).inc();
        m.messages_unrouted.inc();
        m.sink_error("io");
        let text = m.render(None, None, &[]);
        let expect = [
            ("tributary_messages_received_total{face=\"client\"}", 3.0),
            ("tributary_messages_acked_total{face=\"client\"}", 2.0),
            ("tributary_inflight_messages", 1.0),
            ("tributary_mqtt_connected", 1.0),
            ("tributary_records_appended_total{topic=\"telemetry\"}", 5.0),
            (
                "tributary_dead_letters_total{reason=\"missing_field\"}",
                1.0,
            ),
            ("tributary_messages_unrouted_total", 1.0),
            ("tributary_sink_errors_total{reason=\"io\"}", 1.0),
            ("tributary_ack_latency_seconds_count", 1.0),
            ("tributary_ack_latency_seconds_bucket{le=\"0.0025\"}", 1.0),
            ("tributary_ack_latency_seconds_bucket{le=\"0.001\"}", 0.0),
        ];
        for (name, value) in expect {
            assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
        }
    }

    #[tokio::test]
    async fn end_offsets_and_group_lag_are_read_at_scrape_time() {
        use crate::config::{EmbeddedConfig, TopicConfig, TopicsConfig};
        use crate::log::LogOptions;
        use crate::record::Record;
        let dir = tempfile::tempdir().unwrap();
        let embedded = EmbeddedConfig {
            dir: dir.path().join("data"),
            ..Default::default()
        };
        let mut topics = TopicsConfig::default();
        topics
            .topics
            .insert("t".into(), TopicConfig { partitions: 2 });
        let log = Log::open(LogOptions::new(&embedded, &topics))
            .await
            .unwrap();
        let record = |partition| Record {
            route: "r".into(),
            topic: "t".into(),
            partition,
            key: None,
            value: bytes::Bytes::from_static(b"v"),
            headers: Vec::new(),
            timestamp_ms: 0,
            dead_letter: None,
        };
        log.append("t", 0, (0..5).map(|_| record(0)).collect())
            .await
            .unwrap();
        log.append("t", 1, vec![record(1)]).await.unwrap();
        let groups = GroupOffsets::open(&embedded.dir).unwrap();
        groups
            .commit("g", &[("t", 0, 2, ""), ("t", 1, 1, "")])
            .unwrap();

        let m = Metrics::new();
        let text = m.render(Some(&log), Some(&groups), &[]);
        let expect = [
            ("tributary_log_end_offset{partition=\"0\",topic=\"t\"}", 5.0),
            ("tributary_log_end_offset{partition=\"1\",topic=\"t\"}", 1.0),
            ("tributary_consumer_group_lag{group=\"g\",topic=\"t\"}", 3.0),
        ];
        for (name, value) in expect {
            assert_eq!(sample(&text, name), Some(value), "{name} in\n{text}");
        }
        groups.commit("g", &[("t", 0, 5, "")]).unwrap();
        let text = m.render(Some(&log), Some(&groups), &[]);
        assert_eq!(
            sample(
                &text,
                "tributary_consumer_group_lag{group=\"g\",topic=\"t\"}"
            ),
            Some(0.0),
            "caught up\n{text}"
        );
        log.close().await.unwrap();
    }

    #[test]
    fn two_instances_do_not_share_counts() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.messages_unrouted.inc();
        assert_eq!(
            sample(
                &b.render(None, None, &[]),
                "tributary_messages_unrouted_total"
            ),
            Some(0.0)
        );
    }
}
