//! Templates for a route's `to`, `key` and header values: literal text with `{name}` captures,
//! `{topic}`, `{topic.N}` and `{payload.a.b}` substituted per message. `{{` and `}}` are
//! literal braces.

use super::filter::{capture_value, Capture, Filter};
use serde_json::Value;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Capture(Capture),
    Topic,
    TopicLevel(usize),
    /// A path into the JSON payload: object keys, or array indexes where the key is a number.
    Payload(Vec<String>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    segments: Vec<Segment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TemplateError {
    #[error("unknown capture {{{name}}}; known: {known}")]
    UnknownCapture { name: String, known: String },
    #[error("unclosed '{{'; write {{{{ for a literal brace")]
    Unclosed,
    #[error("unmatched '}}'; write }}}} for a literal brace")]
    Unmatched,
    #[error("empty placeholder {{}}")]
    EmptyPlaceholder,
    #[error("{{topic.{index}}} is past the filter's last level; its topics have {levels} levels (0 to {last})", last = levels - 1)]
    TopicLevelOutOfRange { index: usize, levels: usize },
    #[error("{{{0}}}: write {{topic.N}} with N a level number from 0")]
    BadTopicLevel(String),
    #[error("{{payload}} needs a field path, like {{payload.site}}")]
    BarePayload,
}

/// What a template reads from while rendering one message.
pub struct Context<'a> {
    pub topic: &'a str,
    /// `topic` split at '/'.
    pub levels: &'a [&'a str],
    /// The parsed payload, for routes with `format: json`.
    pub payload: Option<&'a Value>,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RenderError {
    #[error("topic {topic:?} has no level {index}")]
    MissingTopicLevel { topic: String, index: usize },
    #[error("payload has no field {0}")]
    MissingPayloadField(String),
}

impl Template {
    /// Parses `raw`, resolving capture names against the route's filter.
    pub fn parse(raw: &str, filter: &Filter) -> Result<Template, TemplateError> {
        let segments = pieces(raw)?
            .into_iter()
            .map(|piece| match piece {
                Piece::Literal(text) => Ok(Segment::Literal(text)),
                Piece::Placeholder(name) => placeholder(name, filter),
            })
            .collect::<Result<_, _>>()?;
        Ok(Template { segments })
    }

    /// The text when the template has no placeholders.
    pub fn as_literal(&self) -> Option<&str> {
        match self.segments.as_slice() {
            [Segment::Literal(s)] => Some(s),
            _ => None,
        }
    }

    /// The literal parts, for checking what can be checked before any message arrives.
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Literal(s) => Some(s.as_str()),
            _ => None,
        })
    }

    pub fn uses_payload(&self) -> bool {
        self.segments
            .iter()
            .any(|s| matches!(s, Segment::Payload(_)))
    }

    pub fn render(&self, ctx: &Context<'_>, out: &mut String) -> Result<(), RenderError> {
        for segment in &self.segments {
            match segment {
                Segment::Literal(s) => out.push_str(s),
                Segment::Capture(c) => out.push_str(capture_value(ctx.topic, ctx.levels, *c)),
                Segment::Topic => out.push_str(ctx.topic),
                Segment::TopicLevel(n) => match ctx.levels.get(*n) {
                    Some(level) => out.push_str(level),
                    None => {
                        return Err(RenderError::MissingTopicLevel {
                            topic: ctx.topic.to_string(),
                            index: *n,
                        })
                    }
                },
                Segment::Payload(path) => {
                    let missing = || RenderError::MissingPayloadField(path.join("."));
                    let value = ctx
                        .payload
                        .and_then(|v| lookup(v, path))
                        .ok_or_else(missing)?;
                    match value {
                        Value::Null => return Err(missing()),
                        Value::String(s) => out.push_str(s),
                        // Numbers, booleans, objects and arrays as compact JSON text.
                        other => out.push_str(&other.to_string()),
                    }
                }
            }
        }
        Ok(())
    }

    pub fn render_string(&self, ctx: &Context<'_>) -> Result<String, RenderError> {
        let mut out = String::new();
        self.render(ctx, &mut out)?;
        Ok(out)
    }
}

/// A piece of a template's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece<'a> {
    /// Text as it is (`{{` and `}}` already made single braces).
    Literal(String),
    /// The name between `{` and `}`.
    Placeholder(&'a str),
}

/// Splits a template into literal text and placeholders, in order; a template with no text
/// at all is one empty literal. Each kind of template gives the placeholders its meaning.
pub fn pieces(raw: &str) -> Result<Vec<Piece<'_>>, TemplateError> {
    let mut pieces = Vec::new();
    let mut literal = String::new();
    let mut chars = raw.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|(_, c)| *c) == Some('{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek().map(|(_, c)| *c) == Some('}') => {
                chars.next();
                literal.push('}');
            }
            '}' => return Err(TemplateError::Unmatched),
            '{' => {
                let end = raw[i + 1..].find('}').ok_or(TemplateError::Unclosed)? + i + 1;
                let name = &raw[i + 1..end];
                if name.contains('{') {
                    return Err(TemplateError::Unclosed);
                }
                if name.is_empty() {
                    return Err(TemplateError::EmptyPlaceholder);
                }
                while chars.peek().is_some_and(|(j, _)| *j <= end) {
                    chars.next();
                }
                if !literal.is_empty() {
                    pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                }
                pieces.push(Piece::Placeholder(name));
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() || pieces.is_empty() {
        pieces.push(Piece::Literal(literal));
    }
    Ok(pieces)
}

fn placeholder(name: &str, filter: &Filter) -> Result<Segment, TemplateError> {
    if name == "topic" {
        return Ok(Segment::Topic);
    }
    if let Some(n) = name.strip_prefix("topic.") {
        let index: usize = n
            .parse()
            .map_err(|_| TemplateError::BadTopicLevel(name.to_string()))?;
        if let Some(levels) = filter.fixed_levels() {
            if index >= levels {
                return Err(TemplateError::TopicLevelOutOfRange { index, levels });
            }
        }
        return Ok(Segment::TopicLevel(index));
    }
    if name == "payload" || name == "payload." {
        return Err(TemplateError::BarePayload);
    }
    if let Some(path) = name.strip_prefix("payload.") {
        return Ok(Segment::Payload(
            path.split('.').map(str::to_string).collect(),
        ));
    }
    let name = name.strip_prefix('*').unwrap_or(name);
    match filter.captures().find(|(n, _)| *n == name) {
        Some((_, capture)) => Ok(Segment::Capture(capture)),
        None => {
            let known: Vec<&str> = filter.captures().map(|(n, _)| n).collect();
            let known = if known.is_empty() {
                "none (the filter has no {name} levels); {topic}, {topic.N} and {payload.FIELD} also work".to_string()
            } else {
                known.join(", ")
            };
            Err(TemplateError::UnknownCapture {
                name: name.to_string(),
                known,
            })
        }
    }
}

/// Looks up `path` in a JSON value: object keys, or array indexes where the key is a number.
pub fn lookup<'v>(mut value: &'v Value, path: &[String]) -> Option<&'v Value> {
    for key in path {
        value = match value {
            Value::Object(map) => map.get(key)?,
            Value::Array(items) => items.get(key.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn render(
        template: &str,
        filter: &str,
        topic: &str,
        payload: Option<Value>,
    ) -> Result<String, RenderError> {
        let filter = Filter::parse(filter).unwrap();
        let t = Template::parse(template, &filter).unwrap();
        let levels: Vec<&str> = topic.split('/').collect();
        let ctx = Context {
            topic,
            levels: &levels,
            payload: payload.as_ref(),
        };
        t.render_string(&ctx)
    }

    #[test]
    fn renders_placeholders() {
        let f = "devices/{device}/telemetry/{*rest}";
        let t = "devices/d1/telemetry/temp/c";
        let p = json!({"site": "s1", "n": 3, "ok": true, "loc": {"x": 1}, "tags": ["a", "b"]});
        let cases = [
            ("telemetry", "telemetry"),
            ("{device}", "d1"),
            ("{rest}", "temp/c"),
            ("{*rest}", "temp/c"),
            ("t.{device}.x", "t.d1.x"),
            ("{topic}", t),
            ("{topic.0}-{topic.4}", "devices-c"),
            ("{payload.site}", "s1"),
            ("{payload.n}/{payload.ok}", "3/true"),
            ("{payload.loc}", "{\"x\":1}"),
            ("{payload.loc.x}", "1"),
            ("{payload.tags.1}", "b"),
            ("{{literal}}", "{literal}"),
            ("", ""),
        ];
        for (template, expected) in cases {
            assert_eq!(
                render(template, f, t, Some(p.clone())).unwrap(),
                expected,
                "{template}"
            );
        }
    }

    #[test]
    fn render_errors() {
        let f = "devices/#";
        assert_eq!(
            render("{topic.5}", f, "devices/a", None),
            Err(RenderError::MissingTopicLevel {
                topic: "devices/a".into(),
                index: 5
            })
        );
        let p = json!({"site": null, "a": 1});
        for path in ["site", "nope", "a.b", "a.0"] {
            assert_eq!(
                render(
                    &format!("{{payload.{path}}}"),
                    f,
                    "devices/a",
                    Some(p.clone())
                ),
                Err(RenderError::MissingPayloadField(path.into()))
            );
        }
    }

    #[test]
    fn parse_errors() {
        let f = Filter::parse("devices/{device}/telemetry/{*rest}").unwrap();
        let fixed = Filter::parse("a/+/c").unwrap();
        let cases = [
            (
                "{devce}",
                &f,
                TemplateError::UnknownCapture {
                    name: "devce".into(),
                    known: "device, rest".into(),
                },
            ),
            ("x{device", &f, TemplateError::Unclosed),
            ("x{a{b}", &f, TemplateError::Unclosed),
            ("x}", &f, TemplateError::Unmatched),
            ("{}", &f, TemplateError::EmptyPlaceholder),
            (
                "{topic.x}",
                &f,
                TemplateError::BadTopicLevel("topic.x".into()),
            ),
            (
                "{topic.3}",
                &fixed,
                TemplateError::TopicLevelOutOfRange {
                    index: 3,
                    levels: 3,
                },
            ),
            ("{payload}", &f, TemplateError::BarePayload),
        ];
        for (template, filter, expected) in cases {
            assert_eq!(
                Template::parse(template, filter),
                Err(expected),
                "{template}"
            );
        }
        assert!(
            Template::parse("{topic.9}", &f).is_ok(),
            "a '#' filter allows any level"
        );
        assert_eq!(
            TemplateError::UnknownCapture {
                name: "devce".into(),
                known: "device, rest".into()
            }
            .to_string(),
            "unknown capture {devce}; known: device, rest"
        );
    }

    #[test]
    fn literal_and_payload_use() {
        let f = Filter::parse("a/{x}").unwrap();
        assert_eq!(
            Template::parse("plain", &f).unwrap().as_literal(),
            Some("plain")
        );
        assert_eq!(Template::parse("p.{x}", &f).unwrap().as_literal(), None);
        assert!(Template::parse("{payload.a}", &f).unwrap().uses_payload());
        assert!(!Template::parse("{x}", &f).unwrap().uses_payload());
    }
}
