//! `tributary topics` and `tributary consume`: read the embedded log as it is on disk, without
//! taking the writer's lock, while `run` may be writing.

use crate::log::positions::Positions;
use crate::log::{batch, LogError, LogReader, Offset};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// How often `--follow` looks for new records (another process writes them).
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The topics table: one line per partition.
pub fn topics(dir: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    topics_with(dir, None, out)
}

/// As [`topics`], for the buffer of `delivery: buffered`: each partition's forwarded position
/// (every record below it is in Kafka) and lag too.
pub fn buffered_topics(dir: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    topics_with(dir, Some(&Positions::forwarded(dir)), out)
}

fn topics_with(
    dir: &Path,
    forwarded: Option<&Positions>,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let reader = LogReader::open(dir)?;
    let topics = reader.topics()?;
    write!(
        out,
        "{:<40} {:>9} {:>12} {:>12} {:>14}",
        "TOPIC", "PARTITION", "EARLIEST", "LATEST", "BYTES"
    )?;
    match forwarded {
        Some(_) => writeln!(out, " {:>12} {:>12}", "FORWARDED", "LAG")?,
        None => writeln!(out)?,
    }
    for (topic, partitions) in topics {
        for p in partitions {
            write!(
                out,
                "{topic:<40} {:>9} {:>12} {:>12} {:>14}",
                p.partition, p.start, p.end, p.bytes
            )?;
            match forwarded {
                Some(positions) => {
                    let at = positions
                        .load(&topic, p.partition)?
                        .unwrap_or(p.start)
                        .max(p.start);
                    writeln!(out, " {:>12} {:>12}", at, p.end.0.saturating_sub(at.0))?;
                }
                None => writeln!(out)?,
            }
        }
    }
    Ok(())
}

/// Where `consume` starts in each partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum From {
    Earliest,
    Latest,
    Offset(u64),
    /// Milliseconds since the Unix epoch: the first record at or after it.
    Time(i64),
}

impl std::str::FromStr for From {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "earliest" => Ok(From::Earliest),
            "latest" => Ok(From::Latest),
            s if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => s.parse().map(From::Offset).map_err(|e| e.to_string()),
            s => humantime::parse_rfc3339_weak(s)
                .map(|t| From::Time(t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)))
                .map_err(|_| format!("{s:?}: expected earliest, latest, an offset, or an RFC 3339 time like 2026-11-25T10:00:00Z")),
        }
    }
}

pub struct ConsumeArgs<'a> {
    pub topic: &'a str,
    pub from: From,
    pub partition: Option<u32>,
    pub limit: Option<u64>,
    pub follow: bool,
}

/// Prints records as JSON lines, partition by partition; with `follow`, keeps printing new
/// records as they arrive until interrupted (or `limit` is reached).
pub fn consume(dir: &Path, args: &ConsumeArgs<'_>, out: &mut impl Write) -> anyhow::Result<()> {
    let reader = LogReader::open(dir)?;
    let partitions: Vec<u32> = match (args.partition, reader.topic_names().get(args.topic)) {
        (_, None) => return Err(LogError::UnknownTopic(args.topic.to_string()).into()),
        (Some(p), Some(_)) => vec![p],
        (None, Some(&n)) => (0..n).collect(),
    };
    let mut positions = Vec::with_capacity(partitions.len());
    for &p in &partitions {
        let part = reader.partition(args.topic, p)?;
        let (start, end) = (part.start_offset(), part.end_offset());
        let at = match args.from {
            From::Earliest => start,
            From::Latest => end,
            From::Offset(o) if (start.0..=end.0).contains(&o) => Offset(o),
            From::Offset(o) => {
                return Err(LogError::OffsetOutOfRange {
                    topic: args.topic.into(),
                    partition: p,
                    offset: Offset(o),
                    start,
                    end,
                }
                .into())
            }
            From::Time(t) => part.offset_for_time(t)?.unwrap_or(end),
        };
        positions.push((p, at));
    }
    let mut printed = 0u64;
    let done = |printed: u64| args.limit.is_some_and(|l| printed >= l);
    loop {
        for (p, at) in positions.iter_mut() {
            if done(printed) {
                return Ok(out.flush()?);
            }
            let part = reader.partition(args.topic, *p)?;
            let mut records = part.records(*at);
            for r in records.by_ref() {
                let r = match r {
                    Ok(r) => r,
                    Err(LogError::Undecodable { offset, error, .. }) => {
                        eprintln!(
                            "{}/{p}: skipping batch at offset {offset}: {error}",
                            args.topic
                        );
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                };
                writeln!(out, "{}", record_line(args.topic, *p, &r))?;
                printed += 1;
                if done(printed) {
                    return Ok(out.flush()?);
                }
            }
            *at = records.position();
        }
        out.flush()?;
        if !args.follow {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// `{"topic","partition","offset","timestamp","key","headers","value"}`; bytes that are not
/// UTF-8 go in `key_b64` / `value_b64` instead.
fn record_line(topic: &str, partition: u32, r: &batch::DecodedRecord) -> Value {
    let mut line = Map::new();
    line.insert("topic".into(), json!(topic));
    line.insert("partition".into(), json!(partition));
    line.insert("offset".into(), json!(r.offset));
    line.insert("timestamp".into(), json!(r.timestamp_ms));
    insert_bytes(&mut line, "key", r.key.as_deref());
    let headers: Map<String, Value> = r
        .headers
        .iter()
        .map(|h| {
            (
                h.key.clone(),
                h.value
                    .as_deref()
                    .map_or(Value::Null, |v| json!(String::from_utf8_lossy(v))),
            )
        })
        .collect();
    line.insert("headers".into(), Value::Object(headers));
    insert_bytes(&mut line, "value", r.value.as_deref());
    Value::Object(line)
}

/// Inserts `name` as text, or `name_b64` as base64 when the bytes are not UTF-8.
pub fn insert_bytes(line: &mut Map<String, Value>, name: &str, bytes: Option<&[u8]>) {
    match bytes.map(std::str::from_utf8) {
        None => line.insert(name.into(), Value::Null),
        Some(Ok(text)) => line.insert(name.into(), json!(text)),
        Some(Err(_)) => line.insert(
            format!("{name}_b64"),
            json!(base64::engine::general_purpose::STANDARD.encode(bytes.unwrap_or_default())),
        ),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_parses() {
        assert_eq!("earliest".parse(), Ok(From::Earliest));
        assert_eq!("latest".parse(), Ok(From::Latest));
        assert_eq!("42".parse(), Ok(From::Offset(42)));
        assert_eq!(
            "2026-11-25T10:00:00Z".parse(),
            Ok(From::Time(1_795_600_800_000))
        );
        assert!("yesterday"
            .parse::<From>()
            .unwrap_err()
            .contains("RFC 3339"));
    }

    #[tokio::test]
    async fn compressed_batches_are_skipped_and_the_limit_counts_printed_records() {
        use crate::config::{FsyncPolicy, TopicsConfig};
        use crate::log::{Log, LogOptions};
        use crate::record::Record;
        use bytes::Bytes;

        let dir = tempfile::tempdir().unwrap();
        let log = Log::open(LogOptions {
            dir: dir.path().to_path_buf(),
            segment_bytes: 1 << 20,
            fsync: FsyncPolicy::Never,
            fsync_interval: Duration::from_millis(5),
            retention_time: None,
            retention_bytes: None,
            retention_check: Duration::from_secs(3600),
            topics: TopicsConfig::default(),
        })
        .await
        .unwrap();
        let records = |offsets: std::ops::Range<u64>| -> Vec<Record> {
            offsets
                .map(|i| Record {
                    route: "r".into(),
                    topic: "t".into(),
                    partition: 0,
                    key: None,
                    value: Bytes::from(format!("v{i}")),
                    headers: Vec::new(),
                    timestamp_ms: 1_700_000_000_000,
                    dead_letter: None,
                })
                .collect()
        };
        log.append("t", 0, records(0..2)).await.unwrap();
        // A producer's zstd batch (offsets 2 and 3): stored, served, not decodable here.
        let mut zstd = Vec::new();
        batch::encode(&mut zstd, 0, records(2..4).iter()).unwrap();
        zstd[21..23].copy_from_slice(&4i16.to_be_bytes());
        let crc = crc32c::crc32c(&zstd[21..]);
        zstd[17..21].copy_from_slice(&crc.to_be_bytes());
        log.append_batches("t", 0, zstd.into()).await.unwrap();
        log.append("t", 0, records(4..6)).await.unwrap();
        log.close().await.unwrap();

        let offsets = |from: From, limit: Option<u64>| -> Vec<u64> {
            let args = ConsumeArgs {
                topic: "t",
                from,
                partition: Some(0),
                limit,
                follow: false,
            };
            let mut out = Vec::new();
            consume(dir.path(), &args, &mut out).unwrap();
            String::from_utf8(out)
                .unwrap()
                .lines()
                .map(|l| {
                    serde_json::from_str::<Value>(l).unwrap()["offset"]
                        .as_u64()
                        .unwrap()
                })
                .collect()
        };
        assert_eq!(offsets(From::Earliest, None), [0, 1, 4, 5]);
        assert_eq!(offsets(From::Offset(1), None), [1, 4, 5]);
        assert_eq!(offsets(From::Offset(3), None), [4, 5]);
        assert_eq!(offsets(From::Earliest, Some(3)), [0, 1, 4]);
        assert!(offsets(From::Earliest, Some(0)).is_empty());
        assert!(offsets(From::Latest, None).is_empty());
    }
}
