//! A segment's sparse indexes, in Kafka's file formats:
//! - `.index`: 8-byte entries, relative offset (u32) and file position (u32), big-endian: the
//!   last offset of a batch and where that batch starts.
//! - `.timeindex`: 12-byte entries, timestamp (i64) and relative offset (u32): the largest
//!   timestamp so far in the segment and the last offset of the batch that holds it.
//!
//! An entry is added every [`INDEX_INTERVAL_BYTES`] of log. Indexes only speed up lookups;
//! they are checked on open and rebuilt from the log when they do not hold up.

use std::path::Path;

/// Bytes of log between index entries (Kafka's `index.interval.bytes`).
pub const INDEX_INTERVAL_BYTES: u64 = 4096;
pub const OFFSET_ENTRY_LEN: usize = 8;
pub const TIME_ENTRY_LEN: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    /// Last offset of the batch at `position`.
    pub offset: u64,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    /// Largest timestamp in the segment up to and including `offset`.
    pub timestamp: i64,
    pub offset: u64,
}

/// Both indexes of one segment, in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SparseIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
}

impl SparseIndex {
    /// The last entry at or before `offset`: where to start scanning for it.
    pub fn lookup(&self, offset: u64) -> Option<OffsetEntry> {
        let i = self.offsets.partition_point(|e| e.offset <= offset);
        i.checked_sub(1).map(|i| self.offsets[i])
    }

    /// Where to start scanning for the first record at or after `timestamp`: every record up to
    /// the returned entry's offset is older than `timestamp`.
    pub fn lookup_time(&self, timestamp: i64) -> Option<TimeEntry> {
        let i = self.times.partition_point(|e| e.timestamp < timestamp);
        i.checked_sub(1).map(|i| self.times[i])
    }

    pub fn encode_offsets(&self, base: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * OFFSET_ENTRY_LEN);
        for e in &self.offsets {
            out.extend_from_slice(&offset_entry_bytes(base, *e));
        }
        out
    }

    pub fn encode_times(&self, base: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * TIME_ENTRY_LEN);
        for e in &self.times {
            out.extend_from_slice(&time_entry_bytes(base, *e));
        }
        out
    }

    /// Reads both index files of a segment whose log holds `log_len` valid bytes, checking
    /// that they hold up: whole entries, increasing offsets and positions inside the log.
    /// `Err` says why they cannot be trusted; the caller rebuilds them from the log.
    pub fn load(
        index: &Path,
        time_index: &Path,
        base: u64,
        log_len: u64,
    ) -> Result<SparseIndex, String> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let (offsets, times) = (read(index)?, read(time_index)?);
        if offsets.len() % OFFSET_ENTRY_LEN != 0 || times.len() % TIME_ENTRY_LEN != 0 {
            return Err("partial entry".into());
        }
        let mut idx = SparseIndex::default();
        for chunk in offsets.chunks_exact(OFFSET_ENTRY_LEN) {
            let rel = u32::from_be_bytes(chunk[..4].try_into().unwrap_or_default());
            let position = u32::from_be_bytes(chunk[4..].try_into().unwrap_or_default());
            let e = OffsetEntry {
                offset: base + u64::from(rel),
                position,
            };
            if u64::from(position) >= log_len
                || idx
                    .offsets
                    .last()
                    .is_some_and(|l| l.offset >= e.offset || l.position >= position)
            {
                return Err(format!(
                    "offset entry {e:?} out of order or past the log's {log_len} bytes"
                ));
            }
            idx.offsets.push(e);
        }
        for chunk in times.chunks_exact(TIME_ENTRY_LEN) {
            let timestamp = i64::from_be_bytes(chunk[..8].try_into().unwrap_or_default());
            let rel = u32::from_be_bytes(chunk[8..].try_into().unwrap_or_default());
            let e = TimeEntry {
                timestamp,
                offset: base + u64::from(rel),
            };
            let last_offset = idx.offsets.last().map_or(base, |l| l.offset);
            if e.offset > last_offset
                || idx
                    .times
                    .last()
                    .is_some_and(|l| l.timestamp > e.timestamp || l.offset >= e.offset)
            {
                return Err(format!(
                    "time entry {e:?} out of order or past the offset index"
                ));
            }
            idx.times.push(e);
        }
        Ok(idx)
    }
}

pub fn offset_entry_bytes(base: u64, e: OffsetEntry) -> [u8; OFFSET_ENTRY_LEN] {
    let mut b = [0; OFFSET_ENTRY_LEN];
    b[..4].copy_from_slice(&((e.offset - base) as u32).to_be_bytes());
    b[4..].copy_from_slice(&e.position.to_be_bytes());
    b
}

pub fn time_entry_bytes(base: u64, e: TimeEntry) -> [u8; TIME_ENTRY_LEN] {
    let mut b = [0; TIME_ENTRY_LEN];
    b[..8].copy_from_slice(&e.timestamp.to_be_bytes());
    b[8..].copy_from_slice(&((e.offset - base) as u32).to_be_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SparseIndex {
        SparseIndex {
            offsets: vec![
                OffsetEntry {
                    offset: 109,
                    position: 4100,
                },
                OffsetEntry {
                    offset: 250,
                    position: 8300,
                },
            ],
            times: vec![
                TimeEntry {
                    timestamp: 1000,
                    offset: 109,
                },
                TimeEntry {
                    timestamp: 2000,
                    offset: 250,
                },
            ],
        }
    }

    #[test]
    fn lookups() {
        let idx = sample();
        assert_eq!(idx.lookup(100), None);
        assert_eq!(idx.lookup(109).map(|e| e.position), Some(4100));
        assert_eq!(idx.lookup(249).map(|e| e.position), Some(4100));
        assert_eq!(idx.lookup(1_000).map(|e| e.position), Some(8300));
        assert_eq!(
            idx.lookup_time(1000),
            None,
            "records at 1000 may sit before offset 109"
        );
        assert_eq!(idx.lookup_time(1001).map(|e| e.offset), Some(109));
        assert_eq!(idx.lookup_time(5000).map(|e| e.offset), Some(250));
    }

    #[test]
    fn files_round_trip_and_bad_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (i, t) = (dir.path().join("a.index"), dir.path().join("a.timeindex"));
        let idx = sample();
        std::fs::write(&i, idx.encode_offsets(100)).unwrap();
        std::fs::write(&t, idx.encode_times(100)).unwrap();
        assert_eq!(SparseIndex::load(&i, &t, 100, 9000), Ok(idx.clone()));
        assert!(
            SparseIndex::load(&i, &t, 100, 8300).is_err(),
            "entry past the log's end"
        );
        let mut bytes = idx.encode_offsets(100);
        bytes.pop();
        std::fs::write(&i, &bytes).unwrap();
        assert_eq!(
            SparseIndex::load(&i, &t, 100, 9000),
            Err("partial entry".into())
        );
        let mut swapped = idx.clone();
        swapped.offsets.swap(0, 1);
        std::fs::write(&i, swapped.encode_offsets(100)).unwrap();
        assert!(SparseIndex::load(&i, &t, 100, 9000).is_err());
        std::fs::remove_file(&i).unwrap();
        assert!(
            SparseIndex::load(&i, &t, 100, 9000).is_err(),
            "missing file"
        );
    }
}
