//! Real clients publishing to the listener: paho-mqtt (MQTT 5 and 3.1.1), mosquitto_pub
//! (QoS 0, 1, 2 with `-V mqttv311` and `-V mqttv5`) and rumqttc (its v4 and v5 APIs). Every
//! message is in the log once, with the route's key, the partition Kafka's partitioner gives
//! that key, and exactly the documented headers: `mqtt.topic`, `mqtt.qos`, `mqtt.retain`, the
//! MQTT 5 user properties in order, `content-type`.

use crate::common::{paho_publish, partition_of, Listener, Raw, Setup, TELEMETRY_PARTITIONS};
use crate::support::{self, Stored};
use std::process::Command;
use std::time::Duration;

/// One message a client published.
#[derive(Debug, Clone)]
struct Sent {
    device: String,
    topic: String,
    payload: String,
    qos: u8,
    retain: bool,
    user_properties: Vec<(String, String)>,
    content_type: Option<String>,
}

impl Sent {
    fn new(device: &str, topic: &str, payload: String, qos: u8) -> Sent {
        Sent {
            device: device.into(),
            topic: topic.into(),
            payload,
            qos,
            retain: false,
            user_properties: Vec::new(),
            content_type: None,
        }
    }

    fn headers(&self) -> Vec<(String, String)> {
        let mut h = vec![
            ("mqtt.topic".to_string(), self.topic.clone()),
            ("mqtt.qos".to_string(), self.qos.to_string()),
            ("mqtt.retain".to_string(), self.retain.to_string()),
        ];
        h.extend(self.user_properties.iter().cloned());
        if let Some(ct) = &self.content_type {
            h.push(("content-type".into(), ct.clone()));
        }
        h
    }
}

fn props() -> Vec<(String, String)> {
    vec![
        ("site".into(), "lab-3".into()),
        ("unit".into(), "°C".into()),
        ("site".into(), "repeated keys stay".into()),
    ]
}

/// Every sent message is in `telemetry` exactly once, where and as it should be, and the
/// topic holds nothing else.
fn check(gw: &Listener, sent: &[Sent]) {
    let parts = gw.records("telemetry");
    let all: Vec<(u32, &Stored)> = parts
        .iter()
        .flat_map(|(p, rs)| rs.iter().map(move |r| (*p, r)))
        .collect();
    for s in sent {
        let found: Vec<&(u32, &Stored)> = all
            .iter()
            .filter(|(_, r)| r.value_str() == s.payload)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "{s:?} stored {} times; the log holds {:?}",
            found.len(),
            all.iter().map(|(_, r)| r.value_str()).collect::<Vec<_>>()
        );
        let (partition, r) = found[0];
        assert_eq!(
            r.key.as_deref(),
            Some(s.device.as_bytes()),
            "key of {}",
            s.payload
        );
        assert_eq!(
            *partition,
            partition_of(&s.device, TELEMETRY_PARTITIONS),
            "partition of key {}",
            s.device
        );
        assert_eq!(r.headers, s.headers(), "headers of {}", s.payload);
    }
    assert_eq!(all.len(), sent.len(), "nothing else is stored");
}

#[test]
fn paho_v5_and_v311_records_carry_key_partition_and_headers() {
    let gw = Listener::start(Setup::default());
    let mut sent = Vec::new();
    for version in ["5", "311"] {
        let device = format!("paho-v{version}");
        let topic = format!("devices/{device}/telemetry/room/1");
        let v5 = version == "5";
        let mut args = vec![
            "--version".to_string(),
            version.into(),
            "--qos".into(),
            "0,1,2".into(),
            "--count".into(),
            "3".into(),
            "--topic".into(),
            topic.clone(),
            "--prefix".into(),
            format!("{device}-"),
        ];
        if v5 {
            for (k, v) in props() {
                args.extend(["--user-property".into(), format!("{k}={v}")]);
            }
            args.extend(["--content-type".into(), "application/json".into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let report = paho_publish(gw.port, &args);
        assert_eq!(report["completed"], 9, "{report}");
        for i in 0..9 {
            let mut s = Sent::new(&device, &topic, format!("{device}-{i}"), (i / 3) as u8);
            if v5 {
                s.user_properties = props();
                s.content_type = Some("application/json".into());
            }
            sent.push(s);
        }
        // A retained message.
        let retained_topic = format!("devices/{device}/telemetry/state");
        let report = paho_publish(
            gw.port,
            &[
                "--version",
                version,
                "--qos",
                "1",
                "--topic",
                &retained_topic,
                "--prefix",
                &format!("{device}-retained-"),
                "--retain",
            ],
        );
        assert_eq!(report["completed"], 1, "{report}");
        let mut s = Sent::new(&device, &retained_topic, format!("{device}-retained-0"), 1);
        s.retain = true;
        sent.push(s);
    }
    check(&gw, &sent);
}

fn mosquitto_pub(port: u16, args: &[&str]) {
    let out = Command::new(support::require(
        "mosquitto_pub",
        "apt-get install -y mosquitto-clients",
    ))
    .args(["-h", "127.0.0.1", "-p", &port.to_string()])
    .args(args)
    .output()
    .expect("mosquitto_pub runs");
    assert!(
        out.status.success(),
        "mosquitto_pub {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// mosquitto_pub at `qos` with each protocol version (MQTT 5 with user properties and a
/// content type), plus a retained message: what it sent.
fn mosquitto_pub_runs(port: u16, qos: u8) -> Vec<Sent> {
    let mut sent = Vec::new();
    for version in ["mqttv311", "mqttv5"] {
        let device = format!("mosquitto-{version}-q{qos}");
        for retain in [false, true] {
            let topic = format!(
                "devices/{device}/telemetry/{}",
                if retain { "r" } else { "x" }
            );
            let payload = format!("{device}-{}", if retain { "retained" } else { "plain" });
            let q = qos.to_string();
            let mut args = vec![
                "-V", version, "-q", &q, "-t", &topic, "-m", &payload, "-i", &device,
            ];
            if retain {
                args.push("-r");
            }
            let mut s = Sent::new(&device, &topic, payload.clone(), qos);
            s.retain = retain;
            let user: Vec<String> = props()
                .into_iter()
                .flat_map(|(k, v)| ["-D".into(), "publish".into(), "user-property".into(), k, v])
                .collect();
            if version == "mqttv5" {
                args.extend(user.iter().map(String::as_str));
                args.extend(["-D", "publish", "content-type", "text/plain; charset=utf-8"]);
                s.user_properties = props();
                s.content_type = Some("text/plain; charset=utf-8".into());
            }
            mosquitto_pub(port, &args);
            sent.push(s);
        }
    }
    sent
}

/// mosquitto_pub returns once QoS 1 is PUBACKed and QoS 2 PUBCOMPed: the records are there.
#[test]
fn mosquitto_pub_qos1_and_qos2_records_carry_key_partition_and_headers() {
    let gw = Listener::start(Setup::default());
    let mut sent = mosquitto_pub_runs(gw.port, 1);
    sent.extend(mosquitto_pub_runs(gw.port, 2));
    check(&gw, &sent);
}

/// QoS 0 has no ack: mosquitto_pub writes the PUBLISH and then DISCONNECT. A message the
/// listener received before a normal DISCONNECT is stored (it is not a lost packet).
#[test]
fn mosquitto_pub_qos0_records_are_stored() {
    let gw = Listener::start(Setup::default());
    let sent = mosquitto_pub_runs(gw.port, 0);
    gw.wait_records("telemetry", sent.len(), Duration::from_secs(3));
    check(&gw, &sent);
}

/// The same bytes every QoS 0 client sends last, in one write: PUBLISH then DISCONNECT.
#[test]
fn qos0_publish_followed_by_disconnect_is_stored() {
    let gw = Listener::start(Setup::default());
    let mut sent = Vec::new();
    for v5 in [false, true] {
        let device = format!("q0-then-disconnect-v{}", if v5 { 5 } else { 4 });
        let topic = format!("devices/{device}/telemetry/x");
        let (mut c, _) = Raw::connect(gw.port, &device, v5);
        let mut bytes = c.publish(&topic, 0, 0, false, device.as_bytes());
        bytes.extend(Raw::DISCONNECT);
        c.write(&bytes);
        let (closed, replies) = c.closed_within(Duration::from_secs(5));
        assert!(closed && replies.is_empty(), "{replies:?}");
        sent.push(Sent::new(&device, &topic, device.clone(), 0));
    }
    gw.wait_records("telemetry", sent.len(), Duration::from_secs(3));
    check(&gw, &sent);
}

#[test]
fn rumqttc_v4_and_v5_records_carry_key_partition_and_headers() {
    let gw = Listener::start(Setup::default());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut sent = rt.block_on(rumqttc_v4(gw.port));
    sent.extend(rt.block_on(rumqttc_v5(gw.port)));
    check(&gw, &sent);
}

/// The QoS and retain flags each message goes with: QoS 0 first, so the acks of the later
/// ones show it was read before the client left.
const FLAGS: [(u8, bool); 5] = [(0, false), (1, false), (2, false), (1, true), (2, true)];

async fn rumqttc_v4(port: u16) -> Vec<Sent> {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    let device = "rumqttc-v4";
    let mut options = MqttOptions::new(device, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let mut sent = Vec::new();
    for (i, (qos, retain)) in FLAGS.into_iter().enumerate() {
        let topic = format!("devices/{device}/telemetry/{i}");
        let payload = format!("{device}-{i}");
        let q = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][qos as usize];
        client
            .publish(&topic, q, retain, payload.clone())
            .await
            .unwrap();
        let mut s = Sent::new(device, &topic, payload, qos);
        s.retain = retain;
        sent.push(s);
    }
    let (mut pubacks, mut pubcomps) = (0, 0);
    while pubacks < 2 || pubcomps < 2 {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
            .await
            .expect("acks in time")
            .unwrap()
        {
            Event::Incoming(Packet::PubAck(_)) => pubacks += 1,
            Event::Incoming(Packet::PubComp(_)) => pubcomps += 1,
            _ => {}
        }
    }
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
    sent
}

async fn rumqttc_v5(port: u16) -> Vec<Sent> {
    use rumqttc::v5::mqttbytes::v5::{Packet, PublishProperties};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    let device = "rumqttc-v5";
    let mut options = MqttOptions::new(device, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(10));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let mut sent = Vec::new();
    for (i, (qos, retain)) in FLAGS.into_iter().enumerate() {
        let topic = format!("devices/{device}/telemetry/{i}");
        let payload = format!("{device}-{i}");
        let q = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][qos as usize];
        // Odd messages carry properties, even ones none.
        let mut s = Sent::new(device, &topic, payload.clone(), qos);
        s.retain = retain;
        if i % 2 == 1 {
            s.user_properties = props();
            s.content_type = Some("application/octet-stream".into());
            let properties = PublishProperties {
                user_properties: props(),
                content_type: s.content_type.clone(),
                ..Default::default()
            };
            client
                .publish_with_properties(&topic, q, retain, payload, properties)
                .await
                .unwrap();
        } else {
            client.publish(&topic, q, retain, payload).await.unwrap();
        }
        sent.push(s);
    }
    let (mut pubacks, mut pubcomps) = (0, 0);
    while pubacks < 2 || pubcomps < 2 {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll())
            .await
            .expect("acks in time")
            .unwrap()
        {
            Event::Incoming(Packet::PubAck(_)) => pubacks += 1,
            Event::Incoming(Packet::PubComp(_)) => pubcomps += 1,
            _ => {}
        }
    }
    client.disconnect().await.unwrap();
    let _ = tokio::time::timeout(Duration::from_millis(300), eventloop.poll()).await;
    sent
}
