//! Reloading routes, topics and the dead-letter topic while messages flow: SIGHUP, and
//! `tributary reload`, which checks the file and sends it. Against a real Mosquitto and the
//! `tributary` binary; counts of lost and doubled records are exact.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;
use support::{Gateway, Mosquitto};

const BIN: &str = env!("CARGO_BIN_EXE_tributary");
const TELEMETRY: &str = r#"  - { name: telemetry, from: "devices/{device}/telemetry", to: telemetry, key: "{device}" }"#;
const STATUS: &str =
    r#"  - { name: status, from: "devices/{device}/status", to: status, key: "{device}" }"#;

fn config(broker: &Mosquitto, routes: &str, extra_mqtt: &str) -> String {
    Gateway::config(&broker.url(), "gw-reload", extra_mqtt, routes)
}

/// `tributary reload -c <the gateway's config>`: (exit code, stdout, stderr).
fn reload(gw: &Gateway) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(["reload", "-c"])
        .arg(gw.config_path())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn rewrite(gw: &Gateway, yaml: &str) {
    let yaml = yaml.replace("DATA_DIR", &gw.data_dir().display().to_string());
    std::fs::write(gw.config_path(), yaml).unwrap();
}

/// The payloads stored in `topic`, each as many times as it is there.
fn payloads(gw: &Gateway, topic: &str) -> Vec<String> {
    gw.records(topic)
        .values()
        .flatten()
        .map(|r| r.value_str().to_string())
        .collect()
}

fn wait_log(gw: &Gateway, text: &str, times: usize) -> bool {
    support::wait_until(Duration::from_secs(15), || {
        gw.log().matches(text).count() >= times
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_routes_while_messages_flow() {
    const N: usize = 3_000;
    let broker = Mosquitto::start_with("log_type all");
    let mut gw = Gateway::new(&config(&broker, TELEMETRY, ""));
    gw.start();

    // A steady stream on telemetry throughout the first reload.
    let port = broker.port;
    let stream = tokio::spawn(async move {
        for chunk in 0..30 {
            let messages = (chunk * 100..(chunk + 1) * 100)
                .map(|i| {
                    (
                        format!("devices/d{}/telemetry", i % 10),
                        format!("t{i}").into_bytes(),
                    )
                })
                .collect();
            support::publish(port, &format!("reload-pub-{chunk}"), 1, messages).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    rewrite(&gw, &config(&broker, &format!("{TELEMETRY}\n{STATUS}"), ""));
    let (code, stdout, stderr) = reload(&gw);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("sent SIGHUP"), "{stdout}");
    assert!(wait_log(&gw, "reloaded routes", 1), "{}", gw.log());
    stream.await.unwrap();
    // The new route's filter is subscribed on the live session: status messages are stored.
    let status = (0..50)
        .map(|i| {
            (
                format!("devices/d{}/status", i % 5),
                format!("s{i}").into_bytes(),
            )
        })
        .collect();
    support::publish(port, "reload-status", 1, status).await;
    assert!(
        support::wait_until(Duration::from_secs(15), || {
            payloads(&gw, "telemetry").len() >= N && payloads(&gw, "status").len() >= 50
        }),
        "{}",
        gw.log()
    );
    let telemetry = payloads(&gw, "telemetry");
    let distinct: BTreeSet<&String> = telemetry.iter().collect();
    println!(
        "reload under load: {} telemetry records, {} distinct of {N}",
        telemetry.len(),
        distinct.len()
    );
    assert_eq!(distinct.len(), N, "lost none");
    assert_eq!(telemetry.len(), N, "doubled none");
    assert_eq!(payloads(&gw, "status").len(), 50);

    // Dropping the telemetry route unsubscribes its filter from the live session.
    rewrite(&gw, &config(&broker, STATUS, ""));
    let pid = gw.pid().unwrap();
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) };
    assert!(wait_log(&gw, "reloaded routes", 2), "{}", gw.log());
    assert!(
        support::wait_until(Duration::from_secs(10), || broker
            .log()
            .contains("Received UNSUBSCRIBE from gw-reload")),
        "{}",
        broker.log()
    );
    let status = (50..60)
        .map(|i| {
            (
                format!("devices/d{}/status", i % 5),
                format!("s{i}").into_bytes(),
            )
        })
        .collect();
    support::publish(port, "reload-status-2", 1, status).await;
    assert!(support::wait_until(Duration::from_secs(10), || payloads(
        &gw, "status"
    )
    .len()
        >= 60));
    assert!(gw.terminate().success(), "{}", gw.log());
    // A clean stop closes the log: nothing kept it open, and the next start skips recovery.
    assert!(gw.data_dir().join("@clean").exists(), "{}", gw.log());
    assert!(!gw.log().contains("log still in use"), "{}", gw.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_refused_and_the_old_routes_keep_running() {
    let broker = Mosquitto::start();
    let mut gw = Gateway::new(&config(&broker, TELEMETRY, ""));
    gw.start();
    let bad = r#"  - { name: telemetry, from: "devices/{device}/telemetry", to: telemetry, key: "{devce}" }"#;
    rewrite(&gw, &config(&broker, bad, ""));

    // `tributary reload` checks first: nothing is sent.
    let (code, stdout, stderr) = reload(&gw);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains("routes[0].key: unknown capture {devce}"),
        "{stderr}"
    );
    assert!(!stdout.contains("SIGHUP"));

    // A SIGHUP all the same: the gateway refuses the file, says why, and keeps its routes.
    unsafe { libc::kill(gw.pid().unwrap() as libc::pid_t, libc::SIGHUP) };
    assert!(
        wait_log(&gw, "reload refused: the running routes stay", 1),
        "{}",
        gw.log()
    );
    assert!(
        gw.log().contains("routes[0].key: unknown capture {devce}"),
        "{}",
        gw.log()
    );
    let messages = (0..20)
        .map(|i| {
            (
                format!("devices/d{i}/telemetry"),
                format!("t{i}").into_bytes(),
            )
        })
        .collect();
    support::publish(broker.port, "refused-pub", 1, messages).await;
    assert!(
        support::wait_until(Duration::from_secs(10), || payloads(&gw, "telemetry").len()
            >= 20),
        "{}",
        gw.log()
    );
    assert_eq!(payloads(&gw, "telemetry").len(), 20);

    // Settings that need a restart are named, and the rest is applied.
    rewrite(
        &gw,
        &config(
            &broker,
            &format!("{TELEMETRY}\n{STATUS}"),
            ", max_inflight: 64",
        ),
    );
    let (code, _, stderr) = reload(&gw);
    assert_eq!(code, 0, "{stderr}");
    assert!(wait_log(&gw, "reloaded routes", 1), "{}", gw.log());
    assert!(gw.log().contains("need a restart"), "{}", gw.log());
    assert!(gw.log().contains("mqtt.max_inflight"), "{}", gw.log());
    assert!(gw.terminate().success(), "{}", gw.log());
}

#[test]
fn reload_with_no_gateway_running_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bridge.yaml");
    std::fs::write(&path, "listener:\nroutes: [{ from: a, to: t }]\n").unwrap();
    let out = Command::new(BIN)
        .args(["reload", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no `tributary run` with the config"),
        "{stderr}"
    );
}
