//! What the listener tests share: the gateway with its listener on a free port, a raw MQTT
//! client that writes packets itself (for flows no library client produces on purpose), a
//! `/metrics` scrape, Kafka's partitioner written out again, and the Python publisher.

use crate::support::{self, Gateway, Stored};
use bytes::{Buf, BytesMut};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The route most tests use: one record per device message, keyed by the device.
pub const TELEMETRY: &str = r#"  - { name: telemetry, from: "devices/{device}/telemetry/{*rest}", to: telemetry, key: "{device}" }"#;

/// Partitions of the `telemetry` topic: not a power of two, so a wrong modulus shows.
pub const TELEMETRY_PARTITIONS: u32 = 5;

/// What a test changes in the gateway's config.
pub struct Setup<'a> {
    /// Extra `listener` keys, each starting with ", ".
    pub listener: &'a str,
    /// `log.embedded.fsync_interval`: appends wait for the next fsync, at most this often.
    pub fsync_interval: &'a str,
    pub routes: &'a str,
    /// Serve `/metrics` on a free port.
    pub http: bool,
}

impl Default for Setup<'_> {
    fn default() -> Self {
        Setup {
            listener: "",
            fsync_interval: "2ms",
            routes: TELEMETRY,
            http: false,
        }
    }
}

/// The real binary with only the listener face on: devices connect to `port`.
pub struct Listener {
    pub gw: Gateway,
    pub port: u16,
    pub http: Option<SocketAddr>,
    starts: usize,
}

impl Listener {
    pub fn start(setup: Setup) -> Listener {
        let port = support::free_port();
        let http = setup
            .http
            .then(|| SocketAddr::from(([127, 0, 0, 1], support::free_port())));
        let http_yaml = match http {
            Some(addr) => format!("\"{addr}\""),
            None => "null".into(),
        };
        let yaml = format!(
            "listener: {{ listen: \"127.0.0.1:{port}\"{} }}\n\
             log: {{ embedded: {{ dir: DATA_DIR, fsync_interval: {}, kafka_listener: null }} }}\n\
             topics: {{ default: {{ partitions: 3 }}, telemetry: {{ partitions: {TELEMETRY_PARTITIONS} }} }}\n\
             http: {{ listen: {http_yaml} }}\n\
             routes:\n{}\n",
            setup.listener, setup.fsync_interval, setup.routes
        );
        let mut listener = Listener {
            gw: Gateway::new(&yaml),
            port,
            http,
            starts: 0,
        };
        listener.run();
        listener
    }

    /// Starts the binary (again, on the same port and data) and waits until it accepts.
    pub fn run(&mut self) {
        self.gw.spawn();
        self.starts += 1;
        let starts = self.starts;
        let gw = &self.gw;
        let up = support::wait_until(Duration::from_secs(20), || {
            gw.log().matches("MQTT listener accepting").count() >= starts
        });
        assert!(up, "the listener did not start:\n{}", self.gw.log());
    }

    /// Every record of `topic`, all partitions in order.
    pub fn all(&self, topic: &str) -> Vec<Stored> {
        self.gw.records(topic).into_values().flatten().collect()
    }

    pub fn records(&self, topic: &str) -> BTreeMap<u32, Vec<Stored>> {
        self.gw.records(topic)
    }

    /// Waits until `topic` holds `n` records (or `limit` passes); returns how many it holds.
    pub fn wait_records(&self, topic: &str, n: usize, limit: Duration) -> usize {
        let data = self.gw.data_dir();
        support::wait_until(limit, || support::count_records(&data, topic) >= n);
        support::count_records(&data, topic)
    }

    pub fn metrics(&self) -> String {
        scrape(self.http.expect("started with http"))
    }
}

/// `GET /metrics`: the body.
pub fn scrape(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: tributary\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a whole response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// The value of sample `name` (with its labels as printed) in a scrape.
pub fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Kafka's `Utils.murmur2`, written out here again so the test does not take the gateway's
/// word for it (checked against Kafka's own test vectors in `partitioner_matches_kafka`).
pub fn murmur2(data: &[u8]) -> i32 {
    let m: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ (data.len() as u32);
    let len4 = data.len() / 4;
    for i in 0..len4 {
        let i4 = i * 4;
        let mut k = u32::from(data[i4])
            | u32::from(data[i4 + 1]) << 8
            | u32::from(data[i4 + 2]) << 16
            | u32::from(data[i4 + 3]) << 24;
        k = k.wrapping_mul(m);
        k ^= k >> 24;
        k = k.wrapping_mul(m);
        h = h.wrapping_mul(m);
        h ^= k;
    }
    let rest = data.len() % 4;
    let tail = &data[len4 * 4..];
    if rest >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if rest >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if rest >= 1 {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(m);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(m);
    h ^= h >> 15;
    h as i32
}

/// Where Kafka's default partitioner puts `key`.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    (murmur2(key.as_bytes()) & 0x7fff_ffff) as u32 % partitions
}

#[test]
fn partitioner_matches_kafka() {
    // Apache Kafka's UtilsTest.testMurmur2.
    for (input, expected) in [
        ("21", -973_932_308),
        ("foobar", -790_332_482),
        ("a-little-bit-long-string", -985_981_536),
        ("a-little-bit-longer-string", -1_486_304_829),
        (
            "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        ("abc", 479_470_107),
    ] {
        assert_eq!(murmur2(input.as_bytes()), expected, "{input}");
    }
}

/// The Python interpreter with paho-mqtt, and the publisher script.
pub fn paho() -> (PathBuf, PathBuf) {
    let python = support::require_python(&[("paho.mqtt", "paho-mqtt")]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/listener_publish.py");
    (python, script)
}

/// Runs tests/python/listener_publish.py with `args` against `port`; its JSON report. Fails
/// unless every message completed.
pub fn paho_publish(port: u16, args: &[&str]) -> serde_json::Value {
    let (ok, report) = paho_try(port, args);
    assert!(
        ok,
        "listener_publish.py {args:?} did not complete: {report}"
    );
    report
}

/// As [`paho_publish`]: whether every message completed, and the report.
pub fn paho_try(port: u16, args: &[&str]) -> (bool, serde_json::Value) {
    let (python, script) = paho();
    let out = Command::new(python)
        .arg(script)
        .args(["--port", &port.to_string()])
        .args(args)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "listener_publish.py {args:?}: {}, {e}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), report)
}

/// A packet the listener sent, decoded here byte by byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Return code (3.1.1) or reason code (5), and MQTT 5's receive maximum.
    ConnAck {
        session_present: bool,
        code: u8,
        receive_max: Option<u16>,
    },
    /// Reason is 0 when the packet carries none.
    PubAck {
        pkid: u16,
        reason: u8,
    },
    PubRec {
        pkid: u16,
        reason: u8,
    },
    PubComp {
        pkid: u16,
        reason: u8,
    },
    PingResp,
    Disconnect {
        reason: u8,
    },
    Other(u8, Vec<u8>),
}

/// A device written by hand over a blocking socket: packets are built with rumqttc's
/// `mqttbytes` (or spelled out), replies decoded by [`Reply`].
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    pub v5: bool,
    connack: Option<Reply>,
}

impl Raw {
    /// Connects and reads the CONNACK (which must be a success).
    pub fn connect(port: u16, client_id: &str, v5: bool) -> (Raw, Reply) {
        Raw::connect_with(port, client_id, v5, true, 0)
    }

    pub fn connect_with(
        port: u16,
        client_id: &str,
        v5: bool,
        clean: bool,
        session_expiry: u32,
    ) -> (Raw, Reply) {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_nodelay(true).unwrap();
        let mut raw = Raw {
            stream,
            buf: BytesMut::new(),
            v5,
            connack: None,
        };
        let mut out = BytesMut::new();
        if v5 {
            use rumqttc::v5::mqttbytes::v5;
            let connect = v5::Connect {
                keep_alive: 60,
                client_id: client_id.into(),
                clean_start: clean,
                properties: (session_expiry > 0).then(|| v5::ConnectProperties {
                    session_expiry_interval: Some(session_expiry),
                    ..v5::ConnectProperties::new()
                }),
            };
            v5::Packet::Connect(connect, None, None)
                .write(&mut out, None)
                .unwrap();
        } else {
            use rumqttc::mqttbytes::v4;
            let mut connect = v4::Connect::new(client_id);
            connect.keep_alive = 60;
            connect.clean_session = clean;
            v4::Packet::Connect(connect)
                .write(&mut out, 1 << 20)
                .unwrap();
        }
        raw.write(&out);
        let connack = raw.read(Duration::from_secs(10)).expect("a CONNACK");
        assert!(
            matches!(connack, Reply::ConnAck { code: 0, .. }),
            "{connack:?}"
        );
        raw.connack = Some(connack.clone());
        (raw, connack)
    }

    /// The CONNACK's session present flag.
    pub fn session_present(&self) -> Option<bool> {
        match self.connack {
            Some(Reply::ConnAck {
                session_present, ..
            }) => Some(session_present),
            _ => None,
        }
    }

    /// The bytes of a PUBLISH in this connection's version.
    pub fn publish(&self, topic: &str, qos: u8, pkid: u16, dup: bool, payload: &[u8]) -> Vec<u8> {
        self.publish_with(topic, qos, pkid, dup, payload, Vec::new())
    }

    pub fn publish_with(
        &self,
        topic: &str,
        qos: u8,
        pkid: u16,
        dup: bool,
        payload: &[u8],
        user_properties: Vec<(String, String)>,
    ) -> Vec<u8> {
        let mut out = BytesMut::new();
        if self.v5 {
            use rumqttc::v5::mqttbytes::{v5, QoS};
            let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][qos as usize];
            let mut p = v5::Publish::new(topic, qos, payload.to_vec(), None);
            p.pkid = pkid;
            p.dup = dup;
            if !user_properties.is_empty() {
                p.properties = Some(v5::PublishProperties {
                    user_properties,
                    ..Default::default()
                });
            }
            v5::Packet::Publish(p).write(&mut out, None).unwrap();
        } else {
            use rumqttc::mqttbytes::v4;
            use rumqttc::QoS;
            let qos = [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce][qos as usize];
            let mut p = v4::Publish::new(topic, qos, payload.to_vec());
            p.pkid = pkid;
            p.dup = dup;
            v4::Packet::Publish(p).write(&mut out, 1 << 28).unwrap();
        }
        out.to_vec()
    }

    /// PUBREL (MQTT 5: reason success, written in its short form).
    pub fn pubrel(pkid: u16) -> Vec<u8> {
        vec![0x62, 0x02, (pkid >> 8) as u8, pkid as u8]
    }

    pub const PINGREQ: [u8; 2] = [0xC0, 0x00];
    pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

    pub fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next packet from the listener; `None` when none came within `limit` or the
    /// connection closed.
    pub fn read(&mut self, limit: Duration) -> Option<Reply> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(reply) = self.decode() {
                return Some(reply);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return None
                }
                Err(_) => return None,
            }
        }
    }

    /// True once the listener has closed the connection (EOF or reset within `limit`);
    /// packets read meanwhile are returned too.
    pub fn closed_within(&mut self, limit: Duration) -> (bool, Vec<Reply>) {
        let deadline = Instant::now() + limit;
        let mut seen = Vec::new();
        loop {
            while let Some(reply) = self.decode() {
                seen.push(reply);
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return (false, seen);
            };
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .unwrap();
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return (true, seen),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return (false, seen)
                }
                Err(_) => return (true, seen),
            }
        }
    }

    /// One whole packet off the front of the buffer, if there is one.
    fn decode(&mut self) -> Option<Reply> {
        let mut len = 0usize;
        let mut header = 1;
        loop {
            let byte = *self.buf.get(header)?;
            len |= usize::from(byte & 0x7F) << (7 * (header - 1));
            header += 1;
            if byte & 0x80 == 0 {
                break;
            }
            assert!(header <= 4, "remaining length over 4 bytes");
        }
        if self.buf.len() < header + len {
            return None;
        }
        let kind = self.buf[0];
        let mut body = self.buf.split_to(header + len);
        body.advance(header);
        let body = body.to_vec();
        let ack = |body: &[u8]| -> (u16, u8) {
            assert!(body.len() >= 2, "an ack without a packet id: {body:?}");
            if !self.v5 {
                assert_eq!(body.len(), 2, "a 3.1.1 ack is 2 bytes: {body:?}");
            }
            (
                u16::from_be_bytes([body[0], body[1]]),
                body.get(2).copied().unwrap_or(0),
            )
        };
        Some(match kind {
            0x20 => {
                let code = body[1];
                let receive_max = if self.v5 {
                    use rumqttc::v5::mqttbytes::v5;
                    let mut whole = BytesMut::new();
                    whole.extend_from_slice(&[0x20]);
                    put_len(&mut whole, body.len());
                    whole.extend_from_slice(&body);
                    match v5::Packet::read(&mut whole, None) {
                        Ok(v5::Packet::ConnAck(ack)) => ack.properties.and_then(|p| p.receive_max),
                        other => panic!("CONNACK not decodable: {other:?}"),
                    }
                } else {
                    None
                };
                Reply::ConnAck {
                    session_present: body[0] & 1 == 1,
                    code,
                    receive_max,
                }
            }
            0x40 => {
                let (pkid, reason) = ack(&body);
                Reply::PubAck { pkid, reason }
            }
            0x50 => {
                let (pkid, reason) = ack(&body);
                Reply::PubRec { pkid, reason }
            }
            0x70 => {
                let (pkid, reason) = ack(&body);
                Reply::PubComp { pkid, reason }
            }
            0xD0 => Reply::PingResp,
            0xE0 => Reply::Disconnect {
                reason: body.first().copied().unwrap_or(0),
            },
            other => Reply::Other(other, body),
        })
    }
}

fn put_len(buf: &mut BytesMut, mut len: usize) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        buf.extend_from_slice(&[byte]);
        if len == 0 {
            return;
        }
    }
}
