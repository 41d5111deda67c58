//! Through the whole gateway: Mosquitto -> tributary run -> Kafka listener -> clients.

use crate::clients::{assign, base_consumer, consumer_config, kcat, read_to_end, CALL};
use crate::records::Rec;
use crate::server::{assert_no_library_panics, blocking};
use crate::support;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::{Offset as KOffset, TopicPartitionList};
use std::time::Duration;

/// MQTT messages published to a real Mosquitto, stored by the real binary, read back over its
/// Kafka listener by rdkafka and kcat exactly as stored; a live consumer gets new ones.
#[tokio::test(flavor = "multi_thread")]
async fn mqtt_to_kafka_clients_through_the_binary() {
    let broker = support::Mosquitto::start();
    let port = support::free_port();
    let yaml = format!(
        "mqtt: {{ url: \"{}\", client_id: gw-kafka, keep_alive: 5s }}\n\
         log: {{ embedded: {{ dir: DATA_DIR, fsync_interval: 2ms, kafka_listener: \"127.0.0.1:{port}\" }} }}\n\
         topics: {{ default: {{ partitions: 3 }} }}\n\
         http: {{ listen: null }}\n\
         routes:\n  - {{ name: telemetry, from: \"devices/{{device}}/telemetry/{{*rest}}\", to: telemetry, key: \"{{device}}\", headers: {{ unit: \"{{rest}}\" }} }}\n",
        broker.url()
    );
    let mut gw = support::Gateway::new(&yaml);
    gw.start();
    let published: Vec<(String, Vec<u8>)> = (0..10)
        .flat_map(|i| {
            (0..6).map(move |d| {
                (
                    format!("devices/d{d}/telemetry/temp"),
                    format!("d{d}:{i}").into_bytes(),
                )
            })
        })
        .collect();
    support::publish(broker.port, "kafka-pub", 1, published.clone()).await;
    let data = gw.data_dir();
    assert!(
        support::wait_until(Duration::from_secs(10), || support::count_records(
            &data,
            "telemetry"
        ) == 60),
        "{}",
        gw.log()
    );

    let stored = |gw: &support::Gateway| -> Vec<Rec> {
        let mut all: Vec<Rec> = gw
            .records("telemetry")
            .into_iter()
            .flat_map(|(p, records)| {
                records.into_iter().map(move |r| Rec {
                    partition: p as i32,
                    offset: r.offset as i64,
                    timestamp: r.timestamp_ms,
                    key: r.key.map(|k| k.to_vec()),
                    value: Some(r.value.to_vec()),
                    headers: r
                        .headers
                        .into_iter()
                        .map(|(k, v)| (k, Some(v.into_bytes())))
                        .collect(),
                })
            })
            .collect();
        all.sort();
        all
    };
    let on_disk = stored(&gw);
    assert_eq!(on_disk.len(), 60);
    let bootstrap = format!("127.0.0.1:{port}");

    let (b, want) = (bootstrap.clone(), on_disk.clone());
    let ends = blocking(move || {
        let c = base_consumer(&b, &[("auto.offset.reset", "earliest")]);
        let md = c.fetch_metadata(Some("telemetry"), CALL).unwrap();
        assert_eq!(md.topics()[0].partitions().len(), 3);
        assign(
            &c,
            "telemetry",
            &[
                (0, KOffset::Beginning),
                (1, KOffset::Beginning),
                (2, KOffset::Beginning),
            ],
        );
        let got = read_to_end(&c, 3);
        assert_eq!(got, want, "rdkafka reads what the gateway stored");
        // ...which is what was published: each message once, keyed by device, with headers.
        let mut values: Vec<String> = got
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap()).unwrap())
            .collect();
        values.sort();
        let mut sent: Vec<String> = (0..10)
            .flat_map(|i| (0..6).map(move |d| format!("d{d}:{i}")))
            .collect();
        sent.sort();
        assert_eq!(values, sent);
        for r in &got {
            let value = String::from_utf8(r.value.clone().unwrap()).unwrap();
            let device = value.split(':').next().unwrap();
            assert_eq!(r.key.as_deref(), Some(device.as_bytes()));
            let topic = format!("devices/{device}/telemetry/temp");
            let headers: Vec<(&str, Option<&[u8]>)> = r
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            assert_eq!(
                headers,
                [
                    ("mqtt.topic", Some(topic.as_bytes())),
                    ("mqtt.qos", Some(&b"1"[..])),
                    ("mqtt.retain", Some(&b"false"[..])),
                    ("unit", Some(&b"temp"[..])),
                ]
            );
        }
        (0..3)
            .map(|p| c.fetch_watermarks("telemetry", p, CALL).unwrap().1)
            .collect::<Vec<_>>()
    })
    .await;
    assert_eq!(ends.iter().sum::<i64>(), 60);

    // kcat: metadata, and every record per partition, in order.
    let (b, want) = (bootstrap.clone(), on_disk.clone());
    blocking(move || {
        let listing = kcat(&["-L", "-b", &b, "-t", "telemetry"]);
        assert!(
            listing.contains("topic \"telemetry\" with 3 partitions:"),
            "{listing}"
        );
        for p in 0..3 {
            let out = kcat(&[
                "-C",
                "-b",
                &b,
                "-t",
                "telemetry",
                "-p",
                &p.to_string(),
                "-o",
                "beginning",
                "-e",
                "-q",
                "-f",
                "%k=%s\n",
            ]);
            let lines: Vec<String> = want
                .iter()
                .filter(|r| r.partition == p)
                .map(Rec::kcat_line)
                .collect();
            assert_eq!(out.lines().collect::<Vec<_>>(), lines, "kcat partition {p}");
        }
    })
    .await;

    // A live consumer at the end of each partition gets the next messages as they arrive.
    let live: StreamConsumer = consumer_config(&bootstrap)
        .set("fetch.wait.max.ms", "5000")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for (p, end) in ends.iter().enumerate() {
        tpl.add_partition_offset("telemetry", p as i32, KOffset::Offset(*end))
            .unwrap();
    }
    live.assign(&tpl).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let next: Vec<(String, Vec<u8>)> = (0..6)
        .map(|d| {
            (
                format!("devices/d{d}/telemetry/temp"),
                format!("d{d}:live").into_bytes(),
            )
        })
        .collect();
    support::publish(broker.port, "kafka-pub-live", 1, next).await;
    let mut got = Vec::new();
    while got.len() < 6 {
        let m = tokio::time::timeout(Duration::from_secs(10), live.recv())
            .await
            .expect("live records")
            .unwrap();
        got.push(Rec::from_message(&m));
    }
    got.sort();
    assert!(support::wait_until(
        Duration::from_secs(5),
        || support::count_records(&data, "telemetry") == 66
    ));
    let now_on_disk = stored(&gw);
    assert_eq!(
        got,
        now_on_disk[..]
            .iter()
            .filter(|r| r.value.as_deref().is_some_and(|v| v.ends_with(b":live")))
            .cloned()
            .collect::<Vec<_>>()
    );
    drop(live);
    assert!(gw.terminate().success(), "{}", gw.log());
    assert_no_library_panics();
}
