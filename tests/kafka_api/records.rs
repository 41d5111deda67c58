//! Records as a consumer sees them: the datasets appended to the log, the records the
//! producer test sends, their checksums, and the batches the log stores.

use bytes::Bytes;
use rdkafka::message::{Headers, Message, Timestamp};
use sha2::{Digest, Sha256};
use tributary::log::{batch, Log, Offset};
use tributary::record::{Header, Record};

/// Record timestamps start here (2023-11-14), far from "now", so nothing matches by accident.
pub(crate) const T0: i64 = 1_700_000_000_000;
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rec {
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    /// CreateTime, milliseconds.
    pub(crate) timestamp: i64,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Rec {
    pub(crate) fn from_message<M: Message>(m: &M) -> Rec {
        let timestamp = match m.timestamp() {
            Timestamp::CreateTime(t) => t,
            other => panic!("timestamp {other:?}: want CreateTime"),
        };
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        Rec {
            partition: m.partition(),
            offset: m.offset(),
            timestamp,
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers,
        }
    }

    /// What a consumer must see of `r` stored at `offset`.
    pub(crate) fn from_record(offset: i64, r: &Record) -> Rec {
        Rec {
            partition: r.partition as i32,
            offset,
            timestamp: r.timestamp_ms,
            key: r.key.as_ref().map(|k| k.to_vec()),
            value: Some(r.value.to_vec()),
            headers: r
                .headers
                .iter()
                .map(|h| (h.key.to_string(), Some(h.value.to_vec())))
                .collect(),
        }
    }

    pub(crate) fn from_decoded(partition: i32, r: batch::DecodedRecord) -> Rec {
        Rec {
            partition,
            offset: r.offset,
            timestamp: r.timestamp_ms,
            key: r.key.map(|k| k.to_vec()),
            value: r.value.map(|v| v.to_vec()),
            headers: r
                .headers
                .into_iter()
                .map(|h| (h.key, h.value.map(|v| v.to_vec())))
                .collect(),
        }
    }

    /// kcat `-f '%k=%s'`: a null key prints as nothing.
    pub(crate) fn kcat_line(&self) -> String {
        let text = |b: &Option<Vec<u8>>| String::from_utf8(b.clone().unwrap_or_default()).unwrap();
        format!("{}={}", text(&self.key), text(&self.value))
    }

    /// The line tests/python/consume.py hashes.
    pub(crate) fn canonical(&self) -> String {
        let hx = |b: &Option<Vec<u8>>| b.as_ref().map_or("-".to_string(), |b| hex(b));
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{}={}", hex(k.as_bytes()), hx(v)))
            .collect();
        format!(
            "{}|{}|{}|{}|{}|{}\n",
            self.partition,
            self.offset,
            self.timestamp,
            hx(&self.key),
            hx(&self.value),
            headers.join(",")
        )
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

pub(crate) fn checksum(records: &[Rec]) -> String {
    let mut sorted = records.to_vec();
    sorted.sort();
    let mut h = Sha256::new();
    for r in &sorted {
        h.update(r.canonical().as_bytes());
    }
    hex(&h.finalize())
}

/// Record `i` of partition `p` of the test data. `text`: printable keys, values and headers
/// only (for kcat's text output); otherwise values and headers carry binary bytes too.
pub(crate) fn test_record(topic: &str, p: u32, i: usize, text: bool) -> Record {
    let key = (i % 7 != 3).then(|| Bytes::from(format!("device-{p}-{}", i % 5)));
    let mut value = if i % 11 == 5 {
        Vec::new()
    } else {
        format!(
            "{{\"p\":{p},\"i\":{i},\"pad\":\"{}\"}}",
            "x".repeat(i * 37 % 300)
        )
        .into_bytes()
    };
    if !text && i % 4 == 1 {
        value.extend_from_slice(&[0, 0xff, 0xfe, b'\n', 0x80]);
    }
    let mut headers = Vec::new();
    if !i.is_multiple_of(6) {
        headers.push(Header::new("mqtt.topic", format!("devices/{p}/telemetry")));
        headers.push(Header::new("seq", i.to_string()));
        // Kafka headers are a list: duplicate names stay, in order.
        headers.push(Header::new("dup", "first"));
        headers.push(Header::new("dup", "second"));
        if !text {
            headers.push(Header::new("bin", vec![0u8, 1, 2, 0xff]));
        }
        if i % 6 == 2 {
            headers.push(Header::new("empty", Bytes::new()));
        }
    }
    Record {
        route: "test".into(),
        topic: topic.into(),
        partition: p,
        key,
        value: value.into(),
        headers,
        timestamp_ms: timestamp(p, i),
        dead_letter: None,
    }
}

pub(crate) fn timestamp(p: u32, i: usize) -> i64 {
    T0 + i64::from(p) * 1_000_000 + i as i64 * 10
}

/// Creates `topic` and appends `per_partition` test records to each partition through
/// `Log::append`, in batches of 1, 2, 3, ... records; returns them as a consumer must see them.
pub(crate) async fn append_dataset(
    log: &Log,
    topic: &str,
    partitions: u32,
    per_partition: usize,
    text: bool,
) -> Vec<Rec> {
    assert!(
        log.create_topic(topic, partitions).unwrap(),
        "{topic} is new"
    );
    let mut expected = Vec::new();
    for p in 0..partitions {
        let mut i = 0;
        let mut size = 1;
        while i < per_partition {
            let records: Vec<Record> = (i..(i + size).min(per_partition))
                .map(|i| test_record(topic, p, i, text))
                .collect();
            let n = records.len();
            for (k, r) in records.iter().enumerate() {
                expected.push(Rec::from_record((i + k) as i64, r));
            }
            let range = log.append(topic, p, records).await.unwrap();
            assert_eq!(range, Offset(i as u64)..Offset((i + n) as u64));
            i += n;
            size = size % 6 + 1;
        }
    }
    expected
}

/// Every record stored in `topic`/`partition`, decoded from the log's own bytes, with each
/// stored batch's bytes.
pub(crate) fn stored_batches(
    log: &Log,
    topic: &str,
    partition: u32,
) -> Vec<(batch::BatchHeader, Vec<u8>)> {
    let part = log.partition(topic, partition).unwrap();
    part.batches(part.start_offset())
        .map(|b| {
            let b = b.unwrap();
            (b.header, b.bytes.to_vec())
        })
        .collect()
}

pub(crate) fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// What the producer test sends as record `i`, to partition `i % 2` (its offset still unknown).
pub(crate) fn produced(codec: &str, i: usize) -> Rec {
    let key = (i % 5 != 4).then(|| format!("key-{i}").into_bytes());
    // A tombstone (null value) now and then; compressible values otherwise.
    let value = (i % 9 != 8)
        .then(|| format!("produced {codec} #{i} {}", "z".repeat(i * 13 % 300)).into_bytes());
    let headers = if i.is_multiple_of(3) {
        Vec::new()
    } else {
        vec![
            ("h1".to_string(), Some(format!("v{i}").into_bytes())),
            ("null".to_string(), None),
            ("h1".to_string(), Some(b"again".to_vec())),
        ]
    };
    Rec {
        partition: (i % 2) as i32,
        offset: -1,
        timestamp: T0 + 5_000_000 + i as i64,
        key,
        value,
        headers,
    }
}
