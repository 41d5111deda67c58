//! One partition: its segments, the read side every consumer shares, and the single writer's
//! synchronous operations (the writer task in `writer.rs` drives them).

use super::batch::{self, EncodeError};
use super::read::{Batches, Records};
use super::segment::{list_segments, SegmentData, SegmentWriter};
use super::{sync_dir, LogError, Offset};
use crate::record::Record;
use bytes::Bytes;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// The read side of a partition, shared by the writer and every reader.
#[derive(Debug)]
pub struct PartitionShared {
    pub topic: Arc<str>,
    pub partition: u32,
    pub dir: PathBuf,
    segments: RwLock<Vec<Arc<SegmentData>>>,
    /// The durable end offset; readers wait on it for new records.
    end: watch::Sender<u64>,
    /// Records below this offset are no longer needed (a forwarder shipped them): retention
    /// deletes the sealed segments that hold only such records. 0 for a log of its own.
    released: AtomicU64,
}

impl PartitionShared {
    fn new(topic: Arc<str>, partition: u32, dir: PathBuf, segments: Vec<Arc<SegmentData>>) -> Self {
        let end = segments.last().map_or(0, |s| s.next_offset());
        PartitionShared {
            topic,
            partition,
            dir,
            segments: RwLock::new(segments),
            end: watch::Sender::new(end),
            released: AtomicU64::new(0),
        }
    }

    /// Lets retention delete the records below `offset` (see `released`); it never goes back.
    pub fn release_below(&self, offset: Offset) {
        self.released.fetch_max(offset.0, Ordering::Relaxed);
    }

    /// Opens a partition for reading only: nothing on disk changes, and an incomplete last
    /// batch (one being written right now) is the end of the log for now.
    pub fn open_read_only(topic: Arc<str>, partition: u32, dir: PathBuf) -> Result<Self, LogError> {
        // A topic's partition directories appear just after its topic.json: none yet is empty.
        let bases = if dir.is_dir() {
            list_segments(&dir)?
        } else {
            Vec::new()
        };
        let segments = bases
            .into_iter()
            .map(|base| SegmentData::open_read_only(&dir, base).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(PartitionShared::new(topic, partition, dir, segments))
    }

    fn segments(&self) -> Vec<Arc<SegmentData>> {
        self.segments
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The earliest offset still in the log.
    pub fn start_offset(&self) -> Offset {
        let segments = self.segments.read().unwrap_or_else(|e| e.into_inner());
        Offset(segments.first().map_or(0, |s| s.base))
    }

    /// The offset the next durable record will get (Kafka's high watermark).
    pub fn end_offset(&self) -> Offset {
        Offset(*self.end.borrow())
    }

    /// Durable bytes in the partition.
    pub fn size_bytes(&self) -> u64 {
        self.segments().iter().map(|s| s.durable_len()).sum()
    }

    /// A receiver that changes whenever the end offset moves: follow the tail without polling.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.end.subscribe()
    }

    /// Whole batches from the one holding `offset`, up to `max_bytes` (always at least one
    /// batch). Empty at the end of the log; an error outside `start..=end`.
    pub fn read(&self, offset: Offset, max_bytes: usize) -> Result<Bytes, LogError> {
        let (start, end) = (self.start_offset(), self.end_offset());
        if offset < start || offset > end {
            return Err(LogError::OffsetOutOfRange {
                topic: self.topic.to_string(),
                partition: self.partition,
                offset,
                start,
                end,
            });
        }
        let segments = self.segments();
        let first = segments
            .partition_point(|s| s.base <= offset.0)
            .saturating_sub(1);
        for (i, segment) in segments.iter().enumerate().skip(first) {
            if let Some(bytes) = segment.read(offset.0, max_bytes)? {
                return Ok(below(bytes, end.0));
            }
            // A sealed segment that cannot serve an offset below the next segment's base has
            // lost batches (damage found when it was opened): report it, naming the file,
            // rather than skip ahead to later records.
            if let Some(next) = segments.get(i + 1) {
                if offset.0 < next.base {
                    return Err(LogError::Corrupt {
                        path: segment.path.clone(),
                        position: segment.durable_len(),
                        reason: format!(
                            "offsets {} to {} cannot be read: the segment is damaged there",
                            segment.next_offset().max(offset.0),
                            next.base - 1
                        ),
                    });
                }
            }
        }
        Ok(Bytes::new())
    }

    /// The batches from the one holding `from` to the end of the log, a read at a time; see
    /// [`Batches`].
    pub fn batches(&self, from: Offset) -> Batches<'_> {
        Batches::new(self, from)
    }

    /// The records from `from` to the end of the log, decoded, a read at a time; see
    /// [`Records`].
    pub fn records(&self, from: Offset) -> Records<'_> {
        Records::new(self, from)
    }

    /// The first offset whose record timestamp is at or after `timestamp_ms`; `None` when
    /// every record is older.
    pub fn offset_for_time(&self, timestamp_ms: i64) -> Result<Option<Offset>, LogError> {
        for segment in self.segments() {
            if let Some(offset) = segment.offset_for_time(timestamp_ms)? {
                return Ok(Some(Offset(offset)));
            }
        }
        Ok(None)
    }

    fn notify(&self, end: u64) {
        self.end.send_if_modified(|e| {
            let moved = end > *e;
            *e = (*e).max(end);
            moved
        });
    }
}

/// The batches of `bytes` (whole, valid batches in order) that start below `end`. A segment
/// publishes its bytes before the partition's end offset moves past them (`publish` and `roll`
/// notify afterwards), so a read can find batches at or past the end it checked `offset`
/// against: serving them would let a reader run ahead of the end offset, and its next read
/// (at an offset past that end) would fail as out of range.
fn below(mut bytes: Bytes, end: u64) -> Bytes {
    let mut pos = 0;
    while let Ok(h) = batch::BatchHeader::parse(&bytes[pos..]) {
        if h.base_offset as u64 >= end {
            break;
        }
        pos += h.total_len();
        if pos >= bytes.len() {
            return bytes;
        }
    }
    bytes.truncate(pos);
    bytes
}

/// Writer settings for one partition.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub segment_bytes: u64,
    pub retention_time: Option<Duration>,
    pub retention_bytes: Option<u64>,
}

/// The single writer of a partition. Appends are written at once and become visible (and
/// acknowledged) when `publish` is called after an fsync.
#[derive(Debug)]
pub struct PartitionWriter {
    pub shared: Arc<PartitionShared>,
    active: SegmentWriter,
    options: WriterOptions,
    buf: Vec<u8>,
}

impl PartitionWriter {
    /// Opens (creating when missing) the partition in `dir`. After an unclean shutdown
    /// (`clean` false) the active segment is checked batch by batch and a torn or corrupt
    /// tail is cut off; sealed segments were fsynced when sealed and keep their indexes unless
    /// those do not hold up.
    pub fn open(
        topic: Arc<str>,
        partition: u32,
        dir: PathBuf,
        clean: bool,
        options: WriterOptions,
    ) -> Result<Self, LogError> {
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let bases = list_segments(&dir)?;
        let mut segments = Vec::with_capacity(bases.len() + 1);
        let mut active = None;
        for (i, &base) in bases.iter().enumerate() {
            let last = i + 1 == bases.len();
            let (writer, _) = SegmentWriter::open(&dir, base, last && !clean, !last)?;
            // A damaged sealed segment (a bad batch, or cut short even at a batch boundary)
            // does not stop the partition: its valid prefix is served, and reads of the
            // missing rest report it (see `PartitionShared::read`). Only one that runs past
            // the next segment's start cannot be made sense of.
            if let Some(next) = bases.get(i + 1) {
                if writer.next_offset > *next {
                    return Err(LogError::Corrupt {
                        path: writer.data.path.clone(),
                        position: writer.len,
                        reason: format!(
                            "segment ends at offset {}, but the next segment starts at {next}",
                            writer.next_offset
                        ),
                    });
                }
            }
            segments.push(writer.data.clone());
            if last {
                active = Some(writer);
            }
        }
        let active = match active {
            Some(a) => a,
            None => {
                let a = SegmentWriter::create(&dir, 0)?;
                sync_dir(&dir)?;
                segments.push(a.data.clone());
                a
            }
        };
        let shared = Arc::new(PartitionShared::new(topic, partition, dir, segments));
        Ok(PartitionWriter {
            shared,
            active,
            options,
            buf: Vec::new(),
        })
    }

    /// Appends records as one batch (after rolling the segment if it is full): written, not
    /// yet durable. Returns the offsets given.
    pub fn append<'a>(
        &mut self,
        records: impl Iterator<Item = &'a Record> + Clone,
    ) -> Result<Range<u64>, LogError> {
        self.buf.clear();
        let base = self.active.next_offset;
        let header =
            batch::encode(&mut self.buf, base as i64, records.clone()).map_err(|e| match e {
                EncodeError::Empty => LogError::TooLarge("no records".into()),
                other => LogError::TooLarge(other.to_string()),
            })?;
        self.write_buf(&header)?;
        Ok(base..self.active.next_offset)
    }

    /// Appends batches a Kafka producer encoded (one or more, end to end), each given the next
    /// offsets: stored byte for byte apart from the base offset, which the CRC does not cover.
    /// Nothing is written unless every batch is whole and valid.
    pub fn append_batches(&mut self, bytes: &[u8]) -> Result<Range<u64>, LogError> {
        let dir = self.shared.dir.clone();
        let corrupt = move |reason: String| LogError::Corrupt {
            path: dir.clone(),
            position: 0,
            reason,
        };
        let mut batches = Vec::new();
        let mut iter = batch::batches(bytes);
        for item in &mut iter {
            batches.push(item.map_err(|e| corrupt(format!("produced batch: {e}")))?);
        }
        if iter.position() != bytes.len() || batches.is_empty() {
            return Err(corrupt("produced records are not whole batches".into()));
        }
        let start = self.active.next_offset;
        for (header, whole) in batches {
            self.buf.clear();
            self.buf.extend_from_slice(whole);
            let base = self.active.next_offset;
            batch::set_base_offset(&mut self.buf, base as i64)
                .map_err(|e| corrupt(e.to_string()))?;
            // The log has no leader epochs: overwrite the producer's, as a Kafka leader writes
            // its own (the field is outside the CRC, like the base offset).
            self.buf[12..16].copy_from_slice(&batch::NO_PARTITION_LEADER_EPOCH.to_be_bytes());
            let header = batch::BatchHeader {
                base_offset: base as i64,
                partition_leader_epoch: batch::NO_PARTITION_LEADER_EPOCH,
                ..header
            };
            self.write_buf(&header)?;
        }
        Ok(start..self.active.next_offset)
    }

    /// Writes the batch in `self.buf`, rolling the segment first if the batch would overflow it.
    fn write_buf(&mut self, header: &batch::BatchHeader) -> Result<(), LogError> {
        if self.active.len > 0
            && self.active.len + self.buf.len() as u64 > self.options.segment_bytes
        {
            self.roll()?;
        }
        let buf = std::mem::take(&mut self.buf);
        let result = self.active.write(&buf, header);
        self.buf = buf;
        result
    }

    /// Seals the active segment (fsynced whole, with its indexes) and starts a new one.
    fn roll(&mut self) -> Result<(), LogError> {
        let old = &self.active;
        old.data
            .sync()
            .map_err(|e| LogError::io(&old.data.path, e))?;
        old.sync_indexes()?;
        old.data.publish(old.len, old.next_offset);
        let next = SegmentWriter::create(&self.shared.dir, old.next_offset)?;
        sync_dir(&self.shared.dir)?;
        self.shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(next.data.clone());
        self.active = next;
        self.shared.notify(self.active.next_offset);
        Ok(())
    }

    /// Bytes written but not yet fsynced.
    pub fn unsynced(&self) -> bool {
        self.active.len > self.active.data.durable_len()
    }

    /// What an fsync started now would make durable: the active segment, its length and end
    /// offset at this moment.
    pub fn sync_point(&self) -> SyncPoint {
        SyncPoint {
            segment: self.active.data.clone(),
            len: self.active.len,
            next_offset: self.active.next_offset,
        }
    }

    /// Makes what `point` covers visible to readers; returns the new durable end offset.
    pub fn publish(&self, point: &SyncPoint) -> u64 {
        point.segment.publish(point.len, point.next_offset);
        let end = self.active.data.next_offset();
        self.shared.notify(end);
        end
    }

    /// Fsyncs the active segment's indexes: on close.
    pub fn close(&self) -> Result<(), LogError> {
        self.active.sync_indexes()
    }

    /// Deletes whole sealed segments older than the retention time (by their newest record)
    /// or beyond the retention size, oldest first. Returns how many went.
    pub fn enforce_retention(&mut self, now_ms: i64) -> Result<usize, LogError> {
        let segments = self.shared.segments();
        let sealed = &segments[..segments.len() - 1];
        let mut total: u64 = segments.iter().map(|s| s.durable_len()).sum();
        let cutoff = self
            .options
            .retention_time
            .map(|t| now_ms.saturating_sub(t.as_millis() as i64));
        let released = self.shared.released.load(Ordering::Relaxed);
        let mut doomed = 0;
        for (segment, next) in sealed.iter().zip(&segments[1..]) {
            let shipped = next.base <= released;
            let too_old = cutoff.is_some_and(|c| segment.max_timestamp() < c);
            let too_big = self
                .options
                .retention_bytes
                .is_some_and(|limit| total.saturating_sub(segment.durable_len()) >= limit);
            if !(too_old || too_big || shipped) {
                break;
            }
            total -= segment.durable_len();
            doomed += 1;
        }
        if doomed == 0 {
            return Ok(0);
        }
        self.shared
            .segments
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..doomed);
        for segment in &sealed[..doomed] {
            // Readers holding the segment keep reading the unlinked file until they let go.
            for path in [
                segment.path.clone(),
                super::segment::index_path(&self.shared.dir, segment.base),
                super::segment::time_index_path(&self.shared.dir, segment.base),
            ] {
                if let Err(e) = std::fs::remove_file(&path) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        return Err(LogError::io(&path, e));
                    }
                }
            }
            tracing::info!(topic = %self.shared.topic, partition = self.shared.partition, base = segment.base, "retention deleted segment");
        }
        Ok(doomed)
    }
}

/// An fsync's reach: see [`PartitionWriter::sync_point`].
#[derive(Debug, Clone)]
pub struct SyncPoint {
    pub segment: Arc<SegmentData>,
    pub len: u64,
    pub next_offset: u64,
}

impl SyncPoint {
    pub fn sync(&self) -> Result<(), LogError> {
        self.segment
            .sync()
            .map_err(|e| LogError::io(&self.segment.path, e))
    }
}

/// The directory of a partition.
pub fn partition_dir(log_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    log_dir.join(topic).join(partition.to_string())
}
