//! Publishing the test stream: messages numbered per device, split over publishers, and
//! reliable QoS 1 publishers that survive broker restarts.

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) const ROUTE: &str = r#"  - { name: telemetry, from: "devices/{device}/telemetry", to: telemetry, key: "{device}" }"#;
pub(crate) const DEVICES: usize = 100;

/// Message `seq` of `n`: device `seq % DEVICES`, payload `"<device>:<seq>"`.
fn message(seq: usize) -> (String, Bytes) {
    let device = seq % DEVICES;
    (
        format!("devices/d{device}/telemetry"),
        Bytes::from(format!("{device}:{seq}")),
    )
}

/// Messages `0..n` split over `publishers` clients; each device belongs to one client, so each
/// device's messages leave in sequence order on one connection.
fn split(n: usize, publishers: usize) -> Vec<Vec<(String, Bytes)>> {
    let mut out = vec![Vec::new(); publishers];
    for seq in 0..n {
        out[(seq % DEVICES) % publishers].push(message(seq));
    }
    out
}

/// What a reliable publisher did.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PublishReport {
    /// Connections made (1 when nothing went wrong).
    pub(crate) connections: usize,
    /// Messages sent again on a new connection because the old one lost them unacknowledged.
    pub(crate) republished: usize,
    /// Acks with a reason other than Success (e.g. "no matching subscribers": the broker dropped
    /// the message, which would be no fault of the gateway).
    pub(crate) not_success: usize,
}

/// Publishes every message at QoS 1 (MQTT 5) until the broker has acknowledged each one,
/// surviving broker restarts: on a lost connection it connects again and republishes, in the
/// original order, every message not acknowledged yet (the broker may then hold a duplicate).
/// `progress` counts acknowledged messages.
async fn publish_reliably(
    port: u16,
    client_id: String,
    messages: Vec<(String, Bytes)>,
    progress: Arc<AtomicUsize>,
) -> PublishReport {
    use rumqttc::v5::mqttbytes::v5::{Packet, PubAckReason};
    use rumqttc::v5::mqttbytes::QoS;
    use rumqttc::v5::{AsyncClient, Event, MqttOptions};
    use rumqttc::Outgoing;

    let n = messages.len();
    let messages = Arc::new(messages);
    let mut acked = vec![false; n];
    let mut sent = vec![false; n];
    let mut remaining = n;
    let mut report = PublishReport::default();
    let deadline = Instant::now() + Duration::from_secs(180);
    while remaining > 0 {
        assert!(
            Instant::now() < deadline,
            "{client_id}: {remaining} messages still not acknowledged by the broker"
        );
        report.connections += 1;
        let todo: Vec<usize> = (0..n).filter(|&i| !acked[i]).collect();
        report.republished += todo.iter().filter(|&&i| sent[i]).count();
        let mut options = MqttOptions::new(&client_id, "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(30))
            .set_clean_start(true)
            .set_outgoing_inflight_upper_limit(100)
            .set_connection_timeout(5);
        let (client, mut eventloop) = AsyncClient::new(options, 256);
        let sender = {
            let (todo, messages, client) = (todo.clone(), messages.clone(), client.clone());
            tokio::spawn(async move {
                for i in todo {
                    let (topic, payload) = &messages[i];
                    if client
                        .publish(topic.clone(), QoS::AtLeastOnce, false, payload.clone())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            })
        };
        // The k-th outgoing PUBLISH of this connection is todo[k].
        let mut next = 0;
        let mut by_pkid: HashMap<u16, usize> = HashMap::new();
        while remaining > 0 {
            let event = match tokio::time::timeout(Duration::from_secs(30), eventloop.poll()).await
            {
                Ok(Ok(event)) => event,
                Ok(Err(e)) => {
                    if report.connections < 1000 && (report.connections.is_power_of_two()) {
                        println!("{client_id}: connection lost ({e}); {remaining} unacknowledged, reconnecting");
                    }
                    break;
                }
                Err(_) => panic!(
                    "{client_id}: no event for 30 s with {remaining} messages unacknowledged"
                ),
            };
            match event {
                Event::Outgoing(Outgoing::Publish(pkid)) => {
                    let i = todo[next];
                    next += 1;
                    sent[i] = true;
                    by_pkid.insert(pkid, i);
                }
                Event::Outgoing(Outgoing::AwaitAck(pkid)) => {
                    panic!("{client_id}: packet id {pkid} collided: the broker acked out of order")
                }
                Event::Incoming(Packet::PubAck(ack)) => {
                    if let Some(i) = by_pkid.remove(&ack.pkid) {
                        if ack.reason != PubAckReason::Success {
                            report.not_success += 1;
                        }
                        if !acked[i] {
                            acked[i] = true;
                            remaining -= 1;
                            progress.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                _ => {}
            }
        }
        sender.abort();
        if remaining == 0 {
            let _ = client.try_disconnect();
            for _ in 0..5 {
                match tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await {
                    Ok(Ok(Event::Outgoing(Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => break,
                    _ => {}
                }
            }
        } else {
            drop(eventloop);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    report
}

/// Runs `publishers` reliable publishers of messages `0..n` on their own thread and runtime (the
/// test's thread blocks on processes), reporting progress in `progress`.
pub(crate) fn spawn_publishers(
    port: u16,
    name: &str,
    n: usize,
    publishers: usize,
    progress: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<Vec<PublishReport>> {
    let name = name.to_string();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let tasks: Vec<_> = split(n, publishers)
                .into_iter()
                .enumerate()
                .map(|(i, messages)| {
                    tokio::spawn(publish_reliably(
                        port,
                        format!("{name}-{i}"),
                        messages,
                        progress.clone(),
                    ))
                })
                .collect();
            let mut reports = Vec::new();
            for t in tasks {
                reports.push(t.await.expect("publisher panicked"));
            }
            reports
        })
    })
}
