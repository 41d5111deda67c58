//! Reading a partition in order: [`PartitionShared::batches`] and [`PartitionShared::records`]
//! read a chunk at a time with [`PartitionShared::read`] and walk what it served, so no caller
//! writes that loop by hand.

use super::batch::{self, BatchError, BatchHeader, DecodedBatch, DecodedRecord};
use super::partition::PartitionShared;
use super::{LogError, Offset};
use bytes::Bytes;

/// Bytes each read asks for unless told otherwise ([`Batches::read_bytes`]).
pub const READ_BYTES: usize = 1 << 20;

/// One batch as the log stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBatch {
    pub header: BatchHeader,
    /// The whole batch from its base offset, byte for byte as stored (and as a Fetch response
    /// carries it): a slice of the read that served it, not a copy.
    pub bytes: Bytes,
}

impl StoredBatch {
    /// The batch's records; see [`batch::decode`].
    pub fn decode(&self) -> Result<DecodedBatch, BatchError> {
        batch::decode(&self.bytes)
    }
}

/// The batches of a partition in order, from the one holding the offset it started at. Made by
/// [`PartitionShared::batches`].
///
/// Each read serves whole, valid batches below the end offset it saw. The iterator ends at the
/// first read that finds nothing more: the end offset, which moves on while a writer appends
/// (a read-only partition's stays where it was when opened). An error (an offset out of range,
/// as when retention deleted the segments ahead, or damage found on the way) is yielded once and
/// ends it too.
#[derive(Debug)]
pub struct Batches<'a> {
    partition: &'a PartitionShared,
    /// Where the next read starts: past the last batch yielded.
    next: Offset,
    read_bytes: usize,
    /// What the last read served and is not yielded yet.
    chunk: Bytes,
    done: bool,
}

impl<'a> Batches<'a> {
    pub(super) fn new(partition: &'a PartitionShared, from: Offset) -> Self {
        Batches {
            partition,
            next: from,
            read_bytes: READ_BYTES,
            chunk: Bytes::new(),
            done: false,
        }
    }

    /// Asks each read for `bytes` instead of [`READ_BYTES`]; a read always serves at least one
    /// batch, so even 1 makes progress (a batch per read).
    pub fn read_bytes(mut self, bytes: usize) -> Self {
        self.read_bytes = bytes;
        self
    }

    /// Where reading goes on from: the offset after the last batch yielded (where it started,
    /// before the first).
    pub fn position(&self) -> Offset {
        self.next
    }

    /// The batch at the start of `chunk`. A read serves only whole batches that passed
    /// validation, so this fails only if that promise is broken.
    fn take_batch(&mut self) -> Result<StoredBatch, LogError> {
        let header = BatchHeader::parse(&self.chunk).and_then(|h| {
            if h.total_len() <= self.chunk.len() {
                Ok(h)
            } else {
                Err(BatchError::Incomplete {
                    needed: h.total_len(),
                    available: self.chunk.len(),
                })
            }
        });
        match header {
            Ok(header) => Ok(StoredBatch {
                header,
                bytes: self.chunk.split_to(header.total_len()),
            }),
            Err(e) => Err(LogError::Corrupt {
                path: self.partition.dir.clone(),
                position: 0,
                reason: format!("a read at offset {} served a bad batch: {e}", self.next),
            }),
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<StoredBatch, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            if !self.chunk.is_empty() {
                let item = self.take_batch();
                match &item {
                    Ok(b) => self.next = self.next.max(Offset(b.header.next_offset() as u64)),
                    Err(_) => self.done = true,
                }
                return Some(item);
            }
            match self.partition.read(self.next, self.read_bytes) {
                Ok(bytes) if bytes.is_empty() => self.done = true,
                Ok(bytes) => self.chunk = bytes,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

/// The records of a partition in order from the offset it started at (those before it in the
/// batch holding it are skipped), decoded. Made by [`PartitionShared::records`]; reads as
/// [`Batches`] does and ends where it ends.
///
/// A batch whose records cannot be decoded ([`LogError::Undecodable`]: compressed by a Kafka
/// producer, or damaged behind a matching CRC) is yielded as that error and skipped: the
/// records after it follow. Any other error ends the iteration.
#[derive(Debug)]
pub struct Records<'a> {
    batches: Batches<'a>,
    /// The records of the current batch not yielded yet.
    records: std::vec::IntoIter<DecodedRecord>,
    /// The offset after the last record yielded: no record below it is yielded again.
    next: Offset,
}

impl<'a> Records<'a> {
    pub(super) fn new(partition: &'a PartitionShared, from: Offset) -> Self {
        Records {
            batches: Batches::new(partition, from),
            records: Vec::new().into_iter(),
            next: from,
        }
    }

    /// Asks each read for `bytes` instead of [`READ_BYTES`]; see [`Batches::read_bytes`].
    pub fn read_bytes(mut self, bytes: usize) -> Self {
        self.batches = self.batches.read_bytes(bytes);
        self
    }

    /// Where reading goes on from: the offset after the last record yielded, or after the last
    /// batch gone through once all its records are (or it was skipped).
    pub fn position(&self) -> Offset {
        if self.records.as_slice().is_empty() {
            self.next.max(self.batches.position())
        } else {
            self.next
        }
    }
}

impl Iterator for Records<'_> {
    type Item = Result<DecodedRecord, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            for r in self.records.by_ref() {
                match u64::try_from(r.offset) {
                    Ok(offset) if offset >= self.next.0 => {
                        self.next = Offset(offset + 1);
                        return Some(Ok(r));
                    }
                    _ => {}
                }
            }
            let batch = match self.batches.next()? {
                Ok(batch) => batch,
                Err(e) => return Some(Err(e)),
            };
            match batch.decode() {
                Ok(decoded) => self.records = decoded.records.into_iter(),
                Err(error) => {
                    let partition = self.batches.partition;
                    return Some(Err(LogError::Undecodable {
                        topic: partition.topic.to_string(),
                        partition: partition.partition,
                        offset: Offset(batch.header.base_offset as u64),
                        error,
                    }));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::partition::{PartitionWriter, WriterOptions};
    use crate::record::Record;
    use std::sync::Arc;

    fn record(i: u64) -> Record {
        Record {
            route: Arc::from("r"),
            topic: "t".into(),
            partition: 0,
            key: None,
            value: Bytes::from(format!("value {i}")),
            headers: Vec::new(),
            timestamp_ms: 1_700_000_000_000 + i as i64,
            dead_letter: None,
        }
    }

    /// A partition holding `batches` batches of `per` records, over several small segments.
    fn partition(dir: &std::path::Path, batches: u64, per: u64) -> PartitionWriter {
        let options = WriterOptions {
            segment_bytes: 400,
            retention_time: None,
            retention_bytes: None,
        };
        let mut w = PartitionWriter::open("t".into(), 0, dir.join("t/0"), true, options).unwrap();
        for b in 0..batches {
            let records: Vec<Record> = (b * per..(b + 1) * per).map(record).collect();
            w.append(records.iter()).unwrap();
        }
        let point = w.sync_point();
        point.sync().unwrap();
        w.publish(&point);
        w
    }

    fn values(records: Records<'_>) -> Vec<(i64, Bytes)> {
        records
            .map(|r| r.map(|r| (r.offset, r.value.unwrap())))
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn expected(range: std::ops::Range<u64>) -> Vec<(i64, Bytes)> {
        range.map(|i| (i as i64, record(i).value)).collect()
    }

    #[test]
    fn records_from_any_offset_to_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let w = partition(dir.path(), 20, 3);
        let p = &w.shared;
        assert_eq!(p.end_offset(), Offset(60));
        let segments = std::fs::read_dir(&p.dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().extension() == Some("log".as_ref()))
            .count();
        assert!(segments > 3, "spans segments: {segments}");
        for read_bytes in [1, 100, READ_BYTES] {
            for from in [0, 1, 2, 3, 31, 59] {
                let records = p.records(Offset(from)).read_bytes(read_bytes);
                assert_eq!(
                    values(records),
                    expected(from..60),
                    "{from} by {read_bytes}"
                );
            }
        }
        let mut at_end = p.records(Offset(60));
        assert!(at_end.next().is_none());
        assert_eq!(at_end.position(), Offset(60));
    }

    #[test]
    fn positions_follow_records_and_batches() {
        let dir = tempfile::tempdir().unwrap();
        let w = partition(dir.path(), 4, 3);
        let mut records = w.shared.records(Offset(4));
        assert_eq!(records.position(), Offset(4));
        assert_eq!(records.next().unwrap().unwrap().offset, 4);
        assert_eq!(records.position(), Offset(5));
        assert_eq!(records.next().unwrap().unwrap().offset, 5);
        assert_eq!(records.position(), Offset(6), "past the batch");
        assert_eq!(records.by_ref().count(), 6);
        assert_eq!(records.position(), Offset(12));

        let batches: Vec<_> = w.shared.batches(Offset(4)).map(Result::unwrap).collect();
        let bases: Vec<_> = batches.iter().map(|b| b.header.base_offset).collect();
        assert_eq!(bases, [3, 6, 9], "from the batch holding the offset");
        for b in &batches {
            assert_eq!(b.bytes.len(), b.header.total_len());
            assert_eq!(batch::validate(&b.bytes), Ok(b.header));
        }
        let mut it = w.shared.batches(Offset(0)).read_bytes(1);
        it.next();
        assert_eq!(it.position(), Offset(3));
    }

    #[test]
    fn an_error_is_yielded_once_and_ends_the_iteration() {
        let dir = tempfile::tempdir().unwrap();
        let w = partition(dir.path(), 2, 2);
        for from in [5, u64::MAX] {
            let mut records = w.shared.records(Offset(from));
            match records.next() {
                Some(Err(LogError::OffsetOutOfRange { offset, .. })) => {
                    assert_eq!(offset, Offset(from))
                }
                other => panic!("{other:?}"),
            }
            assert!(records.next().is_none());
            let mut batches = w.shared.batches(Offset(from));
            assert!(matches!(batches.next(), Some(Err(_))));
            assert!(batches.next().is_none());
        }
    }

    #[test]
    fn an_undecodable_batch_is_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = partition(dir.path(), 1, 2);
        // A producer's zstd batch: valid, stored as it is, not decodable here.
        let mut zstd = Vec::new();
        batch::encode(&mut zstd, 0, [record(2), record(3)].iter()).unwrap();
        zstd[21..23].copy_from_slice(&4i16.to_be_bytes());
        let crc = crc32c::crc32c(&zstd[21..]);
        zstd[17..21].copy_from_slice(&crc.to_be_bytes());
        w.append_batches(&zstd).unwrap();
        let more: Vec<Record> = (4..6).map(record).collect();
        w.append(more.iter()).unwrap();
        let point = w.sync_point();
        w.publish(&point);

        let got: Vec<_> = w.shared.records(Offset(1)).collect();
        assert_eq!(got.len(), 4, "{got:?}");
        assert_eq!(got[0].as_ref().unwrap().offset, 1);
        match &got[1] {
            Err(e @ LogError::Undecodable { offset, error, .. }) => {
                assert_eq!(*offset, Offset(2));
                assert!(matches!(error, BatchError::Compressed(_)));
                assert_eq!(
                    e.to_string(),
                    "t/0: batch at offset 2: batch is zstd-compressed; only uncompressed \
                     records can be decoded"
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(got[2].as_ref().unwrap().offset, 4);
        assert_eq!(got[3].as_ref().unwrap().offset, 5);

        let mut records = w.shared.records(Offset(2));
        assert!(records.next().unwrap().is_err());
        assert_eq!(records.position(), Offset(4), "past the skipped batch");
    }
}
