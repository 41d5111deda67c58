#!/usr/bin/env python3
"""Produces keyed records to Tributary's Kafka listener with an idempotent confluent-kafka
producer (enable.idempotence, acks=all), for tests/kafka_api/idempotent.rs.

usage: produce_idempotent.py BOOTSTRAP TOPIC COUNT KEYS

Record i has the key "key-{i % KEYS}" and the value "{key}:{i // KEYS:06}:" followed by 60
"v"s, so the test checks each key's records are stored once and in order.

Prints one JSON line per delivered record, {"p": PARTITION, "o": OFFSET}, then a last line
{"delivered": N, "errors": [MESSAGE, ...]}. Exit status 0 when every record was delivered.
"""

import json
import sys

from confluent_kafka import Producer


def main():
    bootstrap, topic, count, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    producer = Producer({
        "bootstrap.servers": bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "batch.num.messages": 50,
        "retry.backoff.ms": 20,
        "reconnect.backoff.ms": 20,
        "message.timeout.ms": 60000,
    })
    delivered, errors = [], []

    def report(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append((msg.partition(), msg.offset()))

    for i in range(count):
        key = "key-%d" % (i % keys)
        value = "%s:%06d:%s" % (key, i // keys, "v" * 60)
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(60)
    if left:
        errors.append("%d records not delivered" % left)
    for p, o in delivered:
        print(json.dumps({"p": p, "o": o}))
    print(json.dumps({"delivered": len(delivered), "errors": errors}))
    return 0 if not errors and len(delivered) == count else 1


if __name__ == "__main__":
    sys.exit(main())
