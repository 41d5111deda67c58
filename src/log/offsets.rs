//! Consumer-group committed offsets, durable across restarts: one JSON file per group under
//! `<log dir>/@groups/` (`@` cannot appear in a Kafka topic name, so this never clashes with a
//! topic directory), loaded whole into memory at open and replaced atomically on every commit.
//!
//! # File names
//!
//! A group id is any string, so its file name is an encoding of it: the bytes `a-z 0-9 _ -` as
//! they are, every other byte (upper-case letters and `.` included) as `%XX` with upper-case hex.
//! Names never contain `/`, `.` or NUL before the extension, so no id can escape the directory or
//! name `.`/`..`, and no two ids share a file even on a case-insensitive file system. The empty
//! id is `.json`. An encoding over 200 bytes keeps its first 160 and ends in `~` and 32 hex
//! digits of the SHA-256 of the id, so names stay under the usual 255-byte limit. The id itself
//! is also stored in the file, so listing groups is exact either way.
//!
//! ```text
//! my-group              my-group.json
//! Orders.v2             %4Frders%2Ev2.json
//! ""                    .json
//! <10,000 x "x">        xxx…x~3c9f…e1.json
//! ```
//!
//! # File format
//!
//! ```json
//! {
//!   "version": 1,
//!   "group": "my-group",
//!   "offsets": [
//!     { "topic": "sensors", "partition": 0, "offset": 42, "metadata": "",
//!       "commit_timestamp_ms": 1700000000000 }
//!   ]
//! }
//! ```
//!
//! Entries are sorted by topic, then partition; a (topic, partition) appears once.
//!
//! # Durability
//!
//! A commit replaces `<name>.json` with the log's [`write_atomic`]: it writes `<name>.tmp` in the
//! same directory, fsyncs it, renames it over `<name>.json` and fsyncs the directory, so a crash
//! leaves the old file or the new one, never a torn one. Leftover `.tmp` files are ignored, and
//! removed by the writer at open. A file that cannot be read as a group's offsets is reported by
//! [`GroupOffsets::damaged`] and skipped (the rest of the store still opens); it is left as it is
//! until that group commits again.

use super::{sync_dir, write_atomic, LogError};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// The directory under the log directory that holds one file per group.
pub const GROUPS_DIR: &str = "@groups";
/// The `version` field of the files this module writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const EXT: &str = ".json";
const TMP_EXT: &str = ".tmp";
/// The longest encoded id used as a file name as it is; longer ones are cut and hashed.
const MAX_PLAIN_STEM: usize = 200;
/// How much of a too-long encoded id a hashed name keeps.
const HASHED_PREFIX: usize = 160;
/// Hex digits of the SHA-256 in a hashed name (128 bits).
const HASH_HEX: usize = 32;

/// One committed offset of a (group, topic, partition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    /// What the client committed along with the offset (Kafka's `committed_metadata`).
    pub metadata: String,
    /// When the commit was made, in milliseconds since the Unix epoch.
    pub commit_timestamp_ms: i64,
}

/// A group file found at open that could not be read as a group's offsets, and was skipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedFile {
    pub path: PathBuf,
    /// The group the file name stands for; `None` for hashed names (very long ids) and names
    /// this module would not have written.
    pub group: Option<String>,
    pub reason: String,
}

impl fmt::Display for DamagedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "skipped damaged offsets file {}", self.path.display())?;
        if let Some(group) = &self.group {
            write!(f, " (group {group:?})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// A group's offsets: topic -> partition -> committed offset.
type Offsets = BTreeMap<String, BTreeMap<u32, CommittedOffset>>;

/// The committed offsets of every consumer group, held in memory and persisted per group.
///
/// Thread-safe: commits to different groups write their files in parallel; commits to one group
/// are applied one at a time, in memory in the same order as on disk. Reads never wait for disk.
pub struct GroupOffsets {
    /// `<log dir>/@groups`.
    dir: PathBuf,
    read_only: bool,
    groups: RwLock<BTreeMap<String, Arc<Offsets>>>,
    /// One lock per group being written, held across its file write. An entry lives while some
    /// thread holds or waits for it.
    writing: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    damaged: Vec<DamagedFile>,
}

impl fmt::Debug for GroupOffsets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupOffsets")
            .field("dir", &self.dir)
            .field("read_only", &self.read_only)
            .field("groups", &read(&self.groups).len())
            .field("damaged", &self.damaged.len())
            .finish()
    }
}

impl GroupOffsets {
    /// Opens the store of the log in `dir` for writing: creates `dir/@groups` if needed, removes
    /// temp files a crash left behind and loads every group. Damaged group files do not fail the
    /// open: see [`GroupOffsets::damaged`], which the caller should log. Only one writer may have
    /// a log directory open (the log's directory lock guarantees it).
    pub fn open(dir: &Path) -> Result<Self, LogError> {
        let groups_dir = dir.join(GROUPS_DIR);
        let existed = groups_dir.is_dir();
        fs::create_dir_all(&groups_dir).map_err(|e| LogError::io(&groups_dir, e))?;
        if !existed {
            sync_dir(dir)?;
        }
        Self::load(groups_dir, false)
    }

    /// Opens the store of the log in `dir` for reading, as of now, while a writer may be running:
    /// never creates, writes or deletes anything. A missing `@groups` directory is an empty
    /// store. Commits made afterwards are seen by opening again.
    pub fn open_read_only(dir: &Path) -> Result<Self, LogError> {
        Self::load(dir.join(GROUPS_DIR), true)
    }

    fn load(dir: PathBuf, read_only: bool) -> Result<Self, LogError> {
        let mut names = Vec::new();
        match fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry = entry.map_err(|e| LogError::io(&dir, e))?;
                    // A name that is not UTF-8 is not one this module writes.
                    if let Ok(name) = entry.file_name().into_string() {
                        names.push(name);
                    }
                }
            }
            Err(e) if read_only && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(LogError::io(&dir, e)),
        }
        names.sort_unstable();

        let mut groups = BTreeMap::new();
        let mut damaged = Vec::new();
        for name in names {
            let path = dir.join(&name);
            if name.ends_with(TMP_EXT) {
                if !read_only {
                    // Best effort: a temp file is ignored whether or not it goes away.
                    let _ = fs::remove_file(&path);
                }
                continue;
            }
            if !name.ends_with(EXT) {
                continue;
            }
            let bytes = match fs::read(&path) {
                Ok(bytes) => bytes,
                // Deleted by the writer since the listing (read-only).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(LogError::io(&path, e)),
            };
            match decode_file(&bytes, &name) {
                Ok((group, offsets)) => {
                    groups.insert(group, Arc::new(offsets));
                }
                Err(reason) => damaged.push(DamagedFile {
                    path,
                    group: group_from_file_name(&name),
                    reason,
                }),
            }
        }
        Ok(GroupOffsets {
            dir,
            read_only,
            groups: RwLock::new(groups),
            writing: Mutex::new(HashMap::new()),
            damaged,
        })
    }

    /// The `@groups` directory this store reads and writes.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Group files found damaged at open, in file-name order, and skipped: their groups have no
    /// committed offsets here. Each file is left as it is until its group commits again.
    pub fn damaged(&self) -> &[DamagedFile] {
        &self.damaged
    }

    /// Commits `(topic, partition, offset, metadata)` entries for `group`, stamped with the
    /// current time: merges them into the group's offsets (a later entry for the same partition
    /// wins) and persists the group atomically and durably before returning. On error the
    /// commit may or may not have reached the disk, and memory keeps the offsets from before
    /// it. Committing no entries does nothing.
    pub fn commit(&self, group: &str, offsets: &[(&str, u32, i64, &str)]) -> Result<(), LogError> {
        self.commit_at(group, offsets, now_ms())
    }

    /// [`GroupOffsets::commit`], stamped with `timestamp_ms` instead of the current time.
    pub fn commit_at(
        &self,
        group: &str,
        offsets: &[(&str, u32, i64, &str)],
        timestamp_ms: i64,
    ) -> Result<(), LogError> {
        self.check_writable()?;
        if offsets.is_empty() {
            return Ok(());
        }
        self.with_group_lock(group, || {
            // Only this group's lock holder changes its entry, so this is the latest state.
            let current = read(&self.groups).get(group).cloned();
            let mut next = current.map(|o| Offsets::clone(&o)).unwrap_or_default();
            for &(topic, partition, offset, metadata) in offsets {
                let committed = CommittedOffset {
                    offset,
                    metadata: metadata.to_owned(),
                    commit_timestamp_ms: timestamp_ms,
                };
                next.entry(topic.to_owned())
                    .or_default()
                    .insert(partition, committed);
            }
            self.write_group_file(group, &next)?;
            write(&self.groups).insert(group.to_owned(), Arc::new(next));
            Ok(())
        })
    }

    /// Deletes `group`'s offsets and its file (a damaged one too). Returns whether there was
    /// anything to delete. On error memory keeps the group, as for a failed commit.
    pub fn delete_group(&self, group: &str) -> Result<bool, LogError> {
        self.check_writable()?;
        self.with_group_lock(group, || {
            let path = self.dir.join(file_name(group));
            let removed = match fs::remove_file(&path) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(LogError::io(&path, e)),
            };
            if removed {
                sync_dir(&self.dir)?;
            }
            let in_memory = write(&self.groups).remove(group).is_some();
            Ok(removed || in_memory)
        })
    }

    /// The offset `group` committed for `topic`/`partition`, if any.
    pub fn fetch(&self, group: &str, topic: &str, partition: u32) -> Option<CommittedOffset> {
        read(&self.groups)
            .get(group)?
            .get(topic)?
            .get(&partition)
            .cloned()
    }

    /// Every offset `group` committed, sorted by topic, then partition; empty for an unknown
    /// group.
    pub fn group(&self, group: &str) -> Vec<(String, u32, CommittedOffset)> {
        let Some(offsets) = read(&self.groups).get(group).cloned() else {
            return Vec::new();
        };
        offsets
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions
                    .iter()
                    .map(|(&partition, c)| (topic.clone(), partition, c.clone()))
            })
            .collect()
    }

    /// Every group with committed offsets, sorted.
    pub fn groups(&self) -> Vec<String> {
        read(&self.groups).keys().cloned().collect()
    }

    fn check_writable(&self) -> Result<(), LogError> {
        if self.read_only {
            return Err(LogError::ReadOnly {
                dir: self.dir.clone(),
            });
        }
        Ok(())
    }

    /// Runs `f` holding `group`'s write lock.
    fn with_group_lock<R>(&self, group: &str, f: impl FnOnce() -> R) -> R {
        let group_lock = Arc::clone(lock(&self.writing).entry(group.to_owned()).or_default());
        let result = {
            let _guard = lock(&group_lock);
            f()
        };
        let mut writing = lock(&self.writing);
        // Clones are only made under `writing`, so a count of two (the map's and ours) means no
        // other thread holds or waits for this lock, and none can start to while we hold
        // `writing`.
        if Arc::strong_count(&group_lock) == 2 {
            writing.remove(group);
        }
        result
    }

    /// Replaces `group`'s file with `offsets`, atomically and durably.
    fn write_group_file(&self, group: &str, offsets: &Offsets) -> Result<(), LogError> {
        let path = self.dir.join(file_name(group));
        let bytes =
            encode_file(group, offsets).map_err(|e| LogError::io(&path, io::Error::other(e)))?;
        write_atomic(&path, &bytes)
    }
}

#[derive(Serialize, Deserialize)]
struct GroupFile<'a> {
    version: u32,
    group: Cow<'a, str>,
    offsets: Vec<FileEntry<'a>>,
}

#[derive(Serialize, Deserialize)]
struct FileEntry<'a> {
    topic: Cow<'a, str>,
    partition: u32,
    offset: i64,
    metadata: Cow<'a, str>,
    commit_timestamp_ms: i64,
}

fn encode_file(group: &str, offsets: &Offsets) -> serde_json::Result<Vec<u8>> {
    let file = GroupFile {
        version: FORMAT_VERSION,
        group: Cow::Borrowed(group),
        offsets: offsets
            .iter()
            .flat_map(|(topic, partitions)| {
                partitions.iter().map(|(&partition, c)| FileEntry {
                    topic: Cow::Borrowed(topic),
                    partition,
                    offset: c.offset,
                    metadata: Cow::Borrowed(&c.metadata),
                    commit_timestamp_ms: c.commit_timestamp_ms,
                })
            })
            .collect(),
    };
    let mut bytes = serde_json::to_vec_pretty(&file)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// Reads a group file named `name`; the error is why it is damaged.
fn decode_file(bytes: &[u8], name: &str) -> Result<(String, Offsets), String> {
    let file: GroupFile<'static> =
        serde_json::from_slice(bytes).map_err(|e| format!("not a group offsets file: {e}"))?;
    if file.version != FORMAT_VERSION {
        return Err(format!("unsupported format version {}", file.version));
    }
    let expected = file_name(&file.group);
    if expected != name {
        return Err(format!(
            "it holds group {:?}, whose file would be {expected}",
            file.group
        ));
    }
    let mut offsets = Offsets::new();
    for e in file.offsets {
        let committed = CommittedOffset {
            offset: e.offset,
            metadata: e.metadata.into_owned(),
            commit_timestamp_ms: e.commit_timestamp_ms,
        };
        let partitions = offsets.entry(e.topic.into_owned()).or_default();
        if partitions.insert(e.partition, committed).is_some() {
            return Err(format!(
                "partition {} of a topic appears twice",
                e.partition
            ));
        }
    }
    Ok((file.group.into_owned(), offsets))
}

fn is_plain(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
}

/// The name of `group`'s file in `@groups` (see the module docs).
pub fn file_name(group: &str) -> String {
    let mut stem = String::with_capacity(group.len() + EXT.len());
    for &b in group.as_bytes() {
        if is_plain(b) {
            stem.push(char::from(b));
        } else {
            let _ = write!(stem, "%{b:02X}");
        }
    }
    if stem.len() > MAX_PLAIN_STEM {
        // Cut before an escape rather than inside one. The stem is ASCII.
        let mut cut = HASHED_PREFIX;
        if let Some(i) = stem[cut - 2..cut].find('%') {
            cut = cut - 2 + i;
        }
        stem.truncate(cut);
        stem.push('~');
        for b in &sha256(group.as_bytes())[..HASH_HEX / 2] {
            let _ = write!(stem, "{b:02x}");
        }
    }
    stem.push_str(EXT);
    stem
}

/// The group whose file is `name`, for names [`file_name`] gives to ids it does not hash.
pub fn group_from_file_name(name: &str) -> Option<String> {
    let stem = name.strip_suffix(EXT)?;
    if stem.contains('~') {
        return None;
    }
    let mut bytes = Vec::with_capacity(stem.len());
    let mut rest = stem.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    let group = String::from_utf8(bytes).ok()?;
    // Only the one name file_name gives (no lower-case hex, no escaped plain bytes, ...).
    (file_name(&group) == name).then_some(group)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

// The state behind every lock here is consistent between operations (each change is a single
// insert or remove), so a panic elsewhere while holding one does not poison the store.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

/// SHA-256 of a very long id, for its file name: a name clash would mix two groups, so the
/// hash must not collide even for ids chosen to.
fn sha256(data: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(data).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;
    use tempfile::TempDir;

    fn committed(offset: i64, metadata: &str, ts: i64) -> CommittedOffset {
        CommittedOffset {
            offset,
            metadata: metadata.to_owned(),
            commit_timestamp_ms: ts,
        }
    }

    fn group_path(dir: &TempDir, group: &str) -> PathBuf {
        dir.path().join(GROUPS_DIR).join(file_name(group))
    }

    fn files(dir: &TempDir) -> BTreeSet<String> {
        fs::read_dir(dir.path().join(GROUPS_DIR))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    }

    #[test]
    fn file_names_encode_ids_reversibly() {
        assert_eq!(file_name("my-group_1"), "my-group_1.json");
        assert_eq!(file_name("Orders.v2"), "%4Frders%2Ev2.json");
        assert_eq!(file_name(""), ".json");
        assert_eq!(file_name(".."), "%2E%2E.json");
        assert_eq!(file_name("a/b"), "a%2Fb.json");
        assert_eq!(file_name("é"), "%C3%A9.json");
        assert_eq!(
            group_from_file_name("%4Frders%2Ev2.json").as_deref(),
            Some("Orders.v2")
        );
        assert_eq!(group_from_file_name(".json").as_deref(), Some(""));
        // Only the names file_name gives.
        for name in [
            "%2e.json", "A.json", "%61.json", "a.b.json", "%4.json", "%FF.json", "a",
        ] {
            assert_eq!(group_from_file_name(name), None, "{name}");
        }
        let long = "x".repeat(10_000);
        let name = file_name(&long);
        assert!(name.len() <= 255 && name.contains('~'), "{name}");
        assert_eq!(group_from_file_name(&name), None);
        // The hash tells long ids with a shared prefix apart.
        assert_ne!(name, file_name(&format!("{long}y")));
        // A cut never splits an escape.
        for n in 150..170 {
            let id = format!("{}{}", "a".repeat(n), "É".repeat(40));
            let name = file_name(&id);
            let stem = name.split('~').next().unwrap();
            assert!(stem.len() <= HASHED_PREFIX);
            assert!(
                stem.rfind('%').is_none_or(|i| i + 3 <= stem.len()),
                "{name}"
            );
        }
    }

    #[test]
    fn commit_then_fetch() {
        let dir = TempDir::new().unwrap();
        let store = GroupOffsets::open(dir.path()).unwrap();
        assert!(store.groups().is_empty());
        assert_eq!(store.fetch("g", "t", 0), None);

        store
            .commit_at(
                "g",
                &[("t", 0, 10, "meta"), ("t", 1, 20, ""), ("u", 0, 5, "")],
                1_000,
            )
            .unwrap();
        assert_eq!(store.fetch("g", "t", 0), Some(committed(10, "meta", 1_000)));
        assert_eq!(store.fetch("g", "t", 1), Some(committed(20, "", 1_000)));
        assert_eq!(store.fetch("g", "t", 2), None);
        assert_eq!(store.fetch("g", "v", 0), None);
        assert_eq!(store.fetch("h", "t", 0), None);
        assert_eq!(store.groups(), ["g"]);
        assert_eq!(
            store.group("g"),
            [
                ("t".to_owned(), 0, committed(10, "meta", 1_000)),
                ("t".to_owned(), 1, committed(20, "", 1_000)),
                ("u".to_owned(), 0, committed(5, "", 1_000)),
            ]
        );
        assert!(store.group("h").is_empty());

        // `commit` stamps the current time.
        let before = now_ms();
        store.commit("g", &[("t", 0, 11, "")]).unwrap();
        let ts = store.fetch("g", "t", 0).unwrap().commit_timestamp_ms;
        assert!(ts >= before && ts <= now_ms());
        // Later entries for a partition win within a commit; an empty commit does nothing.
        store
            .commit_at("g", &[("t", 0, 12, "a"), ("t", 0, 13, "b")], 2_000)
            .unwrap();
        assert_eq!(store.fetch("g", "t", 0), Some(committed(13, "b", 2_000)));
        store.commit("new", &[]).unwrap();
        assert_eq!(store.groups(), ["g"]);
        assert_eq!(files(&dir), BTreeSet::from(["g.json".to_owned()]));
    }

    #[test]
    fn the_file_is_versioned_json_holding_the_group_id() {
        let dir = TempDir::new().unwrap();
        let store = GroupOffsets::open(dir.path()).unwrap();
        store
            .commit_at("Group/1", &[("t", 3, 7, "m"), ("a", 0, -1, "")], 42)
            .unwrap();
        let bytes = fs::read(group_path(&dir, "Group/1")).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "version": 1,
                "group": "Group/1",
                "offsets": [
                    {"topic": "a", "partition": 0, "offset": -1, "metadata": "",
                     "commit_timestamp_ms": 42},
                    {"topic": "t", "partition": 3, "offset": 7, "metadata": "m",
                     "commit_timestamp_ms": 42},
                ],
            })
        );
    }

    #[test]
    fn partial_commits_merge() {
        let dir = TempDir::new().unwrap();
        let store = GroupOffsets::open(dir.path()).unwrap();
        store
            .commit_at("g", &[("t", 0, 1, "a"), ("t", 1, 1, "a")], 1)
            .unwrap();
        store.commit_at("g", &[("t", 1, 2, "b")], 2).unwrap();
        store.commit_at("g", &[("u", 0, 3, "c")], 3).unwrap();
        let expected = [
            ("t".to_owned(), 0, committed(1, "a", 1)),
            ("t".to_owned(), 1, committed(2, "b", 2)),
            ("u".to_owned(), 0, committed(3, "c", 3)),
        ];
        assert_eq!(store.group("g"), expected);
        drop(store);
        assert_eq!(GroupOffsets::open(dir.path()).unwrap().group("g"), expected);
    }

    #[test]
    fn offsets_survive_a_restart() {
        let dir = TempDir::new().unwrap();
        let store = GroupOffsets::open(dir.path()).unwrap();
        store.commit_at("a", &[("t", 0, 100, "x")], 5).unwrap();
        store
            .commit_at("b", &[("t", 0, 200, ""), ("t", 7, i64::MAX, "y")], 6)
            .unwrap();
        store.commit_at("c", &[("t", 0, 1, "")], 7).unwrap();
        assert!(store.delete_group("c").unwrap());
        assert!(!store.delete_group("c").unwrap());
        let (groups, a, b) = (store.groups(), store.group("a"), store.group("b"));
        drop(store);

        let store = GroupOffsets::open(dir.path()).unwrap();
        assert!(store.damaged().is_empty());
        assert_eq!(store.groups(), groups);
        assert_eq!(store.groups(), ["a", "b"]);
        assert_eq!(store.group("a"), a);
        assert_eq!(store.group("b"), b);
        assert_eq!(store.fetch("b", "t", 7), Some(committed(i64::MAX, "y", 6)));
        assert_eq!(
            files(&dir),
            BTreeSet::from(["a.json".to_owned(), "b.json".to_owned()])
        );
    }

    #[test]
    fn awkward_group_ids_round_trip() {
        let ids: Vec<String> = [
            "",
            "/",
            "..",
            ".",
            "./",
            "a/../b",
            "\0",
            "%",
            "%41",
            "A",
            "a",
            "Group",
            "group",
            "GROUP",
            "~",
            "a~b",
            "x.tmp",
            "x.json",
            " ",
            "\n",
            "über-gruppe",
            "日本語",
            "😀",
            "con",
            "nul",
        ]
        .into_iter()
        .map(str::to_owned)
        .chain([
            "x".repeat(10_000),
            format!("{}y", "x".repeat(9_999)),
            "é".repeat(5_000),
            "/".repeat(300),
            "a".repeat(200),
            "a".repeat(201),
        ])
        .collect();

        let names: Vec<String> = ids.iter().map(|id| file_name(id)).collect();
        let mut folded = BTreeSet::new();
        for (id, name) in ids.iter().zip(&names) {
            assert!(name.len() <= 255, "{name}");
            assert!(name.ends_with(EXT) && !name.ends_with(TMP_EXT), "{name}");
            assert!(!name.contains(['/', '\\', '\0']) && name != "." && name != "..");
            assert_eq!(name.matches('.').count(), 1, "{name}");
            // Distinct even on a case-insensitive file system.
            assert!(
                folded.insert(name.to_ascii_lowercase()),
                "{id:?} clashes: {name}"
            );
            if !name.contains('~') {
                assert_eq!(group_from_file_name(name).as_ref(), Some(id));
            }
        }

        let dir = TempDir::new().unwrap();
        let store = GroupOffsets::open(dir.path()).unwrap();
        for (i, id) in ids.iter().enumerate() {
            store.commit_at(id, &[("t", 0, i as i64, id)], 1).unwrap();
        }
        let sorted: Vec<String> = ids
            .iter()
            .cloned()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(store.groups(), sorted);
        assert_eq!(files(&dir), names.iter().cloned().collect());
        drop(store);

        for store in [
            GroupOffsets::open(dir.path()).unwrap(),
            GroupOffsets::open_read_only(dir.path()).unwrap(),
        ] {
            assert!(store.damaged().is_empty(), "{:?}", store.damaged());
            assert_eq!(store.groups(), sorted);
            for (i, id) in ids.iter().enumerate() {
                assert_eq!(
                    store.fetch(id, "t", 0),
                    Some(committed(i as i64, id, 1)),
                    "{id:?}"
                );
            }
        }
        // Nothing escaped the directory.
        let top: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(top.len(), 1);
    }

    #[test]
    fn leftover_temp_files_are_ignored_and_the_writer_removes_them() {
        let dir = TempDir::new().unwrap();
        let store = GroupOffsets::open(dir.path()).unwrap();
        store.commit_at("g", &[("t", 0, 1, "")], 1).unwrap();
        drop(store);
        // As a crash leaves them: a torn new version of g, and a first file of h (named as
        // earlier versions named their temp files).
        let groups = dir.path().join(GROUPS_DIR);
        let torn = groups.join("g.tmp");
        let partial = groups.join("h.json.999-4.tmp");
        fs::write(&torn, b"{\"version\": 1, \"group\": \"g\", \"offs").unwrap();
        fs::write(&partial, b"").unwrap();

        let ro = GroupOffsets::open_read_only(dir.path()).unwrap();
        assert_eq!(ro.groups(), ["g"]);
        assert!(ro.damaged().is_empty());
        assert!(
            torn.exists() && partial.exists(),
            "read-only removes nothing"
        );

        let store = GroupOffsets::open(dir.path()).unwrap();
        assert_eq!(store.groups(), ["g"]);
        assert!(store.damaged().is_empty());
        assert_eq!(store.fetch("g", "t", 0), Some(committed(1, "", 1)));
        assert_eq!(files(&dir), BTreeSet::from(["g.json".to_owned()]));
        // And commits leave none behind.
        store.commit_at("g", &[("t", 0, 2, "")], 2).unwrap();
        store.commit_at("h", &[("t", 0, 2, "")], 2).unwrap();
        assert_eq!(
            files(&dir),
            BTreeSet::from(["g.json".to_owned(), "h.json".to_owned()])
        );
    }

    #[test]
    fn damaged_files_are_reported_skipped_and_kept_until_their_group_commits() {
        let dir = TempDir::new().unwrap();
        let store = GroupOffsets::open(dir.path()).unwrap();
        for g in ["good", "bad", "Trunc", "other", "moved"] {
            store.commit_at(g, &[("t", 0, 1, "")], 1).unwrap();
        }
        drop(store);
        let bad = group_path(&dir, "bad");
        let trunc = group_path(&dir, "Trunc");
        let other = group_path(&dir, "other");
        fs::write(&bad, b"not json at all").unwrap();
        let bytes = fs::read(&trunc).unwrap();
        fs::write(&trunc, &bytes[..bytes.len() / 2]).unwrap();
        // A valid file under another group's name.
        fs::rename(group_path(&dir, "moved"), &other).unwrap();
        // A future format.
        let future = group_path(&dir, "future");
        fs::write(
            &future,
            br#"{"version": 2, "group": "future", "offsets": []}"#,
        )
        .unwrap();
        let snapshot = |p: &Path| fs::read(p).unwrap();
        let before: Vec<_> = [&bad, &trunc, &other, &future].map(|p| snapshot(p)).into();

        for store in [
            GroupOffsets::open(dir.path()).unwrap(),
            GroupOffsets::open_read_only(dir.path()).unwrap(),
        ] {
            assert_eq!(store.groups(), ["good"]);
            let damaged = store.damaged();
            let found: Vec<_> = damaged
                .iter()
                .map(|d| (d.path.clone(), d.group.clone()))
                .collect();
            assert_eq!(
                found,
                [
                    (trunc.clone(), Some("Trunc".to_owned())),
                    (bad.clone(), Some("bad".to_owned())),
                    (future.clone(), Some("future".to_owned())),
                    (other.clone(), Some("other".to_owned())),
                ]
            );
            assert!(damaged[2].reason.contains("version 2"), "{}", damaged[2]);
            assert!(damaged[3].reason.contains("\"moved\""), "{}", damaged[3]);
            for d in damaged {
                assert!(d.to_string().contains(&*d.path.to_string_lossy()), "{d}");
            }
        }

        // Other groups' commits leave the damaged files alone...
        let store = GroupOffsets::open(dir.path()).unwrap();
        store.commit_at("good", &[("t", 0, 2, "")], 2).unwrap();
        let after: Vec<_> = [&bad, &trunc, &other, &future].map(|p| snapshot(p)).into();
        assert_eq!(before, after);
        // ...until their own group commits again, starting from nothing.
        store.commit_at("bad", &[("u", 1, 9, "")], 3).unwrap();
        assert_eq!(
            store.group("bad"),
            [("u".to_owned(), 1, committed(9, "", 3))]
        );
        drop(store);
        let store = GroupOffsets::open(dir.path()).unwrap();
        assert_eq!(store.groups(), ["bad", "good"]);
        assert_eq!(store.damaged().len(), 3);
        // Deleting a group removes its damaged file.
        assert!(store.delete_group("Trunc").unwrap());
        assert!(!trunc.exists());
    }

    #[test]
    fn read_only_sees_commits_when_reopened_and_changes_nothing() {
        let dir = TempDir::new().unwrap();
        let ro = GroupOffsets::open_read_only(dir.path()).unwrap();
        assert!(ro.groups().is_empty() && ro.is_read_only());
        assert!(
            !dir.path().join(GROUPS_DIR).exists(),
            "read-only creates nothing"
        );

        let store = GroupOffsets::open(dir.path()).unwrap();
        store.commit_at("g", &[("t", 0, 1, "")], 1).unwrap();
        let ro = GroupOffsets::open_read_only(dir.path()).unwrap();
        assert_eq!(ro.fetch("g", "t", 0), Some(committed(1, "", 1)));
        // A snapshot: later commits show after opening again.
        store.commit_at("g", &[("t", 0, 2, "")], 2).unwrap();
        store.commit_at("h", &[("t", 0, 3, "")], 3).unwrap();
        assert_eq!(ro.fetch("g", "t", 0), Some(committed(1, "", 1)));
        let ro = GroupOffsets::open_read_only(dir.path()).unwrap();
        assert_eq!(ro.fetch("g", "t", 0), Some(committed(2, "", 2)));
        assert_eq!(ro.groups(), ["g", "h"]);

        let err = ro.commit("g", &[("t", 0, 9, "")]).unwrap_err();
        assert!(matches!(err, LogError::ReadOnly { .. }), "{err}");
        assert!(
            err.to_string().contains(&*ro.dir().to_string_lossy()),
            "{err}"
        );
        assert!(matches!(
            ro.delete_group("g"),
            Err(LogError::ReadOnly { .. })
        ));
        assert_eq!(ro.fetch("g", "t", 0), Some(committed(2, "", 2)));
        assert_eq!(store.fetch("g", "t", 0), Some(committed(2, "", 2)));
        assert_eq!(store.groups(), ["g", "h"]);
    }

    #[test]
    fn a_failed_commit_leaves_memory_as_it_was() {
        let dir = TempDir::new().unwrap();
        let store = GroupOffsets::open(dir.path()).unwrap();
        store.commit_at("g", &[("t", 0, 1, "")], 1).unwrap();

        // The rename fails: a non-empty directory where the file goes.
        let path = group_path(&dir, "g");
        fs::remove_file(&path).unwrap();
        fs::create_dir(&path).unwrap();
        fs::write(path.join("x"), b"").unwrap();
        let err = store
            .commit_at("g", &[("t", 0, 2, ""), ("t", 1, 2, "")], 2)
            .unwrap_err();
        assert!(
            matches!(&err, LogError::Io { path: p, .. } if *p == path),
            "{err}"
        );
        assert!(err.to_string().contains(&*path.to_string_lossy()), "{err}");
        assert_eq!(store.group("g"), [("t".to_owned(), 0, committed(1, "", 1))]);
        // The temp file is gone.
        let names = files(&dir);
        assert!(names.iter().all(|n| !n.ends_with(TMP_EXT)), "{names:?}");
        fs::remove_dir_all(&path).unwrap();

        // Creating the temp file fails: the directory is gone.
        let groups = dir.path().join(GROUPS_DIR);
        let moved = dir.path().join("moved");
        fs::rename(&groups, &moved).unwrap();
        let err = store.commit_at("g", &[("t", 0, 3, "")], 3).unwrap_err();
        let tmp = groups.join("g.tmp");
        assert!(
            matches!(&err, LogError::Io { path, .. } if *path == tmp),
            "{err}"
        );
        assert!(
            err.to_string().contains(&*groups.to_string_lossy()),
            "{err}"
        );
        assert_eq!(store.group("g"), [("t".to_owned(), 0, committed(1, "", 1))]);
        assert!(store.delete_group("g").is_ok_and(|deleted| deleted));
        assert!(store.groups().is_empty());
        fs::remove_dir_all(&moved).unwrap();
        fs::create_dir(&groups).unwrap();

        // Working again.
        store.commit_at("g", &[("t", 1, 4, "")], 4).unwrap();
        drop(store);
        let store = GroupOffsets::open(dir.path()).unwrap();
        assert_eq!(store.group("g"), [("t".to_owned(), 1, committed(4, "", 4))]);
    }

    #[test]
    fn concurrent_commits_lose_nothing() {
        const THREADS: u32 = 4;
        const COMMITS: i64 = 25;
        let dir = TempDir::new().unwrap();
        let store = GroupOffsets::open(dir.path()).unwrap();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let store = &store;
                s.spawn(move || {
                    let own = format!("group-{t}");
                    let topic = format!("t{t}");
                    for i in 0..COMMITS {
                        // Its own group, and its own partition of a shared group and topic,
                        // plus a partition of its own topic there.
                        store.commit(&own, &[("t", t, i, "own")]).unwrap();
                        store
                            .commit("shared", &[("t", t, i, &own), (&topic, 0, i, "")])
                            .unwrap();
                    }
                });
            }
        });
        let check = |store: &GroupOffsets| {
            assert_eq!(store.groups().len(), THREADS as usize + 1);
            for t in 0..THREADS {
                let own = format!("group-{t}");
                let latest = store.fetch(&own, "t", t).unwrap();
                assert_eq!(
                    (latest.offset, latest.metadata.as_str()),
                    (COMMITS - 1, "own")
                );
                let latest = store.fetch("shared", "t", t).unwrap();
                assert_eq!((latest.offset, latest.metadata), (COMMITS - 1, own));
                let latest = store.fetch("shared", &format!("t{t}"), 0).unwrap();
                assert_eq!(latest.offset, COMMITS - 1);
            }
            assert_eq!(store.group("shared").len(), 2 * THREADS as usize);
        };
        check(&store);
        assert!(lock(&store.writing).is_empty(), "write locks are forgotten");
        drop(store);
        check(&GroupOffsets::open(dir.path()).unwrap());
    }

    /// What a store should hold: group -> (topic, partition) -> (offset, metadata, timestamp).
    type Model = BTreeMap<String, BTreeMap<(String, u32), (i64, String, i64)>>;

    #[derive(Debug, Clone)]
    enum Op {
        Commit {
            group: usize,
            entries: Vec<(usize, u32, i64, usize)>,
        },
        Delete(usize),
        Reopen,
    }

    fn group_ids() -> Vec<String> {
        let mut ids: Vec<String> = ["", "a", "A", "..", "g/1", "ü"].map(str::to_owned).into();
        ids.push("L".repeat(300));
        ids.push(format!("{}x", "L".repeat(300)));
        ids
    }
    const TOPICS: [&str; 3] = ["t", "T", "a.b"];
    const METADATA: [&str; 3] = ["", "m", "ünï \"quoted\""];

    fn arb_op() -> impl Strategy<Value = Op> {
        let n = group_ids().len();
        prop_oneof![
            6 => (
                0..n,
                proptest::collection::vec((0..TOPICS.len(), 0u32..3, any::<i64>(), 0..METADATA.len()), 0..5),
            )
                .prop_map(|(group, entries)| Op::Commit { group, entries }),
            1 => (0..n).prop_map(Op::Delete),
            1 => Just(Op::Reopen),
        ]
    }

    fn assert_matches_model(store: &GroupOffsets, model: &Model) {
        assert!(store.damaged().is_empty());
        assert_eq!(store.groups(), model.keys().cloned().collect::<Vec<_>>());
        for (group, offsets) in model {
            let expected: Vec<_> = offsets
                .iter()
                .map(|((t, p), (o, m, ts))| (t.clone(), *p, committed(*o, m, *ts)))
                .collect();
            assert_eq!(store.group(group), expected, "{group:?}");
            for ((t, p), (o, m, ts)) in offsets {
                assert_eq!(store.fetch(group, t, *p), Some(committed(*o, m, *ts)));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn random_commits_match_a_model(ops in proptest::collection::vec(arb_op(), 1..30)) {
            let ids = group_ids();
            let dir = TempDir::new().unwrap();
            let mut store = GroupOffsets::open(dir.path()).unwrap();
            let mut model = Model::new();
            for (step, op) in ops.into_iter().enumerate() {
                let ts = step as i64;
                match op {
                    Op::Commit { group, entries } => {
                        let entries: Vec<_> = entries
                            .into_iter()
                            .map(|(t, p, o, m)| (TOPICS[t], p, o, METADATA[m]))
                            .collect();
                        store.commit_at(&ids[group], &entries, ts).unwrap();
                        if !entries.is_empty() {
                            let offsets = model.entry(ids[group].clone()).or_default();
                            for (t, p, o, m) in entries {
                                offsets.insert((t.to_owned(), p), (o, m.to_owned(), ts));
                            }
                        }
                    }
                    Op::Delete(group) => {
                        let deleted = store.delete_group(&ids[group]).unwrap();
                        prop_assert_eq!(deleted, model.remove(&ids[group]).is_some());
                    }
                    Op::Reopen => {
                        drop(store);
                        store = GroupOffsets::open(dir.path()).unwrap();
                    }
                }
                assert_matches_model(&store, &model);
            }
            assert_matches_model(&GroupOffsets::open_read_only(dir.path()).unwrap(), &model);
            drop(store);
            assert_matches_model(&GroupOffsets::open(dir.path()).unwrap(), &model);
            prop_assert_eq!(files(&dir).len(), model.len());
        }
    }
}
