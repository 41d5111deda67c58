//! `tributary topics` and `tributary consume`: read the embedded log as it is on disk, without
//! taking the writer's lock, while `run` may be writing.

use crate::log::{batch, LogError, LogReader, Offset};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::Path;
use std::time::Duration;

/// How often `--follow` looks for new records (another process writes them).
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// Bytes read per step.
const READ_BYTES: usize = 1 << 20;

/// The topics table: one line per partition.
pub fn topics(dir: &Path, out: &mut impl Write) -> anyhow::Result<()> {
    let reader = LogReader::open(dir)?;
    let topics = reader.topics()?;
    writeln!(
        out,
        "{:<40} {:>9} {:>12} {:>12} {:>14}",
        "TOPIC", "PARTITION", "EARLIEST", "LATEST", "BYTES"
    )?;
    for (topic, partitions) in topics {
        for p in partitions {
            writeln!(
                out,
                "{topic:<40} {:>9} {:>12} {:>12} {:>14}",
                p.partition, p.start, p.end, p.bytes
            )?;
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
    loop {
        for (p, at) in positions.iter_mut() {
            let part = reader.partition(args.topic, *p)?;
            loop {
                if args.limit.is_some_and(|l| printed >= l) {
                    return Ok(out.flush()?);
                }
                let bytes = part.read(*at, READ_BYTES)?;
                if bytes.is_empty() {
                    break;
                }
                for item in batch::batches(&bytes) {
                    let (h, whole) = item?;
                    let records = match batch::decode(whole) {
                        Ok(b) => b.records,
                        Err(e) => {
                            eprintln!(
                                "{}/{p}: skipping batch at offset {}: {e}",
                                args.topic, h.base_offset
                            );
                            Vec::new()
                        }
                    };
                    let from = at.0;
                    for r in records.iter().filter(|r| r.offset as u64 >= from) {
                        if args.limit.is_some_and(|l| printed >= l) {
                            break;
                        }
                        writeln!(out, "{}", record_line(args.topic, *p, r))?;
                        printed += 1;
                        *at = Offset(r.offset as u64 + 1);
                    }
                    *at = Offset(at.0.max(h.next_offset() as u64));
                }
            }
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
}
