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

use crate::record::{Header, Record};
use bytes::{BufMut, Bytes, BytesMut};
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

fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn put_varint<B: BufMut>(out: &mut B, v: i32) {
    put_uvarint(out, u64::from(((v << 1) ^ (v >> 31)) as u32));
}

fn put_varlong<B: BufMut>(out: &mut B, v: i64) {
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

fn uvarint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

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

/// A cursor over untrusted bytes: every read is bounds-checked and fails softly.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Self {
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

    fn i8(&mut self) -> Option<i8> {
        self.array().map(i8::from_be_bytes)
    }
    fn i16(&mut self) -> Option<i16> {
        self.array().map(i16::from_be_bytes)
    }
    fn i32(&mut self) -> Option<i32> {
        self.array().map(i32::from_be_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_be_bytes)
    }
    fn i64(&mut self) -> Option<i64> {
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
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn record(key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])], ts: i64) -> Record {
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

    fn encoded(base_offset: i64, records: &[Record]) -> Vec<u8> {
        let mut buf = Vec::new();
        encode(&mut buf, base_offset, records).expect("encodes");
        buf
    }

    fn assert_round_trip(base_offset: i64, records: &[Record]) -> Vec<u8> {
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
    fn sample() -> Vec<u8> {
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
    fn fix_crc(batch: &mut [u8]) {
        let crc = crc32c::crc32c(&batch[CRC_FROM..]);
        batch[CRC_POS..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
    }

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

    fn arb_record() -> impl Strategy<Value = Record> {
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

    proptest! {
        #[test]
        fn random_records_round_trip(
            records in proptest::collection::vec(arb_record(), 1..40),
            base in 0i64..i64::MAX / 2,
        ) {
            assert_round_trip(base, &records);
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = BatchHeader::parse(&bytes);
            let _ = validate(&bytes);
            let _ = decode(&bytes);
            let _ = batches(&bytes).count();
        }

        /// Garbage behind a matching CRC reaches the record decoder.
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
