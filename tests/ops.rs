//! The `http.listen` endpoint with real parts: `/metrics` scraped from the real binary after a
//! run through a real Mosquitto counts exactly what happened; `/readyz` follows the broker
//! going and coming back, and (in process) a sink that hangs or fails and recovers.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{publish, Gateway, Mosquitto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tributary::log::{Log, LogError, LogOptions, Offset};
use tributary::ops::http::{self, Endpoints};
use tributary::ops::{Face, Metrics, Probes, Watch, WatchedSink};
use tributary::record::Record;
use tributary::route::Router;
use tributary::sink::embedded::EmbeddedSink;
use tributary::sink::{Sink, SinkError};

/// `GET path`: (status, body).
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: tributary\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// The value of the sample `name` (labels as printed, sorted by name) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Polls `f` every 50 ms until it holds or `limit` passes.
async fn eventually<F: Future<Output = bool>>(limit: Duration, mut f: impl FnMut() -> F) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f().await
}

/// A gateway config on `broker` with the endpoint on a free port.
fn config_with_http(broker: &Mosquitto, client_id: &str, routes: &str) -> (String, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", support::free_port())
        .parse()
        .unwrap();
    let yaml = Gateway::config(&broker.url(), client_id, "", routes).replace(
        "http: { listen: null }",
        &format!("http: {{ listen: \"{addr}\" }}"),
    );
    (yaml, addr)
}

const ROUTES: &str = r#"  - { name: telemetry, from: "devices/{device}/telemetry", to: telemetry, key: "{device}", format: json }
  - { name: archive, from: "devices/#", to: archive }"#;

/// Leaves a persistent session `client_id` on the broker subscribed to `other/#`, which no
/// route matches: the gateway taking that session over receives those messages unrouted, as
/// after a config change that dropped a route.
async fn leave_session_subscribed_to_other(port: u16, client_id: &str) {
    use rumqttc::v5::mqttbytes::v5::Packet;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options
        .set_clean_start(false)
        .set_session_expiry_interval(Some(3600));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client.subscribe("other/#", QoS::AtLeastOnce).await.unwrap();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
            .await
            .expect("suback in time")
            .unwrap();
        if let Event::Incoming(Packet::SubAck(_)) = event {
            break;
        }
    }
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(500), eventloop.poll()).await;
}

/// 200 valid JSON messages, 30 invalid ones on the JSON route, and 20 that no route matches:
/// the scrape after the run says exactly that, and agrees with the records on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_exactly_what_happened() {
    const GOOD: usize = 200;
    const BAD: usize = 30;
    const OTHER: usize = 20;
    let broker = Mosquitto::start();
    leave_session_subscribed_to_other(broker.port, "gw-metrics").await;
    let (yaml, addr) = config_with_http(&broker, "gw-metrics", ROUTES);
    let mut gw = Gateway::new(&yaml);
    gw.start();
    let (status, before) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    assert_eq!(sample(&before, "tributary_mqtt_connected"), Some(1.0));
    assert_eq!(
        sample(
            &before,
            "tributary_messages_received_total{face=\"client\"}"
        ),
        Some(0.0)
    );

    let mut messages = Vec::new();
    for i in 0..GOOD + BAD + OTHER {
        let message = match i % 25 {
            0..=19 if i < 250 => (
                format!("devices/d{}/telemetry", i % 7),
                format!("{{\"seq\":{i}}}").into_bytes(),
            ),
            20..=22 => (
                format!("devices/d{}/telemetry", i % 7),
                format!("not json {i}").into_bytes(),
            ),
            _ => ("other/x".to_string(), format!("{i}").into_bytes()),
        };
        messages.push(message);
    }
    let to_other = messages.iter().filter(|(t, _)| t == "other/x").count();
    let invalid = messages
        .iter()
        .filter(|(_, p)| p.starts_with(b"not json"))
        .count();
    assert_eq!((to_other, invalid), (OTHER, BAD));
    publish(broker.port, "publisher", 1, messages).await;

    let total = (GOOD + BAD + OTHER) as f64;
    let acked = "tributary_messages_acked_total{face=\"client\"}";
    let all_acked = eventually(Duration::from_secs(20), || async {
        sample(&get(addr, "/metrics").await.1, acked) == Some(total)
    })
    .await;
    let (_, text) = get(addr, "/metrics").await;
    assert!(
        all_acked,
        "acked never reached {total}:\n{text}\n{}",
        gw.log()
    );

    let stored = |topic| support::count_records(&gw.data_dir(), topic) as f64;
    assert_eq!(stored("telemetry"), GOOD as f64);
    assert_eq!(stored("archive"), (GOOD + BAD) as f64);
    assert_eq!(stored("tributary.dead-letter"), BAD as f64);
    let expect = [
        ("tributary_messages_received_total{face=\"client\"}", total),
        (acked, total),
        ("tributary_messages_dropped_total{face=\"client\"}", 0.0),
        ("tributary_messages_unrouted_total", OTHER as f64),
        (
            "tributary_records_appended_total{topic=\"telemetry\"}",
            stored("telemetry"),
        ),
        (
            "tributary_records_appended_total{topic=\"archive\"}",
            stored("archive"),
        ),
        (
            "tributary_records_appended_total{topic=\"tributary.dead-letter\"}",
            stored("tributary.dead-letter"),
        ),
        (
            "tributary_dead_letters_total{reason=\"invalid_json\"}",
            BAD as f64,
        ),
        (
            "tributary_dead_letters_total{reason=\"missing_field\"}",
            0.0,
        ),
        (
            "tributary_dead_letters_total{reason=\"payload_too_large\"}",
            0.0,
        ),
        ("tributary_inflight_messages", 0.0),
        ("tributary_mqtt_connected", 1.0),
        // One ack per message.
        ("tributary_ack_latency_seconds_count", total),
    ];
    // Routed messages waiting together share one append: at least one, at most one each.
    let appends = sample(&text, "tributary_append_duration_seconds_count").unwrap_or(0.0);
    assert!(
        (1.0..=(GOOD + BAD) as f64).contains(&appends),
        "{appends} appends for {} routed messages",
        GOOD + BAD
    );
    for (name, value) in expect {
        assert_eq!(sample(&text, name), Some(value), "{name}:\n{text}");
    }
    assert!(!text.contains("tributary_sink_errors_total{"), "{text}");
    let end_offsets: f64 = (0..3)
        .filter_map(|p| {
            sample(
                &text,
                &format!("tributary_log_end_offset{{partition=\"{p}\",topic=\"telemetry\"}}"),
            )
        })
        .sum();
    assert_eq!(end_offsets, GOOD as f64, "{text}");
    assert!(
        !text.contains("devices/d") && !text.contains("other/x"),
        "no MQTT topic is a label:\n{text}"
    );
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".to_string()));
    assert_eq!(get(addr, "/healthz").await.0, 200);
    assert_eq!(get(addr, "/nope").await.0, 404);
    assert!(gw.terminate().success(), "{}", gw.log());
}

/// `/readyz` is 503 with the reason while the broker is away, and 200 again once the session
/// is back, by itself; `/healthz` stays 200 throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_the_broker_session() {
    let mut broker = Mosquitto::start();
    let (yaml, addr) = config_with_http(&broker, "gw-ready", ROUTES);
    let mut gw = Gateway::new(&yaml);
    gw.start();
    assert_eq!(get(addr, "/readyz").await, (200, "ready\n".to_string()));

    broker.stop();
    let down = eventually(Duration::from_secs(10), || async {
        get(addr, "/readyz").await
            == (
                503,
                "not ready\ningress client: not connected to the MQTT broker\n".into(),
            )
    })
    .await;
    assert!(down, "{:?}\n{}", get(addr, "/readyz").await, gw.log());
    assert_eq!(get(addr, "/healthz").await.0, 200, "alive while not ready");
    let (_, text) = get(addr, "/metrics").await;
    assert_eq!(sample(&text, "tributary_mqtt_connected"), Some(0.0));

    broker.restart();
    let up = eventually(Duration::from_secs(20), || async {
        get(addr, "/readyz").await.0 == 200
    })
    .await;
    assert!(up, "{:?}\n{}", get(addr, "/readyz").await, gw.log());
    let (_, text) = get(addr, "/metrics").await;
    assert_eq!(sample(&text, "tributary_mqtt_connected"), Some(1.0));
    assert!(gw.terminate().success(), "{}", gw.log());
}

/// A port already taken for `http.listen` stops the start with an error naming the key.
#[test]
fn a_taken_http_port_is_a_clear_error() {
    let broker = Mosquitto::start();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let yaml = Gateway::config(&broker.url(), "gw-taken", "", ROUTES).replace(
        "http: { listen: null }",
        &format!("http: {{ listen: \"{addr}\" }}"),
    );
    let mut gw = Gateway::new(&yaml);
    gw.spawn();
    let status = gw.wait_exit(Duration::from_secs(15)).expect("exits");
    assert_eq!(status.code(), Some(1), "{}", gw.log());
    assert!(
        gw.log()
            .contains(&format!("error: http.listen: cannot listen on {addr}: ")),
        "{}",
        gw.log()
    );
}

// ---------------------------------------------------------------------------------------------
// In process: a sink that hangs, then fails, then recovers
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Writing,
    /// Appends are submitted to the log but not reported until the mode changes: a disk or a
    /// Kafka that stopped answering.
    Hanging,
    /// Every append fails (retryable): a full disk.
    Failing,
}

#[derive(Clone)]
struct TroubledSink {
    inner: EmbeddedSink,
    mode: watch::Receiver<Mode>,
}

impl Sink for TroubledSink {
    fn append(
        &self,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Vec<Offset>, SinkError>> + Send + 'static {
        let mode = *self.mode.borrow();
        let append = (mode != Mode::Failing).then(|| self.inner.append(records));
        let mut changes = self.mode.clone();
        async move {
            match append {
                Some(append) => {
                    if mode == Mode::Hanging {
                        let _ = changes.wait_for(|m| *m != Mode::Hanging).await;
                    }
                    append.await
                }
                None => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err(SinkError::Log(LogError::io(
                        std::path::Path::new("troubled-sink"),
                        std::io::Error::other("injected: no space left on device"),
                    )))
                }
            }
        }
    }

    fn resume(&self) {
        self.inner.resume();
    }

    async fn partition_counts(&self) -> Result<std::collections::BTreeMap<String, u32>, SinkError> {
        self.inner.partition_counts().await
    }

    async fn close(self) -> Result<(), SinkError> {
        Ok(())
    }
}

/// A hung sink makes `/readyz` 503 once an append has waited over 10 s, a failing one at once;
/// each goes back to 200 by itself when the sink writes again, and every message is stored
/// and acked in the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_a_hung_and_a_failing_sink() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().unwrap();
    let route = r#"  - { name: telemetry, from: "devices/{device}/telemetry", to: telemetry, key: "{device}" }"#;
    let yaml = Gateway::config(&broker.url(), "gw-troubled", "", route)
        .replace("DATA_DIR", &dir.path().join("data").display().to_string());
    let path = dir.path().join("bridge.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = tributary::config::load(&path).expect("valid config");
    let log = Arc::new(
        Log::open(LogOptions::new(&config.log.embedded, &config.topics))
            .await
            .unwrap(),
    );
    let (mode, mode_rx) = watch::channel(Mode::Writing);
    let watch = Watch {
        metrics: Arc::new(Metrics::new()),
        appends: Default::default(),
    };
    let sink = WatchedSink::new(
        TroubledSink {
            inner: EmbeddedSink::new(log.clone()),
            mode: mode_rx,
        },
        Some(watch.clone()),
    );
    let router = Arc::new(Router::new(&config, Arc::new(EmbeddedSink::new(log.clone()))).unwrap());
    let (ingress, deliveries) = tributary::mqtt::Ingress::start(
        config.mqtt.as_ref().expect("mqtt section"),
        &router.subscriptions(),
        Some(watch.metrics.face(Face::Client)),
    )
    .unwrap();
    let pipeline = tokio::spawn(tributary::pipeline::run(
        deliveries,
        router,
        sink,
        Some(watch.metrics.clone()),
    ));
    let listener = http::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let endpoints = Arc::new(Endpoints {
        metrics: watch.metrics.clone(),
        probes: Probes::new(watch.appends.clone()).face("client", ingress.connected()),
        log: Some(log.clone()),
        groups: None,
        buffer: None,
    });
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(http::serve(listener, endpoints, stop.clone()));
    let ready = || async { get(addr, "/readyz").await };
    assert!(
        eventually(Duration::from_secs(10), || async { ready().await.0 == 200 }).await,
        "{:?}",
        ready().await
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // the SUBSCRIBE follows the CONNACK
    let batch = |from: usize| -> Vec<(String, Vec<u8>)> {
        (from..from + 10)
            .map(|i| {
                (
                    format!("devices/d{}/telemetry", i % 3),
                    format!("{i}").into_bytes(),
                )
            })
            .collect()
    };
    let stored = || support::count_records(&dir.path().join("data"), "telemetry");
    publish(broker.port, "pub-1", 1, batch(0)).await;
    assert!(support::wait_until(Duration::from_secs(10), || stored() == 10));

    // Hung: an append that does not complete. Not ready only once it has waited over 10 s.
    mode.send_replace(Mode::Hanging);
    let hung_at = Instant::now();
    publish(broker.port, "pub-2", 1, batch(10)).await;
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(hung_at.elapsed())).await;
    assert_eq!(ready().await.0, 200, "a slow append is not a hung sink yet");
    let hung = eventually(Duration::from_secs(6), || async {
        let (status, body) = ready().await;
        status == 503 && body.contains("sink: an append has not completed for 1")
    })
    .await;
    assert!(hung, "{:?}", ready().await);
    assert!(hung_at.elapsed() > Duration::from_secs(10));
    let (_, text) = get(addr, "/metrics").await;
    assert_eq!(
        sample(&text, "tributary_inflight_messages"),
        Some(10.0),
        "{text}"
    );
    mode.send_replace(Mode::Writing);
    assert!(
        eventually(Duration::from_secs(5), || async { ready().await.0 == 200 }).await,
        "ready again once the append completes: {:?}",
        ready().await
    );

    // Failing: appends refused (a full disk). Not ready at once; ready again after a retry works.
    mode.send_replace(Mode::Failing);
    publish(broker.port, "pub-3", 1, batch(20)).await;
    let failing = eventually(Duration::from_secs(5), || async {
        ready().await.1
            == "not ready\nsink: appends are failing: troubled-sink: injected: no space left on device\n"
    })
    .await;
    assert!(failing, "{:?}", ready().await);
    mode.send_replace(Mode::Writing);
    assert!(
        eventually(Duration::from_secs(10), || async { ready().await.0 == 200 }).await,
        "ready again once appends succeed: {:?}",
        ready().await
    );
    assert!(support::wait_until(Duration::from_secs(10), || stored() == 30));

    let (_, text) = get(addr, "/metrics").await;
    let errors = sample(&text, "tributary_sink_errors_total{reason=\"io\"}").unwrap_or(0.0);
    assert!(errors >= 1.0, "{text}");
    for (name, value) in [
        ("tributary_messages_received_total{face=\"client\"}", 30.0),
        ("tributary_messages_acked_total{face=\"client\"}", 30.0),
        (
            "tributary_records_appended_total{topic=\"telemetry\"}",
            30.0,
        ),
        ("tributary_inflight_messages", 0.0),
    ] {
        assert_eq!(sample(&text, name), Some(value), "{name}:\n{text}");
    }

    ingress.stop_reading();
    tokio::time::timeout(Duration::from_secs(10), pipeline)
        .await
        .expect("drains")
        .unwrap();
    ingress.disconnect(Duration::from_secs(5)).await;
    stop.cancel();
    server.await.unwrap();
}
