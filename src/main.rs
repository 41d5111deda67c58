//! The `tributary` command: parses arguments, loads the config, runs a command.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use tributary::app::{self, Access, PrepareError};
use tributary::config::{self, ConfigError};
use tributary::message::Message;
use tributary::route::Router;

#[derive(Parser)]
#[command(
    name = "tributary",
    version,
    about = "Bridges MQTT devices to a partitioned, durable, replayable Kafka-style log"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file (for `tributary` alone, which runs the gateway).
    #[arg(short, long, default_value = "bridge.yaml", global = true)]
    config: PathBuf,
    /// Log lines as text for people or JSON for machines; the level comes from RUST_LOG.
    #[arg(long, value_enum, default_value = "text", global = true)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the default).
    Run,
    /// Validate the config; print routes and broker subscriptions. Exit 2 if invalid.
    Check,
    /// Validate the config, then have the gateways running with it reload their routes,
    /// topics and dead-letter topic (sends them SIGHUP). Exit 2 if invalid.
    Reload,
    /// Dry run: print the records one message would become, one JSON line each.
    Route {
        /// MQTT topic of the message.
        topic: String,
        /// Payload text.
        #[arg(long, conflicts_with = "payload_file")]
        payload: Option<String>,
        /// Read the payload from a file.
        #[arg(long)]
        payload_file: Option<PathBuf>,
    },
    /// Dry run of the egress routes reading TOPIC: one JSON line per MQTT PUBLISH a record
    /// would become (or the dead letter it would be).
    EgressRoute {
        /// The log topic the record is in.
        topic: String,
        #[arg(long)]
        key: Option<String>,
        /// The record's value.
        #[arg(long, default_value = "")]
        payload: String,
        /// A record header, NAME=VALUE (repeatable).
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        #[arg(long, default_value_t = 0)]
        partition: u32,
    },
    /// Print a users_file line for USER (`listener.auth`, `log.embedded.kafka_auth`): reads
    /// the password from stdin (no echo on a terminal) and hashes it with argon2id, or makes a
    /// SCRAM credential with `--mechanism`. Needs no config.
    Passwd {
        user: String,
        /// SCRAM-SHA-256 or SCRAM-SHA-512: a credential for that Kafka SASL mechanism (PLAIN
        /// takes it too). Without it: argon2id (MQTT listener, Kafka PLAIN).
        #[arg(long)]
        mechanism: Option<tributary::cli::passwd::Mechanism>,
    },
    /// List topics, partitions, earliest and latest offsets, and bytes.
    Topics,
    /// Print records of a topic as JSON lines.
    Consume {
        #[arg(short, long)]
        topic: String,
        /// earliest, latest, an offset, or an RFC 3339 time (2026-11-25T10:00:00Z).
        #[arg(long, default_value = "earliest")]
        from: tributary::cli::consume::From,
        #[arg(long)]
        partition: Option<u32>,
        #[arg(long)]
        limit: Option<u64>,
        #[arg(long)]
        follow: bool,
    },
}

/// Decoding a malformed Kafka request must not take the process down (see `alloc`).
#[global_allocator]
static ALLOCATOR: tributary::alloc::Allocator = tributary::alloc::Allocator;

/// Exit codes: 0 success, 1 runtime failure, 2 usage or config error.
const EXIT_RUNTIME: u8 = 1;
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let command = cli.command.unwrap_or(Command::Run);
    if let Command::Passwd { user, mechanism } = &command {
        return match tributary::cli::passwd::line(user, *mechanism) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                say("ERROR", &format!("error: {e:#}"));
                ExitCode::from(EXIT_CONFIG)
            }
        };
    }
    let config = match app::load(&cli.config) {
        Ok(config) => config,
        Err(e) => return config_error(&e),
    };
    let file = cli.config.display().to_string();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            say("ERROR", &format!("error: starting the runtime: {e}"));
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    if let Command::Route { topic, .. } = &command {
        if let Err(e) = tributary::route::filter::check_topic(topic) {
            say("ERROR", &format!("error: topic {topic:?}: {e}"));
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    let result = match command {
        Command::Check | Command::Route { .. } => {
            // Both see the config as `run` would, against what the log holds now.
            let router = match runtime.block_on(app::prepare(&config, Access::Inspect)) {
                Ok(prepared) => prepared.router,
                Err(PrepareError::Invalid(issues)) => {
                    return config_error(&ConfigError::invalid(file, issues))
                }
                Err(e) => {
                    say("ERROR", &format!("error: {e}"));
                    return ExitCode::from(EXIT_RUNTIME);
                }
            };
            match command {
                Command::Route {
                    topic,
                    payload,
                    payload_file,
                } => route(&router, topic, payload, payload_file),
                _ => check(&file, &config, &router),
            }
        }
        Command::EgressRoute {
            topic,
            key,
            payload,
            headers,
            partition,
        } => egress_route(&config, &topic, key, payload, headers, partition),
        Command::Run => return run(&runtime, &cli.config, config),
        // Answered above, before any config is read; the same here for completeness.
        Command::Passwd { user, mechanism } => {
            tributary::cli::passwd::line(&user, mechanism).map(|l| println!("{l}"))
        }
        Command::Reload => reload(&cli.config),
        Command::Topics => {
            let out = &mut std::io::stdout().lock();
            let kafka = &config.log.kafka;
            match (config.log.backend, kafka.delivery) {
                (config::Backend::Kafka, config::KafkaDelivery::Buffered) => {
                    tributary::cli::consume::buffered_topics(&kafka.buffer.dir, out)
                }
                _ => {
                    embedded_dir(&config).and_then(|dir| tributary::cli::consume::topics(dir, out))
                }
            }
        }
        Command::Consume {
            topic,
            from,
            partition,
            limit,
            follow,
        } => embedded_dir(&config).and_then(|dir| {
            let args = tributary::cli::consume::ConsumeArgs {
                topic: &topic,
                from,
                partition,
                limit,
                follow,
            };
            tributary::cli::consume::consume(dir, &args, &mut std::io::stdout().lock())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`consume | head`) is the reader's choice, not a failure.
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(e) => {
            say("ERROR", &format!("error: {e:#}"));
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

fn config_error(e: &ConfigError) -> ExitCode {
    say("ERROR", &e.to_string());
    if let ConfigError::Invalid { issues, .. } = e {
        say(
            "ERROR",
            &format!(
                "{} problem{} in the configuration; nothing was started",
                issues.len(),
                if issues.len() == 1 { "" } else { "s" }
            ),
        );
    }
    ExitCode::from(EXIT_CONFIG)
}

/// The `--log-format` chosen, for what `say` writes.
static STDERR_FORMAT: OnceLock<LogFormat> = OnceLock::new();

/// Writes an error or a note to stderr: as it is, or with `--log-format json` each line as one
/// JSON object shaped like the log lines, so that every line on stderr parses as JSON.
fn say(level: &str, text: &str) {
    match STDERR_FORMAT.get() {
        Some(LogFormat::Json) => {
            let timestamp = humantime::format_rfc3339_micros(std::time::SystemTime::now());
            for line in text.lines() {
                let line = serde_json::json!({
                    "timestamp": timestamp.to_string(),
                    "level": level,
                    "fields": { "message": line },
                    "target": "tributary",
                });
                eprintln!("{line}");
            }
        }
        _ => eprintln!("{text}"),
    }
}

fn check(file: &str, config: &config::Config, router: &Router) -> anyhow::Result<()> {
    print!("{}", tributary::cli::check_report(file, config, router));
    Ok(())
}

fn route(
    router: &Router,
    topic: String,
    payload: Option<String>,
    payload_file: Option<PathBuf>,
) -> anyhow::Result<()> {
    let payload = match (payload, payload_file) {
        (Some(text), _) => text.into_bytes(),
        (None, Some(path)) => {
            std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, None) => Vec::new(),
    };
    let records = router.route(&Message::new(topic, payload));
    if records.is_empty() {
        say(
            "WARN",
            "no route matches this topic: it would be acked and counted, not stored",
        );
    }
    for record in &records {
        println!("{}", tributary::cli::record_json(record));
    }
    Ok(())
}

fn parse_header(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{raw:?}: write NAME=VALUE"))
}

fn egress_route(
    config: &config::Config,
    topic: &str,
    key: Option<String>,
    payload: String,
    headers: Vec<(String, String)>,
    partition: u32,
) -> anyhow::Result<()> {
    use tributary::log::batch::{DecodedHeader, DecodedRecord};
    let (routes, _) = tributary::egress::compile(&config.egress);
    let record = DecodedRecord {
        offset: 0,
        timestamp_ms: tributary::message::now_ms(),
        key: key.map(|k| k.into_bytes().into()),
        value: Some(payload.into_bytes().into()),
        headers: headers
            .into_iter()
            .map(|(key, value)| DecodedHeader {
                key,
                value: Some(value.into_bytes().into()),
            })
            .collect(),
    };
    let reading: Vec<_> = routes.iter().filter(|r| r.from == topic).collect();
    if reading.is_empty() {
        say("WARN", &format!("no egress route reads {topic}"));
    }
    for route in reading {
        println!("{}", tributary::cli::egress_json(route, &record, partition));
    }
    Ok(())
}

/// The embedded log's directory; `topics` and `consume` read it directly.
fn embedded_dir(config: &config::Config) -> anyhow::Result<&std::path::Path> {
    match config.log.backend {
        config::Backend::Embedded => Ok(&config.log.embedded.dir),
        config::Backend::Kafka => anyhow::bail!(
            "log.backend is kafka: read it with a Kafka client (kcat -L -b {})",
            config.log.kafka.bootstrap_servers
        ),
    }
}

fn init_tracing(format: LogFormat) {
    let _ = STDERR_FORMAT.set(format);
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Sends SIGHUP to every gateway running with the config at `path`.
fn reload(path: &std::path::Path) -> anyhow::Result<()> {
    let pids = app::reload::running_gateways(path)
        .with_context(|| format!("looking for gateways running with {}", path.display()))?;
    if pids.is_empty() {
        anyhow::bail!(
            "no `tributary run` with the config {} is running here",
            path.display()
        );
    }
    for pid in pids {
        // SAFETY: kill(2) takes a pid and a signal number and touches no memory of ours.
        if unsafe { libc::kill(pid as libc::pid_t, libc::SIGHUP) } != 0 {
            anyhow::bail!(
                "sending SIGHUP to {pid}: {}",
                std::io::Error::last_os_error()
            );
        }
        println!("{}: valid; sent SIGHUP to tributary run (pid {pid}): it reloads routes, topics and dead_letter", path.display());
    }
    Ok(())
}

fn run(
    runtime: &tokio::runtime::Runtime,
    path: &std::path::Path,
    config: config::Config,
) -> ExitCode {
    let file = path.display().to_string();
    let result = runtime.block_on(async {
        let reloads = app::reload::on_sighup(path.to_path_buf())
            .map_err(|e| app::AppError::Other(format!("listening for SIGHUP: {e}")))?;
        app::run(config, shutdown_signal(), reloads, path).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(app::AppError::Invalid(issues)) => config_error(&ConfigError::invalid(file, issues)),
        Err(e @ app::AppError::Config(_)) => {
            say("ERROR", &format!("error: {e}"));
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            say("ERROR", &format!("error: {e}"));
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
