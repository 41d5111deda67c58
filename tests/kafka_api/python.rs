//! The Python clients (confluent-kafka, kafka-python) read the same records.

use crate::clients::run;
use crate::records::{append_dataset, checksum, unhex, Rec};
use crate::server::{assert_no_library_panics, blocking, Server};
use crate::support;
use std::process::Command;
use std::time::Duration;
use tributary::kafka_api::ServerOptions;

/// Runs tests/python/consume.py with `client` (confluent or kafka-python).
fn python_consume(client: &str, bootstrap: &str, topic: &str) -> (Vec<Rec>, usize, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/consume.py");
    // TRIBUTARY_PYTHON: another interpreter (a virtualenv with other client versions).
    let python = support::require_python(match client {
        "confluent" => &[("confluent_kafka", "confluent-kafka")],
        "kafka-python" => &[("kafka", "kafka-python")],
        other => panic!("no Python client {other}"),
    });
    let mut command = Command::new(python);
    command.args([script, client, bootstrap, topic]);
    let out = run(command, Duration::from_secs(45));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "consume.py {client}: {}\n{stderr}",
        out.status
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let mut lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.pop().expect("a summary line");
    let bytes = |v: &serde_json::Value| v.as_str().map(unhex);
    let records = lines
        .iter()
        .map(|r| Rec {
            partition: r["p"].as_i64().unwrap() as i32,
            offset: r["o"].as_i64().unwrap(),
            timestamp: r["ts"].as_i64().unwrap(),
            key: bytes(&r["key"]),
            value: bytes(&r["value"]),
            headers: r["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| (h[0].as_str().unwrap().to_string(), bytes(&h[1])))
                .collect(),
        })
        .collect();
    (
        records,
        summary["count"].as_u64().unwrap() as usize,
        summary["sha256"].as_str().unwrap().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn python_clients_read_the_same_records() {
    let server = Server::start(ServerOptions::default()).await;
    let expected = append_dataset(&server.log, "events", 3, 40, false).await;
    let sum = checksum(&expected);
    for client in ["confluent", "kafka-python"] {
        let b = server.bootstrap();
        let (records, count, sha) = blocking(move || python_consume(client, &b, "events")).await;
        assert_eq!(count, expected.len(), "{client}: count");
        assert_eq!(sha, sum, "{client}: checksum");
        assert_eq!(records, expected, "{client}: records");
    }
    server.assert_alive();
    assert_no_library_panics();
}
