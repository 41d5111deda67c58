//! Routing throughput: messages/s through `Router::route` for 1, 100 and 10,000 routes, beside
//! a naive linear matcher (every filter tested in turn) measured in the same run.
//!
//! `cargo bench --bench routing`. Single thread; each figure is the best of 3 runs.

use std::hint::black_box;
use std::time::{Duration, Instant};
use tributary::config::{Config, RouteConfig};
use tributary::message::{Message, Qos};
use tributary::route::filter::Filter;
use tributary::route::Router;

/// `n` routes, one per site: `site{i}/{device}/telemetry/{*rest}` -> telemetry, keyed by device.
fn config(n: usize) -> Config {
    let routes = (0..n)
        .map(|i| RouteConfig {
            index: i,
            name: Some(format!("site{i}")),
            from: format!("site{i}/{{device}}/telemetry/{{*rest}}"),
            qos: Qos::AtLeastOnce,
            to: "telemetry".into(),
            key: Some("{device}".into()),
            format: None,
            headers: Default::default(),
        })
        .collect();
    Config {
        routes,
        ..Config::default()
    }
}

/// 4-level topics spread over the sites and 1,000 devices, 100-byte payloads.
fn messages(sites: usize) -> Vec<Message> {
    (0..10_000)
        .map(|i| {
            Message::new(
                format!("site{}/dev{}/telemetry/temp", (i * 7919) % sites, i % 1000),
                vec![b'x'; 100],
            )
        })
        .collect()
}

/// Messages per second: best of 3 runs of at least `min` each.
fn rate(min: Duration, mut f: impl FnMut(&Message) -> usize, msgs: &[Message]) -> f64 {
    let mut best = 0f64;
    for _ in 0..3 {
        let start = Instant::now();
        let mut done = 0u64;
        while start.elapsed() < min {
            for m in msgs {
                black_box(f(m));
            }
            done += msgs.len() as u64;
        }
        best = best.max(done as f64 / start.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    println!("routing throughput, 1 thread, 4-level topics, 100-byte payloads (best of 3)");
    println!("  hot: one topic routed over and over (the matching algorithm's cost)");
    println!("  spread: 10,000 topics spread over every route (adds cache misses)");
    println!("  naive: the spread topics through a linear scan of every filter (the baseline)");
    println!(
        "{:>8}  {:>14}  {:>8}  {:>14}  {:>8}  {:>14}",
        "routes", "hot msgs/s", "ns/msg", "spread msgs/s", "ns/msg", "naive msgs/s"
    );
    for n in [1, 100, 10_000] {
        let config = config(n);
        let partitions = std::sync::Arc::new(config.topics.clone());
        let router = Router::new(&config, partitions).expect("bench config is valid");
        let msgs = messages(n);
        let records = router.route(&msgs[0]);
        assert_eq!(records.len(), 1, "each message matches exactly one route");
        let hot = rate(
            Duration::from_millis(500),
            |m| router.route(m).len(),
            &msgs[..1],
        );
        let spread = rate(Duration::from_millis(500), |m| router.route(m).len(), &msgs);
        // Baseline: a linear scan testing every filter, as a regex-per-route router would.
        let filters: Vec<Filter> = router.routes().iter().map(|r| r.filter().clone()).collect();
        let scan_msgs = &msgs[..msgs.len().min(200_000 / n.max(1))];
        let naive = rate(
            Duration::from_millis(300),
            |m| filters.iter().filter(|f| f.matches(&m.topic)).count(),
            scan_msgs,
        );
        println!(
            "{n:>8}  {hot:>14.0}  {:>8.0}  {spread:>14.0}  {:>8.0}  {naive:>14.0}",
            1e9 / hot,
            1e9 / spread
        );
    }
}
