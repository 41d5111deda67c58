#!/usr/bin/env python3
"""A Python Kafka client against one Kafka endpoint (Tributary's Kafka listener or a real Apache
Kafka broker), for tests/java_client.rs, which runs it on both and asserts the same behaviour:
create a topic, produce keyed records, consume them in a group, commit, resume.

usage: group_resume.py CLIENT BOOTSTRAP TOPIC GROUP BASE_TIMESTAMP_MS
  CLIENT  confluent     confluent-kafka (librdkafka)
          kafka-python  kafka-python
  (scripts/test installs both)

Steps, each printing one JSON line {"step": NAME, ...}:
  create   the topic with PARTITIONS partitions, through the client's admin API
  produce  COUNT records with the client's default producer (keys placed by murmur2, as the
           Java client does: confluent-kafka is told so, kafka-python does it by default);
           record i: key "key-{i % KEYS}", value "value-{i}", timestamp BASE + i * 1000;
           {"records": [{"i", "key", "value", "timestamp", "partition", "offset"}]}
  first    a group member reads every record, commits half of each partition, leaves;
           {"records": [RECORD...], "committed": {"P": OFFSET}}
  resume   a new member of the group reads from the committed offsets, then QUIET_S more
           seconds to see any extra, commits, leaves; same shape as "first"
where RECORD is {"partition", "offset", "key", "value", "timestamp"}.

Exit status: 0 done; anything else is a failure, the reason on stderr (a client library that
is not installed is one, with the command that installs it: the test fails, it never skips).
"""

import json
import sys
import time

PARTITIONS = 3
COUNT = 30
KEYS = 12
STEP_MS = 1000
DEADLINE_S = 60
QUIET_S = 2.0
GROUP_CONFIG = {"session_ms": 10000, "heartbeat_ms": 1000}


def missing(package, error):
    raise SystemExit(
        f"{package} not found ({error}): run scripts/test, or {sys.executable} -m pip install {package}"
    )


def emit(step, **observations):
    print(json.dumps({"step": step, **observations}), flush=True)


def key(i):
    return f"key-{i % KEYS}"


def value(i):
    return f"value-{i}"


def record(partition, offset, k, v, ts):
    return {
        "partition": partition,
        "offset": offset,
        "key": k.decode(),
        "value": v.decode(),
        "timestamp": ts,
    }


def wait(deadline, what):
    if time.monotonic() > deadline:
        raise SystemExit(f"timed out after {DEADLINE_S} s waiting until {what}")


class Confluent:
    def __init__(self, bootstrap, topic, group):
        try:
            import confluent_kafka
        except ImportError as e:
            missing("confluent-kafka", e)
        self.ck = confluent_kafka
        self.bootstrap, self.topic, self.group = bootstrap, topic, group

    def create(self):
        from confluent_kafka.admin import AdminClient, NewTopic

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        futures = admin.create_topics([NewTopic(self.topic, PARTITIONS, 1)], operation_timeout=30)
        futures[self.topic].result(timeout=30)

    def produce(self, base):
        # Java's placement of keyed records (librdkafka's default is consistent_random).
        producer = self.ck.Producer(
            {"bootstrap.servers": self.bootstrap, "partitioner": "murmur2_random"}
        )
        delivered, errors = {}, []

        def report(err, msg, i):
            if err is not None:
                errors.append(str(err))
            else:
                delivered[i] = (msg.partition(), msg.offset())

        for i in range(COUNT):
            producer.produce(
                self.topic,
                key=key(i),
                value=value(i),
                timestamp=base + i * STEP_MS,
                on_delivery=lambda err, msg, i=i: report(err, msg, i),
            )
        left = producer.flush(30)
        if left or errors:
            raise SystemExit(f"produce: {left} not delivered, errors {errors}")
        return delivered

    def member(self):
        return self.ck.Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": self.group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": GROUP_CONFIG["session_ms"],
                "heartbeat.interval.ms": GROUP_CONFIG["heartbeat_ms"],
            }
        )

    def consume(self, member, want, quiet):
        """Polls until `want` records, then `quiet` seconds more."""
        member.subscribe([self.topic])
        records = []
        deadline = time.monotonic() + DEADLINE_S
        until = None
        while until is None or time.monotonic() < until:
            m = member.poll(0.2)
            if m is not None:
                if m.error():
                    raise SystemExit(f"consume error: {m.error()}")
                records.append(
                    record(m.partition(), m.offset(), m.key(), m.value(), m.timestamp()[1])
                )
            if until is None and len(records) >= want:
                until = time.monotonic() + quiet
            wait(deadline, f"{want} records (read {len(records)})")
        return records

    def commit(self, member, offsets):
        tps = [self.ck.TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        member.commit(offsets=tps, asynchronous=False)

    def positions(self, member):
        tps = [self.ck.TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in member.position(tps)}

    def committed(self, member):
        tps = [self.ck.TopicPartition(self.topic, p) for p in range(PARTITIONS)]
        return {tp.partition: tp.offset for tp in member.committed(tps, timeout=30)}


class KafkaPython:
    def __init__(self, bootstrap, topic, group):
        try:
            import kafka
        except ImportError as e:
            missing("kafka-python", e)
        self.kafka = kafka
        self.bootstrap, self.topic, self.group = bootstrap, topic, group

    def create(self):
        from kafka.admin import KafkaAdminClient, NewTopic

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        admin.create_topics([NewTopic(self.topic, PARTITIONS, 1)], timeout_ms=30000)
        admin.close()

    def produce(self, base):
        producer = self.kafka.KafkaProducer(bootstrap_servers=self.bootstrap)
        futures = [
            producer.send(
                self.topic,
                key=key(i).encode(),
                value=value(i).encode(),
                timestamp_ms=base + i * STEP_MS,
            )
            for i in range(COUNT)
        ]
        producer.flush(30)
        delivered = {}
        for i, f in enumerate(futures):
            m = f.get(timeout=30)
            delivered[i] = (m.partition, m.offset)
        producer.close()
        return delivered

    def member(self):
        return self.kafka.KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=GROUP_CONFIG["session_ms"],
            heartbeat_interval_ms=GROUP_CONFIG["heartbeat_ms"],
        )

    def consume(self, member, want, quiet):
        # The topic's partitions first: a member that joins before its metadata has them
        # assigns nothing, then rejoins once they appear, and kafka-python 3.0.12 sometimes
        # stops there (no heartbeat after the second SyncGroup: the broker evicts it after the
        # session timeout; seen with a real broker under CPU load).
        deadline = time.monotonic() + DEADLINE_S
        while not member.partitions_for_topic(self.topic):
            wait(deadline, f"metadata for {self.topic}")
            time.sleep(0.1)
        member.subscribe([self.topic])
        records = []
        deadline = time.monotonic() + DEADLINE_S
        until = None
        while until is None or time.monotonic() < until:
            for messages in member.poll(timeout_ms=200).values():
                for m in messages:
                    records.append(record(m.partition, m.offset, m.key, m.value, m.timestamp))
            if until is None and len(records) >= want:
                until = time.monotonic() + quiet
            wait(deadline, f"{want} records (read {len(records)})")
        return records

    def commit(self, member, offsets):
        from kafka.structs import OffsetAndMetadata, TopicPartition

        member.commit(
            {TopicPartition(self.topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()}
        )

    def positions(self, member):
        from kafka.structs import TopicPartition

        return {p: member.position(TopicPartition(self.topic, p)) for p in range(PARTITIONS)}

    def committed(self, member):
        from kafka.structs import TopicPartition

        return {p: member.committed(TopicPartition(self.topic, p)) for p in range(PARTITIONS)}


def main():
    if len(sys.argv) != 6:
        raise SystemExit(__doc__)
    client, bootstrap, topic, group, base = sys.argv[1:]
    base = int(base)
    clients = {"confluent": Confluent, "kafka-python": KafkaPython}
    if client not in clients:
        raise SystemExit(f"unknown client {client!r}")
    c = clients[client](bootstrap, topic, group)

    c.create()
    emit("create", topic=topic)

    delivered = c.produce(base)
    emit(
        "produce",
        records=[
            {
                "i": i,
                "key": key(i),
                "value": value(i),
                "timestamp": base + i * STEP_MS,
                "partition": delivered[i][0],
                "offset": delivered[i][1],
            }
            for i in range(COUNT)
        ],
    )
    counts = [0] * PARTITIONS
    for p, o in delivered.values():
        counts[p] = max(counts[p], o + 1)

    member = c.member()
    records = c.consume(member, COUNT, 0)
    c.commit(member, {p: counts[p] // 2 for p in range(PARTITIONS)})
    committed = c.committed(member)
    member.close()
    emit("first", records=records, committed={str(p): o for p, o in committed.items()})

    member = c.member()
    remaining = sum(n - n // 2 for n in counts)
    records = c.consume(member, remaining, QUIET_S)
    c.commit(member, c.positions(member))
    committed = c.committed(member)
    member.close()
    emit("resume", records=records, committed={str(p): o for p, o in committed.items()})


if __name__ == "__main__":
    main()
