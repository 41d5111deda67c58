//! The writer task of one partition: takes appends, writes them at once, and group-commits:
//! one fsync covers every append written before it started, and an append is answered only
//! when it is durable under the fsync policy. While an fsync runs, new appends keep being
//! written; they wait for the next one.

use super::partition::{PartitionShared, PartitionWriter, SyncPoint};
use super::{LogError, Offset};
use crate::config::FsyncPolicy;
use crate::message::now_ms;
use crate::record::Record;
use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Appends merged into one batch stop growing it past about this many bytes.
const MERGE_BYTES: usize = 1 << 20;

type Reply = oneshot::Sender<Result<Range<Offset>, LogError>>;

struct Append {
    payload: Payload,
    reply: Reply,
}

/// What an append carries: records to encode, or batches a Kafka producer encoded; or the
/// word that the appender has seen a failure and the fence can go.
enum Payload {
    Records(Vec<Record>),
    Batches(bytes::Bytes),
    Resume,
}

impl Payload {
    fn size(&self) -> usize {
        match self {
            Payload::Records(r) => r.iter().map(record_size).sum(),
            Payload::Batches(b) => b.len(),
            Payload::Resume => 0,
        }
    }
}

/// How a partition's writer makes appends durable.
#[derive(Debug, Clone, Copy)]
pub struct Durability {
    pub fsync: FsyncPolicy,
    /// The least time between fsyncs under `interval`.
    pub interval: Duration,
    /// How often retention runs.
    pub retention_check: Duration,
}

/// A handle for appending to one partition; cheap to clone.
#[derive(Debug, Clone)]
pub struct PartitionHandle {
    /// Unbounded: an append is queued the moment it is made, which fixes its order. Callers
    /// bound what is in flight (the pipeline by `mqtt.max_inflight`).
    tx: mpsc::UnboundedSender<Append>,
    pub shared: Arc<PartitionShared>,
}

impl PartitionHandle {
    /// Appends `records`: queued at once, in call order, and resolving with their offsets once
    /// they are durable.
    pub fn append(
        &self,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Range<Offset>, LogError>> + Send + 'static {
        self.submit(Payload::Records(records))
    }

    /// Appends batches a Kafka producer encoded, as `append` does records.
    pub fn append_batches(
        &self,
        batches: bytes::Bytes,
    ) -> impl Future<Output = Result<Range<Offset>, LogError>> + Send + 'static {
        self.submit(Payload::Batches(batches))
    }

    /// After a failed write the partition refuses every later append (so none is stored
    /// ahead of the failed one) until this, queued behind them: the appender has seen the
    /// failure, holds nothing in flight, and will now retry in order.
    pub fn resume(&self) {
        // Queued now, which is what orders it; the reply does not matter.
        drop(self.submit(Payload::Resume));
    }

    fn submit(
        &self,
        payload: Payload,
    ) -> impl Future<Output = Result<Range<Offset>, LogError>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let name = format!("{}/{}", self.shared.topic, self.shared.partition);
        let sent = self.tx.send(Append { payload, reply });
        async move {
            let closed = || LogError::Closed(name.clone());
            sent.map_err(|_| closed())?;
            answer.await.map_err(|_| closed())?
        }
    }
}

/// Starts the writer task of `writer`. It runs until every handle is dropped, then fsyncs
/// and closes.
pub fn spawn(
    writer: PartitionWriter,
    durability: Durability,
) -> (PartitionHandle, JoinHandle<Result<(), LogError>>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = PartitionHandle {
        tx,
        shared: writer.shared.clone(),
    };
    (handle, tokio::spawn(run(writer, rx, durability)))
}

async fn run(
    mut writer: PartitionWriter,
    mut rx: mpsc::UnboundedReceiver<Append>,
    durability: Durability,
) -> Result<(), LogError> {
    let interval = match durability.fsync {
        FsyncPolicy::Always => Duration::ZERO,
        _ => durability.interval,
    };
    // Written appends waiting to be durable: (end offset, reply).
    let mut waiting: VecDeque<(u64, Range<u64>, Reply)> = VecDeque::new();
    let mut syncing: Option<(SyncPoint, JoinHandle<Result<(), LogError>>)> = None;
    let mut last_sync = Instant::now() - interval;
    let mut retention = tokio::time::interval(durability.retention_check);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    let mut failure: Option<LogError> = None;
    // Set by a failed write, cleared by `resume`: see `PartitionHandle::resume`.
    let mut fence: Option<LogError> = None;
    // Appends held until just before the next fsync, so all that one fsync covers goes out as
    // one batch and one write: nothing written earlier could be acknowledged sooner anyway.
    let mut held: Vec<Append> = Vec::new();
    let mut held_bytes = 0usize;
    loop {
        let want_sync = durability.fsync != FsyncPolicy::Never
            && syncing.is_none()
            && (writer.unsynced() || !held.is_empty());
        if !open && !want_sync && syncing.is_none() {
            break;
        }
        tokio::select! {
            done = async { (&mut syncing.as_mut().expect("guarded").1).await }, if syncing.is_some() => {
                let (point, _) = syncing.take().expect("guarded");
                match done.unwrap_or_else(|e| Err(LogError::Closed(format!("fsync task: {e}")))) {
                    Ok(()) => {
                        let end = writer.publish(&point);
                        while waiting.front().is_some_and(|(last, _, _)| *last <= end) {
                            let (_, range, reply) = waiting.pop_front().expect("checked");
                            let _ = reply.send(Ok(Offset(range.start)..Offset(range.end)));
                        }
                    }
                    Err(e) => {
                        // After a failed fsync the page cache cannot be trusted (it may have
                        // dropped the dirty pages): nothing more is acknowledged from here on.
                        tracing::error!(topic = %writer.shared.topic, partition = writer.shared.partition, error = %e, "fsync failed; the partition stops taking appends");
                        for (_, _, reply) in waiting.drain(..) {
                            let _ = reply.send(Err(e.clone()));
                        }
                        for a in held.drain(..) {
                            let _ = a.reply.send(Err(e.clone()));
                        }
                        failure = Some(e);
                    }
                }
            }
            _ = tokio::time::sleep_until(last_sync + interval), if want_sync => {
                held_bytes = 0;
                let results = write_group(&mut writer, std::mem::take(&mut held), &mut fence);
                answer(results, false, &mut waiting);
                if !writer.unsynced() {
                    continue;
                }
                let point = writer.sync_point();
                let job = point.clone();
                last_sync = Instant::now();
                syncing = Some((point, tokio::task::spawn_blocking(move || job.sync())));
            }
            first = rx.recv(), if open => {
                let Some(first) = first else {
                    open = false;
                    continue;
                };
                let mut group = vec![first];
                let mut bytes = group[0].payload.size();
                while bytes < MERGE_BYTES {
                    match rx.try_recv() {
                        Ok(next) => {
                            bytes += next.payload.size();
                            group.push(next);
                        }
                        Err(_) => break,
                    }
                }
                if let Some(e) = &failure {
                    for a in group {
                        let _ = a.reply.send(Err(e.clone()));
                    }
                    continue;
                }
                if durability.fsync != FsyncPolicy::Never {
                    held_bytes += bytes;
                    held.extend(group);
                    if held_bytes >= MERGE_BYTES {
                        held_bytes = 0;
                        let results = write_group(&mut writer, std::mem::take(&mut held), &mut fence);
                        answer(results, false, &mut waiting);
                    }
                    continue;
                }
                let results = write_group(&mut writer, group, &mut fence);
                // Visible before anyone hears it is stored.
                writer.publish(&writer.sync_point());
                answer(results, true, &mut waiting);
            }
            _ = retention.tick() => {
                if let Err(e) = writer.enforce_retention(now_ms()) {
                    tracing::warn!(topic = %writer.shared.topic, partition = writer.shared.partition, error = %e, "retention failed");
                }
            }
        }
    }
    if durability.fsync == FsyncPolicy::Never {
        let point = writer.sync_point();
        tokio::task::spawn_blocking(move || point.sync())
            .await
            .map_err(|e| LogError::Closed(e.to_string()))??;
    }
    writer.close()?;
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Replies to written appends: at once when `durable` (or empty), else once an fsync covers
/// them; errors at once.
fn answer(
    results: Vec<(Result<Range<u64>, LogError>, Reply)>,
    durable: bool,
    waiting: &mut VecDeque<(u64, Range<u64>, Reply)>,
) {
    for (range, reply) in results {
        match range {
            Ok(range) if durable || range.is_empty() => {
                let _ = reply.send(Ok(Offset(range.start)..Offset(range.end)));
            }
            Ok(range) => waiting.push_back((range.end, range, reply)),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }
}

/// Writes a group of appends in order, merging runs of record appends into as few batches as
/// possible; one result per append. A failed write fences the partition (`fence`): later
/// appends fail too until a `Resume`.
fn write_group(
    writer: &mut PartitionWriter,
    group: Vec<Append>,
    fence: &mut Option<LogError>,
) -> Vec<(Result<Range<u64>, LogError>, Reply)> {
    let mut out = Vec::with_capacity(group.len());
    let mut run: Vec<(Vec<Record>, Reply)> = Vec::new();
    for append in group {
        match append.payload {
            Payload::Records(records) => run.push((records, append.reply)),
            Payload::Batches(bytes) => {
                write_records(writer, std::mem::take(&mut run), &mut out, fence);
                let result = match fence {
                    Some(e) => Err(e.clone()),
                    None => writer.append_batches(&bytes),
                };
                set_fence(&result, fence);
                out.push((result, append.reply));
            }
            Payload::Resume => {
                write_records(writer, std::mem::take(&mut run), &mut out, fence);
                *fence = None;
                let end = writer_end(writer);
                out.push((Ok(end..end), append.reply));
            }
        }
    }
    write_records(writer, run, &mut out, fence);
    out
}

/// A write that failed for I/O reasons fences the partition.
fn set_fence(result: &Result<Range<u64>, LogError>, fence: &mut Option<LogError>) {
    if let Err(e @ LogError::Io { .. }) = result {
        if fence.is_none() {
            tracing::warn!(error = %e, "write failed; refusing later appends until the appender retries in order");
        }
        *fence = Some(e.clone());
    }
}

fn write_records(
    writer: &mut PartitionWriter,
    run: Vec<(Vec<Record>, Reply)>,
    out: &mut Vec<(Result<Range<u64>, LogError>, Reply)>,
    fence: &mut Option<LogError>,
) {
    if run.is_empty() {
        return;
    }
    if let Some(e) = fence {
        out.extend(run.into_iter().map(|(_, reply)| (Err(e.clone()), reply)));
        return;
    }
    let merged = writer.append(run.iter().flat_map(|(records, _)| records.iter()));
    match merged {
        Ok(range) => {
            let mut start = range.start;
            for (records, reply) in run {
                out.push((Ok(start..start + records.len() as u64), reply));
                start += records.len() as u64;
            }
        }
        Err(e @ LogError::Io { .. }) => {
            set_fence(&Err(e.clone()), fence);
            out.extend(run.into_iter().map(|(_, reply)| (Err(e.clone()), reply)));
        }
        // Too large together, or nothing to write: each on its own.
        Err(e) => {
            let alone = run.len() > 1;
            for (records, reply) in run {
                let result = if records.is_empty() {
                    Ok(writer_end(writer)..writer_end(writer))
                } else if alone && fence.is_none() {
                    let r = writer.append(records.iter());
                    set_fence(&r, fence);
                    r
                } else {
                    Err(fence.clone().unwrap_or_else(|| e.clone()))
                };
                out.push((result, reply));
            }
        }
    }
}

fn writer_end(writer: &PartitionWriter) -> u64 {
    writer.sync_point().next_offset
}

fn record_size(r: &Record) -> usize {
    r.value.len()
        + r.key.as_ref().map_or(0, |k| k.len())
        + r.headers
            .iter()
            .map(|h| h.key.len() + h.value.len())
            .sum::<usize>()
        + 32
}
