//! What every test here uses: the gateway with a `listener:` section, a raw MQTT client on a
//! std `TcpStream` (packets written with rumqttc's `mqttbytes`, the server's answers read back
//! as raw frames so each byte can be asserted), the command-line peers with a time limit, and
//! one Prometheus sample.

use crate::support::{self, Gateway};
use bytes::BytesMut;
use rumqttc::mqttbytes::{v4, QoS as QoS4};
use rumqttc::v5::mqttbytes::{v5, QoS as QoS5};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Telemetry and a device status topic (where the wills go), each its own log topic.
pub const ROUTES: &str = "routes:\n  \
  - { name: telemetry, from: \"devices/{device}/telemetry/{*rest}\", to: telemetry, key: \"{device}\" }\n  \
  - { name: status, from: \"devices/{device}/status\", to: status, key: \"{device}\" }\n";

/// How long a test waits for an answer that should come at once.
pub const ANSWER: Duration = Duration::from_secs(10);

/// `tributary run` with a listener on a free loopback port.
pub struct Server {
    pub gw: Gateway,
    pub port: u16,
    /// `http.listen`'s port, when asked for.
    pub http: Option<u16>,
}

impl Server {
    /// `fields`: more keys for the `listener:` flow map, each after a comma (`, max_connections: 5`).
    pub fn start(fields: &str) -> Server {
        Self::start_with(fields, false)
    }

    /// Also serves /metrics.
    pub fn start_with_http(fields: &str) -> Server {
        Self::start_with(fields, true)
    }

    fn start_with(fields: &str, http: bool) -> Server {
        let port = support::free_port();
        let http = http.then(support::free_port);
        let yaml = config(&format!("\"127.0.0.1:{port}\""), fields, http);
        let mut gw = Gateway::new(&yaml);
        gw.spawn();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if gw.log().contains("tributary running") {
                break;
            }
            if let Some(status) = gw.wait_exit(Duration::from_millis(50)) {
                panic!("gateway exited ({status}) before running:\n{}", gw.log());
            }
            assert!(
                Instant::now() < deadline,
                "gateway not running after 20 s:\n{}",
                gw.log()
            );
        }
        Server { gw, port, http }
    }

    /// Every value stored on `topic`, sorted.
    pub fn values(&self, topic: &str) -> Vec<String> {
        let mut all: Vec<String> = self
            .gw
            .records(topic)
            .into_values()
            .flatten()
            .map(|r| r.value_str().to_string())
            .collect();
        all.sort();
        all
    }

    /// Every record on `topic` as (key, `mqtt.topic` header, value), sorted.
    pub fn stored(&self, topic: &str) -> Vec<(String, String, String)> {
        let mut all: Vec<_> = self
            .gw
            .records(topic)
            .into_values()
            .flatten()
            .map(|r| {
                (
                    String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned(),
                    r.header("mqtt.topic").unwrap_or_default().to_string(),
                    r.value_str().to_string(),
                )
            })
            .collect();
        all.sort();
        all
    }

    /// Waits until `topic` holds at least `n` records; returns its values.
    pub fn wait_values(&self, topic: &str, n: usize) -> Vec<String> {
        let ok = support::wait_until(ANSWER, || self.values(topic).len() >= n);
        assert!(
            ok,
            "{topic}: {:?}, expected at least {n} records:\n{}",
            self.values(topic),
            self.gw.log()
        );
        self.values(topic)
    }

    /// The process is still running (call once, at the end of a test).
    pub fn assert_running(&mut self) {
        if let Some(status) = self.gw.wait_exit(Duration::from_millis(1)) {
            panic!("the gateway exited ({status}):\n{}", self.gw.log());
        }
        assert!(
            !self.gw.log().contains("panicked"),
            "a task panicked:\n{}",
            self.gw.log()
        );
    }

    /// One unlabelled sample from /metrics.
    pub fn metric(&self, name: &str) -> Option<f64> {
        let port = self.http.expect("started with http");
        let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

/// A whole config: the listener at `listen` (YAML) with `fields`, the embedded log in DATA_DIR.
pub fn config(listen: &str, fields: &str, http: Option<u16>) -> String {
    let http = http.map_or("null".to_string(), |p| format!("\"127.0.0.1:{p}\""));
    format!(
        "listener: {{ listen: {listen}{fields} }}\n\
         log: {{ embedded: {{ dir: DATA_DIR, fsync_interval: 2ms, kafka_listener: null }} }}\n\
         topics: {{ default: {{ partitions: 1 }} }}\n\
         http: {{ listen: {http} }}\n{ROUTES}"
    )
}

/// A CONNECT, either version.
#[derive(Debug, Clone)]
pub struct Hello {
    pub v5: bool,
    pub client_id: String,
    pub keep_alive: u16,
    pub clean: bool,
    pub login: Option<(String, String)>,
    /// Topic, payload, will delay (MQTT 5; 0 for none). QoS 1, not retained.
    pub will: Option<(String, String, u32)>,
    /// MQTT 5 session expiry interval.
    pub session_expiry: Option<u32>,
}

impl Hello {
    pub fn v4(client_id: &str) -> Hello {
        Hello {
            v5: false,
            client_id: client_id.into(),
            keep_alive: 60,
            clean: true,
            login: None,
            will: None,
            session_expiry: None,
        }
    }

    pub fn v5(client_id: &str) -> Hello {
        Hello {
            v5: true,
            ..Hello::v4(client_id)
        }
    }

    pub fn version(v5: bool, client_id: &str) -> Hello {
        Hello {
            v5,
            ..Hello::v4(client_id)
        }
    }

    pub fn login(mut self, user: &str, password: &str) -> Hello {
        self.login = Some((user.into(), password.into()));
        self
    }

    pub fn keep_alive(mut self, seconds: u16) -> Hello {
        self.keep_alive = seconds;
        self
    }

    pub fn will(mut self, topic: &str, payload: &str, delay: u32) -> Hello {
        self.will = Some((topic.into(), payload.into(), delay));
        self
    }

    pub fn session(mut self, expiry: u32) -> Hello {
        self.clean = false;
        self.session_expiry = Some(expiry);
        self
    }

    pub fn bytes(&self) -> Vec<u8> {
        let mut buf = BytesMut::new();
        if self.v5 {
            let connect = v5::Connect {
                keep_alive: self.keep_alive,
                client_id: self.client_id.clone(),
                clean_start: self.clean,
                properties: self.session_expiry.map(|s| v5::ConnectProperties {
                    session_expiry_interval: Some(s),
                    ..v5::ConnectProperties::new()
                }),
            };
            let will = self.will.as_ref().map(|(topic, payload, delay)| {
                let properties = (*delay > 0).then(|| v5::LastWillProperties {
                    delay_interval: Some(*delay),
                    payload_format_indicator: None,
                    message_expiry_interval: None,
                    content_type: None,
                    response_topic: None,
                    correlation_data: None,
                    user_properties: Vec::new(),
                });
                v5::LastWill::new(
                    topic.as_str(),
                    payload.as_bytes(),
                    QoS5::AtLeastOnce,
                    false,
                    properties,
                )
            });
            let login = self.login.as_ref().map(|(u, p)| v5::Login::new(u, p));
            v5::Packet::Connect(connect, will, login)
                .write(&mut buf, None)
                .unwrap();
        } else {
            let mut connect = v4::Connect::new(self.client_id.as_str());
            connect.keep_alive = self.keep_alive;
            connect.clean_session = self.clean;
            if let Some((u, p)) = &self.login {
                connect.set_login(u, p);
            }
            connect.last_will = self.will.as_ref().map(|(topic, payload, _)| {
                v4::LastWill::new(topic.as_str(), payload.as_bytes(), QoS4::AtLeastOnce, false)
            });
            v4::Packet::Connect(connect)
                .write(&mut buf, 1 << 20)
                .unwrap();
        }
        buf.to_vec()
    }
}

/// A QoS 1 PUBLISH (QoS 0 when `pkid` is 0); MQTT 5 with an optional topic alias.
pub fn publish_bytes(
    v5: bool,
    topic: &str,
    payload: &str,
    pkid: u16,
    alias: Option<u16>,
) -> Vec<u8> {
    let mut buf = BytesMut::new();
    if v5 {
        let qos = if pkid == 0 {
            QoS5::AtMostOnce
        } else {
            QoS5::AtLeastOnce
        };
        let mut p = v5::Publish::new(topic, qos, payload.as_bytes().to_vec(), None);
        p.pkid = pkid;
        p.properties = alias.map(|a| v5::PublishProperties {
            topic_alias: Some(a),
            ..Default::default()
        });
        v5::Packet::Publish(p).write(&mut buf, None).unwrap();
    } else {
        assert!(alias.is_none(), "3.1.1 has no topic alias");
        let qos = if pkid == 0 {
            QoS4::AtMostOnce
        } else {
            QoS4::AtLeastOnce
        };
        let mut p = v4::Publish::new(topic, qos, payload.as_bytes().to_vec());
        p.pkid = pkid;
        v4::Packet::Publish(p).write(&mut buf, 1 << 20).unwrap();
    }
    buf.to_vec()
}

/// One packet from the server: its first byte and its body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub first: u8,
    pub body: Vec<u8>,
}

impl Frame {
    /// The whole packet, as it came on the wire.
    pub fn wire(&self) -> Vec<u8> {
        let mut out = vec![self.first];
        let mut len = self.body.len();
        loop {
            let mut byte = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                byte |= 0x80;
            }
            out.push(byte);
            if len == 0 {
                break;
            }
        }
        out.extend_from_slice(&self.body);
        out
    }
}

/// What came next on a socket.
#[derive(Debug)]
pub enum Next {
    Packet(Frame),
    /// The server closed the connection: EOF, or a reset (it closed with our bytes unread).
    /// The kind shows in failure messages.
    Closed(#[allow(dead_code)] ErrorKind),
    /// Nothing within the time given.
    Quiet,
}

/// A raw MQTT client.
pub struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    pub v5: bool,
    next_pkid: u16,
}

impl Raw {
    /// A TCP connection to the listener (nothing sent yet).
    pub fn open(port: u16, v5: bool) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect {port}: {e}"));
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: BytesMut::new(),
            v5,
            next_pkid: 1,
        }
    }

    /// Sends `hello` and returns the CONNACK.
    pub fn hello(port: u16, hello: &Hello) -> (Raw, Frame) {
        let mut raw = Raw::open(port, hello.v5);
        raw.send(&hello.bytes());
        let connack = raw.packet("CONNACK");
        assert_eq!(connack.first, 0x20, "not a CONNACK: {connack:?}");
        (raw, connack)
    }

    /// Connects and asserts the CONNACK says success.
    pub fn connect(port: u16, hello: &Hello) -> Raw {
        let (raw, connack) = Raw::hello(port, hello);
        assert_eq!(
            connack_code(&connack),
            0,
            "{}: CONNACK {connack:?}",
            hello.client_id
        );
        raw
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// Sends without failing: the server may have closed the socket already.
    pub fn try_send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes);
    }

    /// What comes next within `limit`.
    pub fn next(&mut self, limit: Duration) -> Next {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(frame) = take_frame(&mut self.buf) {
                return Next::Packet(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Next::Quiet;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Next::Closed(ErrorKind::UnexpectedEof),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Next::Closed(e.kind()),
            }
        }
    }

    /// The next packet; fails when the connection closes or nothing comes.
    #[track_caller]
    pub fn packet(&mut self, what: &str) -> Frame {
        match self.next(ANSWER) {
            Next::Packet(frame) => frame,
            other => panic!("expected {what}, got {other:?}"),
        }
    }

    /// Asserts the server closes the connection within `limit`, sending nothing first.
    #[track_caller]
    pub fn closed(&mut self, limit: Duration, what: &str) {
        match self.next(limit) {
            Next::Closed(_) => {}
            other => panic!("{what}: expected the connection closed, got {other:?}"),
        }
    }

    /// Asserts an MQTT 5 DISCONNECT with `reason`, then the close.
    #[track_caller]
    pub fn disconnected(&mut self, reason: u8, what: &str) {
        match self.next(ANSWER) {
            Next::Packet(f) if f.first == 0xE0 && f.body.first() == Some(&reason) => {}
            other => panic!("{what}: expected DISCONNECT 0x{reason:02X}, got {other:?}"),
        }
        self.closed(ANSWER, what);
    }

    /// Asserts nothing comes and the connection stays open for `time`.
    #[track_caller]
    pub fn quiet(&mut self, time: Duration, what: &str) {
        match self.next(time) {
            Next::Quiet => {}
            other => panic!("{what}: expected nothing, got {other:?}"),
        }
    }

    /// Publishes at QoS 1 and waits for the PUBACK (success, the same packet id).
    #[track_caller]
    pub fn publish(&mut self, topic: &str, payload: &str) {
        let pkid = self.pkid();
        self.send(&publish_bytes(self.v5, topic, payload, pkid, None));
        self.puback(pkid, payload);
    }

    /// A fresh packet id.
    pub fn pkid(&mut self) -> u16 {
        let pkid = self.next_pkid;
        self.next_pkid = self.next_pkid.wrapping_add(1).max(1);
        pkid
    }

    /// Waits for a successful PUBACK of `pkid`.
    #[track_caller]
    pub fn puback(&mut self, pkid: u16, what: &str) {
        let ack = self.packet(&format!("PUBACK for {what}"));
        let [hi, lo] = pkid.to_be_bytes();
        assert_eq!(
            ack.wire(),
            vec![0x40, 0x02, hi, lo],
            "{what}: expected a successful PUBACK of {pkid}"
        );
    }

    /// PINGREQ answered by PINGRESP.
    #[track_caller]
    pub fn ping(&mut self) {
        self.send(&[0xC0, 0x00]);
        let resp = self.packet("PINGRESP");
        assert_eq!(resp.wire(), vec![0xD0, 0x00], "PINGRESP");
    }

    /// Every byte the server sends until it closes the connection (within `limit`).
    #[track_caller]
    pub fn bytes_until_closed(&mut self, limit: Duration) -> Vec<u8> {
        let deadline = Instant::now() + limit;
        let mut all = std::mem::take(&mut self.buf).to_vec();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "still open after {limit:?}; got {all:?}");
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 8192];
            match self.stream.read(&mut chunk) {
                Ok(0) => return all,
                Ok(n) => all.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return all,
            }
        }
    }

    /// A normal DISCONNECT; the server closes without a word, and the session is over before
    /// the caller goes on.
    #[track_caller]
    pub fn disconnect(mut self) {
        self.send(&[0xE0, 0x00]);
        self.closed(ANSWER, "after DISCONNECT");
    }

    /// Closes the socket with no DISCONNECT (a device losing power, roughly).
    pub fn drop_socket(self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// The return code of a CONNACK (3.1.1) or its reason code (MQTT 5): the second body byte.
#[track_caller]
pub fn connack_code(connack: &Frame) -> u8 {
    assert_eq!(connack.first, 0x20, "not a CONNACK: {connack:?}");
    assert!(connack.body.len() >= 2, "short CONNACK: {connack:?}");
    connack.body[1]
}

fn take_frame(buf: &mut BytesMut) -> Option<Frame> {
    let mut len = 0usize;
    for i in 0..4 {
        let byte = *buf.get(1 + i)?;
        len |= usize::from(byte & 0x7F) << (7 * i);
        if byte & 0x80 == 0 {
            let header = 2 + i;
            if buf.len() < header + len {
                return None;
            }
            let whole = buf.split_to(header + len);
            return Some(Frame {
                first: whole[0],
                body: whole[header..].to_vec(),
            });
        }
    }
    panic!(
        "the server sent a remaining length over 4 bytes: {:?}",
        &buf[..]
    );
}

/// A command's exit status and output.
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs `cmd` with `stdin`, killed (and the test failed) when it takes over `limit`.
pub fn run(cmd: &mut Command, stdin: &[u8], limit: Duration) -> Ran {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin);
    drop(input);
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => {
            let out = out.unwrap();
            Ran {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }
        }
        Err(_) => {
            support::signal_pid(pid, libc::SIGKILL);
            panic!("{cmd:?} still running after {limit:?}");
        }
    }
}

pub fn mosquitto_pub() -> Command {
    Command::new(support::require(
        "mosquitto_pub",
        "apt-get install -y mosquitto-clients",
    ))
}

pub fn mosquitto_sub() -> Command {
    Command::new(support::require(
        "mosquitto_sub",
        "apt-get install -y mosquitto-clients",
    ))
}

/// `mosquitto_pub` of one QoS 1 message to the listener at `port`, plus `extra` arguments.
pub fn pub_one(port: u16, version: &str, topic: &str, message: &str, extra: &[&str]) -> Ran {
    let mut cmd = mosquitto_pub();
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", version])
        .args([
            "-q",
            "1",
            "-t",
            topic,
            "-m",
            message,
            "-i",
            &format!("pub-{message}"),
        ])
        .args(extra);
    run(&mut cmd, b"", Duration::from_secs(20))
}

/// `tributary check -c FILE` in a scratch directory.
pub fn check(config: &Path) -> Ran {
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(support::BIN);
    cmd.arg("check")
        .arg("-c")
        .arg(config)
        .current_dir(cwd.path());
    run(&mut cmd, b"", Duration::from_secs(20))
}

/// Writes `yaml` as `dir/name` (DATA_DIR becomes `dir/data`).
pub fn write_config(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    let yaml = yaml.replace("DATA_DIR", &dir.join("data").display().to_string());
    std::fs::write(&path, yaml).unwrap();
    path
}

/// A small deterministic generator (xorshift64*) for the malformed-input tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn byte(&mut self) -> u8 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.byte()).collect()
    }
}
