//! One segment: a `.log` file of batches named by its base offset, and its sparse indexes.
//!
//! [`SegmentData`] is what readers share: the open file (read with `pread`, so readers need no
//! lock), the index, and how many bytes are durable. [`SegmentWriter`] is the single writer's
//! handle on the active segment.

use super::batch::{self, BatchError, BatchHeader, HEADER_LEN, MAX_BATCH_LEN};
use super::index::{
    offset_entry_bytes, time_entry_bytes, OffsetEntry, SparseIndex, TimeEntry, INDEX_INTERVAL_BYTES,
};
use super::LogError;
use bytes::{Bytes, BytesMut};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::RwLock;

/// How much a scan reads at a time.
const SCAN_CHUNK: usize = 1 << 20;

pub fn log_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.log"))
}
pub fn index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.index"))
}
pub fn time_index_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.timeindex"))
}

/// Base offsets of the segments in a partition directory, in order.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let name = entry.map_err(|e| LogError::io(dir, e))?.file_name();
        let name = name.to_string_lossy();
        if let Some(base) = name
            .strip_suffix(".log")
            .and_then(|b| b.parse::<u64>().ok())
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// A segment as readers see it.
#[derive(Debug)]
pub struct SegmentData {
    pub base: u64,
    pub path: PathBuf,
    file: File,
    /// Bytes that readers may read: fsynced (or written, under `fsync: never`), whole batches.
    durable_len: AtomicU64,
    /// Offset after the last durable batch.
    next_offset: AtomicU64,
    /// Largest record timestamp so far; `i64::MIN` when empty. Retention reads it.
    max_timestamp: AtomicI64,
    index: RwLock<SparseIndex>,
}

/// Where a scan of a segment's batches stopped.
#[derive(Debug)]
pub struct ScanEnd {
    /// End of the last valid batch.
    pub len: u64,
    /// Offset after the last valid batch.
    pub next_offset: u64,
    pub max_timestamp: i64,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<BatchError>,
}

impl SegmentData {
    pub fn durable_len(&self) -> u64 {
        self.durable_len.load(Ordering::Acquire)
    }
    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }
    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp.load(Ordering::Acquire)
    }

    /// Makes bytes up to `len` (offsets below `next_offset`) visible to readers.
    /// Never goes backwards: an fsync that finishes late cannot hide what a later one showed.
    pub fn publish(&self, len: u64, next_offset: u64) {
        self.next_offset.fetch_max(next_offset, Ordering::AcqRel);
        self.durable_len.fetch_max(len, Ordering::AcqRel);
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Opens an existing segment for reading, without changing anything on disk: its valid
    /// length is found by checking the batches after the last usable index entry.
    pub fn open_read_only(dir: &Path, base: u64) -> Result<SegmentData, LogError> {
        let path = log_path(dir, base);
        let file = File::open(&path).map_err(|e| LogError::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| LogError::io(&path, e))?.len();
        let index = SparseIndex::load(
            &index_path(dir, base),
            &time_index_path(dir, base),
            base,
            file_len,
        )
        .unwrap_or_default();
        let data = SegmentData::new(base, path, file, index);
        let (start, next) = data.index_start()?.unwrap_or((0, base));
        let mut end = data.scan(start, next, |_, _| {})?;
        if end.stopped.is_some() && end.len == start && start > 0 {
            // The indexed batch itself does not read back: trust nothing, walk from the start.
            end = data.scan(0, base, |_, _| {})?;
        }
        let max_ts = data
            .index
            .read()
            .map(|i| i.times.last().map_or(i64::MIN, |t| t.timestamp))
            .unwrap_or(i64::MIN);
        data.max_timestamp
            .store(max_ts.max(end.max_timestamp), Ordering::Release);
        data.publish(end.len, end.next_offset);
        Ok(data)
    }

    fn new(base: u64, path: PathBuf, file: File, index: SparseIndex) -> SegmentData {
        SegmentData {
            base,
            path,
            file,
            durable_len: AtomicU64::new(0),
            next_offset: AtomicU64::new(base),
            max_timestamp: AtomicI64::new(i64::MIN),
            index: RwLock::new(index),
        }
    }

    /// Position and offset to scan from so the scan covers everything after the last index
    /// entry: the start of the last indexed batch, and its base offset. `None` when the batch
    /// there does not end at the entry's offset (a stale or damaged index, or a damaged base
    /// offset, which the CRC does not cover): then nothing can be taken from the index.
    fn index_start(&self) -> Result<Option<(u64, u64)>, LogError> {
        let last = self
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .offsets
            .last()
            .copied();
        let Some(e) = last else {
            return Ok(Some((0, self.base)));
        };
        // Checking the entry against its batch's header matters: a scan from here cannot
        // check the first batch's base offset against anything else, and a wrong one would
        // make the segment's end offset wrong.
        let position = u64::from(e.position);
        let mut header = [0u8; HEADER_LEN];
        match self.file.read_exact_at(&mut header, position) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(err) => return Err(LogError::io(&self.path, err)),
        }
        Ok(BatchHeader::parse(&header)
            .ok()
            .filter(|h| h.last_offset() as u64 == e.offset)
            .map(|h| (position, h.base_offset as u64)))
    }

    /// Walks the batches from `start` to the end of the file, checking each (length, CRC, and
    /// that offsets follow on from `expect`, unless it is `u64::MAX`), and calls `each` with
    /// every valid batch and its position. Stops at the first incomplete or invalid batch.
    pub fn scan(
        &self,
        start: u64,
        mut expect: u64,
        mut each: impl FnMut(&BatchHeader, u64),
    ) -> Result<ScanEnd, LogError> {
        let file_len = self
            .file
            .metadata()
            .map_err(|e| LogError::io(&self.path, e))?
            .len();
        let mut buf = vec![0u8; SCAN_CHUNK];
        let mut pos = start;
        let mut next_offset = if expect == u64::MAX {
            self.base
        } else {
            expect
        };
        let mut max_timestamp = i64::MIN;
        let stopped = 'scan: loop {
            let want = (file_len - pos).min(buf.len() as u64) as usize;
            if want == 0 {
                break None;
            }
            self.file
                .read_exact_at(&mut buf[..want], pos)
                .map_err(|e| LogError::io(&self.path, e))?;
            let mut batches = batch::batches(&buf[..want]);
            for item in &mut batches {
                match item {
                    Ok((h, _)) => {
                        if expect != u64::MAX && h.base_offset as u64 != expect {
                            let why = format!(
                                "batch at position {} has offset {}, expected {expect}",
                                pos, h.base_offset
                            );
                            break 'scan Some(BatchError::Corrupt(why));
                        }
                        each(&h, pos);
                        pos += h.total_len() as u64;
                        expect = h.next_offset() as u64;
                        next_offset = expect;
                        max_timestamp = max_timestamp.max(h.max_timestamp);
                    }
                    Err(BatchError::Incomplete { needed, .. })
                        if pos + needed as u64 <= file_len =>
                    {
                        // The batch is whole in the file, only not in this chunk: read again
                        // from its start, with room for all of it.
                        if needed > buf.len() {
                            buf.resize(needed.min(MAX_BATCH_LEN), 0);
                        }
                        continue 'scan;
                    }
                    Err(e) => break 'scan Some(e),
                }
            }
        };
        Ok(ScanEnd {
            len: pos,
            next_offset,
            max_timestamp,
            stopped,
        })
    }

    /// Reads whole batches starting with the one that holds `offset`, at most `max_bytes`
    /// (but always one whole batch), from the durable part. `None` when `offset` is past this
    /// segment's durable end. Every batch returned has been checked: corrupt data is reported
    /// with the segment's path, never served.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Option<Bytes>, LogError> {
        let limit = self.durable_len();
        if offset >= self.next_offset() {
            return Ok(None);
        }
        let entry = self
            .index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(offset);
        let mut header = [0u8; HEADER_LEN];
        // Where to start, and the offset the batch there must start with: the segment's base
        // at position 0. The base offset field is outside the CRC, so each batch is checked to
        // go on from the one before; a batch that does not is damaged, never served.
        let (mut pos, mut expect) = (0, self.base);
        if let Some(e) = entry {
            // The index is a hint: the batch at an entry's position must end at the entry's
            // offset. If it does not (a damaged index that still looked sane when loaded),
            // walk from the start of the segment rather than report sound data as corrupt.
            let at = u64::from(e.position);
            let hinted = if at + HEADER_LEN as u64 <= limit {
                self.file
                    .read_exact_at(&mut header, at)
                    .map_err(|e| LogError::io(&self.path, e))?;
                BatchHeader::parse(&header)
                    .ok()
                    .filter(|h| h.last_offset() as u64 == e.offset)
            } else {
                None
            };
            match hinted {
                Some(h) => (pos, expect) = (at, h.base_offset as u64),
                None => {
                    tracing::warn!(path = %self.path.display(), entry = ?e, "index entry does not match the log; reading without it")
                }
            }
        }
        // Skip the batches that end before `offset`.
        let first = loop {
            if pos + HEADER_LEN as u64 > limit {
                return Ok(None);
            }
            self.file
                .read_exact_at(&mut header, pos)
                .map_err(|e| LogError::io(&self.path, e))?;
            let h = BatchHeader::parse(&header).map_err(|e| self.corrupt(pos, e))?;
            if h.base_offset as u64 != expect {
                return Err(self.corrupt(pos, offset_mismatch(&h, expect)));
            }
            if h.last_offset() as u64 >= offset {
                break h;
            }
            pos += h.total_len() as u64;
            expect = h.next_offset() as u64;
        };
        let len = (first.total_len() as u64)
            .max(max_bytes as u64)
            .min(limit - pos) as usize;
        let mut buf = BytesMut::zeroed(len);
        self.file
            .read_exact_at(&mut buf, pos)
            .map_err(|e| LogError::io(&self.path, e))?;
        let mut batches = batch::batches(&buf);
        let mut end = 0;
        expect = first.base_offset as u64;
        for item in &mut batches {
            match item {
                Ok((h, _)) if h.base_offset as u64 == expect => {
                    end += h.total_len();
                    expect = h.next_offset() as u64;
                }
                Err(e) if end == 0 => return Err(self.corrupt(pos, e)),
                // Cut by `max_bytes`, or damage (a bad CRC, or offsets that do not go on
                // from the batch before) the next read will report.
                Ok(_) | Err(_) => break,
            }
        }
        buf.truncate(end);
        Ok(Some(buf.freeze()))
    }

    /// The first offset at or after `offset` whose record timestamp is at least `timestamp`,
    /// in this segment's durable part.
    pub fn offset_for_time(&self, timestamp: i64) -> Result<Option<u64>, LogError> {
        if self.max_timestamp() < timestamp {
            return Ok(None);
        }
        let from = {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            index
                .lookup_time(timestamp)
                .map_or(self.base, |e| e.offset + 1)
        };
        let mut offset = from;
        while let Some(bytes) = self.read(offset, 0)? {
            let (h, whole) = match batch::batches(&bytes).next() {
                Some(Ok(b)) => b,
                _ => return Ok(None),
            };
            if h.max_timestamp >= timestamp {
                if let Ok(decoded) = batch::decode(whole) {
                    let hit = decoded
                        .records
                        .iter()
                        .find(|r| r.offset as u64 >= from && r.timestamp_ms >= timestamp);
                    if let Some(r) = hit {
                        return Ok(Some(r.offset as u64));
                    }
                } else {
                    // Compressed: the batch is the finest step available.
                    return Ok(Some((h.base_offset as u64).max(from)));
                }
            }
            offset = h.next_offset() as u64;
        }
        Ok(None)
    }

    fn corrupt(&self, position: u64, e: BatchError) -> LogError {
        LogError::Corrupt {
            path: self.path.clone(),
            position,
            reason: e.to_string(),
        }
    }
}

/// Why a batch whose base offset does not follow on from the batch before it is corrupt.
fn offset_mismatch(h: &BatchHeader, expected: u64) -> BatchError {
    BatchError::Corrupt(format!(
        "batch has base offset {}, expected {expected}",
        h.base_offset
    ))
}

/// The single writer's handle on the active segment.
#[derive(Debug)]
pub struct SegmentWriter {
    pub data: std::sync::Arc<SegmentData>,
    /// Bytes written, durable or not.
    pub len: u64,
    pub next_offset: u64,
    since_index: u64,
    index_file: File,
    time_file: File,
}

impl SegmentWriter {
    /// Creates an empty segment starting at `base`.
    pub fn create(dir: &Path, base: u64) -> Result<SegmentWriter, LogError> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        let (index_file, time_file) = open_indexes(dir, base, true)?;
        let data = SegmentData::new(base, path, file, SparseIndex::default());
        Ok(SegmentWriter {
            data: data.into(),
            len: 0,
            next_offset: base,
            since_index: 0,
            index_file,
            time_file,
        })
    }

    /// Opens an existing segment for writing. With `verify`, every batch is checked and a torn
    /// or corrupt tail is cut off, and the indexes are rebuilt; without it (after a clean
    /// shutdown, or a sealed segment) the indexes are trusted if they hold up, and only the
    /// batches after the last index entry are checked.
    ///
    /// A `sealed` segment is never cut: it was fsynced whole when it was sealed, so damage in it
    /// is not a torn write but lost data, and cutting it would throw away the valid batches
    /// after the damage too. Only its valid prefix is published; reads of the rest report it
    /// (see `PartitionShared::read`).
    pub fn open(
        dir: &Path,
        base: u64,
        verify: bool,
        sealed: bool,
    ) -> Result<(SegmentWriter, Option<ScanEnd>), LogError> {
        let path = log_path(dir, base);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| LogError::io(&path, e))?;
        let file_len = file.metadata().map_err(|e| LogError::io(&path, e))?.len();
        let loaded = if verify {
            None
        } else {
            SparseIndex::load(
                &index_path(dir, base),
                &time_index_path(dir, base),
                base,
                file_len,
            )
            .ok()
        };
        let rebuild = loaded.is_none();
        let data = SegmentData::new(base, path, file, loaded.unwrap_or_default());
        let mut since_index = 0;
        let end = if rebuild {
            let mut index = SparseIndex::default();
            let mut max_ts = i64::MIN;
            let end = data.scan(0, base, |h, pos| {
                since_index += h.total_len() as u64;
                max_ts = max_ts.max(h.max_timestamp);
                if since_index >= INDEX_INTERVAL_BYTES {
                    add_entries(&mut index, h, pos, max_ts);
                    since_index = 0;
                }
            })?;
            *data.index.write().unwrap_or_else(|e| e.into_inner()) = index;
            end
        } else {
            let Some((start, next)) = data.index_start()? else {
                // The last index entry does not match the log: verify the whole segment.
                drop(data);
                return Self::open(dir, base, true, sealed);
            };
            let end = data.scan(start, next, |h, _| since_index += h.total_len() as u64)?;
            if end.stopped.is_some() {
                // The tail does not check out after all: verify the whole segment.
                drop(data);
                return Self::open(dir, base, true, sealed);
            }
            end
        };
        if end.len < file_len && sealed {
            tracing::error!(path = %data.path.display(), valid = end.len, file_len, reason = ?end.stopped, "sealed segment is damaged; reads past the damage will fail");
        } else if end.len < file_len {
            // A torn or corrupt tail: only the complete, valid batches before it stay.
            tracing::warn!(path = %data.path.display(), valid = end.len, file_len, reason = ?end.stopped, "truncating segment tail");
            data.file
                .set_len(end.len)
                .map_err(|e| LogError::io(&data.path, e))?;
            data.file
                .sync_all()
                .map_err(|e| LogError::io(&data.path, e))?;
        }
        let index_max_ts = data
            .index
            .read()
            .map(|i| i.times.last().map_or(i64::MIN, |t| t.timestamp))
            .unwrap_or(i64::MIN);
        data.max_timestamp
            .store(index_max_ts.max(end.max_timestamp), Ordering::Release);
        data.publish(end.len, end.next_offset);
        let (mut index_file, mut time_file) = open_indexes(dir, base, rebuild)?;
        if rebuild {
            let index = data.index.read().unwrap_or_else(|e| e.into_inner());
            index_file
                .write_all(&index.encode_offsets(base))
                .map_err(|e| LogError::io(&data.path, e))?;
            time_file
                .write_all(&index.encode_times(base))
                .map_err(|e| LogError::io(&data.path, e))?;
        }
        let writer = SegmentWriter {
            len: end.len,
            next_offset: end.next_offset,
            since_index,
            index_file,
            time_file,
            data: data.into(),
        };
        Ok((writer, rebuild.then_some(end)))
    }

    /// Appends one encoded batch, whose base offset is already `self.next_offset`. Not durable
    /// until `sync`.
    pub fn write(&mut self, bytes: &[u8], h: &BatchHeader) -> Result<(), LogError> {
        let data = &self.data;
        if let Err(e) = data.file.write_all_at(bytes, self.len) {
            // Leave no partial batch behind: the next write starts at `self.len` again.
            let _ = data.file.set_len(self.len);
            return Err(LogError::io(&data.path, e));
        }
        let position = self.len;
        self.len += bytes.len() as u64;
        self.next_offset = h.next_offset() as u64;
        let max_ts = data
            .max_timestamp
            .fetch_max(h.max_timestamp, Ordering::AcqRel)
            .max(h.max_timestamp);
        self.since_index += bytes.len() as u64;
        if self.since_index >= INDEX_INTERVAL_BYTES {
            self.since_index = 0;
            let mut index = data.index.write().unwrap_or_else(|e| e.into_inner());
            let (offsets, times) = (index.offsets.len(), index.times.len());
            add_entries(&mut index, h, position, max_ts);
            // Index files are hints, rebuilt after a crash: written, not fsynced, here.
            for e in &index.offsets[offsets..] {
                self.index_file
                    .write_all(&offset_entry_bytes(data.base, *e))
                    .map_err(|e| LogError::io(&data.path, e))?;
            }
            for e in &index.times[times..] {
                self.time_file
                    .write_all(&time_entry_bytes(data.base, *e))
                    .map_err(|e| LogError::io(&data.path, e))?;
            }
        }
        Ok(())
    }

    /// Fsyncs the index files: done when the segment is sealed or the log closes.
    pub fn sync_indexes(&self) -> Result<(), LogError> {
        self.index_file
            .sync_data()
            .map_err(|e| LogError::io(&self.data.path, e))?;
        self.time_file
            .sync_data()
            .map_err(|e| LogError::io(&self.data.path, e))
    }
}

fn add_entries(index: &mut SparseIndex, h: &BatchHeader, position: u64, max_ts: i64) {
    let offset = h.last_offset() as u64;
    index.offsets.push(OffsetEntry {
        offset,
        position: position as u32,
    });
    if index.times.last().is_none_or(|t| t.timestamp < max_ts) {
        index.times.push(TimeEntry {
            timestamp: max_ts,
            offset,
        });
    }
}

fn open_indexes(dir: &Path, base: u64, truncate: bool) -> Result<(File, File), LogError> {
    let open = |p: PathBuf| {
        OpenOptions::new()
            .create(true)
            .append(!truncate)
            .write(true)
            .truncate(truncate)
            .open(&p)
            .map_err(|e| LogError::io(&p, e))
    };
    Ok((
        open(index_path(dir, base))?,
        open(time_index_path(dir, base))?,
    ))
}
