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
    let mut gw = Gateway::new(&Gateway::config(
        &broker.url(),
        &format!("gw-v{version}"),
        &format!(", version: {version}"),
        ROUTES,
    ));
    gw.start();
    let mut messages = Vec::new();
    for i in 0..10 {
        for d in 0..20 {
            messages.push((
                format!("devices/d{d}/telemetry/temp/c"),
                format!("{d}:{i}").into_bytes(),
            ));
        }
    }
    messages.push(("devices/x/json".to_string(), b"{\"ok\":true}".to_vec()));
    messages.push(("devices/x/json".to_string(), b"not json".to_vec()));
    messages.push(("unrouted/topic".to_string(), b"ignored".to_vec()));
    publish(broker.port, "publisher", 1, messages).await;
    assert!(support::wait_until(
        std::time::Duration::from_secs(10),
        || gw
            .records("telemetry")
            .values()
            .map(Vec::len)
            .sum::<usize>()
            == 200
    ));
    let status = gw.terminate();
    assert!(
        status.success(),
        "graceful shutdown exits 0: {status:?}\n{}",
        gw.log()
    );

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
            assert_eq!(
                *partition,
                partition_for_key(key.as_bytes(), 3),
                "murmur2 partition"
            );
            assert_eq!(
                r.header("mqtt.topic"),
                Some(format!("devices/d{d}/telemetry/temp/c").as_str())
            );
            assert_eq!(r.header("mqtt.qos"), Some("1"));
            assert_eq!(r.header("mqtt.retain"), Some("false"));
            assert_eq!(r.header("unit"), Some("temp/c"));
            let i: i32 = i.parse().unwrap();
            assert_eq!(
                i,
                last.insert(key, i).unwrap_or(-1) + 1,
                "in order, no gap, no duplicate"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, 200);
    let json: Vec<_> = gw.records("json.x").into_values().flatten().collect();
    assert_eq!(json.len(), 1);
    assert_eq!(json[0].value_str(), "{\"ok\":true}");
    let dead: Vec<_> = gw
        .records("tributary.dead-letter")
        .into_values()
        .flatten()
        .collect();
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

/// QoS 0 routes subscribe at QoS 0; on loopback every message still arrives (QoS 0 is lossy
/// only when the pipeline is full or the gateway stops).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qos0_end_to_end() {
    let broker = Mosquitto::start();
    let routes = r#"  - { name: q0, from: "sensors/{id}", to: sensors, key: "{id}", qos: 0 }"#;
    let mut gw = Gateway::new(&Gateway::config(&broker.url(), "gw-q0", "", routes));
    gw.start();
    let messages: Vec<_> = (0..100)
        .map(|i| (format!("sensors/s{}", i % 5), format!("{i}").into_bytes()))
        .collect();
    publish(broker.port, "pub-q0", 0, messages).await;
    let count = || gw.records("sensors").values().map(Vec::len).sum::<usize>();
    assert!(
        support::wait_until(std::time::Duration::from_secs(10), || count() == 100),
        "got {}",
        count()
    );
    assert!(gw.terminate().success());
    for r in gw.records("sensors").into_values().flatten() {
        assert_eq!(r.header("mqtt.qos"), Some("0"));
    }
}

/// MQTT 5 user properties and content type become headers; a retained message is marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt5_properties_and_retain_become_headers() {
    use rumqttc::v5::mqttbytes::v5::PublishProperties;
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let broker = Mosquitto::start();
    // Retained before the gateway subscribes: delivered on subscribe with retain set.
    publish_retained(broker.port, "devices/r/telemetry/x", b"retained").await;
    let mut gw = Gateway::new(&Gateway::config(&broker.url(), "gw-props", "", ROUTES));
    gw.start();
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("pub-props", "127.0.0.1", broker.port), 10);
    let props = PublishProperties {
        user_properties: vec![("unit".into(), "C".into()), ("site".into(), "s1".into())],
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    client
        .publish_with_properties(
            "devices/p/telemetry/t",
            QoS::AtLeastOnce,
            false,
            "21.5",
            props,
        )
        .await
        .unwrap();
    loop {
        if let Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(_)) =
            eventloop.poll().await.unwrap()
        {
            break;
        }
    }
    let count = || {
        gw.records("telemetry")
            .values()
            .map(Vec::len)
            .sum::<usize>()
    };
    assert!(
        support::wait_until(std::time::Duration::from_secs(10), || count() == 2),
        "got {}",
        count()
    );
    assert!(gw.terminate().success());
    let records: Vec<_> = gw.records("telemetry").into_values().flatten().collect();
    let retained = records
        .iter()
        .find(|r| r.value_str() == "retained")
        .unwrap();
    assert_eq!(retained.header("mqtt.retain"), Some("true"));
    let live = records.iter().find(|r| r.value_str() == "21.5").unwrap();
    let headers: Vec<(&str, &str)> = live
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        headers,
        [
            ("mqtt.topic", "devices/p/telemetry/t"),
            ("mqtt.qos", "1"),
            ("mqtt.retain", "false"),
            ("unit", "C"),
            ("site", "s1"),
            ("content-type", "text/plain"),
            // The route's own header comes last.
            ("unit", "t"),
        ]
    );
}

async fn publish_retained(port: u16, topic: &str, payload: &'static [u8]) {
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new("retainer", "127.0.0.1", port), 10);
    client
        .publish(topic, QoS::AtLeastOnce, true, payload)
        .await
        .unwrap();
    loop {
        if let Event::Incoming(rumqttc::v5::mqttbytes::v5::Packet::PubAck(_)) =
            eventloop.poll().await.unwrap()
        {
            break;
        }
    }
}

/// Two gateways in one shared group split the messages, and together lose none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_subscription_splits_the_load() {
    let broker = Mosquitto::start();
    let mut a = Gateway::new(&Gateway::config(
        &broker.url(),
        "gw-a",
        ", shared_group: tg",
        ROUTES,
    ));
    let mut b = Gateway::new(&Gateway::config(
        &broker.url(),
        "gw-b",
        ", shared_group: tg",
        ROUTES,
    ));
    a.start();
    b.start();
    let messages: Vec<_> = (0..2000)
        .map(|i| {
            (
                format!("devices/d{}/telemetry/t", i % 10),
                format!("{i}").into_bytes(),
            )
        })
        .collect();
    publish(broker.port, "pub-shared", 1, messages).await;
    let count = |g: &Gateway| g.records("telemetry").values().map(Vec::len).sum::<usize>();
    assert!(support::wait_until(
        std::time::Duration::from_secs(15),
        || count(&a) + count(&b) >= 2000
    ));
    assert!(a.terminate().success());
    assert!(b.terminate().success());
    let (na, nb) = (count(&a), count(&b));
    assert!(na > 0 && nb > 0, "both members got messages: {na} and {nb}");
    let mut all: Vec<u32> = [&a, &b]
        .iter()
        .flat_map(|g| g.records("telemetry").into_values().flatten())
        .map(|r| r.value_str().parse().unwrap())
        .collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (0..2000).collect::<Vec<_>>(), "none lost");
}

/// Makes a CA (`{name}-ca.crt`) and a certificate signed by it for `cn` (`{name}.crt/.key`),
/// with an IP SAN for 127.0.0.1, using the openssl command.
fn make_certs(dir: &std::path::Path, name: &str, ca: Option<&str>) {
    let run = |args: &[&str]| {
        let out =
            std::process::Command::new(support::require("openssl", "apt-get install -y openssl"))
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca = ca.map(str::to_string).unwrap_or_else(|| {
        let ca = format!("{name}-ca");
        let (key, crt) = (format!("{ca}.key"), format!("{ca}.crt"));
        let mut args = vec!["req", "-x509"];
        args.extend(ec);
        args.extend([
            "-keyout",
            &key,
            "-out",
            &crt,
            "-days",
            "2",
            "-subj",
            "/CN=Tributary test CA",
        ]);
        run(&args);
        ca
    });
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    let (key, csr, crt) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.crt"),
    );
    let mut args = vec!["req"];
    args.extend(ec);
    args.extend(["-keyout", &key, "-out", &csr, "-subj", "/CN=127.0.0.1"]);
    run(&args);
    let (ca_crt, ca_key) = (format!("{ca}.crt"), format!("{ca}.key"));
    run(&[
        "x509",
        "-req",
        "-in",
        &csr,
        "-CA",
        &ca_crt,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        &crt,
        "-days",
        "2",
        "-extfile",
        "san.ext",
    ]);
}

/// A TLS listener (mutual TLS when `client_certs`) plus a plain one for the test publisher.
fn tls_broker(certs: &std::path::Path, client_certs: bool) -> (Mosquitto, u16) {
    let plain = support::free_port();
    let p = |f: &str| certs.join(f).display().to_string();
    let extra = format!(
        "cafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate {client_certs}\nlistener {plain} 127.0.0.1\n",
        p("server-ca.crt"),
        p("server.crt"),
        p("server.key")
    );
    (Mosquitto::start_with(&extra), plain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mutual_tls_with_a_test_ca() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path(), "server", None);
    make_certs(certs.path(), "client", Some("server-ca"));
    for mutual in [false, true] {
        let (broker, plain) = tls_broker(certs.path(), mutual);
        let p = |f: &str| certs.path().join(f).display().to_string();
        let client_auth = if mutual {
            format!(
                ", cert_file: {}, key_file: {}",
                p("client.crt"),
                p("client.key")
            )
        } else {
            String::new()
        };
        let mqtt = format!(", tls: {{ ca_file: {}{client_auth} }}", p("server-ca.crt"));
        let url = format!("mqtts://127.0.0.1:{}", broker.port);
        let mut gw = Gateway::new(&Gateway::config(&url, "gw-tls", &mqtt, ROUTES));
        gw.start();
        publish(
            plain,
            "pub-tls",
            1,
            vec![("devices/t/telemetry/x".into(), b"secret".to_vec())],
        )
        .await;
        assert!(
            support::wait_until(std::time::Duration::from_secs(10), || !gw
                .records("telemetry")
                .values()
                .all(Vec::is_empty)),
            "{}",
            gw.log()
        );
        assert!(gw.terminate().success());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_wrong_ca_fails_clearly() {
    let certs = tempfile::tempdir().unwrap();
    make_certs(certs.path(), "server", None);
    make_certs(certs.path(), "other", None);
    let (broker, _) = tls_broker(certs.path(), false);
    let mqtt = format!(
        ", tls: {{ ca_file: {} }}",
        certs.path().join("other-ca.crt").display()
    );
    let mut gw = Gateway::new(&Gateway::config(
        &format!("mqtts://127.0.0.1:{}", broker.port),
        "gw-bad-tls",
        &mqtt,
        ROUTES,
    ));
    gw.spawn();
    let said = support::wait_until(std::time::Duration::from_secs(10), || {
        gw.log().contains("invalid peer certificate")
    });
    assert!(said, "{}", gw.log());
    assert_eq!(
        gw.log().matches("invalid peer certificate").count(),
        1,
        "said once, not at every retry:\n{}",
        gw.log()
    );
    assert!(
        gw.wait_exit(std::time::Duration::from_millis(500))
            .is_none(),
        "keeps retrying: the broker may be fixed"
    );
    assert!(gw.terminate().success());
}
