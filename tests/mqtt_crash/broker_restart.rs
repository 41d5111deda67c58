//! The broker restarted (persistence on) while messages stream in.

use crate::publish::{spawn_publishers, ROUTE};
use crate::support::{self, Gateway, Mosquitto};
use crate::tally::{ranges, report, tally, wait_drained};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[test]
fn broker_restart_mid_stream_loses_nothing() {
    const N: usize = 5_000;
    const RESTARTS: [usize; 2] = [1_500, 3_500];
    let started = Instant::now();
    let mut broker = Mosquitto::start_with("persistence true\nautosave_interval 1");
    let mut gw = Gateway::new(&Gateway::config(
        &broker.url(),
        "gw-restart",
        ", max_inflight: 256",
        ROUTE,
    ));
    gw.start();

    let progress = Arc::new(AtomicUsize::new(0));
    let publishers = spawn_publishers(broker.port, "restart-pub", N, 2, progress.clone());
    for (i, at) in RESTARTS.into_iter().enumerate() {
        assert!(
            support::wait_until(Duration::from_secs(60), || progress.load(Ordering::Relaxed)
                >= at),
            "publishing stalled"
        );
        let stored = support::count_records(&gw.data_dir(), "telemetry");
        println!(
            "broker restart {} at {:?}: {} acked by the broker, {stored} stored",
            i + 1,
            started.elapsed(),
            progress.load(Ordering::Relaxed)
        );
        broker.restart();
    }
    let reports = publishers.join().expect("publishers");
    println!("published {N} in {:?}: {reports:?}", started.elapsed());
    assert!(
        reports.iter().all(|r| r.not_success == 0),
        "the broker kept the gateway's session: {reports:?}"
    );

    let data = gw.data_dir();
    let stored = wait_drained(Duration::from_secs(60), N, || {
        support::count_records(&data, "telemetry")
    });
    assert!(
        gw.wait_exit(Duration::from_millis(100)).is_none(),
        "the gateway is still the first process:\n{}",
        gw.log()
    );
    let log = gw.log();
    let connects = log.matches("MQTT connected").count();
    println!(
        "gateway: {connects} connects ({} with the session kept), {} 'connection lost' lines",
        log.matches("session_present=true").count(),
        log.matches("MQTT connection lost").count()
    );
    assert!(
        log.contains("MQTT connection lost"),
        "the gateway saw the broker go:\n{log}"
    );
    assert!(
        connects > RESTARTS.len(),
        "the gateway reconnected by itself after each restart ({connects} connects):\n{log}"
    );
    let status = gw.terminate();
    assert!(
        status.success(),
        "graceful shutdown exits 0: {status:?}\n{}",
        gw.log()
    );

    let t = tally(&gw.records("telemetry"), N);
    report("broker restart", &t);
    println!(
        "broker restart: drained with {stored} records; {:?} in all",
        started.elapsed()
    );
    assert_eq!(
        t.lost.len(),
        0,
        "lost messages: {}",
        ranges(t.lost.iter().copied().take(100))
    );
    assert_eq!(t.records, N + t.duplicates);
    // Republished messages (the publisher's own duplicates) come after later ones only as
    // second copies, so first occurrences keep each device's order.
    assert!(
        t.disorder.is_empty(),
        "order per device: {:?}",
        &t.disorder[..t.disorder.len().min(20)]
    );
}
