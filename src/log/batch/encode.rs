//! The encoder: records into one uncompressed RecordBatch v2.

use super::{
    BatchHeader, EncodeError, CRC_FROM, CRC_POS, HEADER_LEN, LOG_OVERHEAD, MAGIC, MAX_BATCH_LEN,
    NO_PARTITION_LEADER_EPOCH,
};
use crate::record::{Header, Record};
use bytes::{BufMut, BytesMut};

/// A record as the encoder reads it: the batch needs only these fields of a [`Record`].
pub trait BatchRecord {
    fn key(&self) -> Option<&[u8]>;
    fn value(&self) -> &[u8];
    fn headers(&self) -> &[Header];
    /// Milliseconds since the Unix epoch.
    fn timestamp_ms(&self) -> i64;
}

impl BatchRecord for Record {
    fn key(&self) -> Option<&[u8]> {
        self.key.as_deref()
    }
    fn value(&self) -> &[u8] {
        &self.value
    }
    fn headers(&self) -> &[Header] {
        &self.headers
    }
    fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }
}

/// A growable buffer [`encode`] appends to: `Vec<u8>` or `BytesMut`. Sealed, because the
/// encoder patches the CRC into what it wrote, which a fixed-size `BufMut` cannot take.
pub trait EncodeBuf: BufMut + sealed::Sealed {}
impl EncodeBuf for Vec<u8> {}
impl EncodeBuf for BytesMut {}

mod sealed {
    pub trait Sealed {
        fn len(&self) -> usize;
        fn reserve(&mut self, additional: usize);
        fn written_mut(&mut self) -> &mut [u8];
    }
    impl Sealed for Vec<u8> {
        fn len(&self) -> usize {
            Vec::len(self)
        }
        fn reserve(&mut self, additional: usize) {
            Vec::reserve(self, additional)
        }
        fn written_mut(&mut self) -> &mut [u8] {
            self
        }
    }
    impl Sealed for bytes::BytesMut {
        fn len(&self) -> usize {
            bytes::BytesMut::len(self)
        }
        fn reserve(&mut self, additional: usize) {
            bytes::BytesMut::reserve(self, additional)
        }
        fn written_mut(&mut self) -> &mut [u8] {
            self
        }
    }
}

/// Appends one uncompressed batch (CreateTime, no producer id) holding `records` at offsets
/// `base_offset..`, and returns its header. Sizes are summed first, so the buffer grows once
/// and nothing is written when an error is returned; no allocation per record.
pub fn encode<'a, B, R, I>(
    out: &mut B,
    base_offset: i64,
    records: I,
) -> Result<BatchHeader, EncodeError>
where
    B: EncodeBuf,
    R: BatchRecord + 'a,
    I: IntoIterator<Item = &'a R>,
    I::IntoIter: Clone,
{
    let records = records.into_iter();
    let mut count = 0usize;
    let mut base_timestamp = i64::MAX;
    let mut max_timestamp = i64::MIN;
    for r in records.clone() {
        count += 1;
        base_timestamp = base_timestamp.min(r.timestamp_ms());
        max_timestamp = max_timestamp.max(r.timestamp_ms());
    }
    if count == 0 {
        return Err(EncodeError::Empty);
    }
    let mut total = HEADER_LEN;
    for (delta, r) in records.clone().enumerate() {
        let body = record_body_len(r, base_timestamp, delta as i32);
        total = total
            .saturating_add(uvarint_len(zigzag64(body as i64)))
            .saturating_add(body);
    }
    if total > MAX_BATCH_LEN {
        return Err(EncodeError::TooLarge { size: total });
    }
    // Below the size cap, count and every length fit an i32.
    let last_offset_delta = (count - 1) as i32;
    if base_offset < 0
        || base_offset
            .checked_add(i64::from(last_offset_delta))
            .is_none()
    {
        return Err(EncodeError::OffsetOutOfRange { base_offset, count });
    }

    let header = BatchHeader {
        base_offset,
        batch_length: (total - LOG_OVERHEAD) as i32,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        crc: 0,
        attributes: 0,
        last_offset_delta,
        base_timestamp,
        max_timestamp,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        record_count: count as i32,
    };
    let start = out.len();
    out.reserve(total);
    out.put_i64(header.base_offset);
    out.put_i32(header.batch_length);
    out.put_i32(header.partition_leader_epoch);
    out.put_i8(MAGIC);
    out.put_u32(0); // the CRC, filled in below
    out.put_i16(header.attributes);
    out.put_i32(header.last_offset_delta);
    out.put_i64(header.base_timestamp);
    out.put_i64(header.max_timestamp);
    out.put_i64(header.producer_id);
    out.put_i16(header.producer_epoch);
    out.put_i32(header.base_sequence);
    out.put_i32(header.record_count);
    for (delta, r) in records.enumerate() {
        let delta = delta as i32;
        put_varint(out, record_body_len(r, base_timestamp, delta) as i32);
        out.put_u8(0); // record attributes: unused by Kafka
        put_varlong(out, r.timestamp_ms().wrapping_sub(base_timestamp));
        put_varint(out, delta);
        match r.key() {
            Some(key) => put_bytes(out, key),
            None => put_varint(out, -1),
        }
        put_bytes(out, r.value());
        put_varint(out, r.headers().len() as i32);
        for h in r.headers() {
            put_bytes(out, h.key.as_bytes());
            put_bytes(out, &h.value);
        }
    }
    let batch = out.written_mut().get_mut(start..).unwrap_or_default();
    debug_assert_eq!(batch.len(), total, "size pass and write pass disagree");
    let crc = crc32c::crc32c(batch.get(CRC_FROM..).unwrap_or_default());
    if let Some(field) = batch.get_mut(CRC_POS..CRC_FROM) {
        field.copy_from_slice(&crc.to_be_bytes());
    }
    Ok(BatchHeader { crc, ..header })
}

/// Bytes of a record after its length varint.
fn record_body_len<R: BatchRecord>(r: &R, base_timestamp: i64, offset_delta: i32) -> usize {
    let key = r.key().map_or(1, bytes_len);
    let headers: usize = r
        .headers()
        .iter()
        .map(|h| bytes_len(h.key.as_bytes()) + bytes_len(&h.value))
        .sum();
    1 + uvarint_len(zigzag64(r.timestamp_ms().wrapping_sub(base_timestamp)))
        + uvarint_len(zigzag64(i64::from(offset_delta)))
        + key
        + bytes_len(r.value())
        + uvarint_len(zigzag64(r.headers().len() as i64))
        + headers
}

/// A length-prefixed field's size. Lengths past i32 only occur in batches over the size cap,
/// which are refused before anything is written.
fn bytes_len(b: &[u8]) -> usize {
    uvarint_len(zigzag64(b.len() as i64)).saturating_add(b.len())
}

fn put_bytes<B: BufMut>(out: &mut B, b: &[u8]) {
    put_varint(out, b.len() as i32);
    out.put_slice(b);
}

pub(super) fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn put_varint<B: BufMut>(out: &mut B, v: i32) {
    put_uvarint(out, u64::from(((v << 1) ^ (v >> 31)) as u32));
}

pub(super) fn put_varlong<B: BufMut>(out: &mut B, v: i64) {
    put_uvarint(out, zigzag64(v));
}

fn put_uvarint<B: BufMut>(out: &mut B, mut v: u64) {
    let mut tmp = [0u8; 10];
    let mut n = 0;
    while v >= 0x80 {
        tmp[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    tmp[n] = v as u8;
    out.put_slice(&tmp[..=n]);
}

pub(super) fn uvarint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{arb_record, assert_round_trip, encoded, record};
    use super::super::{decode, MAX_BATCH_LEN, NO_PARTITION_LEADER_EPOCH};
    use super::*;
    use bytes::Bytes;
    use proptest::prelude::*;

    #[test]
    fn round_trips_every_record_shape() {
        let ts = 1_700_000_000_000;
        assert_round_trip(0, &[record(None, b"v", &[], ts)]);
        assert_round_trip(5, &[record(Some(b""), b"v", &[], ts)]);
        assert_round_trip(5, &[record(Some(b"k"), b"", &[], ts)]);
        assert_round_trip(5, &[record(None, b"", &[("", b"")], ts)]);
        let names: Vec<String> = (0..200).map(|i| format!("h{}", i % 150)).collect();
        let many: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), n.as_bytes())).collect();
        assert_round_trip(1, &[record(Some(b"k"), b"v", &many, ts)]);
        let big = vec![0xA5u8; 1 << 20];
        assert_round_trip(9, &[record(Some(b"k"), &big, &[("h", b"v")], ts)]);
        let thousand: Vec<Record> = (0..1000)
            .map(|i| {
                let v = format!("value-{i}");
                let key = (i % 3 != 0).then_some(v.as_bytes());
                record(key, v.as_bytes(), &[("i", v.as_bytes())], ts + i % 17 - 8)
            })
            .collect();
        assert_round_trip(1 << 40, &thousand);
        // Extreme timestamps wrap the same way in both directions.
        assert_round_trip(
            0,
            &[
                record(None, b"a", &[], i64::MAX),
                record(None, b"b", &[], i64::MIN),
            ],
        );
    }

    #[test]
    fn encode_errors_write_nothing() {
        let mut buf = b"keep".to_vec();
        let none: &[Record] = &[];
        assert_eq!(encode(&mut buf, 0, none), Err(EncodeError::Empty));
        let one = [record(None, b"v", &[], 0)];
        assert!(matches!(
            encode(&mut buf, -1, &one),
            Err(EncodeError::OffsetOutOfRange { .. })
        ));
        let two = [record(None, b"v", &[], 0), record(None, b"v", &[], 0)];
        assert!(matches!(
            encode(&mut buf, i64::MAX, &two),
            Err(EncodeError::OffsetOutOfRange { .. })
        ));
        assert!(encode(&mut buf, i64::MAX, &one).is_ok());
        buf.truncate(4);
        // calloc'd and never read: the size pass refuses it first.
        let huge = [Record {
            value: Bytes::from(vec![0u8; MAX_BATCH_LEN]),
            ..record(None, b"", &[], 0)
        }];
        assert!(matches!(
            encode(&mut buf, 0, &huge),
            Err(EncodeError::TooLarge { .. })
        ));
        assert_eq!(buf, b"keep");
    }

    /// kafka-protocol as an independent codec: it decodes our bytes to the same records, and
    /// its encoder, fed the same batch fields, writes the same bytes.
    mod kafka_protocol_agrees {
        use super::*;
        use kafka_protocol::protocol::StrBytes;
        use kafka_protocol::records::{
            Compression as KCompression, Record as KRecord, RecordBatchDecoder, RecordBatchEncoder,
            RecordEncodeOptions, TimestampType,
        };

        fn records() -> Vec<Record> {
            let ts = 1_764_000_000_000;
            let mut v: Vec<Record> = (0..50)
                .map(|i| {
                    let value = format!("{{\"n\":{i}}}");
                    let key = format!("dev-{}", i % 7);
                    let key = (i % 5 != 0).then(|| key.as_bytes().to_vec());
                    let headers: Vec<(String, Vec<u8>)> = (0..i % 4)
                        .map(|h| (format!("h{h}"), format!("v{i}.{h}").into_bytes()))
                        .collect();
                    let headers: Vec<(&str, &[u8])> = headers
                        .iter()
                        .map(|(k, v)| (k.as_str(), v.as_slice()))
                        .collect();
                    record(key.as_deref(), value.as_bytes(), &headers, ts + i * 3)
                })
                .collect();
            v.push(record(Some(b""), b"", &[("empty", b"")], ts));
            v.push(record(None, &vec![7u8; 300_000], &[], ts + 1000));
            v
        }

        fn to_kafka(base_offset: i64, rs: &[Record]) -> Vec<KRecord> {
            rs.iter()
                .enumerate()
                .map(|(i, r)| KRecord {
                    transactional: false,
                    control: false,
                    delete_horizon: false,
                    partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
                    producer_id: -1,
                    producer_epoch: -1,
                    timestamp_type: TimestampType::Creation,
                    offset: base_offset + i as i64,
                    // One batch needs offset - sequence constant; this gives base sequence -1.
                    sequence: i as i32 - 1,
                    timestamp: r.timestamp_ms,
                    key: r.key.clone(),
                    value: Some(r.value.clone()),
                    headers: r
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                StrBytes::from_string(h.key.to_string()),
                                Some(h.value.clone()),
                            )
                        })
                        .collect(),
                })
                .collect()
        }

        #[test]
        fn it_decodes_our_batches() {
            let rs = records();
            let mut buf = Bytes::from(encoded(42, &rs));
            let set = RecordBatchDecoder::decode(&mut buf).expect("kafka-protocol decodes");
            assert!(buf.is_empty());
            assert_eq!(set.version, 2);
            assert_eq!(set.compression, KCompression::None);
            assert_eq!(set.records.len(), rs.len());
            for (i, (k, r)) in set.records.iter().zip(&rs).enumerate() {
                assert_eq!(k.offset, 42 + i as i64);
                assert_eq!(k.timestamp, r.timestamp_ms);
                assert_eq!(k.timestamp_type, TimestampType::Creation);
                assert_eq!(k.key, r.key);
                assert_eq!(k.value.as_ref(), Some(&r.value));
                let headers: Vec<(&str, Option<&Bytes>)> = k
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_ref()))
                    .collect();
                let want: Vec<(&str, Option<&Bytes>)> = r
                    .headers
                    .iter()
                    .map(|h| (&*h.key, Some(&h.value)))
                    .collect();
                assert_eq!(headers, want);
                assert_eq!((k.producer_id, k.producer_epoch), (-1, -1));
                assert_eq!(k.partition_leader_epoch, NO_PARTITION_LEADER_EPOCH);
                assert!(!k.transactional && !k.control);
            }
        }

        #[test]
        fn its_encoder_writes_our_bytes() {
            let rs = records();
            for base in [0, 1_000_000] {
                let mut theirs = BytesMut::new();
                let opts = RecordEncodeOptions {
                    version: 2,
                    compression: KCompression::None,
                };
                RecordBatchEncoder::encode(&mut theirs, &to_kafka(base, &rs), &opts).unwrap();
                assert_eq!(encoded(base, &rs), theirs.to_vec());
            }
        }

        #[test]
        fn we_decode_its_null_values_and_header_values() {
            let mut rs = to_kafka(3, &records()[..3]);
            rs[0].value = None;
            rs[1]
                .headers
                .insert(StrBytes::from_static_str("null"), None);
            let mut buf = BytesMut::new();
            let opts = RecordEncodeOptions {
                version: 2,
                compression: KCompression::None,
            };
            RecordBatchEncoder::encode(&mut buf, &rs, &opts).unwrap();
            let batch = decode(&buf).unwrap();
            assert_eq!(batch.records[0].value, None);
            assert_eq!(batch.records[0].offset, 3);
            let last = batch.records[1].headers.last().unwrap();
            assert_eq!((last.key.as_str(), &last.value), ("null", &None));
        }
    }

    proptest! {
        #[test]
        fn random_records_round_trip(
            records in proptest::collection::vec(arb_record(), 1..40),
            base in 0i64..i64::MAX / 2,
        ) {
            assert_round_trip(base, &records);
        }

    }
}
