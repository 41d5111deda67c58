//! The decoder: a validated batch's records, from untrusted bytes.

use super::{corrupt, validate, BatchError, BatchHeader, Compression, HEADER_LEN, MIN_RECORD_LEN};
use bytes::Bytes;

/// A record decoded from a batch, with its absolute offset. Value and header values can be
/// null here: Kafka producers may write tombstones, though the gateway never does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRecord {
    pub offset: i64,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<DecodedHeader>,
}

/// A record header as stored; a key that is not UTF-8 is read lossily, as Kafka's Java client does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedHeader {
    pub key: String,
    pub value: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatch {
    pub header: BatchHeader,
    pub records: Vec<DecodedRecord>,
}

/// Validates the batch at the start of `buf` and decodes its records. Errors instead of
/// panicking on any input, including garbage behind a matching CRC.
pub fn decode(buf: &[u8]) -> Result<DecodedBatch, BatchError> {
    let header = validate(buf)?;
    let compression = header.compression();
    if compression != Compression::None {
        return Err(BatchError::Compressed(compression));
    }
    let mut r = Reader::new(buf.get(HEADER_LEN..header.total_len()).unwrap_or_default());
    // A garbage count must not drive the allocation: no more records than bytes allow.
    let mut records =
        Vec::with_capacity((header.record_count as usize).min(r.remaining() / MIN_RECORD_LEN));
    for i in 0..header.record_count {
        let record = decode_record(&mut r, &header)
            .map_err(|why| corrupt(format!("record {i} of {}: {why}", header.record_count)))?;
        records.push(record);
    }
    if r.remaining() > 0 {
        return Err(corrupt(format!(
            "{} bytes after the last of {} records",
            r.remaining(),
            header.record_count
        )));
    }
    Ok(DecodedBatch { header, records })
}

fn decode_record(r: &mut Reader<'_>, header: &BatchHeader) -> Result<DecodedRecord, &'static str> {
    let len = r.varint()?;
    let len = usize::try_from(len).map_err(|_| "negative record length")?;
    let mut r = Reader::new(r.take(len).ok_or("record runs past the batch")?);
    let _attributes = r.i8().ok_or("record ends early")?;
    let timestamp_delta = r.varlong()?;
    let offset_delta = r.varint()?;
    let key = r.nullable_bytes()?;
    let value = r.nullable_bytes()?;
    let header_count = r.varint()?;
    let header_count = usize::try_from(header_count).map_err(|_| "negative header count")?;
    // Each header takes at least two bytes.
    let mut headers = Vec::with_capacity(header_count.min(r.remaining() / 2));
    for _ in 0..header_count {
        let key = r.nullable_bytes()?.ok_or("null header key")?;
        let value = r.nullable_bytes()?;
        headers.push(DecodedHeader {
            key: String::from_utf8_lossy(key).into_owned(),
            value: value.map(Bytes::copy_from_slice),
        });
    }
    if r.remaining() > 0 {
        return Err("bytes left over after the record's headers");
    }
    let offset = header
        .base_offset
        .checked_add(i64::from(offset_delta))
        .ok_or("offset overflows")?;
    let timestamp_ms = if header.is_log_append_time() {
        header.max_timestamp
    } else {
        // Java's long arithmetic wraps; so does the encoder's delta.
        header.base_timestamp.wrapping_add(timestamp_delta)
    };
    Ok(DecodedRecord {
        offset,
        timestamp_ms,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers,
    })
}

/// A cursor over untrusted bytes: every read is bounds-checked and fails softly.
pub(super) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(super) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.buf.split_at_checked(n)?;
        self.buf = rest;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (a, rest) = self.buf.split_first_chunk::<N>()?;
        self.buf = rest;
        Some(*a)
    }

    pub(super) fn i8(&mut self) -> Option<i8> {
        self.array().map(i8::from_be_bytes)
    }
    pub(super) fn i16(&mut self) -> Option<i16> {
        self.array().map(i16::from_be_bytes)
    }
    pub(super) fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_be_bytes)
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    pub(super) fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_be_bytes)
    }

    /// An unsigned LEB128 of at most `max_bytes` bytes, the last of which may carry only
    /// `last_bits` bits: longer or wider encodings are rejected, not truncated.
    fn uvarint(&mut self, max_bytes: u32, last_bits: u32) -> Result<u64, &'static str> {
        let mut v = 0u64;
        for i in 0..max_bytes {
            let b = self.i8().ok_or("varint runs past the end")? as u8;
            if i == max_bytes - 1 && u32::from(b) >> last_bits != 0 {
                return Err("varint overflows");
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint overflows")
    }

    fn varint(&mut self) -> Result<i32, &'static str> {
        let u = self.uvarint(5, 4)? as u32;
        Ok((u >> 1) as i32 ^ -((u & 1) as i32))
    }

    fn varlong(&mut self) -> Result<i64, &'static str> {
        let u = self.uvarint(10, 1)?;
        Ok((u >> 1) as i64 ^ -((u & 1) as i64))
    }

    /// A varint length then that many bytes; -1 is null.
    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, &'static str> {
        match self.varint()? {
            -1 => Ok(None),
            n if n < -1 => Err("negative length"),
            n => self
                .take(n as usize)
                .map(Some)
                .ok_or("field runs past the record"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::encode::{put_varlong, uvarint_len, zigzag64};
    use super::super::test_support::{fix_crc, sample};
    use super::super::{ATTR_LOG_APPEND_TIME, LOG_OVERHEAD};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compressed_batches_validate_but_do_not_decode() {
        let mut b = sample();
        b[21..23].copy_from_slice(&4i16.to_be_bytes());
        fix_crc(&mut b);
        let h = validate(&b).unwrap();
        assert_eq!(h.compression(), Compression::Zstd);
        assert_eq!(decode(&b), Err(BatchError::Compressed(Compression::Zstd)));
        assert_eq!(
            BatchError::Compressed(Compression::Zstd).to_string(),
            "batch is zstd-compressed; only uncompressed records can be decoded"
        );
    }

    #[test]
    fn log_append_time_uses_max_timestamp() {
        let mut b = sample();
        b[21..23].copy_from_slice(&ATTR_LOG_APPEND_TIME.to_be_bytes());
        fix_crc(&mut b);
        let batch = decode(&b).unwrap();
        assert!(batch.header.is_log_append_time());
        assert!(batch
            .records
            .iter()
            .all(|r| r.timestamp_ms == 1_700_000_000_200));
    }

    #[test]
    fn record_count_must_match_the_records() {
        for count in [2i32, 4, i32::MAX] {
            let mut b = sample();
            b[57..61].copy_from_slice(&count.to_be_bytes());
            fix_crc(&mut b);
            match decode(&b) {
                Err(BatchError::Corrupt(_)) => {}
                other => panic!("count {count}: {other:?}"),
            }
        }
    }

    #[test]
    fn varints_reject_overlong_encodings() {
        assert_eq!(
            Reader::new(&[0xFF, 0xFF, 0xFF, 0xFF, 0x0F]).varint(),
            Ok(i32::MIN)
        );
        assert_eq!(
            Reader::new(&[0xFE, 0xFF, 0xFF, 0xFF, 0x0F]).varint(),
            Ok(i32::MAX)
        );
        assert!(Reader::new(&[0x80, 0x80, 0x80, 0x80, 0x10])
            .varint()
            .is_err());
        assert!(Reader::new(&[0x80; 5]).varint().is_err());
        assert!(Reader::new(&[0x80]).varint().is_err());
        let mut max = vec![0xFF; 9];
        max.push(0x01);
        assert_eq!(Reader::new(&max).varlong(), Ok(i64::MIN));
        max[9] = 0x02;
        assert!(Reader::new(&max).varlong().is_err());
        for v in [
            0,
            1,
            -1,
            63,
            -64,
            64,
            i64::from(i32::MAX),
            i64::MIN,
            i64::MAX,
        ] {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(out.len(), uvarint_len(zigzag64(v)));
            assert_eq!(Reader::new(&out).varlong(), Ok(v));
        }
    }

    proptest! {
        #[test]
        fn garbage_records_with_a_valid_crc_never_panic(
            records in proptest::collection::vec(any::<u8>(), 0..200),
            count in any::<i32>(),
        ) {
            let mut b = sample()[..HEADER_LEN].to_vec();
            b.extend_from_slice(&records);
            let len = (b.len() - LOG_OVERHEAD) as i32;
            b[8..12].copy_from_slice(&len.to_be_bytes());
            b[57..61].copy_from_slice(&count.to_be_bytes());
            fix_crc(&mut b);
            let _ = decode(&b);
        }

        #[test]
        fn damaged_batches_with_a_valid_crc_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut b = sample();
            for (at, byte) in edits {
                let at = LOG_OVERHEAD + at.index(b.len() - LOG_OVERHEAD);
                b[at] = byte;
            }
            fix_crc(&mut b);
            if let Ok(batch) = decode(&b) {
                prop_assert!(batch.records.len() == batch.header.record_count as usize);
            }
        }
    }
}
