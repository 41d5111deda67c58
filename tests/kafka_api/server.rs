//! The Kafka listener in process, over a log in a temporary directory, and the watch on
//! panics raised by the server's code (its connection tasks catch them).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tributary::config::{FsyncPolicy, TopicsConfig};
use tributary::kafka_api::{KafkaApi, ServerOptions};
use tributary::log::offsets::GroupOffsets;
use tributary::log::{Log, LogOptions};

/// Panics raised outside these test files (the server's code, its dependencies) while tests
/// run: the server's connection tasks catch them, so they would otherwise go unnoticed.
static LIBRARY_PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

fn watch_panics() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let file = info.location().map(|l| l.file()).unwrap_or_default();
            if !file.contains("tests/kafka_api/") && !file.contains("tests/support") {
                LIBRARY_PANICS
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(info.to_string());
            }
            previous(info);
        }));
    });
}

pub(crate) fn assert_no_library_panics() {
    let panics = LIBRARY_PANICS.lock().unwrap_or_else(|e| e.into_inner());
    assert!(
        panics.is_empty(),
        "the server (or a library) panicked: {panics:#?}"
    );
}

/// A log in a temp dir and the Kafka listener over it on 127.0.0.1, port chosen by the OS.
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) log: Arc<Log>,
    pub(crate) stop: CancellationToken,
    pub(crate) task: tokio::task::JoinHandle<()>,
    pub(crate) _dir: tempfile::TempDir,
}

impl Server {
    pub(crate) async fn start(options: ServerOptions) -> Server {
        Server::start_on(TcpListener::bind("127.0.0.1:0").await.unwrap(), options).await
    }

    pub(crate) async fn start_on(listener: TcpListener, options: ServerOptions) -> Server {
        watch_panics();
        let dir = tempfile::tempdir().unwrap();
        let log_options = LogOptions {
            dir: dir.path().to_path_buf(),
            // Small segments: the datasets below span several, and reads cross them.
            segment_bytes: 4 << 10,
            fsync: FsyncPolicy::Interval,
            fsync_interval: Duration::from_millis(1),
            retention_time: None,
            retention_bytes: None,
            retention_check: Duration::from_secs(3600),
            topics: TopicsConfig::default(),
        };
        let log = Arc::new(Log::open(log_options).await.unwrap());
        let offsets = Arc::new(GroupOffsets::open(dir.path()).unwrap());
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let task = tokio::spawn(
            KafkaApi::new(log.clone(), offsets, options).serve(listener, stop.clone()),
        );
        Server {
            addr,
            log,
            stop,
            task,
            _dir: dir,
        }
    }

    pub(crate) fn bootstrap(&self) -> String {
        self.addr.to_string()
    }

    /// How many segment files a partition has on disk.
    pub(crate) fn segments(&self, topic: &str, partition: u32) -> usize {
        let dir = self._dir.path().join(topic).join(partition.to_string());
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "log")
            })
            .count()
    }

    pub(crate) fn assert_alive(&self) {
        assert!(!self.task.is_finished(), "the Kafka listener stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Runs blocking client code (librdkafka's synchronous calls, child processes) off the runtime,
/// so the in-process server keeps its worker threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}
