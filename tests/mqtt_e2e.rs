//! `tributary run` end to end: a real Mosquitto, the real binary, records read back from disk.

mod support;

use support::{publish, Gateway, Mosquitto};
use tributary::route::partition::partition_for_key;

const ROUTES: &str = r#"  - { name: telemetry, from: "devices/{device}/telemetry/{*rest}", to: telemetry, key: "{device}", headers: { unit: "{rest}" } }
  - { name: json, from: "devices/{device}/json", to: "json.{device}", format: json, qos: 1 }"#;

/// 20 devices x 10 messages, QoS 1, MQTT 5 and 3.1.1: every message lands once, in the right
/// partition, in order per device, with key and headers.
async fn qos1_end_to_end(version: u8) {
    let broker = Mosquitto::start();
    let mut gw = Gateway::new(&Gateway::config(&broker.url(), &format!("gw-v{version}"), &format!(", version: {version}"), ROUTES));
    gw.start();
    let mut messages = Vec::new();
    for i in 0..10 {
        for d in 0..20 {
            messages.push((format!("devices/d{d}/telemetry/temp/c"), format!("{d}:{i}").into_bytes()));
        }
    }
    messages.push(("devices/x/json".to_string(), b"{\"ok\":true}".to_vec()));
    messages.push(("devices/x/json".to_string(), b"not json".to_vec()));
    messages.push(("unrouted/topic".to_string(), b"ignored".to_vec()));
    publish(broker.port, "publisher", 1, messages).await;
    assert!(support::wait_until(std::time::Duration::from_secs(10), || gw.records("telemetry").values().map(Vec::len).sum::<usize>() == 200));
    let status = gw.terminate();
    assert!(status.success(), "graceful shutdown exits 0: {status:?}\n{}", gw.log());

    let telemetry = gw.records("telemetry");
    assert_eq!(telemetry.len(), 3, "3 partitions");
    let mut seen = 0;
    for (partition, records) in &telemetry {
        let mut last: std::collections::HashMap<String, i32> = Default::default();
        for (offset, r) in records.iter().enumerate() {
            assert_eq!(r.offset, offset as u64);
            let (d, i) = r.value_str().split_once(':').unwrap();
            let key = format!("d{d}");
            assert_eq!(r.key.as_deref(), Some(key.as_bytes()));
            assert_eq!(*partition, partition_for_key(key.as_bytes(), 3), "murmur2 partition");
            assert_eq!(r.header("mqtt.topic"), Some(format!("devices/d{d}/telemetry/temp/c").as_str()));
            assert_eq!(r.header("mqtt.qos"), Some("1"));
            assert_eq!(r.header("mqtt.retain"), Some("false"));
            assert_eq!(r.header("unit"), Some("temp/c"));
            let i: i32 = i.parse().unwrap();
            assert_eq!(i, last.insert(key, i).unwrap_or(-1) + 1, "in order, no gap, no duplicate");
            seen += 1;
        }
    }
    assert_eq!(seen, 200);
    let json: Vec<_> = gw.records("json.x").into_values().flatten().collect();
    assert_eq!(json.len(), 1);
    assert_eq!(json[0].value_str(), "{\"ok\":true}");
    let dead: Vec<_> = gw.records("tributary.dead-letter").into_values().flatten().collect();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].value_str(), "not json");
    assert_eq!(dead[0].header("route"), Some("json"));
    assert!(dead[0].header("error").unwrap().starts_with("invalid JSON"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_end_to_end_mqtt5() {
    qos1_end_to_end(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos1_end_to_end_mqtt311() {
    qos1_end_to_end(3).await;
}
