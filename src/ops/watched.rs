//! [`WatchedSink`]: any sink, with every append counted and timed for the metrics and
//! reported to the readiness watch. One wrapper sees every append, the pipeline's first tries
//! and its retries alike, so the counts are what the sink stored, no more, no less.

use super::metrics::Metrics;
use super::ready::{AppendWatch, Ticket};
use crate::log::Offset;
use crate::record::{DeadLetterReason, Record};
use crate::sink::{Sink, SinkError};
use prometheus::IntCounter;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Where a watched sink reports.
#[derive(Debug, Clone)]
pub struct Watch {
    pub metrics: Arc<Metrics>,
    pub appends: Arc<Mutex<AppendWatch>>,
}

/// A sink whose appends are counted (with a [`Watch`]) or passed through as they are
/// (without: metrics off).
#[derive(Debug, Clone)]
pub struct WatchedSink<S> {
    inner: S,
    watch: Option<Arc<Watch>>,
}

impl<S> WatchedSink<S> {
    pub fn new(inner: S, watch: Option<Watch>) -> Self {
        WatchedSink {
            inner,
            watch: watch.map(Arc::new),
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }
}

/// What one append will count once stored.
struct Pending {
    watch: Arc<Watch>,
    ticket: Ticket,
    started: Instant,
    /// Records per topic counter, in the order topics first appear.
    records: SmallVec<[(IntCounter, u64); 2]>,
    dead_letters: SmallVec<[DeadLetterReason; 1]>,
    /// Whether the outcome has been reported; if not when dropped, the append was abandoned.
    done: bool,
}

impl Pending {
    fn new(watch: &Arc<Watch>, records: &[Record]) -> Pending {
        let mut counters: SmallVec<[(IntCounter, u64); 2]> = SmallVec::new();
        let mut topics: SmallVec<[&str; 2]> = SmallVec::new();
        let mut dead_letters = SmallVec::new();
        for r in records {
            match topics.iter().position(|t| *t == r.topic) {
                Some(i) => counters[i].1 += 1,
                None => {
                    topics.push(&r.topic);
                    counters.push((watch.metrics.records_appended(&r.topic), 1));
                }
            }
            dead_letters.extend(r.dead_letter);
        }
        let now = Instant::now();
        let ticket = lock(&watch.appends).started(now);
        Pending {
            watch: watch.clone(),
            ticket,
            started: now,
            records: counters,
            dead_letters,
            done: false,
        }
    }

    fn finish<T>(mut self, result: &Result<T, SinkError>) {
        self.done = true;
        let metrics = &self.watch.metrics;
        metrics
            .append_duration
            .observe(self.started.elapsed().as_secs_f64());
        let mut appends = lock(&self.watch.appends);
        match result {
            Ok(_) => {
                appends.succeeded(self.ticket);
                drop(appends);
                for (counter, n) in &self.records {
                    counter.inc_by(*n);
                }
                for reason in &self.dead_letters {
                    metrics.dead_letters(*reason).inc();
                }
            }
            // Not tried: it waits behind an earlier failure, which was counted.
            Err(SinkError::Fenced) => appends.ended(self.ticket),
            Err(e) => {
                appends.failed(self.ticket, e.to_string());
                drop(appends);
                metrics.sink_error(e.reason());
            }
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            lock(&self.watch.appends).ended(self.ticket);
        }
    }
}

fn lock(appends: &Mutex<AppendWatch>) -> std::sync::MutexGuard<'_, AppendWatch> {
    appends.lock().unwrap_or_else(|e| e.into_inner())
}

impl<S: Sink> Sink for WatchedSink<S> {
    fn append(
        &self,
        records: Vec<Record>,
    ) -> impl Future<Output = Result<Vec<Offset>, SinkError>> + Send + 'static {
        let pending = self.watch.as_ref().map(|w| Pending::new(w, &records));
        let append = self.inner.append(records);
        async move {
            let result = append.await;
            if let Some(pending) = pending {
                pending.finish(&result);
            }
            result
        }
    }

    fn resume(&self) {
        self.inner.resume();
    }

    fn takes_batches(&self) -> bool {
        self.inner.takes_batches()
    }

    fn partition_counts(
        &self,
    ) -> impl Future<Output = Result<BTreeMap<String, u32>, SinkError>> + Send {
        self.inner.partition_counts()
    }

    fn close(self) -> impl Future<Output = Result<(), SinkError>> + Send {
        self.inner.close()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogError;
    use std::sync::atomic::{AtomicU8, Ordering};

    /// Stores nothing; answers as `mode` says: 0 ok, 1 an I/O error, 2 fenced, 3 never.
    #[derive(Clone, Default)]
    struct Fake {
        mode: Arc<AtomicU8>,
    }

    impl Sink for Fake {
        fn append(
            &self,
            records: Vec<Record>,
        ) -> impl Future<Output = Result<Vec<Offset>, SinkError>> + Send + 'static {
            let mode = self.mode.load(Ordering::SeqCst);
            async move {
                match mode {
                    0 => Ok(vec![Offset(0); records.len()]),
                    1 => Err(SinkError::Log(LogError::io(
                        std::path::Path::new("disk"),
                        std::io::Error::other("full"),
                    ))),
                    2 => Err(SinkError::Fenced),
                    _ => std::future::pending().await,
                }
            }
        }
        fn resume(&self) {}
        async fn partition_counts(&self) -> Result<BTreeMap<String, u32>, SinkError> {
            Ok(BTreeMap::new())
        }
        async fn close(self) -> Result<(), SinkError> {
            Ok(())
        }
    }

    fn record(topic: &str, dead_letter: Option<DeadLetterReason>) -> Record {
        Record {
            route: "r".into(),
            topic: topic.into(),
            partition: 0,
            key: None,
            value: bytes::Bytes::new(),
            headers: Vec::new(),
            timestamp_ms: 0,
            dead_letter,
        }
    }

    #[tokio::test]
    async fn counts_what_was_stored_and_reports_failures() {
        let watch = Watch {
            metrics: Arc::new(Metrics::new()),
            appends: Default::default(),
        };
        let fake = Fake::default();
        let sink = WatchedSink::new(fake.clone(), Some(watch.clone()));
        let m = &watch.metrics;
        let batch = || {
            vec![
                record("a", None),
                record("b", None),
                record("a", None),
                record("dl", Some(DeadLetterReason::InvalidJson)),
            ]
        };
        sink.append(batch()).await.unwrap();
        assert_eq!(m.records_appended("a").get(), 2);
        assert_eq!(m.records_appended("b").get(), 1);
        assert_eq!(m.records_appended("dl").get(), 1);
        assert_eq!(m.dead_letters(DeadLetterReason::InvalidJson).get(), 1);
        assert_eq!(m.append_duration.get_sample_count(), 1);

        fake.mode.store(1, Ordering::SeqCst);
        sink.append(batch()).await.unwrap_err();
        assert_eq!(m.records_appended("a").get(), 2, "nothing stored");
        assert_eq!(m.dead_letters(DeadLetterReason::InvalidJson).get(), 1);
        let failure = watch.appends.lock().unwrap().failure().map(String::from);
        assert_eq!(failure.as_deref(), Some("disk: full"));
        fake.mode.store(2, Ordering::SeqCst);
        sink.append(batch()).await.unwrap_err();
        let text = m.render(None, None, &[]);
        assert!(
            text.contains("tributary_sink_errors_total{reason=\"io\"} 1\n"),
            "{text}"
        );
        assert!(
            !text.contains("fenced"),
            "a fenced append was not tried: {text}"
        );

        fake.mode.store(0, Ordering::SeqCst);
        sink.append(batch()).await.unwrap();
        assert_eq!(
            watch.appends.lock().unwrap().failure(),
            None,
            "writing again"
        );
        assert_eq!(m.records_appended("a").get(), 4);
    }

    #[tokio::test]
    async fn a_waiting_append_is_pending_until_it_ends_or_is_dropped() {
        let watch = Watch {
            metrics: Arc::new(Metrics::new()),
            appends: Default::default(),
        };
        let fake = Fake::default();
        fake.mode.store(3, Ordering::SeqCst);
        let sink = WatchedSink::new(fake, Some(watch.clone()));
        let append = sink.append(vec![record("a", None)]);
        assert!(watch.appends.lock().unwrap().oldest().is_some());
        drop(append);
        assert_eq!(watch.appends.lock().unwrap().oldest(), None);
    }

    #[tokio::test]
    async fn without_a_watch_it_passes_through() {
        let sink = WatchedSink::new(Fake::default(), None);
        assert_eq!(sink.append(vec![record("a", None)]).await.unwrap().len(), 1);
    }
}
