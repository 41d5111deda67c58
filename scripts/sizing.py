#!/usr/bin/env python3
"""Measures the README's sizing figures (README: Operating, Sizing) on this machine.

usage: scripts/sizing.py [--disk-only] [TRIBUTARY_BINARY]   (default target/debug/tributary)

Needs mosquitto (Debian's) and paho-mqtt (PyPI): scripts/test installs both. Everything runs on
loopback ports and temporary directories, and stops by itself.

1. Memory per in-flight message. The gateway runs with `fsync_interval: 10s`, so a message
   waits up to 10 s for its fsync and the pipeline fills to `mqtt.max_inflight` (then reading
   stops: backpressure). 2 x max_inflight messages of a given payload size are published at
   QoS 1; VmHWM (peak resident memory, /proc/PID/status) is read once the pipeline is full.
   The same run with max_inflight 64 is the baseline: the difference divided by the difference
   in messages is the cost of one message in flight.
2. Disk per record. Messages of a 100-byte JSON payload from 100 devices go through the
   default route shape (key = device id, the MQTT headers) into the embedded log, once as a
   burst (many records per group-committed batch) and once one at a time (one record per
   batch, the worst case); `tributary topics` gives bytes and records.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import paho.mqtt.client as mqtt

ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
BIN = os.path.abspath(ARGS[0] if ARGS else "target/debug/tributary")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, limit=10):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


class Broker:
    def __init__(self, tmp):
        self.port = free_port()
        conf = os.path.join(tmp, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write(
                f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                "max_queued_messages 0\nmax_inflight_messages 0\n"
            )
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port)

    def stop(self):
        self.proc.terminate()
        self.proc.wait()


def gateway_config(tmp, port, max_inflight, fsync_interval):
    path = os.path.join(tmp, "bridge.yaml")
    with open(path, "w") as f:
        f.write(
            f"""mqtt: {{ url: "mqtt://127.0.0.1:{port}", client_id: sizing, max_inflight: {max_inflight} }}
log:
  embedded: {{ dir: {tmp}/data, fsync_interval: {fsync_interval}, kafka_listener: null }}
topics:
  telemetry: {{ partitions: 12 }}
routes:
  - name: telemetry
    from: devices/{{device}}/telemetry/{{*rest}}
    to: telemetry
    key: "{{device}}"
http: {{ listen: null }}
"""
        )
    return path


def start_gateway(config, tmp):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIBUTARY_")}
    env["RUST_LOG"] = "warn"
    proc = subprocess.Popen(
        [BIN, "run", "-c", config], cwd=tmp, env=env, stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(tmp, "gateway.log"), "w"),
    )
    return proc


def subscribed():
    """Gives the gateway time to open its log and subscribe (it logs nothing at warn)."""
    time.sleep(1.5)


def vm_hwm_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM")


def publisher(port):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"pub-{time.time_ns()}")
    c.max_inflight_messages_set(65535)
    c.max_queued_messages_set(0)
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def publish(c, n, payload, devices=100, pause=0.0):
    infos = []
    for i in range(n):
        infos.append(c.publish(f"devices/d{i % devices:03}/telemetry/temp", payload, qos=1))
        if pause:
            time.sleep(pause)
    for info in infos:
        info.wait_for_publish(30)


def memory_run(max_inflight, payload_bytes):
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(tmp)
        gw = start_gateway(gateway_config(tmp, broker.port, max_inflight, "10s"), tmp)
        try:
            subscribed()
            idle = vm_hwm_kib(gw.pid)
            pub = publisher(broker.port)
            payload = b"x" * payload_bytes
            publish(pub, 2 * max_inflight, payload)
            time.sleep(3)  # the pipeline fills; the first fsync is up to 10 s away
            peak = vm_hwm_kib(gw.pid)
            pub.loop_stop()
            pub.disconnect()
            return idle, peak
        finally:
            gw.terminate()
            gw.wait()
            broker.stop()


def disk_run(n, pause):
    payload = json.dumps({"site": "s1", "t": 1733228000, "temp": 21.5, "hum": 40.2,
                          "bat": 3.71, "seq": 123456}).encode()
    payload = payload + b" " * (100 - len(payload))  # 100 bytes, as JSON allows
    assert len(payload) == 100
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(tmp)
        config = gateway_config(tmp, broker.port, 1024, "5ms")
        gw = start_gateway(config, tmp)
        try:
            subscribed()
            pub = publisher(broker.port)
            publish(pub, n, payload, pause=pause)
            pub.loop_stop()
            pub.disconnect()
            time.sleep(1)
        finally:
            gw.terminate()
            gw.wait()
            broker.stop()
        out = subprocess.run([BIN, "topics", "-c", config], cwd=tmp, capture_output=True,
                             text=True, check=True).stdout
        rows = [line.split() for line in out.splitlines()[1:] if line.strip()]
        records = sum(int(r[3]) - int(r[2]) for r in rows)
        log_bytes = sum(int(r[4]) for r in rows)
        on_disk = sum(
            os.path.getsize(os.path.join(d, f))
            for d, _, files in os.walk(os.path.join(tmp, "data", "telemetry"))
            for f in files
        )
        return (f"{records} records, {log_bytes} bytes of log ({log_bytes / records:.1f} per "
                f"record); every file of the topic (indexes too): {on_disk} bytes "
                f"({on_disk / records:.1f} per record)")


def main():
    print(f"binary: {BIN}")
    print("== memory per in-flight message (fsync_interval 10s holds the pipeline full)")
    for payload in (1024, 16384) if "--disk-only" not in sys.argv else ():
        idle_small, peak_small = memory_run(64, payload)
        idle_big, peak_big = memory_run(1024, payload)
        per_msg = (peak_big - peak_small) * 1024 / (1024 - 64)
        print(f"payload {payload} B: VmHWM idle {idle_small} KiB; peak with 64 in flight "
              f"{peak_small} KiB, with 1024 in flight {peak_big} KiB "
              f"-> {per_msg:.0f} bytes per in-flight message")
    print("== disk per record (100-byte payload, key d000..d099, MQTT headers)")
    print("burst of 20000:", disk_run(20000, 0.0))
    print("one at a time, 300 messages 20 ms apart:", disk_run(300, 0.02))


if __name__ == "__main__":
    main()
