#!/usr/bin/env python3
"""A device publishing to Tributary's MQTT listener with paho-mqtt 2.x (tests/listener/).

Publishes --count messages (payload PREFIX + index, padded to --size bytes) on --topic at
--qos, each QoS in turn when --qos lists several ("0,1,2": --count messages at QoS 0, then at
1, then at 2), with MQTT 5 or 3.1.1, waits until paho reports every one complete (QoS 0:
written; 1: PUBACK; 2: PUBCOMP), disconnects, and prints one JSON line:
  {"published": N, "completed": N, "reason_codes": {"0": N}, "connack": {...}, "connects": 1}
("connects" counts CONNACKs: paho reconnects by itself after losing the connection.)
Exits 1 when a message did not complete within --timeout seconds.
"""
import argparse
import json
import sys
import threading
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--version", choices=["5", "311"], default="5")
    ap.add_argument("--qos", default="1", help="comma-separated QoS levels, in order")
    ap.add_argument("--count", type=int, default=1)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--prefix", default="m")
    ap.add_argument("--client-id", default="")
    ap.add_argument("--user-property", action="append", default=[], help="KEY=VALUE (MQTT 5)")
    ap.add_argument("--content-type", default=None)
    ap.add_argument("--retain", action="store_true")
    ap.add_argument("--size", type=int, default=0, help="pad each payload with '.' to this many bytes")
    ap.add_argument("--timeout", type=float, default=30.0)
    args = ap.parse_args()

    v5 = args.version == "5"
    client = mqtt.Client(
        callback_api_version=mqtt.CallbackAPIVersion.VERSION2,
        client_id=args.client_id,
        protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
    )
    connected = threading.Event()
    connack = {}
    connects = [0]
    reasons = {}
    lock = threading.Lock()

    def on_connect(_client, _userdata, _flags, reason_code, properties):
        connects[0] += 1
        connack["reason"] = int(reason_code.value) if hasattr(reason_code, "value") else int(reason_code)
        if v5 and properties is not None and hasattr(properties, "ReceiveMaximum"):
            connack["receive_maximum"] = properties.ReceiveMaximum
        connected.set()

    def on_publish(_client, _userdata, _mid, reason_code, _properties):
        code = str(int(reason_code.value) if hasattr(reason_code, "value") else int(reason_code))
        with lock:
            reasons[code] = reasons.get(code, 0) + 1

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.connect(args.host, args.port, keepalive=30)
    client.loop_start()
    if not connected.wait(args.timeout):
        print(json.dumps({"error": "no CONNACK"}))
        return 1
    if connack.get("reason") != 0:
        print(json.dumps({"error": "refused", "connack": connack}))
        return 1

    props = None
    if v5 and (args.user_property or args.content_type):
        props = Properties(PacketTypes.PUBLISH)
        if args.user_property:
            props.UserProperty = [tuple(kv.split("=", 1)) for kv in args.user_property]
        if args.content_type:
            props.ContentType = args.content_type

    infos = []
    started = time.monotonic()
    for qos in [int(q) for q in args.qos.split(",")]:
        for i in range(args.count):
            payload = f"{args.prefix}{len(infos)}"
            payload += "." * max(0, args.size - len(payload))
            infos.append(client.publish(args.topic, payload, qos=qos, retain=args.retain, properties=props))
    deadline = time.monotonic() + args.timeout
    completed = 0
    for info in infos:
        try:
            info.wait_for_publish(max(0.01, deadline - time.monotonic()))
        except (RuntimeError, ValueError):
            pass
        if info.is_published():
            completed += 1
    elapsed = time.monotonic() - started
    client.disconnect()
    client.loop_stop()
    print(json.dumps({
        "published": len(infos),
        "completed": completed,
        "reason_codes": reasons,
        "connack": connack,
        "connects": connects[0],
        "seconds": round(elapsed, 3),
    }))
    return 0 if completed == len(infos) else 1


if __name__ == "__main__":
    sys.exit(main())
