//! The embedded log: topics split into partitions, each a sequence of segments holding Kafka
//! RecordBatch v2 batches byte for byte as Kafka stores them, so the Kafka API listener serves
//! file bytes as they are.
//!
//! On disk, under `dir`:
//! ```text
//! @lock                          held by the one writer (`tributary run`)
//! @clean                         present after a clean shutdown: recovery can skip scanning
//! @groups/                       consumer-group offsets
//! <topic>/topic.json             {"partitions": N}, fixed when the topic is created
//! <topic>/<partition>/<base>.log, .index, .timeindex
//! ```
//! ('@' cannot appear in a topic name, so these never clash with a topic.)
//!
//! - `batch`: the RecordBatch v2 codec.
//! - `index`: sparse offset and time indexes.
//! - `segment`: one segment's files, scanning, recovery and reads.
//! - `partition`: segments of a partition; the shared read side and the writer's operations.
//! - `read`: iterators over a partition's batches and records in order, from any offset.
//! - `writer`: the per-partition writer task with group commit.
//! - `offsets`: durable consumer-group offsets.

pub mod batch;
pub mod index;
pub mod offsets;
pub mod partition;
pub mod positions;
pub mod read;
pub mod segment;
pub mod writer;

use crate::config::{EmbeddedConfig, FsyncPolicy, TopicsConfig};
use crate::record::{check_topic_name, Record};
pub use partition::PartitionShared;
use partition::{partition_dir, PartitionWriter, WriterOptions};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::fs::File;
use std::future::Future;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use thiserror::Error;
use tokio::task::JoinHandle;
use writer::{Durability, PartitionHandle};

/// A position in a partition.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Offset(pub u64);

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Debug, Clone, Error)]
pub enum LogError {
    /// The I/O error is in the message, not the `source` chain, so it prints once.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: Arc<io::Error>,
    },
    #[error("{path}: corrupt data at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    #[error("{dir}: another process is writing to this log (it holds {dir}/@lock); one `tributary run` per log directory")]
    Locked { dir: PathBuf },
    #[error(
        "{topic}/{partition}: offset {offset} is out of range; the log holds {start} to {end}"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        offset: Offset,
        start: Offset,
        end: Offset,
    },
    #[error("topic {topic} has {partitions} partitions; there is no partition {partition}")]
    NoSuchPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("no topic {0} in the log")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("cannot append: {0}")]
    TooLarge(String),
    #[error("{0}: the partition writer has stopped")]
    Closed(String),
    /// A batch read from the log whose records cannot be decoded here: compressed by a Kafka
    /// producer, or damaged behind a matching CRC. The batch itself is served as it is.
    #[error("{topic}/{partition}: batch at offset {offset}: {error}")]
    Undecodable {
        topic: String,
        partition: u32,
        offset: Offset,
        error: batch::BatchError,
    },
    /// A change asked of consumer-group offsets opened read-only (`GroupOffsets::open_read_only`).
    #[error("{dir}: consumer-group offsets opened read-only cannot be changed")]
    ReadOnly { dir: PathBuf },
}

impl LogError {
    pub fn io(path: &Path, e: io::Error) -> LogError {
        LogError::Io {
            path: path.to_path_buf(),
            error: Arc::new(e),
        }
    }
}

/// Makes a directory's entries (new or renamed files) durable.
pub fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, e))
}

/// Writes `bytes` to `path` atomically and durably: a temp file beside it (`path` with the
/// extension `tmp`), fsync, rename, fsync the directory. A crash leaves the old file or the new
/// one; a failure leaves the old one and removes the temp file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = path.with_extension("tmp");
    let written = File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|_| f.sync_all()))
        .map_err(|e| LogError::io(&tmp, e))
        .and_then(|_| std::fs::rename(&tmp, path).map_err(|e| LogError::io(path, e)));
    if written.is_err() {
        // Best effort: a leftover temp file is only litter.
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(dir)
}

/// How the embedded log is set up; built from `log.embedded` and `topics`.
#[derive(Debug, Clone)]
pub struct LogOptions {
    pub dir: PathBuf,
    pub segment_bytes: u64,
    pub fsync: FsyncPolicy,
    pub fsync_interval: Duration,
    pub retention_time: Option<Duration>,
    pub retention_bytes: Option<u64>,
    pub retention_check: Duration,
    pub topics: TopicsConfig,
}

impl LogOptions {
    pub fn new(embedded: &EmbeddedConfig, topics: &TopicsConfig) -> Self {
        LogOptions {
            dir: embedded.dir.clone(),
            segment_bytes: embedded.segment_bytes.0,
            fsync: embedded.fsync,
            fsync_interval: embedded.fsync_interval.0,
            retention_time: embedded.retention.time.map(|t| t.0),
            retention_bytes: embedded.retention.bytes.map(|b| b.0),
            retention_check: Duration::from_secs(60),
            topics: topics.clone(),
        }
    }

    fn writer(&self) -> WriterOptions {
        WriterOptions {
            segment_bytes: self.segment_bytes,
            retention_time: self.retention_time,
            retention_bytes: self.retention_bytes,
        }
    }

    fn durability(&self) -> Durability {
        Durability {
            fsync: self.fsync,
            interval: self.fsync_interval,
            retention_check: self.retention_check,
        }
    }
}

/// What `topic.json` holds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct TopicMeta {
    partitions: u32,
}

const LOCK_FILE: &str = "@lock";
const CLEAN_FILE: &str = "@clean";
const TOPIC_FILE: &str = "topic.json";

/// The log, opened by its single writer.
#[derive(Debug)]
pub struct Log {
    options: LogOptions,
    /// The partition counts topics are created with (`options.topics`, then reloads).
    new_topics: RwLock<TopicsConfig>,
    topics: RwLock<HashMap<String, Arc<[PartitionHandle]>>>,
    tasks: Mutex<Vec<JoinHandle<Result<(), LogError>>>>,
    /// Shared with every writer task: the lock holds until the last of them has stopped.
    lock: Arc<File>,
}

/// One partition's extent, for `tributary topics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: u32,
    pub start: Offset,
    pub end: Offset,
    pub bytes: u64,
}

impl Log {
    /// Opens the log in `options.dir` (creating it), takes the writer lock, recovers every
    /// partition and starts their writers.
    pub async fn open(options: LogOptions) -> Result<Log, LogError> {
        let dir = options.dir.clone();
        tokio::task::spawn_blocking(move || Log::open_blocking(options))
            .await
            .map_err(|e| LogError::Closed(format!("{}: opening: {e}", dir.display())))?
    }

    fn open_blocking(options: LogOptions) -> Result<Log, LogError> {
        let dir = &options.dir;
        std::fs::create_dir_all(dir).map_err(|e| LogError::io(dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LogError::io(&lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(LogError::Locked { dir: dir.clone() })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(LogError::io(&lock_path, e)),
        }
        let clean_path = dir.join(CLEAN_FILE);
        let clean = clean_path.exists();
        if clean {
            // From here on a crash is an unclean shutdown again.
            std::fs::remove_file(&clean_path).map_err(|e| LogError::io(&clean_path, e))?;
            sync_dir(dir)?;
        }
        let log = Log {
            new_topics: RwLock::new(options.topics.clone()),
            options: options.clone(),
            topics: RwLock::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            lock: Arc::new(lock),
        };
        for (topic, meta) in read_topics(dir)? {
            log.start_topic(&topic, meta.partitions, clean)?;
        }
        Ok(log)
    }

    fn start_topic(
        &self,
        topic: &str,
        partitions: u32,
        clean: bool,
    ) -> Result<Arc<[PartitionHandle]>, LogError> {
        let name: Arc<str> = topic.into();
        let mut handles = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let dir = partition_dir(&self.options.dir, topic, p);
            let writer = PartitionWriter::open(name.clone(), p, dir, clean, self.options.writer())?;
            let (handle, task) = writer::spawn(writer, self.options.durability());
            // A Log dropped without `close` leaves its writers running until they have written
            // what was queued: the lock must hold until then, or another writer could open
            // the same files meanwhile and both would write them.
            let lock = self.lock.clone();
            let task = tokio::spawn(async move {
                let result = task.await;
                drop(lock);
                result.unwrap_or_else(|e| Err(LogError::Closed(format!("writer task: {e}"))))
            });
            handles.push(handle);
            self.tasks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(task);
        }
        let handles: Arc<[PartitionHandle]> = handles.into();
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(topic.to_string(), handles.clone());
        Ok(handles)
    }

    /// The partitions of `topic`, creating the topic (with its configured partition count,
    /// fixed from then on) when it does not exist yet.
    fn topic(&self, topic: &str) -> Result<Arc<[PartitionHandle]>, LogError> {
        if let Some(t) = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
        {
            return Ok(t.clone());
        }
        let partitions = self.configured_partitions(topic);
        self.create(topic, partitions)
    }

    fn create(&self, topic: &str, partitions: u32) -> Result<Arc<[PartitionHandle]>, LogError> {
        check_topic_name(topic).map_err(LogError::InvalidTopic)?;
        // Creation is rare; one at a time, and check again once it is our turn.
        static CREATE: Mutex<()> = Mutex::new(());
        let _guard = CREATE.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
        {
            return Ok(t.clone());
        }
        let topic_dir = self.options.dir.join(topic);
        std::fs::create_dir_all(&topic_dir).map_err(|e| LogError::io(&topic_dir, e))?;
        sync_dir(&self.options.dir)?;
        let meta = serde_json::to_vec(&TopicMeta { partitions }).unwrap_or_default();
        write_atomic(&topic_dir.join(TOPIC_FILE), &meta)?;
        tracing::info!(topic, partitions, "created topic");
        self.start_topic(topic, partitions, true)
    }

    /// Appends `records` to one partition: queued at once, in call order (creating the topic
    /// if needed), and resolving with their offsets once durable.
    pub fn append(
        &self,
        topic: &str,
        partition: u32,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Range<Offset>, LogError>> + Send + 'static {
        let submitted = self.handle(topic, partition).map(|h| h.append(records));
        async move { submitted?.await }
    }

    /// Appends batches a Kafka producer encoded to one partition (creating the topic if needed).
    pub fn append_batches(
        &self,
        topic: &str,
        partition: u32,
        batches: bytes::Bytes,
    ) -> impl Future<Output = Result<Range<Offset>, LogError>> + Send + 'static {
        let submitted = self
            .handle(topic, partition)
            .map(|h| h.append_batches(batches));
        async move { submitted?.await }
    }

    /// The writer of one partition, creating the topic if needed.
    fn handle(&self, topic: &str, partition: u32) -> Result<PartitionHandle, LogError> {
        let partitions = self.topic(topic)?;
        partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| LogError::NoSuchPartition {
                topic: topic.to_string(),
                partition,
                partitions: partitions.len() as u32,
            })
    }

    /// Lifts every partition's fence after a failed write (see `PartitionHandle::resume`).
    pub fn resume(&self) {
        for partitions in self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            partitions.iter().for_each(PartitionHandle::resume);
        }
    }

    /// Creates `topic` with `partitions` if it does not exist; false when it already did.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<bool, LogError> {
        if self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(topic)
        {
            return Ok(false);
        }
        self.create(topic, partitions).map(|_| true)
    }

    /// The partition count of `topic`: the count it has, or the one it will be created with.
    /// The log owns this fact; the router asks it for every record.
    pub fn partitions(&self, topic: &str) -> u32 {
        match self
            .topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
        {
            Some(partitions) => partitions.len() as u32,
            None => self.configured_partitions(topic),
        }
    }

    /// The count a topic not created yet gets, per the config's `topics`.
    fn configured_partitions(&self, topic: &str) -> u32 {
        let topics = self.new_topics.read().unwrap_or_else(|e| e.into_inner());
        topics.get(topic).partitions
    }

    /// Takes a reloaded config's `topics`: the counts of topics created from now on.
    pub fn set_topics(&self, topics: &TopicsConfig) {
        *self.new_topics.write().unwrap_or_else(|e| e.into_inner()) = topics.clone();
    }

    /// The partition count of `topic` if it exists.
    pub fn existing_partitions(&self, topic: &str) -> Option<u32> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .map(|p| p.len() as u32)
    }

    /// Bytes on disk over every partition.
    pub fn size_bytes(&self) -> u64 {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .values()
            .flat_map(|ps| ps.iter())
            .map(|h| h.shared.size_bytes())
            .sum()
    }

    /// Partition counts of the topics on disk: these win over the config, which only sets the
    /// count of topics still to be created.
    pub fn partition_counts(&self) -> BTreeMap<String, u32> {
        self.topics
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(t, p)| (t.clone(), p.len() as u32))
            .collect()
    }

    /// The read side of a partition.
    pub fn partition(&self, topic: &str, partition: u32) -> Option<Arc<PartitionShared>> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .get(topic)?
            .get(partition as usize)
            .map(|h| h.shared.clone())
    }

    /// Every topic and its partitions' extents.
    pub fn topics(&self) -> BTreeMap<String, Vec<PartitionInfo>> {
        let topics = self.topics.read().unwrap_or_else(|e| e.into_inner());
        topics
            .iter()
            .map(|(t, ps)| (t.clone(), ps.iter().map(|h| info(&h.shared)).collect()))
            .collect()
    }

    /// Stops the writers once every append in flight is durable, closes the files and marks the
    /// shutdown clean.
    pub async fn close(self) -> Result<(), LogError> {
        self.topics
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        let mut result = Ok(());
        for task in tasks {
            let r = task
                .await
                .map_err(|e| LogError::Closed(e.to_string()))
                .and_then(|r| r);
            if let Err(e) = r {
                result = Err(e);
            }
        }
        result?;
        let clean = self.options.dir.join(CLEAN_FILE);
        File::create(&clean).map_err(|e| LogError::io(&clean, e))?;
        sync_dir(&self.options.dir)
    }
}

fn info(p: &PartitionShared) -> PartitionInfo {
    PartitionInfo {
        partition: p.partition,
        start: p.start_offset(),
        end: p.end_offset(),
        bytes: p.size_bytes(),
    }
}

/// The topics in a log directory with their metadata.
fn read_topics(dir: &Path) -> Result<BTreeMap<String, TopicMeta>, LogError> {
    let mut topics = BTreeMap::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(topics),
        Err(e) => return Err(LogError::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| LogError::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let meta_path = entry.path().join(TOPIC_FILE);
        if check_topic_name(&name).is_err() || !meta_path.is_file() {
            continue;
        }
        let bytes = std::fs::read(&meta_path).map_err(|e| LogError::io(&meta_path, e))?;
        let meta: TopicMeta = serde_json::from_slice(&bytes).map_err(|e| LogError::Corrupt {
            path: meta_path.clone(),
            position: 0,
            reason: e.to_string(),
        })?;
        topics.insert(name, meta);
    }
    Ok(topics)
}

/// A log opened for reading only, as the `topics` and `consume` commands do while `run` may be
/// writing: nothing on disk changes.
#[derive(Debug)]
pub struct LogReader {
    dir: PathBuf,
    topics: BTreeMap<String, u32>,
}

impl LogReader {
    pub fn open(dir: &Path) -> Result<LogReader, LogError> {
        if !dir.is_dir() {
            return Err(LogError::io(
                dir,
                io::Error::new(
                    io::ErrorKind::NotFound,
                    "no log here yet; `tributary run` creates it",
                ),
            ));
        }
        let topics = read_topics(dir)?
            .into_iter()
            .map(|(t, m)| (t, m.partitions))
            .collect();
        Ok(LogReader {
            dir: dir.to_path_buf(),
            topics,
        })
    }

    /// Topic names and partition counts.
    pub fn topic_names(&self) -> &BTreeMap<String, u32> {
        &self.topics
    }

    /// Opens one partition as it is on disk now; open it again to see what was added since.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<PartitionShared, LogError> {
        let partitions = *self
            .topics
            .get(topic)
            .ok_or_else(|| LogError::UnknownTopic(topic.to_string()))?;
        if partition >= partitions {
            return Err(LogError::NoSuchPartition {
                topic: topic.to_string(),
                partition,
                partitions,
            });
        }
        PartitionShared::open_read_only(
            topic.into(),
            partition,
            partition_dir(&self.dir, topic, partition),
        )
    }

    /// Every topic and its partitions' extents.
    pub fn topics(&self) -> Result<BTreeMap<String, Vec<PartitionInfo>>, LogError> {
        let mut out = BTreeMap::new();
        for (topic, &n) in &self.topics {
            let infos = (0..n)
                .map(|p| self.partition(topic, p).map(|s| info(&s)))
                .collect::<Result<_, _>>()?;
            out.insert(topic.clone(), infos);
        }
        Ok(out)
    }
}
