//! End to end: publisher (QoS 1, 100-byte payloads, 100 topics) -> Mosquitto -> Tributary ->
//! embedded log (`fsync: interval`, 5 ms), beside a bare rumqttc subscriber (QoS 1, acks and
//! discards) on the same broker with the same publisher, in the same run.
//!
//! Prints both rates, their ratio, Tributary's peak RSS, and p50/p99 publish-to-durable latency
//! at a steady offered load (measured in process: the pipeline with a sink wrapper that notes
//! when each record is durable). Then the cost of metrics: the binary with `http.listen` off
//! (nothing counted) and on (everything counted, `/metrics` scraped every second), alternated
//! in the same run.
//!
//! `cargo bench --bench e2e` (needs `mosquitto` on the PATH).

#[path = "common/load.rs"]
mod load;
#[path = "../tests/support/mod.rs"]
mod support;

use load::{bare_subscriber, now_us, peak_rss_kib, publish, PUBLISHERS, TOPICS};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Gateway, Mosquitto};
use tributary::config::{
    Config, EmbeddedConfig, FsyncPolicy, HumanDuration, MqttConfig, RouteConfig,
};
use tributary::log::{Log, LogOptions, LogReader, Offset};
use tributary::message::Qos;
use tributary::record::Record;
use tributary::route::Router;
use tributary::sink::embedded::EmbeddedSink;
use tributary::sink::{Sink, SinkError};

const MESSAGES: usize = 100_000;

fn stored(dir: &std::path::Path) -> u64 {
    LogReader::open(dir)
        .ok()
        .and_then(|r| r.topics().ok())
        .map_or(0, |t| {
            t.values().flatten().map(|p| p.end.0 - p.start.0).sum()
        })
}

/// `GET /metrics` from `addr`: the body's length.
async fn scrape(addr: &str) -> usize {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return 0;
    };
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    out.len()
}

/// One run of the binary.
struct Run {
    /// Messages/s from the first publish to the last record stored.
    rate: f64,
    /// Peak RSS.
    rss_kib: u64,
    /// The gateway's CPU time (user + system) per message, in microseconds.
    cpu_us: f64,
}

/// CPU seconds (user + system) the process `pid` has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are the 12th and
    // 13th, in clock ticks.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf only reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    (ticks(11) + ticks(12)) / hz
}

/// The `tributary` binary with `count` messages. With `metrics`, `http.listen` is on and
/// scraped every second.
async fn tributary_binary(broker: &Mosquitto, count: usize, metrics: bool) -> Run {
    let routes = r#"  - { name: telemetry, from: "devices/{device}/telemetry", to: telemetry, key: "{device}" }"#;
    let addr = format!("127.0.0.1:{}", support::free_port());
    let mut yaml = Gateway::config(&broker.url(), "bench-gw", ", max_inflight: 1024", routes)
        .replace("fsync_interval: 2ms", "fsync_interval: 5ms");
    if metrics {
        yaml = yaml.replace(
            "http: { listen: null }",
            &format!("http: {{ listen: \"{addr}\" }}"),
        );
    }
    let mut gw = Gateway::new(&yaml);
    gw.start();
    let cpu_before = cpu_seconds(gw.pid().unwrap());
    let start = Instant::now();
    let publisher = tokio::spawn(publish(broker.port, count, None));
    let scraper = metrics.then(|| {
        tokio::spawn(async move {
            let mut scraped = 0;
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                scraped += usize::from(scrape(&addr).await > 0);
                if scraped > 1_000 {
                    return;
                }
            }
        })
    });
    while stored(&gw.data_dir()) < count as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = count as f64 / start.elapsed().as_secs_f64();
    let cpu_us = (cpu_seconds(gw.pid().unwrap()) - cpu_before) * 1e6 / count as f64;
    if let Some(scraper) = scraper {
        scraper.abort();
    }
    publisher.await.unwrap();
    let rss_kib = peak_rss_kib(gw.pid().unwrap());
    assert!(gw.terminate().success());
    Run {
        rate,
        rss_kib,
        cpu_us,
    }
}

/// Wraps the real sink and notes, per record, microseconds from publish to durable.
#[derive(Clone)]
struct Timed {
    inner: EmbeddedSink,
    latencies: Arc<Mutex<Vec<u64>>>,
    done: Arc<AtomicU64>,
}

impl Sink for Timed {
    fn append(
        &self,
        records: Vec<Record>,
    ) -> impl std::future::Future<Output = Result<Vec<Offset>, SinkError>> + Send + 'static {
        let sent: Vec<u64> = records
            .iter()
            .map(|r| {
                std::str::from_utf8(&r.value[..20])
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        let append = self.inner.append(records);
        let (latencies, done) = (self.latencies.clone(), self.done.clone());
        async move {
            let result = append.await;
            let now = now_us();
            latencies
                .lock()
                .unwrap()
                .extend(sent.iter().map(|s| now.saturating_sub(*s)));
            done.fetch_add(sent.len() as u64, Ordering::Relaxed);
            result
        }
    }
    fn resume(&self) {
        self.inner.resume()
    }
    async fn partition_counts(&self) -> Result<std::collections::BTreeMap<String, u32>, SinkError> {
        self.inner.partition_counts().await
    }
    async fn close(self) -> Result<(), SinkError> {
        self.inner.close().await
    }
}

/// p50 and p99 publish-to-durable latency, in ms, at `rate` messages/s, in process.
async fn latency(broker: &Mosquitto, rate: u64, count: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let embedded = EmbeddedConfig {
        dir: dir.path().to_path_buf(),
        fsync: FsyncPolicy::Interval,
        fsync_interval: HumanDuration::from_millis(5),
        ..Default::default()
    };
    let mqtt = MqttConfig {
        url: broker.url(),
        client_id: "bench-latency".into(),
        max_inflight: 1024,
        ..Default::default()
    };
    let route = RouteConfig {
        index: 0,
        name: Some("telemetry".into()),
        from: "devices/{device}/telemetry".into(),
        qos: Qos::AtLeastOnce,
        to: "telemetry".into(),
        key: Some("{device}".into()),
        format: None,
        headers: Default::default(),
    };
    let mut config = Config {
        mqtt: Some(mqtt),
        routes: vec![route],
        ..Default::default()
    };
    config.log.embedded = embedded;
    let log = Arc::new(
        Log::open(LogOptions::new(&config.log.embedded, &config.topics))
            .await
            .unwrap(),
    );
    let sink = Timed {
        inner: EmbeddedSink::new(log.clone()),
        latencies: Default::default(),
        done: Default::default(),
    };
    let partitions = Arc::new(EmbeddedSink::new(log.clone()));
    let router = Arc::new(Router::new(&config, partitions).unwrap());
    let (ingress, deliveries) = tributary::mqtt::Ingress::start(
        config.mqtt.as_ref().expect("mqtt section"),
        &router.subscriptions(),
        None,
    )
    .unwrap();
    let mut connected = ingress.connected();
    connected.wait_for(|c| *c).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pipeline = tokio::spawn(tributary::pipeline::run(
        deliveries,
        router,
        sink.clone(),
        None,
    ));
    publish(broker.port, count, Some(rate)).await;
    while sink.done.load(Ordering::Relaxed) < count as u64 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    ingress.stop_reading();
    pipeline.await.unwrap();
    ingress.disconnect(Duration::from_secs(2)).await;
    let mut l = sink.latencies.lock().unwrap().clone();
    l.sort_unstable();
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)] as f64 / 1000.0;
    (pct(0.50), pct(0.99))
}

fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        println!("end to end: {MESSAGES} QoS 1 messages, 100 bytes, {TOPICS} topics, {PUBLISHERS} publishers; fsync interval 5ms");
        let broker = Mosquitto::start();
        let bare = bare_subscriber(broker.port, MESSAGES).await;
        let Run {
            rate: tributary,
            rss_kib,
            ..
        } = tributary_binary(&broker, MESSAGES, false).await;
        println!("  bare rumqttc subscriber (acks, discards): {bare:>9.0} msgs/s   (baseline)");
        println!("  tributary -> embedded log, durable:       {tributary:>9.0} msgs/s   ratio {:.2} (goal >= 0.9)", tributary / bare);
        println!("  tributary peak RSS: {:.1} MiB (goal < 50 MiB)", rss_kib as f64 / 1024.0);
        for rate in [2_000, 10_000] {
            let (p50, p99) = latency(&broker, rate, rate as usize * 3).await;
            println!("  publish-to-durable latency at {rate} msgs/s: p50 {p50:.2} ms, p99 {p99:.2} ms");
        }
        // Metrics off and on, alternated so that drift on a shared machine hits both alike; the
        // gateway's CPU time per message is the steadier figure of the two.
        const ROUNDS: usize = 5;
        const COUNT: usize = 300_000;
        println!("metrics off (http.listen null) vs on (scraped every second): {COUNT} messages, {ROUNDS} rounds alternated");
        let (mut off, mut on) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            off.push(tributary_binary(&broker, COUNT, false).await);
            on.push(tributary_binary(&broker, COUNT, true).await);
        }
        let mean = |runs: &[Run], f: fn(&Run) -> f64| runs.iter().map(f).sum::<f64>() / runs.len() as f64;
        let each = |runs: &[Run], f: fn(&Run) -> f64| {
            runs.iter().map(|r| format!("{:.0}", f(r))).collect::<Vec<_>>().join(", ")
        };
        let (rate_off, rate_on) = (mean(&off, |r| r.rate), mean(&on, |r| r.rate));
        let (cpu_off, cpu_on) = (mean(&off, |r| r.cpu_us), mean(&on, |r| r.cpu_us));
        println!("  metrics off: {rate_off:>9.0} msgs/s (runs: {}), {cpu_off:.2} µs CPU per message   (baseline)", each(&off, |r| r.rate));
        println!("  metrics on:  {rate_on:>9.0} msgs/s (runs: {}), {cpu_on:.2} µs CPU per message", each(&on, |r| r.rate));
        println!("  cost of metrics: throughput ratio {:.3}, CPU per message +{:.1}% (goal: under 3%)", rate_on / rate_off, (cpu_on / cpu_off - 1.0) * 100.0);
    });
}
