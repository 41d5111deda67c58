//! An egress route's `to`: an MQTT topic template filled from a log record: `{key}`,
//! `{header.NAME}`, `{payload.a.b}` (a field of a JSON value) and `{partition}`; `{{` and `}}`
//! are literal braces.

use crate::route::template::{lookup, pieces, Piece, TemplateError};
use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Key,
    Header(String),
    Payload(Vec<String>),
    Partition,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TopicTemplateError {
    #[error(transparent)]
    Syntax(#[from] TemplateError),
    #[error(
        "unknown field {{{0}}}; use {{key}}, {{header.NAME}}, {{payload.FIELD}} or {{partition}}"
    )]
    UnknownField(String),
    #[error("{0:?} is not an MQTT topic name: no '+', '#' or NUL, and not empty")]
    NotATopic(String),
}

/// What a record gives the template.
pub struct RecordView<'a> {
    pub key: Option<&'a [u8]>,
    pub headers: &'a [(String, Option<bytes::Bytes>)],
    pub value: Option<&'a [u8]>,
    pub partition: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    segments: Vec<Segment>,
}

impl TopicTemplate {
    pub fn parse(raw: &str) -> Result<TopicTemplate, TopicTemplateError> {
        let segments: Vec<Segment> = pieces(raw)?
            .into_iter()
            .map(|piece| match piece {
                Piece::Literal(text) => Ok(Segment::Literal(text)),
                Piece::Placeholder("key") => Ok(Segment::Key),
                Piece::Placeholder("partition") => Ok(Segment::Partition),
                Piece::Placeholder(name) => {
                    if let Some(h) = name.strip_prefix("header.").filter(|h| !h.is_empty()) {
                        Ok(Segment::Header(h.to_string()))
                    } else if let Some(p) = name.strip_prefix("payload.").filter(|p| !p.is_empty())
                    {
                        Ok(Segment::Payload(p.split('.').map(str::to_string).collect()))
                    } else {
                        Err(TopicTemplateError::UnknownField(name.to_string()))
                    }
                }
            })
            .collect::<Result<_, _>>()?;
        let literal: String = segments
            .iter()
            .filter_map(|s| match s {
                Segment::Literal(t) => Some(t.as_str()),
                _ => None,
            })
            .collect();
        if literal.contains(['+', '#', '\0']) || (segments.len() == 1 && literal.is_empty()) {
            return Err(TopicTemplateError::NotATopic(raw.to_string()));
        }
        Ok(TopicTemplate { segments })
    }

    pub fn uses_payload(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Payload(_)))
    }

    /// The topics it can make, as an MQTT filter: each level holding a field is `+`.
    pub fn pattern(&self) -> String {
        let mut text = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(t) => text.push_str(t),
                _ => text.push('\u{1}'),
            }
        }
        text.split('/')
            .map(|level| if level.contains('\u{1}') { "+" } else { level })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The MQTT topic for `record`, or why it cannot be made (the record then goes to the
    /// dead-letter topic).
    pub fn render(&self, record: &RecordView<'_>) -> Result<String, String> {
        let mut payload: Option<Value> = None;
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(t) => out.push_str(t),
                Segment::Partition => out.push_str(&record.partition.to_string()),
                Segment::Key => match record.key {
                    Some(key) => out.push_str(text(key, "the key")?),
                    None => return Err("the record has no key".into()),
                },
                Segment::Header(name) => {
                    let value = record
                        .headers
                        .iter()
                        .rev()
                        .find(|(k, _)| k == name)
                        .and_then(|(_, v)| v.as_deref())
                        .ok_or_else(|| format!("the record has no header {name}"))?;
                    out.push_str(text(value, &format!("header {name}"))?);
                }
                Segment::Payload(path) => {
                    if payload.is_none() {
                        let value = record.value.unwrap_or_default();
                        payload = Some(
                            serde_json::from_slice(value)
                                .map_err(|e| format!("the value is not JSON: {e}"))?,
                        );
                    }
                    let field = payload
                        .as_ref()
                        .and_then(|v| lookup(v, path))
                        .filter(|v| !v.is_null())
                        .ok_or_else(|| format!("the value has no field {}", path.join(".")))?;
                    match field {
                        Value::String(s) => out.push_str(s),
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        if out.is_empty() || out.contains(['+', '#', '\0']) || out.len() > 65_535 {
            return Err(format!("{out:?} is not an MQTT topic name"));
        }
        Ok(out)
    }
}

fn text<'a>(bytes: &'a [u8], what: &str) -> Result<&'a str, String> {
    std::str::from_utf8(bytes).map_err(|_| format!("{what} is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn view<'a>(
        key: Option<&'a [u8]>,
        headers: &'a [(String, Option<Bytes>)],
        value: &'a [u8],
    ) -> RecordView<'a> {
        RecordView {
            key,
            headers,
            value: Some(value),
            partition: 3,
        }
    }

    #[test]
    fn fields_fill_the_topic() {
        let t = TopicTemplate::parse("devices/{key}/{header.kind}/{payload.cmd.name}/p{partition}")
            .unwrap();
        let headers = vec![("kind".to_string(), Some(Bytes::from("config")))];
        let r = view(Some(b"d1"), &headers, br#"{"cmd":{"name":"reboot"}}"#);
        assert_eq!(t.render(&r).unwrap(), "devices/d1/config/reboot/p3");
        assert!(t.uses_payload());
    }

    #[test]
    fn a_missing_field_says_which() {
        let t = TopicTemplate::parse("devices/{key}/{payload.x}").unwrap();
        let none: Vec<(String, Option<Bytes>)> = Vec::new();
        assert_eq!(
            t.render(&view(None, &none, b"{}")),
            Err("the record has no key".into())
        );
        assert_eq!(
            t.render(&view(Some(b"d"), &none, b"{}")),
            Err("the value has no field x".into())
        );
        assert!(t
            .render(&view(Some(b"d"), &none, b"nope"))
            .unwrap_err()
            .starts_with("the value is not JSON"));
        assert_eq!(
            t.render(&view(Some(b"a/+"), &none, br#"{"x":1}"#)),
            Err("\"devices/a/+/1\" is not an MQTT topic name".into())
        );
    }

    #[test]
    fn the_pattern_puts_plus_where_fields_are() {
        let t = TopicTemplate::parse("devices/{key}/cmd-{header.kind}/x").unwrap();
        assert_eq!(t.pattern(), "devices/+/+/x");
    }

    #[test]
    fn bad_templates_are_refused() {
        for (raw, error) in [
            ("devices/{id}", "unknown field {id}"),
            ("devices/+/x", "is not an MQTT topic name"),
            ("", "is not an MQTT topic name"),
            ("a/{key", "unclosed"),
        ] {
            let e = TopicTemplate::parse(raw).unwrap_err().to_string();
            assert!(e.contains(error), "{raw}: {e}");
        }
    }
}
