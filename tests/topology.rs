//! One owner per fact: a topic's partition count lives in the log, and the router asks it.
//! A topic a Kafka client creates while the gateway runs is routed by its real count.

mod support;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use std::time::Duration;
use support::{Gateway, Mosquitto};
use tributary::route::partition::partition_for_key;

const MESSAGES: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_created_at_run_time_is_routed_by_its_real_partition_count() {
    let broker = Mosquitto::start();
    let kafka_port = support::free_port();
    // `invoices` does not exist when the gateway starts, and the config would give it 3.
    let mut gw = Gateway::new(&format!(
        "mqtt: {{ url: \"{}\", client_id: gw-topology, keep_alive: 5s }}\n\
         log: {{ embedded: {{ dir: DATA_DIR, fsync_interval: 2ms, kafka_listener: \"127.0.0.1:{kafka_port}\" }} }}\n\
         topics: {{ default: {{ partitions: 3 }} }}\n\
         http: {{ listen: null }}\n\
         routes:\n  - {{ name: orders, from: \"orders/{{kind}}/{{id}}\", to: \"{{kind}}\", key: \"{{id}}\" }}\n",
        broker.url()
    ));
    gw.start();

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", format!("127.0.0.1:{kafka_port}"))
        .create()
        .unwrap();
    let created = admin
        .create_topics(
            &[NewTopic::new("invoices", 7, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    assert_eq!(created, [Ok("invoices".to_string())]);

    let messages = (0..MESSAGES)
        .map(|i| {
            (
                format!("orders/invoices/inv-{i}"),
                format!("{i}").into_bytes(),
            )
        })
        .collect();
    support::publish(broker.port, "topology-pub", 1, messages).await;
    let data = gw.data_dir();
    let stored = tokio::task::spawn_blocking(move || {
        support::wait_until(Duration::from_secs(20), || {
            support::count_records(&data, "invoices") >= MESSAGES
        })
    })
    .await
    .unwrap();
    assert!(stored, "not all stored:\n{}", gw.log());

    let records = gw.records("invoices");
    assert_eq!(
        records.keys().copied().collect::<Vec<_>>(),
        (0..7).collect::<Vec<_>>()
    );
    let mut seen = 0;
    let mut wrong = Vec::new();
    for (&partition, stored) in &records {
        for record in stored {
            let key = record.key.as_deref().expect("keyed");
            if partition != partition_for_key(key, 7) {
                wrong.push((String::from_utf8_lossy(key).into_owned(), partition));
            }
            seen += 1;
        }
    }
    assert_eq!(seen, MESSAGES);
    assert_eq!(wrong, [], "records outside murmur2(key) % 7");
    // Keys spread over more than the 3 partitions the config would have given.
    assert!(records.values().filter(|r| !r.is_empty()).count() > 3);
    assert!(
        gw.records("tributary.dead-letter").is_empty(),
        "no dead letter"
    );
    assert!(!gw.log().contains("NoSuchPartition") && !gw.log().contains("no partition"));
}
