//! Requests written by hand on a plain TCP socket, so every error code the listener answers is
//! asserted exactly: ApiVersions, SaslHandshake v0/v1, SaslAuthenticate v1 and the v0 raw-token
//! flow, Metadata, Produce, CreateTopics, InitProducerId (all non-flexible versions), and the
//! client side of PLAIN and SCRAM (scram.rs).

use crate::scram;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub const PRODUCE: i16 = 0;
pub const METADATA: i16 = 3;
pub const SASL_HANDSHAKE: i16 = 17;
pub const API_VERSIONS: i16 = 18;
pub const CREATE_TOPICS: i16 = 19;
pub const INIT_PRODUCER_ID: i16 = 22;
pub const SASL_AUTHENTICATE: i16 = 36;

pub const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
pub const SASL_AUTHENTICATION_FAILED: i16 = 58;
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
pub const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;

const WAIT: Duration = Duration::from_secs(10);

/// What a SCRAM server-first-message says of the user's credential.
pub type SaltAndIterations = (Vec<u8>, u32);

/// Kafka's primitive types, big-endian.
#[derive(Default)]
pub struct Body(pub Vec<u8>);

impl Body {
    pub fn i8(mut self, v: i8) -> Self {
        self.0.push(v as u8);
        self
    }
    pub fn i16(mut self, v: i16) -> Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    pub fn i32(mut self, v: i32) -> Self {
        self.0.extend(v.to_be_bytes());
        self
    }
    pub fn str(self, s: &str) -> Self {
        let mut b = self.i16(s.len() as i16);
        b.0.extend(s.as_bytes());
        b
    }
    pub fn null_str(self) -> Self {
        self.i16(-1)
    }
    pub fn bytes(self, v: &[u8]) -> Self {
        let mut b = self.i32(v.len() as i32);
        b.0.extend(v);
        b
    }
}

/// A cursor over a response body.
pub struct Reader<'a>(pub &'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        assert!(
            self.0.len() >= n,
            "response cut short: {} < {n}",
            self.0.len()
        );
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        a
    }
    pub fn i8(&mut self) -> i8 {
        self.take(1)[0] as i8
    }
    pub fn i16(&mut self) -> i16 {
        i16::from_be_bytes(self.take(2).try_into().unwrap())
    }
    pub fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take(4).try_into().unwrap())
    }
    pub fn i64(&mut self) -> i64 {
        i64::from_be_bytes(self.take(8).try_into().unwrap())
    }
    pub fn str(&mut self) -> Option<String> {
        let n = self.i16();
        (n >= 0).then(|| String::from_utf8_lossy(self.take(n as usize)).into_owned())
    }
    pub fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.i32();
        (n >= 0).then(|| self.take(n as usize).to_vec())
    }
}

/// What came back.
#[derive(Debug)]
pub enum Reply {
    /// A response frame, without its length and correlation id.
    Frame(Vec<u8>),
    /// The server closed the connection (EOF or reset).
    Closed,
}

pub struct Conn {
    pub stream: TcpStream,
    correlation: i32,
}

impl Conn {
    pub fn open(port: u16) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .unwrap_or_else(|e| panic!("connect {port}: {e}"));
        stream.set_nodelay(true).unwrap();
        Conn {
            stream,
            correlation: 0,
        }
    }

    /// Sends a request (header v1) and returns its correlation id; a write the server refused
    /// (it closed already) is not an error here: the read says so.
    pub fn send(&mut self, api: i16, version: i16, body: &[u8]) -> i32 {
        self.correlation += 1;
        let mut f = Vec::new();
        f.extend(api.to_be_bytes());
        f.extend(version.to_be_bytes());
        f.extend(self.correlation.to_be_bytes());
        f.extend(8i16.to_be_bytes());
        f.extend(b"raw-test");
        f.extend(body);
        self.write_frame(&f);
        self.correlation
    }

    /// A length-prefixed frame as is (the v0 raw SASL tokens).
    pub fn write_frame(&mut self, f: &[u8]) {
        let mut all = (f.len() as i32).to_be_bytes().to_vec();
        all.extend(f);
        let _ = self.stream.write_all(&all);
    }

    /// The next frame (without its length), or Closed; fails when nothing comes in 10 s.
    #[track_caller]
    pub fn read_frame(&mut self) -> Reply {
        let mut len = [0u8; 4];
        if !self.read_exact(&mut len) {
            return Reply::Closed;
        }
        let n = i32::from_be_bytes(len);
        assert!((0..=(64 << 20)).contains(&n), "frame length {n}: {len:?}");
        let mut body = vec![0u8; n as usize];
        if !self.read_exact(&mut body) {
            return Reply::Closed;
        }
        Reply::Frame(body)
    }

    #[track_caller]
    fn read_exact(&mut self, buf: &mut [u8]) -> bool {
        let deadline = Instant::now() + WAIT;
        let mut filled = 0;
        while filled < buf.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no answer and not closed after {WAIT:?}");
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf[filled..]) {
                Ok(0) => return false,
                Ok(n) => filled += n,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Sends a request and reads its response body (after the correlation id, checked).
    #[track_caller]
    pub fn call(&mut self, api: i16, version: i16, body: &[u8]) -> Option<Vec<u8>> {
        let correlation = self.send(api, version, body);
        match self.read_frame() {
            Reply::Frame(f) => {
                assert!(f.len() >= 4, "short response {f:?}");
                assert_eq!(
                    i32::from_be_bytes(f[..4].try_into().unwrap()),
                    correlation,
                    "correlation id of api {api}"
                );
                Some(f[4..].to_vec())
            }
            Reply::Closed => None,
        }
    }

    /// Asserts the server closes the connection within 10 s without sending a byte more.
    #[track_caller]
    pub fn assert_closed(&mut self, what: &str) {
        let mut buf = [0u8; 256];
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{what}: the connection is still open after {WAIT:?}"
            );
            self.stream.set_read_timeout(Some(left)).unwrap();
            match self.stream.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => panic!("{what}: the server sent {:?} instead of closing", &buf[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return,
            }
        }
    }

    /// ApiVersions v0: asserts error 0; returns (api, min, max) for every API.
    #[track_caller]
    pub fn api_versions(&mut self) -> Vec<(i16, i16, i16)> {
        let body = self
            .call(API_VERSIONS, 0, &[])
            .expect("ApiVersions answered, not closed");
        let mut r = Reader(&body);
        assert_eq!(r.i16(), 0, "ApiVersions error code");
        let n = r.i32();
        (0..n).map(|_| (r.i16(), r.i16(), r.i16())).collect()
    }

    /// Metadata v1 for every topic: Some(topic names) when answered, None when the connection
    /// was closed instead.
    pub fn metadata(&mut self) -> Option<Vec<String>> {
        let body = self.call(METADATA, 1, &Body::default().i32(-1).0)?;
        let mut r = Reader(&body);
        for _ in 0..r.i32() {
            r.i32();
            r.str();
            r.i32();
            r.str();
        }
        r.i32();
        let mut names = Vec::new();
        for _ in 0..r.i32() {
            r.i16();
            names.push(r.str().unwrap_or_default());
            r.i8();
            for _ in 0..r.i32() {
                r.i16();
                r.i32();
                r.i32();
                let replicas = r.i32();
                for _ in 0..replicas {
                    r.i32();
                }
                let isr = r.i32();
                for _ in 0..isr {
                    r.i32();
                }
            }
        }
        Some(names)
    }

    /// SaslHandshake at `version` (0 or 1): (error code, mechanisms), or None when closed.
    pub fn handshake(&mut self, version: i16, mechanism: &str) -> Option<(i16, Vec<String>)> {
        let body = self.call(SASL_HANDSHAKE, version, &Body::default().str(mechanism).0)?;
        let mut r = Reader(&body);
        let code = r.i16();
        let n = r.i32();
        Some((code, (0..n).map(|_| r.str().unwrap_or_default()).collect()))
    }

    /// SaslAuthenticate v1: (error code, error message, auth bytes), or None when closed.
    pub fn authenticate(&mut self, token: &[u8]) -> Option<(i16, Option<String>, Vec<u8>)> {
        let body = self.call(SASL_AUTHENTICATE, 1, &Body::default().bytes(token).0)?;
        let mut r = Reader(&body);
        let code = r.i16();
        let message = r.str();
        let bytes = r.bytes().unwrap_or_default();
        r.i64();
        Some((code, message, bytes))
    }

    /// One SASL token, sent and answered either as SaslAuthenticate v1 (`v0` false) or as a raw
    /// length-prefixed frame of the v0 flow (`v0` true; error code 0 when answered).
    pub fn token(&mut self, v0: bool, token: &[u8]) -> Option<(i16, Option<String>, Vec<u8>)> {
        if v0 {
            self.write_frame(token);
            match self.read_frame() {
                Reply::Frame(f) => Some((0, None, f)),
                Reply::Closed => None,
            }
        } else {
            self.authenticate(token)
        }
    }

    /// Handshake (v1, or v0 for the raw-token flow) then the whole exchange of `mechanism` for
    /// `user`/`password`. Ok when the server accepted (and, for SCRAM, proved it holds the
    /// ServerKey); Err((code, message)) when it refused with an error code; a refusal by
    /// closing the connection is Err((-1, ...)).
    pub fn login(
        &mut self,
        v0: bool,
        mechanism: &str,
        user: &str,
        password: &str,
    ) -> Result<(), (i16, String)> {
        self.login_with(v0, mechanism, user, password, scram::FinalNonce::Server)
            .map(|_| ())
    }

    /// [`Conn::login`] with the SCRAM client's final nonce made as `nonce` says; for SCRAM, Ok
    /// has the salt and iteration count the server sent.
    pub fn login_with(
        &mut self,
        v0: bool,
        mechanism: &str,
        user: &str,
        password: &str,
        nonce: scram::FinalNonce,
    ) -> Result<Option<SaltAndIterations>, (i16, String)> {
        let closed = |when: &str| (-1, format!("closed {when}"));
        let (code, mechanisms) = self
            .handshake(if v0 { 0 } else { 1 }, mechanism)
            .ok_or_else(|| closed("at the handshake"))?;
        if code != 0 {
            return Err((code, format!("handshake: {mechanisms:?}")));
        }
        match scram::Hash::of(mechanism) {
            None => {
                let token = format!("\0{user}\0{password}");
                let (code, message, _) = self
                    .token(v0, token.as_bytes())
                    .ok_or_else(|| closed("after the PLAIN token"))?;
                if code != 0 {
                    return Err((code, message.unwrap_or_default()));
                }
                Ok(None)
            }
            Some(hash) => {
                let mut client =
                    scram::Client::new(hash, user, password, "fyko+d2lbbFgONRv9qkxdawL")
                        .final_nonce(nonce);
                let (code, message, server_first) = self
                    .token(v0, &client.first())
                    .ok_or_else(|| closed("after client-first"))?;
                if code != 0 {
                    return Err((code, message.unwrap_or_default()));
                }
                let (salt, iterations, last) = client.last(&server_first).map_err(|e| (-2, e))?;
                let (code, message, server_final) = self
                    .token(v0, &last)
                    .ok_or_else(|| closed("after client-final"))?;
                if code != 0 {
                    return Err((code, message.unwrap_or_default()));
                }
                client.verify(&server_final).map_err(|e| (-2, e))?;
                Ok(Some((salt, iterations)))
            }
        }
    }
}

/// One uncompressed record batch (v2, no producer id) holding `value`, with a valid CRC.
pub fn record_batch(value: &str) -> Vec<u8> {
    use tributary::log::batch::{encode, BatchRecord};
    struct One<'a>(&'a str);
    impl BatchRecord for One<'_> {
        fn key(&self) -> Option<&[u8]> {
            None
        }
        fn value(&self) -> &[u8] {
            self.0.as_bytes()
        }
        fn headers(&self) -> &[tributary::record::Header] {
            &[]
        }
        fn timestamp_ms(&self) -> i64 {
            1_700_000_000_000
        }
    }
    let mut out = Vec::new();
    encode(&mut out, 0, &[One(value)]).unwrap();
    out
}

/// Produce v3 (acks=all) of one batch to each (topic, partition): (topic, partition, error
/// code) per answer, or None when the connection was closed.
pub fn produce(conn: &mut Conn, to: &[(&str, i32)]) -> Option<Vec<(String, i32, i16)>> {
    let mut body = Body::default()
        .null_str()
        .i16(-1)
        .i32(5000)
        .i32(to.len() as i32);
    for (topic, partition) in to {
        body = body
            .str(topic)
            .i32(1)
            .i32(*partition)
            .bytes(&record_batch(&format!("raw-{topic}-{partition}")));
    }
    let answer = conn.call(PRODUCE, 3, &body.0)?;
    let mut r = Reader(&answer);
    let mut out = Vec::new();
    for _ in 0..r.i32() {
        let name = r.str().unwrap_or_default();
        for _ in 0..r.i32() {
            let p = r.i32();
            let code = r.i16();
            r.i64();
            r.i64();
            out.push((name.clone(), p, code));
        }
    }
    Some(out)
}

/// CreateTopics v2 of `topics` (1 partition each): (name, error code) per topic.
pub fn create_topics(conn: &mut Conn, topics: &[&str]) -> Option<Vec<(String, i16)>> {
    let mut body = Body::default().i32(topics.len() as i32);
    for t in topics {
        body = body.str(t).i32(1).i16(1).i32(0).i32(0);
    }
    let body = body.i32(5000).i8(0);
    let answer = conn.call(CREATE_TOPICS, 2, &body.0)?;
    let mut r = Reader(&answer);
    r.i32();
    Some(
        (0..r.i32())
            .map(|_| {
                let name = r.str().unwrap_or_default();
                let code = r.i16();
                r.str();
                (name, code)
            })
            .collect(),
    )
}

/// InitProducerId v1 without a transactional id: its error code.
pub fn init_producer_id(conn: &mut Conn) -> Option<i16> {
    let answer = conn.call(
        INIT_PRODUCER_ID,
        1,
        &Body::default().null_str().i32(60_000).0,
    )?;
    let mut r = Reader(&answer);
    r.i32();
    Some(r.i16())
}
