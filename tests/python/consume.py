#!/usr/bin/env python3
"""Reads every record of a topic from Tributary's Kafka listener with a real Python Kafka client,
by manual assignment from the beginning (no consumer group), for tests/kafka_api/python.rs.

usage: consume.py CLIENT BOOTSTRAP TOPIC
  CLIENT  confluent     confluent-kafka
          kafka-python  kafka-python
  (scripts/test installs both)

Prints one JSON object per record, in (partition, offset) order:
  {"p": 0, "o": 0, "ts": 1700000000000, "key": HEX|null, "value": HEX|null,
   "headers": [[NAME, HEX|null], ...]}
then a last line {"count": N, "sha256": HEX}: the SHA-256 of the lines
  "{p}|{o}|{ts}|{key hex or -}|{value hex or -}|{name hex}={value hex or -},...\\n"
which the Rust test computes over the records it appended.

Exit status: 0 done; anything else is a failure, the reason on stderr (a client library that
is not installed is one, with the command that installs it: the test fails, it never skips).
"""

import hashlib
import json
import sys
import time

DEADLINE_S = 30


def canonical(p, o, ts, key, value, headers):
    def hx(b):
        return "-" if b is None else b.hex()

    hs = ",".join(f"{k.encode().hex()}={hx(v)}" for k, v in headers)
    return f"{p}|{o}|{ts}|{hx(key)}|{hx(value)}|{hs}\n"


def missing(package, error):
    raise SystemExit(
        f"{package} not found ({error}): run scripts/test, or {sys.executable} -m pip install {package}"
    )


def with_confluent(bootstrap, topic):
    try:
        from confluent_kafka import Consumer, KafkaError, TopicPartition
    except ImportError as e:
        missing("confluent-kafka", e)
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            # No group: assign() only, nothing is committed. librdkafka still wants an id
            # for some code paths, so give one that is never joined.
            "group.id": "tributary-test-unused",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "error",
        }
    )
    metadata = consumer.list_topics(topic, timeout=10)
    t = metadata.topics[topic]
    if t.error is not None:
        raise SystemExit(f"metadata for {topic}: {t.error}")
    partitions = sorted(t.partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    records, eof = [], set()
    deadline = time.monotonic() + DEADLINE_S
    while len(eof) < len(partitions):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {len(records)} records, EOF on {sorted(eof)}")
        m = consumer.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                eof.add(m.partition())
                continue
            raise SystemExit(f"consume error: {m.error()}")
        ts_type, ts = m.timestamp()
        if ts_type != 1:
            raise SystemExit(f"timestamp type {ts_type}, want CreateTime (1)")
        records.append((m.partition(), m.offset(), ts, m.key(), m.value(), m.headers() or []))
    consumer.close()
    return records


def with_kafka_python(bootstrap, topic):
    try:
        from kafka import KafkaConsumer, TopicPartition
    except ImportError as e:
        missing("kafka-python", e)
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="none",
        request_timeout_ms=10000,
    )
    partitions = consumer.partitions_for_topic(topic)
    if not partitions:
        raise SystemExit(f"no partitions for {topic}")
    tps = [TopicPartition(topic, p) for p in sorted(partitions)]
    consumer.assign(tps)
    consumer.seek_to_beginning()
    end = consumer.end_offsets(tps)
    records = []
    deadline = time.monotonic() + DEADLINE_S
    while any(consumer.position(tp) < end[tp] for tp in tps):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {len(records)} records of {end}")
        for tp, messages in consumer.poll(timeout_ms=500).items():
            for m in messages:
                if m.timestamp_type != 0:
                    raise SystemExit(f"timestamp type {m.timestamp_type}, want CreateTime (0)")
                records.append((m.partition, m.offset, m.timestamp, m.key, m.value, m.headers or []))
    consumer.close()
    return records


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    client, bootstrap, topic = sys.argv[1:]
    if client == "confluent":
        records = with_confluent(bootstrap, topic)
    elif client == "kafka-python":
        records = with_kafka_python(bootstrap, topic)
    else:
        raise SystemExit(f"unknown client {client!r}")
    records.sort(key=lambda r: (r[0], r[1]))
    digest = hashlib.sha256()
    for p, o, ts, key, value, headers in records:
        digest.update(canonical(p, o, ts, key, value, headers).encode())
        print(
            json.dumps(
                {
                    "p": p,
                    "o": o,
                    "ts": ts,
                    "key": None if key is None else key.hex(),
                    "value": None if value is None else value.hex(),
                    "headers": [[k, None if v is None else v.hex()] for k, v in headers],
                }
            )
        )
    print(json.dumps({"count": len(records), "sha256": digest.hexdigest()}))


if __name__ == "__main__":
    main()
