//! A real Apache Kafka broker for the integration tests: KRaft, one combined broker+controller
//! node, on free loopback ports, its own temp dir, from the jars of `tests/kafka/pom.xml` that
//! `scripts/kafka-jars` fetches into `target/kafka-jars`.
//!
//! A JVM broker takes 4-8 s to start (format included) and about 0.35 GB of RSS: share one per
//! test binary with [`KafkaBroker::shared`] unless a test stops or kills it, and then
//! [`KafkaBroker::start`] its own. Topics are not created automatically
//! (`auto.create.topics.enable=false`, as in most production clusters, so a test sees what a
//! missing topic does): create them with the admin API, or pass
//! `("auto.create.topics.enable", "true")` to [`KafkaBroker::start_with`]. The internal topics
//! (`__consumer_offsets`, `__transaction_state`) have 1 partition, not 50, so the first group
//! join is quick.
//!
//! The JVM gets SIGKILL when the test process ends, however it ends (`PR_SET_PDEATHSIG`, set in
//! a child spawned from a thread that lives as long as the process), so the shared broker, a
//! `static` that is never dropped, does not outlive its test binary. Temp dirs left by such
//! brokers are removed by the next start once their process is gone.
#![allow(dead_code)]

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, Producer};
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::{Duration, Instant};

/// How long a start (format excluded) may take before the test fails with the broker's log.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a SIGTERM may take before the broker gets SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// The JVM options unless `TRIBUTARY_KAFKA_JVM_OPTS` (split on whitespace) or
/// [`KafkaBroker::start_with_jvm`] say otherwise. Kafka's own scripts use a 1 GB heap; the tests'
/// traffic needs far less. C1 only (`TieredStopAtLevel=1`) starts the broker in about half the
/// time while other builds load the 2 cores (4-5 s instead of 7-11 s at load average 7; 2.4-3.3
/// s against 3.1-3.8 s at load 2.5), uses ~20 MB less RSS, and produced and fetched 1M records
/// of 100 bytes with kcat about as fast as the full JIT here; a benchmark may still want the
/// full JIT: `start_with_jvm(&[], &["-Xmx1g"])`.
pub const JVM_OPTS: &[&str] = &["-Xmx512m", "-XX:TieredStopAtLevel=1"];
/// A fixed cluster id (base64url of 16 bytes, as `kafka-storage random-uuid` prints); every
/// broker has its own log dir, so they need not differ.
pub const CLUSTER_ID: &str = "dHJpYnV0YXJ5LXRlc3RzIQ";
/// Logged by `kafka.server.KafkaRaftServer` once the broker serves clients.
const STARTED: &str = "Kafka Server started";
const DIR_PREFIX: &str = "tributary-kafka-";

pub struct KafkaBroker {
    /// The PLAINTEXT listener on 127.0.0.1 (the bootstrap port).
    pub port: u16,
    /// The KRaft controller listener on 127.0.0.1.
    pub controller_port: u16,
    dir: tempfile::TempDir,
    jars: PathBuf,
    jvm_opts: Vec<String>,
    child: Option<Child>,
    /// How long formatting the log dir took (a JVM run of its own).
    pub format_took: Duration,
    /// How long the last start took, until the broker answered a metadata request.
    pub start_took: Duration,
}

impl KafkaBroker {
    /// The broker shared by every test of this test binary that never stops it: started on
    /// first use, killed when the test process ends.
    pub fn shared() -> &'static KafkaBroker {
        static SHARED: OnceLock<KafkaBroker> = OnceLock::new();
        SHARED.get_or_init(KafkaBroker::start)
    }

    /// A broker of the test's own, for tests that stop, restart or kill it.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// With extra `server.properties` entries, which override the defaults
    /// (`("message.max.bytes", "10000")`, `("auto.create.topics.enable", "true")`...).
    pub fn start_with(extra: &[(&str, &str)]) -> Self {
        let jvm_opts = match std::env::var("TRIBUTARY_KAFKA_JVM_OPTS") {
            Ok(opts) => opts.split_whitespace().map(String::from).collect(),
            Err(_) => JVM_OPTS.iter().map(|o| o.to_string()).collect(),
        };
        Self::start_tuned(extra, jvm_opts)
    }

    /// With extra `server.properties` entries and these JVM options instead of [`JVM_OPTS`].
    pub fn start_with_jvm(extra: &[(&str, &str)], jvm_opts: &[&str]) -> Self {
        Self::start_tuned(extra, jvm_opts.iter().map(|o| o.to_string()).collect())
    }

    fn start_tuned(extra: &[(&str, &str)], jvm_opts: Vec<String>) -> Self {
        let jars = Self::jars();
        sweep_stale_dirs();
        let dir = tempfile::Builder::new()
            .prefix(&format!("{DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .expect("a temp dir for the Kafka broker");
        let (port, controller_port) = two_free_ports();
        let mut props = format!(
            "# Written by tests/support/kafka.rs\n\
             process.roles=broker,controller\n\
             node.id=1\n\
             controller.quorum.bootstrap.servers=127.0.0.1:{controller_port}\n\
             listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}\n\
             advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}\n\
             controller.listener.names=CONTROLLER\n\
             inter.broker.listener.name=PLAINTEXT\n\
             listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT\n\
             log.dirs={logs}\n\
             num.partitions=1\n\
             default.replication.factor=1\n\
             auto.create.topics.enable=false\n\
             offsets.topic.replication.factor=1\n\
             offsets.topic.num.partitions=1\n\
             transaction.state.log.replication.factor=1\n\
             transaction.state.log.min.isr=1\n\
             transaction.state.log.num.partitions=1\n\
             share.coordinator.state.topic.replication.factor=1\n\
             share.coordinator.state.topic.min.isr=1\n\
             group.initial.rebalance.delay.ms=0\n",
            logs = dir.path().join("data").display()
        );
        for (k, v) in extra {
            props.push_str(&format!("{k}={v}\n"));
        }
        std::fs::write(dir.path().join("server.properties"), props).unwrap();
        std::fs::write(dir.path().join("log4j2.properties"), LOG4J2).unwrap();
        let mut broker = KafkaBroker {
            port,
            controller_port,
            dir,
            jars,
            jvm_opts,
            child: None,
            format_took: Duration::ZERO,
            start_took: Duration::ZERO,
        };
        let t = Instant::now();
        broker.format();
        broker.format_took = t.elapsed();
        broker.spawn_and_wait();
        broker
    }

    /// The directory of the broker's and the Java client's jars, fetched by `scripts/kafka-jars`
    /// the first time (once per test process; the script itself is cheap once done). For Java
    /// test programs: `javac -cp "<jars>/*"`.
    pub fn jars() -> PathBuf {
        static JARS: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        match JARS.get_or_init(fetch_jars) {
            Ok(dir) => dir.clone(),
            Err(e) => panic!("{e}"),
        }
    }

    /// `127.0.0.1:<port>`, for `bootstrap.servers`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The broker's temp dir: server.properties, kafka.log, format.log, data/.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The JVM's resident memory now and at its peak (VmRSS, VmHWM), in KiB.
    pub fn rss_kib(&self) -> Option<(u64, u64)> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        };
        Some((field("VmRSS:")?, field("VmHWM:")?))
    }

    /// A clean shutdown: SIGTERM, then wait (SIGKILL after [`STOP_TIMEOUT`]).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("kafka broker ignored SIGTERM for {STOP_TIMEOUT:?}; killing it");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGKILL, then wait: a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the stopped or killed broker again, on the same ports with the same data.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "the Kafka broker is running: stop() or kill() it first"
        );
        self.spawn_and_wait();
    }

    /// Everything the broker logged, over all its starts.
    pub fn log(&self) -> String {
        read_lossy(&self.dir.path().join("kafka.log"))
    }

    /// The last `n` lines of [`Self::log`].
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log(), n)
    }

    fn java_command(&self, class: &str) -> Command {
        let mut cmd = Command::new(jdk_tool("java"));
        cmd.current_dir(self.dir.path())
            .args(&self.jvm_opts)
            .arg("-XX:+ExitOnOutOfMemoryError")
            .arg("-Djava.awt.headless=true")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.path().join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", self.jars.display()))
            .arg(class)
            .stdin(Stdio::null());
        cmd
    }

    /// `kafka-storage.sh format --standalone`: writes meta.properties and the bootstrap
    /// metadata of a one-voter KRaft quorum into log.dirs.
    fn format(&self) {
        let log_path = self.dir.path().join("format.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let status = self
            .java_command("kafka.tools.StorageTool")
            .args(["format", "--standalone", "-t", CLUSTER_ID, "-c"])
            .arg(self.dir.path().join("server.properties"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .status()
            .unwrap_or_else(|e| panic!("cannot run java (a JDK 17+ is needed): {e}"));
        assert!(
            status.success(),
            "formatting the Kafka log dir failed ({status}):\n{}",
            tail(&read_lossy(&log_path), 40)
        );
    }

    fn spawn_and_wait(&mut self) {
        let log_path = self.dir.path().join("kafka.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let from = log.metadata().unwrap().len();
        let mut cmd = self.java_command("kafka.Kafka");
        cmd.arg(self.dir.path().join("server.properties"))
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let started = Instant::now();
        self.child = Some(
            spawn_tied_to_process(cmd)
                .unwrap_or_else(|e| panic!("cannot run java (a JDK 17+ is needed): {e}")),
        );
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                panic!(
                    "the Kafka broker exited during start ({status}); its log ({}):\n{}",
                    log_path.display(),
                    self.log_tail(60)
                );
            }
            if read_from(&log_path, from).contains(STARTED) && self.answers_metadata() {
                self.start_took = started.elapsed();
                return;
            }
            if started.elapsed() > START_TIMEOUT {
                self.kill();
                panic!(
                    "the Kafka broker did not start within {START_TIMEOUT:?}; its log ({}):\n{}",
                    log_path.display(),
                    self.log_tail(60)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A librdkafka metadata request answered with this broker at its advertised address.
    fn answers_metadata(&self) -> bool {
        let Ok(producer) = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create::<BaseProducer>()
        else {
            return false;
        };
        match producer
            .client()
            .fetch_metadata(None, Duration::from_secs(5))
        {
            Ok(md) => md
                .brokers()
                .iter()
                .any(|b| b.host() == "127.0.0.1" && b.port() == i32::from(self.port)),
            Err(_) => false,
        }
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `tool` (`java`, `javac`) of the JDK at `JAVA_HOME`, else the one on PATH.
pub fn jdk_tool(tool: &str) -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if Path::new(&home).join("bin").join(tool).exists() => {
            Path::new(&home).join("bin").join(tool)
        }
        _ => PathBuf::from(tool),
    }
}

/// A `java` command running `class` from `classes` (a test's own compiled programs, such as
/// tests/java's) with the Kafka jars ([`KafkaBroker::jars`]) after them on the class path, and
/// `jvm_opts`; stdin closed.
pub fn java_program(jvm_opts: &[&str], classes: &Path, class: &str) -> Command {
    let mut cmd = Command::new(jdk_tool("java"));
    cmd.args(jvm_opts)
        .arg("-cp")
        .arg(format!(
            "{}:{}/*",
            classes.display(),
            KafkaBroker::jars().display()
        ))
        .arg(class)
        .stdin(Stdio::null());
    cmd
}

/// The log4j2 configuration: INFO to stdout (kafka.log), without the long config dumps.
const LOG4J2: &str = "\
rootLogger.level=INFO
rootLogger.appenderRef.out.ref=out
appender.out.type=Console
appender.out.name=out
appender.out.layout.type=PatternLayout
appender.out.layout.pattern=[%d] %p %m (%c)%n
logger.config.name=org.apache.kafka.common.config.AbstractConfig
logger.config.level=WARN
";

fn fetch_jars() -> Result<PathBuf, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("scripts/kafka-jars");
    let how = "The tests need the Apache Kafka jars of tests/kafka/pom.xml: run scripts/test \
               (installs every test peer) or scripts/kafka-jars, which runs \
               `cd tests/kafka && mvn -q -B dependency:copy-dependencies \
               -DoutputDirectory=../../target/kafka-jars` (needs mvn, a JDK 17+ and Maven Central)";
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot run {}: {e}. {how}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed ({}). {how}",
            script.display(),
            out.status
        ));
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if !dir.is_dir() {
        return Err(format!(
            "{} printed {dir:?}, not a directory. {how}",
            script.display()
        ));
    }
    Ok(dir)
}

/// Two distinct free loopback ports (both held until both are chosen).
fn two_free_ports() -> (u16, u16) {
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

/// Removes the temp dirs of brokers whose test process is gone (the shared broker's dir is
/// never dropped).
fn sweep_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(DIR_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on the pid of a child that has not been waited for yet.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` with `PR_SET_PDEATHSIG` = SIGKILL from a thread that lives as long as the test
/// process: the death signal follows the spawning *thread*, and the test harness ends a test's
/// thread when the test ends, while the shared broker must live on.
fn spawn_tied_to_process(mut cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("kafka-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("the spawner thread");
        tx
    });
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (reply, result) = mpsc::channel();
    spawner
        .send((cmd, reply))
        .expect("the spawner thread is alive");
    result.recv().expect("the spawner thread answers")
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// The file from byte `from` on (what the current start logged).
fn read_from(path: &Path, from: u64) -> String {
    let mut buf = Vec::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        if f.seek(SeekFrom::Start(from)).is_ok() {
            let _ = f.read_to_end(&mut buf);
        }
    }
    String::from_utf8_lossy(&buf).into_owned()
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
