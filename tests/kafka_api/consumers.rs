//! rdkafka consumers, no group: they read exactly the records appended (keys, headers,
//! timestamps), and a stream consumer gets new records at once.

use crate::clients::{assign, base_consumer, consumer_config, from, read_to_end, CALL};
use crate::records::{append_dataset, stored_batches, test_record, timestamp, Rec, T0};
use crate::server::{assert_no_library_panics, blocking, Server};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{Offset as KOffset, TopicPartitionList};
use std::time::{Duration, Instant};
use tributary::kafka_api::ServerOptions;
use tributary::record::Record;

/// Metadata, watermarks, reading from the beginning and from explicit offsets (inside batches),
/// seeking to a time, and an out-of-range offset reset to the earliest, all exact.
#[tokio::test(flavor = "multi_thread")]
async fn rdkafka_reads_appended_records_exactly() {
    let server = Server::start(ServerOptions::default()).await;
    let expected = append_dataset(&server.log, "events", 3, 60, false).await;
    server.log.create_topic("empty", 2).unwrap();
    // The explicit starting offsets below each fall inside a stored batch, not at its start,
    // and every partition spans several segments.
    let starts = [(0, 2), (1, 33), (2, 59)];
    for (p, o) in starts {
        let batches = stored_batches(&server.log, "events", p as u32);
        assert!(
            batches
                .iter()
                .any(|(h, _)| h.base_offset < o && o <= h.last_offset()),
            "offset {o} of events/{p} starts a batch"
        );
        assert!(
            server.segments("events", p as u32) > 1,
            "events/{p}: one segment"
        );
    }
    let (bootstrap, port, want) = (server.bootstrap(), server.addr.port(), expected.clone());
    blocking(move || {
        let expected = want;
        let c = base_consumer(&bootstrap, &[("auto.offset.reset", "error")]);

        // Metadata: the one broker at the address the client used, every topic and partition.
        let md = c.fetch_metadata(None, CALL).unwrap();
        let brokers: Vec<_> = md
            .brokers()
            .iter()
            .map(|b| (b.id(), b.host().to_string(), b.port()))
            .collect();
        assert_eq!(brokers, [(0, "127.0.0.1".to_string(), i32::from(port))]);
        let mut topics: Vec<_> = md
            .topics()
            .iter()
            .map(|t| {
                assert_eq!(t.error(), None, "{}", t.name());
                let parts: Vec<_> = t
                    .partitions()
                    .iter()
                    .map(|p| {
                        (
                            p.id(),
                            p.leader(),
                            p.replicas().to_vec(),
                            p.isr().to_vec(),
                            p.error(),
                        )
                    })
                    .collect();
                (t.name().to_string(), parts)
            })
            .collect();
        topics.sort_by(|a, b| a.0.cmp(&b.0));
        let parts = |n: i32| {
            (0..n)
                .map(|p| (p, 0, vec![0], vec![0], None::<RDKafkaRespErr>))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            topics,
            [
                ("empty".to_string(), parts(2)),
                ("events".to_string(), parts(3))
            ]
        );
        let md = c.fetch_metadata(Some("no-such-topic"), CALL).unwrap();
        assert_eq!(md.topics().len(), 1);
        assert_eq!(
            md.topics()[0].error(),
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
        );

        for p in 0..3 {
            assert_eq!(
                c.fetch_watermarks("events", p, CALL).unwrap(),
                (0, 60),
                "events/{p}"
            );
        }
        assert_eq!(c.fetch_watermarks("empty", 1, CALL).unwrap(), (0, 0));

        // From the beginning (auto.offset.reset=earliest's starting point).
        assign(
            &c,
            "events",
            &[
                (0, KOffset::Beginning),
                (1, KOffset::Beginning),
                (2, KOffset::Beginning),
            ],
        );
        assert_eq!(read_to_end(&c, 3), expected);

        // Explicit offsets, each inside a stored batch: the server sends the whole batch, the
        // client drops what is below the offset.
        assign(&c, "events", &starts.map(|(p, o)| (p, KOffset::Offset(o))));
        assert_eq!(read_to_end(&c, 3), from(&expected, &starts));

        // An empty topic: at the end at once.
        assign(&c, "empty", &[(0, KOffset::Beginning), (1, KOffset::End)]);
        assert_eq!(read_to_end(&c, 2), Vec::<Rec>::new());

        // Seek to a time: the first record at or after it; past every record: the end (-1).
        let mut times = TopicPartitionList::new();
        times
            .add_partition_offset("events", 0, KOffset::Offset(timestamp(0, 17)))
            .unwrap();
        times
            .add_partition_offset("events", 1, KOffset::Offset(timestamp(1, 40) - 5))
            .unwrap();
        times
            .add_partition_offset("events", 2, KOffset::Offset(T0 + 1_000_000_000))
            .unwrap();
        let found = c.offsets_for_times(times, CALL).unwrap();
        let offset = |p| found.find_partition("events", p).unwrap().offset();
        assert_eq!(
            (offset(0), offset(1), offset(2)),
            (KOffset::Offset(17), KOffset::Offset(40), KOffset::End)
        );
        assign(
            &c,
            "events",
            &[(0, offset(0)), (1, offset(1)), (2, offset(2))],
        );
        assert_eq!(read_to_end(&c, 3), from(&expected, &[(0, 17), (1, 40)]));
    })
    .await;

    // Past the end with auto.offset.reset=earliest: OFFSET_OUT_OF_RANGE, then from the start.
    let bootstrap = server.bootstrap();
    blocking(move || {
        let c = base_consumer(&bootstrap, &[("auto.offset.reset", "earliest")]);
        assign(&c, "events", &[(1, KOffset::Offset(1000))]);
        assert_eq!(read_to_end(&c, 1), from(&expected, &[(1, 0)]));
        // ...and with "error", the client is told.
        let c = base_consumer(&bootstrap, &[("auto.offset.reset", "error")]);
        assign(&c, "events", &[(2, KOffset::Offset(1000))]);
        let deadline = Instant::now() + CALL;
        let error = loop {
            assert!(Instant::now() < deadline, "no out-of-range error");
            match c.poll(Duration::from_millis(100)) {
                Some(Err(e)) => break e,
                Some(Ok(m)) => panic!("record at {} from an out-of-range offset", m.offset()),
                None => {}
            }
        };
        assert_eq!(
            error,
            KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset)
        );
    })
    .await;
    server.assert_alive();
    assert_no_library_panics();
}

/// A StreamConsumer waiting at the end of a partition gets new records as soon as they are
/// appended (the server's long poll wakes on the append; librdkafka waits up to 10 s).
#[tokio::test(flavor = "multi_thread")]
async fn stream_consumer_gets_new_records_at_once() {
    let server = Server::start(ServerOptions::default()).await;
    append_dataset(&server.log, "live", 1, 5, false).await;
    let consumer: StreamConsumer = consumer_config(&server.bootstrap())
        .set("fetch.wait.max.ms", "10000")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("live", 0, KOffset::Offset(5))
        .unwrap();
    consumer.assign(&tpl).unwrap();
    // Let the consumer's first Fetch reach the server and park there.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let more: Vec<Record> = (5..8).map(|i| test_record("live", 0, i, false)).collect();
    let appended = Instant::now();
    server.log.append("live", 0, more.clone()).await.unwrap();
    let mut got = Vec::new();
    for _ in 0..3 {
        let m = tokio::time::timeout(Duration::from_secs(8), consumer.recv())
            .await
            .expect("no record")
            .unwrap();
        got.push(Rec::from_message(&m));
    }
    let latency = appended.elapsed();
    assert!(
        latency < Duration::from_secs(3),
        "records came {latency:?} after the append: the long poll did not wake"
    );
    let want: Vec<Rec> = more
        .iter()
        .enumerate()
        .map(|(i, r)| Rec::from_record(5 + i as i64, r))
        .collect();
    assert_eq!(got, want);
    drop(consumer);
    // (On a new connection: the consumer's own is busy with its next parked Fetch.)
    let b = server.bootstrap();
    let watermarks = blocking(move || {
        base_consumer(&b, &[])
            .fetch_watermarks("live", 0, CALL)
            .unwrap()
    })
    .await;
    assert_eq!(watermarks, (0, 8));
    assert_no_library_panics();
}
