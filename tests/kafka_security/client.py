"""One run of a Python Kafka client for tests/kafka_security: produce records to a topic, then
read the whole topic back from the beginning.

argv[1] is JSON:
  client      "confluent" (confluent-kafka) or "kafka-python"
  bootstrap   HOST:PORT
  topic       the topic
  security    client settings: librdkafka keys for confluent, KafkaProducer/KafkaConsumer
              keyword arguments for kafka-python
  producer    more producer settings (same style)
  produce     [[key, value, [[header, value], ...]], ...]
  consume     whether to read the topic back afterwards
  timeout     seconds for each step

Prints one JSON object:
  produced    one entry per record: {"p": partition, "o": offset} or {"error": name}
  consumed    [{"p", "o", "key", "value", "headers"}] or null
  errors      client errors reported on the side (error_cb), as "NAME: text"
  exception   "Type: text" of an exception that ended the run early, or null
"""
import json
import logging
import sys
import time

# kafka-python says why it could not connect (a failed SASL exchange) only in its log.
logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                    format="%(levelname)s %(name)s: %(message)s")

args = json.loads(sys.argv[1])
client, bootstrap, topic = args["client"], args["bootstrap"], args["topic"]
security, extra = args.get("security", {}), args.get("producer", {})
records, timeout = args.get("produce", []), float(args.get("timeout", 10))
out = {"produced": [], "consumed": None, "errors": [], "exception": None}


def text(b):
    return None if b is None else b.decode("utf-8", "replace")


def confluent():
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition, OFFSET_BEGINNING

    def on_error(e):
        out["errors"].append("%s: %s" % (e.name(), e.str()))

    common = {"bootstrap.servers": bootstrap, "error_cb": on_error,
              "socket.timeout.ms": int(timeout * 1000)}
    common.update(security)
    if records:
        conf = dict(common)
        conf.update({"acks": "all", "message.timeout.ms": int(timeout * 1000), "linger.ms": 2})
        conf.update(extra)
        p = Producer(conf)
        results = [None] * len(records)
        for i, (k, v, headers) in enumerate(records):
            def done(err, msg, i=i):
                results[i] = {"error": err.name()} if err else {"p": msg.partition(), "o": msg.offset()}
            p.produce(topic, key=k, value=v, headers=[(h, hv) for h, hv in headers], on_delivery=done)
            p.poll(0)
        p.flush(timeout + 5)
        out["produced"] = [r if r is not None else {"error": "no delivery report"} for r in results]
    if args.get("consume"):
        conf = dict(common)
        conf.update({"group.id": "kafka-security-py", "enable.auto.commit": False,
                     "enable.partition.eof": True})
        c = Consumer(conf)
        md = c.list_topics(topic, timeout=timeout)
        t = md.topics[topic]
        if t.error is not None:
            raise RuntimeError("metadata: %s" % t.error)
        parts = sorted(t.partitions)
        c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        eof, got = set(), []
        deadline = time.time() + timeout
        while len(eof) < len(parts) and time.time() < deadline:
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                else:
                    out["errors"].append("%s: %s" % (m.error().name(), m.error().str()))
                continue
            eof.discard(m.partition())
            got.append({"p": m.partition(), "o": m.offset(), "key": text(m.key()),
                        "value": text(m.value()),
                        "headers": [[h, text(v)] for h, v in (m.headers() or [])]})
        c.close()
        if len(eof) < len(parts):
            raise RuntimeError("not at the end of every partition after %ss: %s" % (timeout, sorted(eof)))
        out["consumed"] = got


def kafka_python():
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    ms = int(timeout * 1000)
    if records:
        conf = dict(security)
        conf.update({"acks": "all", "request_timeout_ms": ms, "max_block_ms": ms,
                     "delivery_timeout_ms": ms + 1000, "linger_ms": 2,
                     "bootstrap_timeout_ms": ms})
        conf.update(extra)
        p = KafkaProducer(bootstrap_servers=bootstrap, **conf)
        futures = [p.send(topic, key=k.encode(), value=v.encode(),
                          headers=[(h, hv.encode()) for h, hv in headers])
                   for k, v, headers in records]
        for f in futures:
            try:
                md = f.get(timeout=timeout + 2)
                out["produced"].append({"p": md.partition, "o": md.offset})
            except Exception as e:
                out["produced"].append({"error": type(e).__name__, "text": str(e)})
        p.close(timeout=5)
    if args.get("consume"):
        c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                          request_timeout_ms=ms + 1000, bootstrap_timeout_ms=ms, **security)
        deadline = time.time() + timeout
        parts = None
        while parts is None and time.time() < deadline:
            parts = c.partitions_for_topic(topic)
            if parts is None:
                time.sleep(0.1)
        if not parts:
            raise RuntimeError("no partitions for %s" % topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        got = []
        while any(c.position(tp) < ends[tp] for tp in tps) and time.time() < deadline:
            for tp, msgs in c.poll(timeout_ms=200).items():
                for m in msgs:
                    got.append({"p": m.partition, "o": m.offset, "key": text(m.key),
                                "value": text(m.value),
                                "headers": [[h, text(v)] for h, v in (m.headers or [])]})
        behind = [tp.partition for tp in tps if c.position(tp) < ends[tp]]
        c.close()
        if behind:
            raise RuntimeError("partitions %s not read to their end after %ss" % (behind, timeout))
        out["consumed"] = got


try:
    {"confluent": confluent, "kafka-python": kafka_python}[client]()
except Exception as e:
    out["exception"] = "%s: %s" % (type(e).__name__, e)
print(json.dumps(out), flush=True)
