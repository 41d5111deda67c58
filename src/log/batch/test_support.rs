//! Batches and records the codec's tests share.

use super::{decode, encode, validate, CRC_FROM, CRC_POS};
use crate::record::{Header, Record};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use std::sync::Arc;

pub(super) fn record(
    key: Option<&[u8]>,
    value: &[u8],
    headers: &[(&str, &[u8])],
    ts: i64,
) -> Record {
    Record {
        route: Arc::from("r"),
        topic: "t".into(),
        partition: 0,
        key: key.map(Bytes::copy_from_slice),
        value: Bytes::copy_from_slice(value),
        headers: headers
            .iter()
            .map(|(k, v)| Header::new(k.to_string(), Bytes::copy_from_slice(v)))
            .collect(),
        timestamp_ms: ts,
        dead_letter: None,
    }
}

pub(super) fn encoded(base_offset: i64, records: &[Record]) -> Vec<u8> {
    let mut buf = Vec::new();
    encode(&mut buf, base_offset, records).expect("encodes");
    buf
}

pub(super) fn assert_round_trip(base_offset: i64, records: &[Record]) -> Vec<u8> {
    let mut buf = BytesMut::new();
    let header = encode(&mut buf, base_offset, records).expect("encodes");
    assert_eq!(header.total_len(), buf.len());
    assert_eq!(header.record_count as usize, records.len());
    assert_eq!(header.last_offset(), base_offset + records.len() as i64 - 1);
    assert_eq!(
        header.max_timestamp,
        records.iter().map(|r| r.timestamp_ms).max().unwrap()
    );
    assert_eq!(validate(&buf), Ok(header));
    let batch = decode(&buf).expect("decodes");
    assert_eq!(batch.header, header);
    assert_eq!(batch.records.len(), records.len());
    for (i, (got, want)) in batch.records.iter().zip(records).enumerate() {
        assert_eq!(got.offset, base_offset + i as i64);
        assert_eq!(got.timestamp_ms, want.timestamp_ms);
        assert_eq!(got.key, want.key);
        assert_eq!(got.value.as_ref(), Some(&want.value));
        let headers: Vec<Header> = got
            .headers
            .iter()
            .map(|h| Header::new(h.key.clone(), h.value.clone().unwrap()))
            .collect();
        assert_eq!(headers, want.headers);
    }
    buf.to_vec()
}

/// A small batch with a key, a null key, headers and out-of-order timestamps.
pub(super) fn sample() -> Vec<u8> {
    encoded(
        7,
        &[
            record(
                Some(b"dev-1"),
                b"{\"t\":21.5}",
                &[("mqtt.topic", b"a/b")],
                1_700_000_000_123,
            ),
            record(None, b"x", &[], 1_700_000_000_100),
            record(
                Some(b""),
                b"",
                &[("k", b""), ("k", b"2")],
                1_700_000_000_200,
            ),
        ],
    )
}

/// Recomputes the CRC, so tests can reach the record decoder with damaged records.
pub(super) fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[CRC_FROM..]);
    batch[CRC_POS..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
}

pub(super) fn arb_record() -> impl Strategy<Value = Record> {
    let bytes = |max| proptest::collection::vec(any::<u8>(), 0..max);
    (
        proptest::option::of(bytes(40)),
        bytes(300),
        proptest::collection::vec(("[a-z.]{0,12}", bytes(20)), 0..6),
        any::<i64>(),
    )
        .prop_map(|(key, value, headers, ts)| {
            let headers: Vec<(&str, &[u8])> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_slice()))
                .collect();
            record(key.as_deref(), &value, &headers, ts)
        })
}
