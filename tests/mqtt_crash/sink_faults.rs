//! A sink that fails for a while, in process: acks held until records are stored, nothing
//! lost, order kept per device; one ignored test documents a broker limitation.

use crate::in_process::{sample_inflight, InProcess};
use crate::publish::spawn_publishers;
use crate::support::{self, Stored};
use crate::tally::{ranges, report, tally, wait_drained};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A message whose records the sink refuses for good goes to the dead-letter topic; when the
/// sink refuses the dead letter too, the message is not acked: it waits, holding back those
/// behind it, and is stored (as a dead letter) and acked once the sink takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_dead_letter_stays_unacked_until_stored() {
    const N: usize = 20;
    let _ = tracing_subscriber::fmt()
        .with_env_filter("tributary=info")
        .with_test_writer()
        .try_init();
    let gw = InProcess::start("gw-refusing", 100, Duration::ZERO).await;
    gw.refusing.store(true, Ordering::SeqCst);
    let progress = Arc::new(AtomicUsize::new(0));
    let publishers = spawn_publishers(gw.broker.port, "refused-pub", N, 1, progress.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.acker.inflight() < N {
        assert!(
            Instant::now() < deadline,
            "only {} of {N} received",
            gw.acker.inflight()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Several retry rounds (50, 100, 200, 400 ms...) pass with everything refused.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let refused = gw.refused.load(Ordering::Relaxed);
    assert!(
        refused >= 2,
        "the dead letter was tried again: {refused} appends refused"
    );
    assert_eq!(
        gw.acker.inflight(),
        N,
        "nothing acked while nothing could be stored"
    );
    assert!(gw.log.partition_counts().is_empty(), "nothing stored");

    gw.refusing.store(false, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    while gw.acker.inflight() > 0 {
        assert!(
            Instant::now() < deadline,
            "{} still unacked",
            gw.acker.inflight()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::task::spawn_blocking(move || publishers.join().expect("publishers"))
        .await
        .unwrap();
    // Read before `stop`, which removes the log's directory; everything acked is stored.
    let dead = support::read_topic(&gw.data(), "tributary.dead-letter");
    let dead: Vec<&Stored> = dead.values().flatten().collect();
    let (stats, telemetry) = gw.stop().await;
    // Those the pipeline had read when the sink refused them became dead letters; those still
    // waiting to be read were routed as usual once the sink took records again.
    let t = tally(&telemetry, N);
    assert!(!dead.is_empty(), "{stats:?}");
    assert_eq!(
        t.records + dead.len(),
        N,
        "each message stored once: {stats:?}"
    );
    for record in &dead {
        assert_eq!(record.header("route"), Some("telemetry"));
        assert!(
            record
                .header("error")
                .is_some_and(|e| e.contains("refused for good")),
            "{:?}",
            record.header("error")
        );
        let (_, seq) = record
            .value_str()
            .split_once(':')
            .expect("payload is device:seq");
        let seq: usize = seq.parse().unwrap();
        assert!(t.lost.contains(&seq), "{seq} is in telemetry too");
    }
    assert_eq!(stats.dead_letters, dead.len() as u64, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_sink_holds_acks_and_loses_nothing() {
    const N: usize = 5_000;
    const MAX_INFLIGHT: usize = 100;
    const FAIL_AT: usize = 1_500;
    const FAIL_FOR: Duration = Duration::from_secs(2);
    let _ = tracing_subscriber::fmt()
        .with_env_filter("tributary=info")
        .with_test_writer()
        .try_init();
    let started = Instant::now();
    let gw = InProcess::start("gw-flaky", MAX_INFLIGHT, Duration::from_millis(20)).await;
    let stop_sampling = Arc::new(AtomicBool::new(false));
    let sampler = sample_inflight(gw.acker.clone(), gw.failing.clone(), stop_sampling.clone());

    let progress = Arc::new(AtomicUsize::new(0));
    let publishers = spawn_publishers(gw.broker.port, "flaky-pub", N, 2, progress.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    while gw.stored().await < FAIL_AT {
        assert!(Instant::now() < deadline, "nothing stored");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.failing.store(true, Ordering::SeqCst);
    let stored_at_failure = gw.stored().await;
    println!(
        "sink failing at {:?}: {} acked by the broker, {stored_at_failure} stored",
        started.elapsed(),
        progress.load(Ordering::Relaxed)
    );
    tokio::time::sleep(FAIL_FOR).await;
    let stored_during = gw.stored().await;
    let inflight_at_end = gw.acker.inflight();
    gw.failing.store(false, Ordering::SeqCst);
    let cleared = Instant::now();
    println!(
        "sink healthy again at {:?}: {} appends refused, {stored_during} stored, {inflight_at_end} unacked in the pipeline",
        started.elapsed(),
        gw.refused.load(Ordering::Relaxed)
    );

    let reports = tokio::task::spawn_blocking(move || publishers.join().expect("publishers"))
        .await
        .unwrap();
    println!("published {N} in {:?}: {reports:?}", started.elapsed());
    let data = gw.data();
    let recovery = tokio::task::spawn_blocking(move || {
        assert!(
            support::wait_until(Duration::from_secs(60), || support::count_records(
                &data,
                "telemetry"
            ) >= N),
            "not all stored"
        );
        cleared.elapsed()
    })
    .await
    .unwrap();
    let data = gw.data();
    let stored = tokio::task::spawn_blocking(move || {
        wait_drained(Duration::from_secs(60), N, || {
            support::count_records(&data, "telemetry")
        })
    })
    .await
    .unwrap();
    println!("all {N} stored {recovery:?} after the sink recovered ({stored} records)");
    stop_sampling.store(true, Ordering::Relaxed);
    let (max, max_failing, samples) = sampler.await.unwrap();
    let refused = gw.refused.load(Ordering::Relaxed);
    let (stats, records) = gw.stop().await;
    println!("pipeline: {stats:?}; unacked in the pipeline: max {max} overall, {max_failing} while failing ({samples} samples)");

    let t = tally(&records, N);
    report("failing sink", &t);
    println!("failing sink: {:?} in all", started.elapsed());
    assert!(refused > 0, "the fault was hit");
    assert!(stats.retries > 0, "the pipeline retried");
    assert!(
        stored_during <= stored_at_failure + MAX_INFLIGHT,
        "little stored after the fault began: {stored_at_failure} -> {stored_during}"
    );
    assert!(max_failing > 0, "messages were held while failing");
    assert!(
        max_failing <= MAX_INFLIGHT,
        "{max_failing} unacked while failing, max_inflight {MAX_INFLIGHT}"
    );
    assert!(
        max <= MAX_INFLIGHT,
        "{max} unacked, max_inflight {MAX_INFLIGHT}"
    );
    assert!(
        reports
            .iter()
            .all(|r| r.connections == 1 && r.not_success == 0),
        "{reports:?}"
    );
    assert_eq!(
        t.lost.len(),
        0,
        "lost messages (acked but not stored?): {}",
        ranges(t.lost.iter().copied().take(100))
    );
    assert_eq!(t.records, N + t.duplicates);
    assert!(t.duplicates <= MAX_INFLIGHT, "{} duplicates", t.duplicates);
    assert!(
        t.disorder.is_empty(),
        "order per device: {:?}",
        &t.disorder[..t.disorder.len().min(20)]
    );
    // The oldest failed message waits out the outage with backoff (its next try lands up to
    // ~1.6 s after the fault clears); the others then go at once, not each after a backoff
    // sleep of its own (that took 50 ms per failed message: 5 s more for 100 of them).
    assert!(
        recovery < Duration::from_secs(5),
        "{recovery:?} to store everything after the sink recovered"
    );
}

/// A sink down for longer than `mqtt.keep_alive` (5 s in these configs): the session should
/// stay up and nothing be redelivered. Fails here, hence ignored: Mosquitto 2.0.11 sends past
/// the receive maximum (see `sigkill_mid_stream_loses_nothing`), so every pipeline slot gets
/// taken, and the session task then waits for a slot instead of polling rumqttc's event loop;
/// PINGRESPs go unread, the connection drops ("Last pingreq isn't acked"), and each reconnect
/// makes the broker redeliver everything unacked, including messages stored before the outage
/// whose PUBACKs were still queued (rumqttc drops queued PUBACKs on a reconnect). With a broker
/// that keeps to the receive maximum a slot is always free while connected. Run with
/// `-- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "fails against Mosquitto 2.0.11, which sends past the receive maximum: the session drops during a long sink outage (see the test's doc)"]
async fn long_sink_outage_keeps_the_mqtt_session() {
    const N: usize = 3_000;
    const MAX_INFLIGHT: usize = 100;
    const FAIL_FOR: Duration = Duration::from_secs(12);
    let _ = tracing_subscriber::fmt()
        .with_env_filter("tributary=info")
        .with_test_writer()
        .try_init();
    let gw = InProcess::start("gw-outage", MAX_INFLIGHT, Duration::from_millis(20)).await;
    let mut connected = gw.ingress.connected();
    let drops = tokio::spawn(async move {
        let mut drops = 0;
        while connected.changed().await.is_ok() {
            if !*connected.borrow_and_update() {
                drops += 1;
            }
        }
        drops
    });
    let progress = Arc::new(AtomicUsize::new(0));
    let publishers = spawn_publishers(gw.broker.port, "outage-pub", N, 2, progress.clone());
    while gw.stored().await < N / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gw.failing.store(true, Ordering::SeqCst);
    tokio::time::sleep(FAIL_FOR).await;
    gw.failing.store(false, Ordering::SeqCst);
    tokio::task::spawn_blocking(move || publishers.join().expect("publishers"))
        .await
        .unwrap();
    let data = gw.data();
    tokio::task::spawn_blocking(move || {
        wait_drained(Duration::from_secs(60), N, || {
            support::count_records(&data, "telemetry")
        })
    })
    .await
    .unwrap();
    let (_, records) = gw.stop().await;
    let drops = drops.await.unwrap();
    let t = tally(&records, N);
    report("long outage", &t);
    println!("long outage: the MQTT session dropped {drops} times");
    assert_eq!(t.lost.len(), 0);
    assert!(
        t.disorder.is_empty(),
        "order per device: {:?}",
        &t.disorder[..t.disorder.len().min(20)]
    );
    assert_eq!(drops, 0, "the session stays up while the sink is down");
    assert_eq!(
        t.duplicates, 0,
        "without a reconnect nothing is redelivered"
    );
}

/// Short sink faults reported late (as a timed-out write is): appends made during a 5 ms fault
/// fail 20 ms later, while appends made after the fault, before the pipeline hears of the
/// failure, succeed; the failed ones are retried afterwards, so their records land after later
/// records of the same device, in the same partition -- unless the sink fences after a failure
/// and the pipeline lifts the fence only when it retries in order, which is what this checks
/// (DESIGN §5: the pipeline must not reorder records bound for one partition).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_sink_faults_keep_order_per_device() {
    const N: usize = 5_000;
    let _ = tracing_subscriber::fmt()
        .with_env_filter("tributary=warn")
        .with_test_writer()
        .try_init();
    let gw = InProcess::start("gw-blips", 100, Duration::from_millis(20)).await;
    let progress = Arc::new(AtomicUsize::new(0));
    let publishers = spawn_publishers(gw.broker.port, "blips-pub", N, 2, progress.clone());
    let (failing, stop) = (gw.failing.clone(), Arc::new(AtomicBool::new(false)));
    let blips = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut blips = 0;
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(300)).await;
                failing.store(true, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                failing.store(false, Ordering::SeqCst);
                blips += 1;
            }
            blips
        })
    };
    tokio::task::spawn_blocking(move || publishers.join().expect("publishers"))
        .await
        .unwrap();
    let data = gw.data();
    tokio::task::spawn_blocking(move || {
        wait_drained(Duration::from_secs(60), N, || {
            support::count_records(&data, "telemetry")
        })
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    let blips = blips.await.unwrap();
    let refused = gw.refused.load(Ordering::Relaxed);
    let (_, records) = gw.stop().await;
    let t = tally(&records, N);
    report("sink blips", &t);
    println!("sink blips: {blips} faults, {refused} appends refused");
    assert_eq!(t.lost.len(), 0);
    assert!(
        t.disorder.is_empty(),
        "order per device: {:?}",
        &t.disorder[..t.disorder.len().min(20)]
    );
}
