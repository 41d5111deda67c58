//! MQTT topic filters with named captures: `devices/{device}/telemetry/{*rest}`.
//!
//! A level `{name}` is a `+` that captures its level; a last level `{*name}` is a `#` that
//! captures the rest of the topic (possibly empty). Matching follows MQTT 3.1.1 §4.7 / MQTT 5
//! §4.7: `+` matches exactly one level (empty levels are levels), `#` matches zero or more
//! trailing levels (`a/#` matches `a`), and a filter that starts with a wildcard does not
//! match a topic that starts with `$`.

use thiserror::Error;

/// The MQTT limit on the length of a topic or filter, in bytes.
const MAX_FILTER_BYTES: usize = 65_535;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Level {
    Literal(String),
    /// `+`, or `{name}` when it captures.
    Single(Option<String>),
    /// `#`, or `{*name}` when it captures. Always the last level.
    Multi(Option<String>),
}

/// A parsed route filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    levels: Vec<Level>,
}

/// A named capture: which level it reads, and whether it takes the rest of the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capture {
    pub level: usize,
    pub rest: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FilterError {
    #[error("empty filter; write a topic filter like devices/{{device}}/telemetry")]
    Empty,
    #[error("filter is longer than MQTT's 65535 bytes")]
    TooLong,
    #[error("filter contains a NUL character")]
    Nul,
    #[error("'#' must be the whole last level (level {0} is {1:?})")]
    MisplacedMulti(usize, String),
    #[error("'+' must be a whole level (level {0} is {1:?})")]
    MisplacedSingle(usize, String),
    #[error("{{*{0}}} captures the rest of the topic, so it must be the last level")]
    RestNotLast(String),
    #[error("a capture must be a whole level like {{name}} (level {0} is {1:?})")]
    PartialCapture(usize, String),
    #[error(
        "capture name {0:?} is not valid; use letters, digits and _, starting with a letter or _"
    )]
    BadCaptureName(String),
    #[error("capture name {{{0}}} is reserved for templates; pick another name")]
    ReservedCaptureName(String),
    #[error("capture {{{0}}} appears twice")]
    DuplicateCapture(String),
    #[error("shared subscriptions are set with mqtt.shared_group, not in a route's filter")]
    SharedPrefix,
}

impl Filter {
    pub fn parse(raw: &str) -> Result<Filter, FilterError> {
        if raw.is_empty() {
            return Err(FilterError::Empty);
        }
        if raw.len() > MAX_FILTER_BYTES {
            return Err(FilterError::TooLong);
        }
        if raw.contains('\0') {
            return Err(FilterError::Nul);
        }
        if raw.starts_with("$share/") {
            return Err(FilterError::SharedPrefix);
        }
        let parts: Vec<&str> = raw.split('/').collect();
        let last = parts.len() - 1;
        let mut levels = Vec::with_capacity(parts.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in parts.iter().enumerate() {
            let level = match *part {
                "#" if i == last => Level::Multi(None),
                "#" => return Err(FilterError::MisplacedMulti(i, part.to_string())),
                "+" => Level::Single(None),
                p if p.starts_with('{') && p.ends_with('}') && p.len() >= 2 => {
                    let inner = &p[1..p.len() - 1];
                    let (rest, name) = match inner.strip_prefix('*') {
                        Some(name) => (true, name),
                        None => (false, inner),
                    };
                    check_capture_name(name)?;
                    if names.contains(&name) {
                        return Err(FilterError::DuplicateCapture(name.to_string()));
                    }
                    names.push(name);
                    match (rest, i == last) {
                        (true, true) => Level::Multi(Some(name.to_string())),
                        (true, false) => return Err(FilterError::RestNotLast(name.to_string())),
                        (false, _) => Level::Single(Some(name.to_string())),
                    }
                }
                p if p.contains('#') => return Err(FilterError::MisplacedMulti(i, p.to_string())),
                p if p.contains('+') => return Err(FilterError::MisplacedSingle(i, p.to_string())),
                p if p.contains('{') || p.contains('}') => {
                    return Err(FilterError::PartialCapture(i, p.to_string()))
                }
                p => Level::Literal(p.to_string()),
            };
            levels.push(level);
        }
        Ok(Filter { levels })
    }

    pub fn levels(&self) -> &[Level] {
        &self.levels
    }

    /// The filter the broker sees: captures replaced by `+` and `#`.
    pub fn subscription(&self) -> String {
        let parts: Vec<&str> = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => s.as_str(),
                Level::Single(_) => "+",
                Level::Multi(_) => "#",
            })
            .collect();
        parts.join("/")
    }

    /// The same filter without capture names: what the broker subscription matches.
    pub fn plain(&self) -> Filter {
        let levels = self
            .levels
            .iter()
            .map(|l| match l {
                Level::Literal(s) => Level::Literal(s.clone()),
                Level::Single(_) => Level::Single(None),
                Level::Multi(_) => Level::Multi(None),
            })
            .collect();
        Filter { levels }
    }

    /// Named captures in filter order.
    pub fn captures(&self) -> impl Iterator<Item = (&str, Capture)> {
        self.levels.iter().enumerate().filter_map(|(i, l)| match l {
            Level::Single(Some(n)) => Some((
                n.as_str(),
                Capture {
                    level: i,
                    rest: false,
                },
            )),
            Level::Multi(Some(n)) => Some((
                n.as_str(),
                Capture {
                    level: i,
                    rest: true,
                },
            )),
            _ => None,
        })
    }

    /// The number of levels every matching topic has, or `None` when the filter ends in `#`.
    pub fn fixed_levels(&self) -> Option<usize> {
        match self.levels.last() {
            Some(Level::Multi(_)) => None,
            _ => Some(self.levels.len()),
        }
    }

    /// Direct MQTT matching of one topic. The router uses the trie; this is the reference.
    pub fn matches(&self, topic: &str) -> bool {
        if topic.starts_with('$') && !matches!(self.levels[0], Level::Literal(_)) {
            return false;
        }
        let mut topic_levels = topic.split('/');
        for level in &self.levels {
            match level {
                Level::Multi(_) => return true,
                Level::Single(_) => {
                    if topic_levels.next().is_none() {
                        return false;
                    }
                }
                Level::Literal(s) => {
                    if topic_levels.next() != Some(s.as_str()) {
                        return false;
                    }
                }
            }
        }
        topic_levels.next().is_none()
    }

    /// True when some topic matches both filters.
    pub fn overlaps(&self, other: &Filter) -> bool {
        let (mut a, mut b) = (self.levels.iter(), other.levels.iter());
        loop {
            match (a.next(), b.next()) {
                (None, None) => return true,
                // `x/#` matches `x` too.
                (Some(Level::Multi(_)), _) | (_, Some(Level::Multi(_))) => return true,
                (None, Some(_)) | (Some(_), None) => return false,
                (Some(Level::Literal(x)), Some(Level::Literal(y))) if x != y => return false,
                _ => {}
            }
        }
    }

    /// True when every topic this filter's subscription matches is also matched by `self`'s,
    /// so subscribing to `other` as well would only bring duplicates.
    pub fn covers(&self, other: &Filter) -> bool {
        if let (Some(first), Some(Level::Literal(o))) = (self.levels.first(), other.levels.first())
        {
            if o.starts_with('$') && !matches!(first, Level::Literal(_)) {
                return false;
            }
        }
        let mut theirs = other.levels.iter();
        for mine in &self.levels {
            let Some(their) = theirs.next() else {
                // `a/#` covers `a`: '#' also matches the parent level.
                return matches!(mine, Level::Multi(_));
            };
            match (mine, their) {
                (Level::Multi(_), _) => return true,
                (Level::Single(_), Level::Multi(_)) => return false,
                (Level::Single(_), _) => {}
                (Level::Literal(a), Level::Literal(b)) if a == b => {}
                (Level::Literal(_), _) => return false,
            }
        }
        theirs.next().is_none()
    }
}

/// Checks a topic name as a publisher may send it: non-empty, no wildcards, no NUL.
pub fn check_topic(topic: &str) -> Result<(), String> {
    if topic.is_empty() {
        return Err("an MQTT topic name has at least one character".into());
    }
    if topic.len() > MAX_FILTER_BYTES {
        return Err("topic is longer than MQTT's 65535 bytes".into());
    }
    if let Some(c) = topic.chars().find(|c| matches!(c, '+' | '#' | '\0')) {
        return Err(format!(
            "{c:?} cannot appear in a topic name (only in filters)"
        ));
    }
    Ok(())
}

/// The value of a capture in a topic already split into `levels` (slices of `topic`).
pub fn capture_value<'t>(topic: &'t str, levels: &[&'t str], capture: Capture) -> &'t str {
    match levels.get(capture.level) {
        None => "",
        Some(level) if capture.rest => {
            // Levels are slices of `topic`, so the rest starts where this level starts.
            let start = level.as_ptr() as usize - topic.as_ptr() as usize;
            &topic[start..]
        }
        Some(level) => level,
    }
}

fn check_capture_name(name: &str) -> Result<(), FilterError> {
    let mut chars = name.chars();
    let valid = matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(FilterError::BadCaptureName(name.to_string()));
    }
    if name == "topic" || name == "payload" {
        return Err(FilterError::ReservedCaptureName(name.to_string()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_filters() {
        let f = |s| Filter::parse(s).unwrap();
        for (a, b, overlap) in [
            ("devices/+/commands", "devices/d1/commands", true),
            ("devices/+/commands", "devices/#", true),
            ("devices/+/commands", "#", true),
            ("devices/+/commands", "devices/+/telemetry", false),
            ("devices/+/commands", "devices/d1", false),
            ("a/b", "a/b/c", false),
            ("a/#", "a", true),
        ] {
            assert_eq!(f(a).overlaps(&f(b)), overlap, "{a} {b}");
            assert_eq!(f(b).overlaps(&f(a)), overlap, "{b} {a}");
        }
    }

    #[test]
    fn mqtt_matching_rules() {
        // (filter, topic, matches): the MQTT spec's examples and edge cases.
        let cases = [
            ("sport/tennis/player1/#", "sport/tennis/player1", true),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/ranking",
                true,
            ),
            (
                "sport/tennis/player1/#",
                "sport/tennis/player1/score/wimbledon",
                true,
            ),
            ("sport/#", "sport", true),
            ("#", "sport/tennis", true),
            ("#", "/", true),
            ("sport/tennis/+", "sport/tennis/player1", true),
            ("sport/tennis/+", "sport/tennis/player1/ranking", false),
            ("sport/+", "sport", false),
            ("sport/+", "sport/", true),
            ("+/+", "/finance", true),
            ("/+", "/finance", true),
            ("+", "/finance", false),
            ("+", "", true),
            ("a//b", "a//b", true),
            ("a/+/b", "a//b", true),
            ("a/b", "a/b/", false),
            ("a/b/", "a/b/", true),
            ("a/#", "a/", true),
            ("#", "$SYS/uptime", false),
            ("+/monitor/Clients", "$SYS/monitor/Clients", false),
            ("$SYS/#", "$SYS/monitor/Clients", true),
            ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
            ("{x}/b", "$x/b", false),
            ("{*all}", "$x/b", false),
            ("Sport", "sport", false),
            (
                "devices/{device}/telemetry/{*rest}",
                "devices/d1/telemetry",
                true,
            ),
            (
                "devices/{device}/telemetry/{*rest}",
                "devices/d1/telemetry/a/b",
                true,
            ),
            (
                "devices/{device}/telemetry/{*rest}",
                "devices/d1/status",
                false,
            ),
        ];
        for (filter, topic, expected) in cases {
            let f = Filter::parse(filter).unwrap();
            assert_eq!(f.matches(topic), expected, "{filter} vs {topic:?}");
        }
    }

    #[test]
    fn topic_names() {
        assert_eq!(check_topic("a//b"), Ok(()));
        assert_eq!(check_topic("$SYS/x"), Ok(()));
        for bad in ["", "a/+", "a/#", "a\0"] {
            assert!(check_topic(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn parse_errors() {
        let cases = [
            ("", FilterError::Empty),
            ("a/#/b", FilterError::MisplacedMulti(1, "#".into())),
            ("a/b#", FilterError::MisplacedMulti(1, "b#".into())),
            ("a/b+", FilterError::MisplacedSingle(1, "b+".into())),
            ("a/{*rest}/b", FilterError::RestNotLast("rest".into())),
            ("a/x{id}", FilterError::PartialCapture(1, "x{id}".into())),
            ("a/{id", FilterError::PartialCapture(1, "{id".into())),
            ("a/{1d}", FilterError::BadCaptureName("1d".into())),
            ("a/{}", FilterError::BadCaptureName("".into())),
            (
                "a/{topic}",
                FilterError::ReservedCaptureName("topic".into()),
            ),
            ("{a}/{a}", FilterError::DuplicateCapture("a".into())),
            ("$share/g/a", FilterError::SharedPrefix),
            ("a\0b", FilterError::Nul),
        ];
        for (filter, expected) in cases {
            assert_eq!(Filter::parse(filter), Err(expected), "{filter:?}");
        }
        assert_eq!(
            Filter::parse(&"a".repeat(65_536)),
            Err(FilterError::TooLong)
        );
    }

    #[test]
    fn subscription_replaces_captures() {
        let f = Filter::parse("devices/{device}/telemetry/{*rest}").unwrap();
        assert_eq!(f.subscription(), "devices/+/telemetry/#");
        let names: Vec<_> = f.captures().collect();
        assert_eq!(
            names,
            vec![
                (
                    "device",
                    Capture {
                        level: 1,
                        rest: false
                    }
                ),
                (
                    "rest",
                    Capture {
                        level: 3,
                        rest: true
                    }
                )
            ]
        );
        assert_eq!(f.fixed_levels(), None);
        assert_eq!(Filter::parse("a/+/c").unwrap().fixed_levels(), Some(3));
    }

    #[test]
    fn capture_values() {
        let f = Filter::parse("devices/{device}/{*rest}").unwrap();
        let caps: Vec<Capture> = f.captures().map(|(_, c)| c).collect();
        for (topic, device, rest) in [
            ("devices/d1/a/b", "d1", "a/b"),
            ("devices/d1", "d1", ""),
            ("devices/d1/", "d1", ""),
            ("devices//x", "", "x"),
        ] {
            let levels: Vec<&str> = topic.split('/').collect();
            assert_eq!(capture_value(topic, &levels, caps[0]), device, "{topic}");
            assert_eq!(capture_value(topic, &levels, caps[1]), rest, "{topic}");
        }
    }

    #[test]
    fn covers() {
        let cases = [
            ("#", "a/b", true),
            ("#", "$SYS/a", false),
            ("$SYS/#", "$SYS/a", true),
            ("a/#", "a", true),
            ("a/#", "a/+/c", true),
            ("a/+", "a/b", true),
            ("a/+", "a/#", false),
            ("a/+", "a/b/c", false),
            ("a/b", "a/+", false),
            ("a/b", "a/b", true),
            ("+/b", "a/b", true),
            ("a/+/c", "a/b", false),
        ];
        for (a, b, expected) in cases {
            let (fa, fb) = (Filter::parse(a).unwrap(), Filter::parse(b).unwrap());
            assert_eq!(fa.covers(&fb), expected, "{a} covers {b}");
        }
    }
}
