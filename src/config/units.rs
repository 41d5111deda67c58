//! Human-written durations (`5ms`, `30s`, `7d`) and sizes (`128MiB`) in the config.

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration written with a unit: `5ms`, `30s`, `1h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

/// A size in bytes, written as `128MiB`, `1KiB`, `10MB` or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl HumanDuration {
    pub const fn from_secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
    pub const fn from_millis(ms: u64) -> Self {
        HumanDuration(Duration::from_millis(ms))
    }
}

impl ByteSize {
    pub const fn kib(n: u64) -> Self {
        ByteSize(n << 10)
    }
    pub const fn mib(n: u64) -> Self {
        ByteSize(n << 20)
    }
    pub const fn gib(n: u64) -> Self {
        ByteSize(n << 30)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Exact, so what `check` prints reads back as the same value.
        let n = self.0;
        match n {
            0 => f.write_str("0B"),
            n if n % (1 << 30) == 0 => write!(f, "{}GiB", n >> 30),
            n if n % (1 << 20) == 0 => write!(f, "{}MiB", n >> 20),
            n if n % (1 << 10) == 0 => write!(f, "{}KiB", n >> 10),
            n => write!(f, "{n}B"),
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, like 5ms, 30s, 1h or 7d")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<HumanDuration, E> {
                humantime::parse_duration(s.trim()).map(HumanDuration).map_err(|_| {
                    E::custom(format!(
                        "{s:?} is not a duration; write a number with a unit, like 5ms, 30s, 1h or 7d"
                    ))
                })
            }
        }
        d.deserialize_str(V)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size like 512KiB, 128MiB or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<ByteSize, E> {
                u64::try_from(n)
                    .map(ByteSize)
                    .map_err(|_| E::custom(format!("{n} is negative; sizes are >= 0")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<ByteSize, E> {
                s.trim().parse::<bytesize::ByteSize>().map(|b| ByteSize(b.0)).map_err(|_| {
                    E::custom(format!(
                        "{s:?} is not a size; write a number with a unit, like 512KiB, 128MiB or 1GiB"
                    ))
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_durations() {
        let cases = [
            ("5ms", Duration::from_millis(5)),
            ("30s", Duration::from_secs(30)),
            ("1h", Duration::from_secs(3600)),
            ("7d", Duration::from_secs(7 * 86_400)),
            ("1m 30s", Duration::from_secs(90)),
        ];
        for (text, expected) in cases {
            let d: HumanDuration = serde_json::from_value(serde_json::json!(text)).unwrap();
            assert_eq!(d.0, expected, "{text}");
        }
        let err = serde_json::from_value::<HumanDuration>(serde_json::json!("soon")).unwrap_err();
        assert!(
            err.to_string().contains("\"soon\" is not a duration"),
            "{err}"
        );
        let err = serde_json::from_value::<HumanDuration>(serde_json::json!(30)).unwrap_err();
        assert!(err.to_string().contains("a duration with a unit"), "{err}");
    }

    #[test]
    fn parses_sizes() {
        let cases = [
            (serde_json::json!("128MiB"), 128 << 20),
            (serde_json::json!("1KiB"), 1024),
            (serde_json::json!("10MB"), 10_000_000),
            (serde_json::json!("1 GiB"), 1 << 30),
            (serde_json::json!(4096), 4096),
        ];
        for (text, expected) in cases {
            let s: ByteSize = serde_json::from_value(text.clone()).unwrap();
            assert_eq!(s.0, expected, "{text}");
        }
        let err = serde_json::from_value::<ByteSize>(serde_json::json!("big")).unwrap_err();
        assert!(err.to_string().contains("\"big\" is not a size"), "{err}");
        assert_eq!(ByteSize::mib(128).to_string(), "128MiB");
        assert_eq!(ByteSize(1500).to_string(), "1500B");
    }
}
