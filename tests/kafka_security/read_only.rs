//! `kafka_produce: false`: the read-only face. Every Kafka producer is refused (rdkafka plain:
//! TopicAuthorizationFailed per record; rdkafka idempotent: the fatal ClusterAuthorizationFailed
//! of InitProducerId; confluent-kafka, kafka-python, kcat likewise), CreateTopics is refused
//! per topic, raw requests get exactly 29/29/31; while MQTT devices' records are still stored
//! and served to plain and group consumers. Nothing a Kafka client sent is in the log.

use crate::common::*;
use crate::raw::{self, Conn};
use crate::support;
use rdkafka::error::RDKafkaErrorCode;

fn publish(face: &Face, client: &str, range: std::ops::Range<usize>) {
    let messages = range
        .map(|i| {
            (
                format!("devices/d{}/telemetry", i % 2),
                format!("mqtt-{i}").into_bytes(),
            )
        })
        .collect();
    block_on(support::publish(face.mqtt, client, 1, messages));
}

#[test]
fn read_only_face_refuses_producers_and_serves_consumers() {
    let mut face = Face::start(", kafka_produce: false");
    let b = face.bootstrap();
    let anyone = Client::plain();
    publish(&face, "ro-dev-1", 0..4);
    assert!(
        support::wait_until(CALL, || face.count("telemetry") == 4),
        "4 MQTT records routed: {}\n{}",
        face.count("telemetry"),
        face.gw.log()
    );
    let mqtt_records = face.recs("telemetry");
    assert_eq!(
        consume(&b, &anyone, "telemetry", CALL).unwrap(),
        mqtt_records
    );

    // rdkafka, not idempotent, acks=all: each record TopicAuthorizationFailed.
    let out = produce(
        &b,
        &anyone,
        "telemetry",
        &batch("ro-plain", 6),
        &[
            ("enable.idempotence", "false"),
            ("message.timeout.ms", "5000"),
        ],
    );
    assert_eq!(
        out.codes(),
        vec![Some(RDKafkaErrorCode::TopicAuthorizationFailed); 6],
        "rdkafka plain producer:\n{}",
        out.seen.report()
    );

    // rdkafka, idempotent (the Java client's default): InitProducerId refused, a fatal error.
    let out = produce(
        &b,
        &anyone,
        "telemetry",
        &batch("ro-idempotent", 3),
        &[
            ("enable.idempotence", "true"),
            ("message.timeout.ms", &FAIL_MS.to_string()),
        ],
    );
    out.assert_all_failed("rdkafka idempotent producer");
    assert!(
        matches!(
            &out.fatal,
            Some((RDKafkaErrorCode::ClusterAuthorizationFailed, _))
        ),
        "rdkafka idempotent producer: fatal ClusterAuthorizationFailed expected, got {:?}\n{}",
        out.fatal,
        out.seen.report()
    );

    // AdminClient CreateTopics: refused per topic.
    let (result, seen) = create_topics(&b, &anyone, &[("ro-new-1", 1), ("ro-new-2", 3)], CALL);
    let results = result.unwrap_or_else(|e| panic!("create_topics: {e}\n{}", seen.report()));
    assert_eq!(
        results,
        vec![
            Err((
                "ro-new-1".to_string(),
                RDKafkaErrorCode::TopicAuthorizationFailed
            )),
            Err((
                "ro-new-2".to_string(),
                RDKafkaErrorCode::TopicAuthorizationFailed
            )),
        ]
    );

    // The same, byte for byte; the connection serves reads afterwards.
    let mut c = Conn::open(face.kafka);
    c.api_versions();
    assert_eq!(
        raw::produce(
            &mut c,
            &[("telemetry", 0), ("telemetry", 1), ("ro-no-such-topic", 0)]
        ),
        Some(vec![
            ("telemetry".to_string(), 0, raw::TOPIC_AUTHORIZATION_FAILED),
            ("telemetry".to_string(), 1, raw::TOPIC_AUTHORIZATION_FAILED),
            (
                "ro-no-such-topic".to_string(),
                0,
                raw::TOPIC_AUTHORIZATION_FAILED
            ),
        ]),
        "Produce v3"
    );
    assert_eq!(
        raw::create_topics(&mut c, &["ro-raw-1", "ro-raw-2"]),
        Some(vec![
            ("ro-raw-1".to_string(), raw::TOPIC_AUTHORIZATION_FAILED),
            ("ro-raw-2".to_string(), raw::TOPIC_AUTHORIZATION_FAILED),
        ]),
        "CreateTopics v2"
    );
    assert_eq!(
        raw::init_producer_id(&mut c),
        Some(raw::CLUSTER_AUTHORIZATION_FAILED),
        "InitProducerId v1"
    );
    let topics = c.metadata().expect("Metadata served after the refusals");
    assert_eq!(topics, ["telemetry"]);

    // The Python clients and kcat.
    let out = python(
        "confluent",
        &b,
        &anyone,
        "telemetry",
        &batch("ro-confluent", 3),
        PyOpts::failing(),
    );
    assert_eq!(
        out.produced,
        vec![Err("TOPIC_AUTHORIZATION_FAILED ".to_string()); 3],
        "confluent-kafka: {out:#?}"
    );
    for (idempotent, error) in [
        (false, "TopicAuthorizationFailedError"),
        (true, "ClusterAuthorizationFailedError"),
    ] {
        let out = python(
            "kafka-python",
            &b,
            &anyone,
            "telemetry",
            &batch("ro-kafka-python", 3),
            PyOpts::failing().producer(serde_json::json!({ "enable_idempotence": idempotent })),
        );
        assert!(
            out.produced.iter().all(Result::is_err) && format!("{out:?}").contains(error),
            "kafka-python (idempotent: {idempotent}): {error} expected: {out:#?}"
        );
    }
    let out = kcat(
        &b,
        &anyone,
        &["-P", "-t", "telemetry", "-X", "message.timeout.ms=5000"],
        b"kcat-1\nkcat-2\n",
    );
    assert!(
        out.stderr.contains("Topic authorization failed"),
        "kcat -P: {out:?}"
    );

    // Group consumers work as before: join, read the MQTT records, commit.
    let (values, committed) = group_read(&b, &anyone, "ro-group", "telemetry", 4);
    assert_eq!(values, ["mqtt-0", "mqtt-1", "mqtt-2", "mqtt-3"]);
    assert_eq!(committed, 4, "committed offsets of the group");

    // MQTT still routes; the log holds the MQTT records only, in the one topic.
    publish(&face, "ro-dev-2", 4..6);
    assert!(
        support::wait_until(CALL, || face.count("telemetry") == 6),
        "6 MQTT records: {}\n{}",
        face.count("telemetry"),
        face.gw.log()
    );
    let stored = face.recs("telemetry");
    let mut values: Vec<&str> = stored.iter().map(|r| r.value.as_str()).collect();
    values.sort();
    assert_eq!(
        values,
        ["mqtt-0", "mqtt-1", "mqtt-2", "mqtt-3", "mqtt-4", "mqtt-5"]
    );
    assert_eq!(
        &stored[..],
        &consume(&b, &anyone, "telemetry", CALL).unwrap()[..]
    );
    assert_eq!(face.topics(), ["telemetry"], "no topic was created");
    face.assert_running();
}
