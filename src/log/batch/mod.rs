//! Kafka RecordBatch v2 (magic 2): the unit the embedded log stores, byte for byte what Kafka
//! stores and what a Fetch response carries, so the Kafka listener serves file bytes as they are.
//!
//! ```text
//! offset  field                 covered by the CRC
//!  0      baseOffset      i64   no: the log assigns it on append (see set_base_offset)
//!  8      batchLength     i32   no: bytes after this field
//! 12      leaderEpoch     i32   no
//! 16      magic           i8    no (checked on its own)
//! 17      crc             u32   CRC-32C (Castagnoli) of bytes 21..end
//! 21      attributes      i16   yes, and so is everything below
//! 23      lastOffsetDelta i32
//! 27      baseTimestamp   i64
//! 35      maxTimestamp    i64
//! 43      producerId      i64
//! 51      producerEpoch   i16
//! 53      baseSequence    i32
//! 57      recordCount     i32
//! 61      records: zigzag varint length, then attributes i8, timestampDelta varlong,
//!         offsetDelta varint, key, value (varint length, -1 for null, then bytes),
//!         header count, then per header key (length + UTF-8) and value (length or -1 + bytes)
//! ```
//!
//! This file holds the header, validation and the iterator over batches laid end to end;
//! `encode.rs` writes a batch from records, `decode.rs` reads a batch's records back.

mod decode;
mod encode;
#[cfg(test)]
mod test_support;

pub use decode::{decode, DecodedBatch, DecodedHeader, DecodedRecord};
pub use encode::{encode, BatchRecord, EncodeBuf};

use decode::Reader;
use std::fmt;
use thiserror::Error;

/// The base offset and length fields, which the batch length leaves out (Kafka's `LOG_OVERHEAD`).
pub const LOG_OVERHEAD: usize = 12;
/// Bytes of the fixed batch header, up to the first record.
pub const HEADER_LEN: usize = 61;
/// The only batch format this log stores.
pub const MAGIC: i8 = 2;
/// The largest batch (all of it, from its base offset) the log writes or accepts. A cap on what a
/// reader allocates for a garbage length; the encoder enforces it too, so recovery never
/// rejects a batch the log itself wrote.
pub const MAX_BATCH_LEN: usize = 64 << 20;
/// Written into every batch: this log has no leader epochs, so clients that see -1 skip
/// KIP-320 truncation checks (which would need OffsetForLeaderEpoch). Producers send -1 too.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

const MAGIC_POS: usize = 16;
const CRC_POS: usize = 17;
/// The CRC covers attributes to the end of the batch.
const CRC_FROM: usize = 21;
/// The smallest possible record: a length varint and six one-byte fields.
const MIN_RECORD_LEN: usize = 7;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 1 << 3;
const ATTR_TRANSACTIONAL: i16 = 1 << 4;
const ATTR_CONTROL: i16 = 1 << 5;

/// Why bytes could not be read as a batch. Recovery truncates at the first error of either kind;
/// a read-only reader treats `Incomplete` at the end of the log as "not written yet".
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BatchError {
    /// The bytes end before the batch does: a torn write, or one still in progress.
    #[error("incomplete batch: {available} bytes of at least {needed}")]
    Incomplete { needed: usize, available: usize },
    /// The bytes are not a valid batch.
    #[error("corrupt batch: {0}")]
    Corrupt(String),
    /// A valid batch whose records are compressed (a Kafka producer may send one); only
    /// uncompressed records can be decoded here. The batch itself is fine to store and serve.
    #[error("batch is {0}-compressed; only uncompressed records can be decoded")]
    Compressed(Compression),
}

/// Why records could not be encoded into a batch: limits, not data damage.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("a batch needs at least one record")]
    Empty,
    #[error("batch of {size} bytes is over the {MAX_BATCH_LEN}-byte limit")]
    TooLarge { size: usize },
    #[error("offsets {base_offset} + {count} records are out of range")]
    OffsetOutOfRange { base_offset: i64, count: usize },
}

/// The compression codec named in a batch's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    fn from_attributes(attributes: i16) -> Option<Self> {
        Some(match attributes & ATTR_COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The fixed 61-byte header of a batch, read without touching its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Bytes after the length field; see [`BatchHeader::total_len`].
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    /// The lowest record timestamp in batches this log writes (Kafka producers write their
    /// first record's), so `base_timestamp..=max_timestamp` bounds them.
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Reads and sanity-checks the header at the start of `buf`, without the CRC check (which
    /// needs the whole batch; see [`validate`]). `Incomplete::needed` says how many bytes to
    /// have before trying again; length and magic are checked as soon as they are there.
    pub fn parse(buf: &[u8]) -> Result<Self, BatchError> {
        let mut r = Reader::new(buf);
        let base_offset = r.i64().ok_or_else(|| incomplete(buf, LOG_OVERHEAD))?;
        let batch_length = r.i32().ok_or_else(|| incomplete(buf, LOG_OVERHEAD))?;
        if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(corrupt(format!(
                "length {batch_length} is shorter than a batch header"
            )));
        }
        let total = batch_length as usize + LOG_OVERHEAD;
        if total > MAX_BATCH_LEN {
            return Err(corrupt(format!(
                "length {batch_length} is over the {MAX_BATCH_LEN}-byte limit"
            )));
        }
        let partition_leader_epoch = r.i32().ok_or_else(|| incomplete(buf, MAGIC_POS + 1))?;
        let magic = r.i8().ok_or_else(|| incomplete(buf, MAGIC_POS + 1))?;
        if magic != MAGIC {
            return Err(corrupt(format!("magic {magic}, expected {MAGIC}")));
        }
        let mut field = || incomplete(buf, HEADER_LEN);
        let header = BatchHeader {
            base_offset,
            batch_length,
            partition_leader_epoch,
            crc: r.u32().ok_or_else(&mut field)?,
            attributes: r.i16().ok_or_else(&mut field)?,
            last_offset_delta: r.i32().ok_or_else(&mut field)?,
            base_timestamp: r.i64().ok_or_else(&mut field)?,
            max_timestamp: r.i64().ok_or_else(&mut field)?,
            producer_id: r.i64().ok_or_else(&mut field)?,
            producer_epoch: r.i16().ok_or_else(&mut field)?,
            base_sequence: r.i32().ok_or_else(&mut field)?,
            record_count: r.i32().ok_or_else(&mut field)?,
        };
        header.check_fields()?;
        Ok(header)
    }

    /// Rejects values no valid batch has. The base offset is outside the CRC, so a flipped
    /// bit there is caught here only when it makes the offset impossible; the partition checks
    /// that offsets follow on from the previous batch.
    fn check_fields(&self) -> Result<(), BatchError> {
        if self.base_offset < 0 {
            return Err(corrupt(format!(
                "negative base offset {}",
                self.base_offset
            )));
        }
        if self.last_offset_delta < 0 {
            return Err(corrupt(format!(
                "negative last offset delta {}",
                self.last_offset_delta
            )));
        }
        if self
            .base_offset
            .checked_add(i64::from(self.last_offset_delta))
            .is_none()
        {
            return Err(corrupt("last offset overflows".to_string()));
        }
        if self.record_count < 0 {
            return Err(corrupt(format!(
                "negative record count {}",
                self.record_count
            )));
        }
        if Compression::from_attributes(self.attributes).is_none() {
            return Err(corrupt(format!(
                "unknown compression codec {}",
                self.attributes & ATTR_COMPRESSION_MASK
            )));
        }
        Ok(())
    }

    /// Bytes of the whole batch, from its base offset: where the next batch starts.
    pub fn total_len(&self) -> usize {
        // Non-negative: `parse` rejects shorter lengths.
        self.batch_length as usize + LOG_OVERHEAD
    }

    /// Offset of the batch's last record (or of the last one before compaction removed it).
    pub fn last_offset(&self) -> i64 {
        // Cannot overflow: `parse` checks it.
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// The log end offset right after this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().saturating_add(1)
    }

    pub fn compression(&self) -> Compression {
        Compression::from_attributes(self.attributes).unwrap_or(Compression::None)
    }

    /// Record timestamps were set by the broker on append; they all equal `max_timestamp`.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes & ATTR_LOG_APPEND_TIME != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & ATTR_TRANSACTIONAL != 0
    }

    /// Transaction markers, not data: consumers skip their records.
    pub fn is_control(&self) -> bool {
        self.attributes & ATTR_CONTROL != 0
    }
}

/// Checks the batch at the start of `buf` (which may go on past it): whole, magic 2, sane
/// header, CRC-32C matching. Recovery truncates at the first batch this rejects.
pub fn validate(buf: &[u8]) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    let total = header.total_len();
    need(buf, total)?;
    let actual = crc32c::crc32c(buf.get(CRC_FROM..total).unwrap_or_default());
    if actual != header.crc {
        return Err(corrupt(format!(
            "CRC-32C is {actual:#010x}, header says {:#010x}",
            header.crc
        )));
    }
    Ok(header)
}

/// Sets the base offset of an encoded batch in place. The base offset is outside the CRC, so
/// the log can assign offsets to a producer's batch (sent with base offset 0) without
/// re-encoding it. Only the first 8 bytes are touched; validate the batch first.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) -> Result<(), BatchError> {
    let available = batch.len();
    let field = batch.first_chunk_mut::<8>().ok_or(BatchError::Incomplete {
        needed: 8,
        available,
    })?;
    *field = base_offset.to_be_bytes();
    Ok(())
}

/// Iterates over the batches laid end to end in `buf` (a segment, or a Fetch response's
/// records), validating each. Stops after the first error; [`Batches::position`] is then where
/// the valid bytes end, the point recovery truncates to.
pub fn batches(buf: &[u8]) -> Batches<'_> {
    Batches {
        buf,
        pos: 0,
        failed: false,
    }
}

#[derive(Debug, Clone)]
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> Batches<'a> {
    /// Bytes taken by the valid batches returned so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Batches<'a> {
    /// A batch's header and all its bytes.
    type Item = Result<(BatchHeader, &'a [u8]), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        if self.failed || rest.is_empty() {
            return None;
        }
        match validate(rest) {
            Ok(header) => {
                let bytes = rest.get(..header.total_len()).unwrap_or_default();
                self.pos += bytes.len();
                Some(Ok((header, bytes)))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

fn need(buf: &[u8], needed: usize) -> Result<(), BatchError> {
    if buf.len() < needed {
        Err(incomplete(buf, needed))
    } else {
        Ok(())
    }
}

fn incomplete(buf: &[u8], needed: usize) -> BatchError {
    BatchError::Incomplete {
        needed,
        available: buf.len(),
    }
}

fn corrupt(reason: String) -> BatchError {
    BatchError::Corrupt(reason)
}

#[cfg(test)]
mod tests {
    use super::test_support::{fix_crc, record, sample};
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn crc32c_is_castagnoli() {
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn header_layout() {
        let buf = sample();
        let h = validate(&buf).unwrap();
        assert_eq!(&buf[..8], &7i64.to_be_bytes());
        assert_eq!(buf.len(), h.total_len());
        assert_eq!(h.batch_length as usize, buf.len() - LOG_OVERHEAD);
        assert_eq!(h.partition_leader_epoch, NO_PARTITION_LEADER_EPOCH);
        assert_eq!(buf[MAGIC_POS], 2);
        assert_eq!(h.crc, crc32c::crc32c(&buf[CRC_FROM..]));
        assert_eq!(h.attributes, 0);
        assert_eq!(h.compression(), Compression::None);
        assert!(!h.is_log_append_time() && !h.is_transactional() && !h.is_control());
        assert_eq!(
            (h.last_offset_delta, h.last_offset(), h.next_offset()),
            (2, 9, 10)
        );
        assert_eq!(
            (h.base_timestamp, h.max_timestamp),
            (1_700_000_000_100, 1_700_000_000_200)
        );
        assert_eq!(
            (h.producer_id, h.producer_epoch, h.base_sequence),
            (-1, -1, -1)
        );
        assert_eq!(h.record_count, 3);
        assert_eq!(BatchHeader::parse(&buf[..HEADER_LEN]), Ok(h));
    }

    #[test]
    fn appends_after_existing_bytes_and_iterates() {
        let mut buf = b"prefix".to_vec();
        let a = encode(&mut buf, 0, &[record(None, b"a", &[], 1)]).unwrap();
        let b = encode(
            &mut buf,
            1,
            &[record(None, b"b", &[], 2), record(None, b"c", &[], 3)],
        )
        .unwrap();
        let log = &buf[6..];
        let all: Vec<_> = batches(log).collect();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].as_ref().unwrap().0, a);
        assert_eq!(all[1].as_ref().unwrap().0, b);
        assert_eq!(b.next_offset(), 3);

        // A torn tail: the iterator stops there and reports where the valid bytes end.
        let torn = &log[..log.len() - 1];
        let mut it = batches(torn);
        assert!(it.next().unwrap().is_ok());
        assert!(matches!(
            it.next(),
            Some(Err(BatchError::Incomplete { .. }))
        ));
        assert_eq!(it.next(), None);
        assert_eq!(it.position(), a.total_len());
        assert_eq!(batches(&[]).count(), 0);
    }

    #[test]
    fn every_truncation_is_incomplete() {
        let buf = sample();
        for len in 0..buf.len() {
            match validate(&buf[..len]) {
                Err(BatchError::Incomplete { needed, available }) => {
                    assert_eq!(available, len);
                    assert!(
                        needed > len && needed <= buf.len(),
                        "{len}: needed {needed}"
                    );
                }
                other => panic!("truncated at {len}: {other:?}"),
            }
            assert!(matches!(
                decode(&buf[..len]),
                Err(BatchError::Incomplete { .. })
            ));
        }
        assert!(validate(&buf).is_ok());
    }

    /// What CRC-32C covers decides what a flip does: base offset and leader epoch are outside
    /// it (a valid batch with another value), the length changes what is read, magic is checked
    /// alone, and any flip in the CRC or the bytes it covers is caught.
    fn expected_after_flip(
        orig: &[u8],
        pos: usize,
        damaged: &[u8],
    ) -> Result<BatchHeader, &'static str> {
        let h = validate(orig).unwrap();
        match pos {
            0..8 => {
                let base = i64::from_be_bytes(damaged[..8].try_into().unwrap());
                match base.checked_add(i64::from(h.last_offset_delta)) {
                    Some(_) if base >= 0 => Ok(BatchHeader {
                        base_offset: base,
                        ..h
                    }),
                    _ => Err("corrupt"),
                }
            }
            8..12 => {
                let len = i32::from_be_bytes(damaged[8..12].try_into().unwrap());
                if len < 49 || len as usize + 12 > MAX_BATCH_LEN {
                    Err("corrupt")
                } else if len as usize + 12 > orig.len() {
                    Err("incomplete")
                } else {
                    Err("corrupt")
                }
            }
            12..16 => Ok(BatchHeader {
                partition_leader_epoch: i32::from_be_bytes(damaged[12..16].try_into().unwrap()),
                ..h
            }),
            _ => Err("corrupt"),
        }
    }

    #[test]
    fn every_flipped_byte_and_bit_is_caught_where_the_crc_covers_it() {
        let orig = sample();
        for pos in 0..orig.len() {
            let masks = (0..8).map(|b| 1u8 << b).chain([0xFF]);
            for mask in masks {
                let mut damaged = orig.clone();
                damaged[pos] ^= mask;
                let got = match validate(&damaged) {
                    Ok(h) => Ok(h),
                    Err(BatchError::Incomplete { .. }) => Err("incomplete"),
                    Err(BatchError::Corrupt(_)) => Err("corrupt"),
                    Err(e) => panic!("{e}"),
                };
                assert_eq!(
                    got,
                    expected_after_flip(&orig, pos, &damaged),
                    "byte {pos} ^ {mask:#04x}"
                );
            }
        }
    }

    #[test]
    fn set_base_offset_keeps_the_crc() {
        let mut buf = sample();
        let before = validate(&buf).unwrap();
        set_base_offset(&mut buf, 1000).unwrap();
        let after = decode(&buf).unwrap();
        assert_eq!(
            after.header,
            BatchHeader {
                base_offset: 1000,
                ..before
            }
        );
        let offsets: Vec<i64> = after.records.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, [1000, 1001, 1002]);
        assert!(matches!(
            set_base_offset(&mut [0u8; 7], 1),
            Err(BatchError::Incomplete {
                needed: 8,
                available: 7
            })
        ));
    }

    #[test]
    fn header_checks() {
        let orig = sample();
        let with = |pos: usize, bytes: &[u8], crc: bool| {
            let mut b = orig.clone();
            b[pos..pos + bytes.len()].copy_from_slice(bytes);
            if crc {
                fix_crc(&mut b);
            }
            validate(&b)
        };
        let corrupt_with = |pos, bytes: &[u8], crc, why: &str| match with(pos, bytes, crc) {
            Err(BatchError::Corrupt(reason)) => assert!(reason.contains(why), "{reason}"),
            other => panic!("{why}: {other:?}"),
        };
        corrupt_with(
            8,
            &48i32.to_be_bytes(),
            false,
            "shorter than a batch header",
        );
        corrupt_with(
            8,
            &(-1i32).to_be_bytes(),
            false,
            "shorter than a batch header",
        );
        corrupt_with(8, &(MAX_BATCH_LEN as i32).to_be_bytes(), false, "limit");
        corrupt_with(16, &[1], false, "magic 1");
        corrupt_with(0, &(-1i64).to_be_bytes(), false, "negative base offset");
        corrupt_with(0, &i64::MAX.to_be_bytes(), false, "overflows");
        corrupt_with(21, &5i16.to_be_bytes(), true, "compression codec 5");
        corrupt_with(
            23,
            &(-1i32).to_be_bytes(),
            true,
            "negative last offset delta",
        );
        corrupt_with(57, &(-1i32).to_be_bytes(), true, "negative record count");
        corrupt_with(40, &[orig[40] ^ 0xFF], false, "CRC-32C");
        // Magic is judged as soon as it arrives, before the rest of the batch.
        let mut b = orig[..20].to_vec();
        b[16] = 0;
        assert!(matches!(validate(&b), Err(BatchError::Corrupt(_))));
        // Length below the header is corrupt even with only the length at hand.
        let b = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            BatchHeader::parse(&b),
            Err(BatchError::Corrupt(_))
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = BatchHeader::parse(&bytes);
            let _ = validate(&bytes);
            let _ = decode(&bytes);
            let _ = batches(&bytes).count();
        }

    }
}
