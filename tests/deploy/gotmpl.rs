//! Go templates as Helm runs them, for the forms the chart uses and no more: text; actions
//! with `{{-`/`-}}` trimming; comments; `define`, `if`/`else`, `with`, `end`; pipelines of
//! fields (`.Values.a.b`, `.`, `$`), string and number literals, parentheses and the
//! functions `include default toYaml nindent indent quote trunc trimSuffix printf sha256sum
//! not`. Anything else is an error, and so is a field that values.yaml lacks (Helm would
//! print nothing; a missing value here is a mistake in the chart).

use serde_json::{json, Value};
use sha2::Digest;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub enum Node {
    Text(String),
    Print(Pipe),
    If(Pipe, Vec<Node>, Vec<Node>),
    With(Pipe, Vec<Node>, Vec<Node>),
}

pub type Pipe = Vec<Vec<Arg>>;

#[derive(Debug, Clone)]
pub enum Arg {
    Field { from_root: bool, path: Vec<String> },
    Str(String),
    Num(i64),
    Func(String),
    Paren(Pipe),
}

#[derive(Default)]
pub struct Engine {
    defines: BTreeMap<String, Vec<Node>>,
}

enum Token {
    Text(String),
    Action(String),
}

/// Splits into text and actions, applying the trim markers.
fn lex(src: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(open) = rest.find("{{") {
        let mut text = rest[..open].to_string();
        if trim_next {
            text = text.trim_start().to_string();
        }
        let mut inner = &rest[open + 2..];
        if inner.starts_with("- ") {
            text = text.trim_end().to_string();
            inner = &inner[2..];
        }
        let close = find_close(inner).ok_or("an unclosed {{")?;
        let mut action = &inner[..close];
        trim_next = action.ends_with(" -");
        if trim_next {
            action = &action[..action.len() - 2];
        }
        tokens.push(Token::Text(text));
        let action = action.trim();
        if !(action.starts_with("/*") && action.ends_with("*/")) {
            tokens.push(Token::Action(action.to_string()));
        }
        rest = &inner[close + 2..];
    }
    let mut text = rest.to_string();
    if trim_next {
        text = text.trim_start().to_string();
    }
    tokens.push(Token::Text(text));
    Ok(tokens)
}

/// The `}}` that ends an action, outside string literals.
fn find_close(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut in_string = false;
    let mut i = 0;
    while i + 1 < bytes.len() {
        match bytes[i] {
            b'\\' if in_string => i += 1,
            b'"' => in_string = !in_string,
            b'}' if !in_string && bytes[i + 1] == b'}' => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

impl Engine {
    /// Parses a template file; its `define`s are kept for `include`.
    pub fn parse(&mut self, src: &str) -> Result<Vec<Node>, String> {
        let tokens = lex(src)?;
        let mut iter = tokens.into_iter();
        let (nodes, end) = self.parse_block(&mut iter)?;
        match end {
            None => Ok(nodes),
            Some(e) => Err(format!("{{{{ {e} }}}} without a block to close")),
        }
    }

    /// Nodes up to an `end` or `else` (returned) or the end of input (None).
    fn parse_block(
        &mut self,
        tokens: &mut impl Iterator<Item = Token>,
    ) -> Result<(Vec<Node>, Option<String>), String> {
        let mut nodes = Vec::new();
        while let Some(token) = tokens.next() {
            let action = match token {
                Token::Text(t) => {
                    if !t.is_empty() {
                        nodes.push(Node::Text(t));
                    }
                    continue;
                }
                Token::Action(a) => a,
            };
            let (word, rest) = action
                .split_once(char::is_whitespace)
                .unwrap_or((&action, ""));
            match word {
                "end" | "else" => return Ok((nodes, Some(action.clone()))),
                "define" => {
                    let name = parse_string(rest.trim())?;
                    let (body, end) = self.parse_block(tokens)?;
                    if end.as_deref() != Some("end") {
                        return Err(format!("define {name:?}: no end"));
                    }
                    self.defines.insert(name, body);
                }
                "if" | "with" => {
                    let pipe = parse_pipe(rest)?;
                    let (then, end) = self.parse_block(tokens)?;
                    let otherwise = match end.as_deref() {
                        Some("end") => Vec::new(),
                        Some("else") => {
                            let (otherwise, end) = self.parse_block(tokens)?;
                            if end.as_deref() != Some("end") {
                                return Err(format!("{word}: no end after else"));
                            }
                            otherwise
                        }
                        other => return Err(format!("{word} {rest}: ended by {other:?}")),
                    };
                    nodes.push(if word == "if" {
                        Node::If(pipe, then, otherwise)
                    } else {
                        Node::With(pipe, then, otherwise)
                    });
                }
                "range" | "template" | "block" => {
                    return Err(format!("{word}: not supported by this renderer"))
                }
                _ => nodes.push(Node::Print(parse_pipe(&action)?)),
            }
        }
        Ok((nodes, None))
    }

    pub fn render(&self, nodes: &[Node], dot: &Value, root: &Value) -> Result<String, String> {
        let mut out = String::new();
        for node in nodes {
            match node {
                Node::Text(t) => out.push_str(t),
                Node::Print(pipe) => out.push_str(&text(&self.eval(pipe, dot, root)?)?),
                Node::If(pipe, then, otherwise) => {
                    let branch = if truthy(&self.eval(pipe, dot, root)?) {
                        then
                    } else {
                        otherwise
                    };
                    out.push_str(&self.render(branch, dot, root)?);
                }
                Node::With(pipe, then, otherwise) => {
                    let value = self.eval(pipe, dot, root)?;
                    if truthy(&value) {
                        out.push_str(&self.render(then, &value, root)?);
                    } else {
                        out.push_str(&self.render(otherwise, dot, root)?);
                    }
                }
            }
        }
        Ok(out)
    }

    fn eval(&self, pipe: &Pipe, dot: &Value, root: &Value) -> Result<Value, String> {
        let mut piped: Option<Value> = None;
        for command in pipe {
            let (head, args) = command.split_first().ok_or("an empty command")?;
            let value = match head {
                Arg::Func(name) => {
                    let mut values = args
                        .iter()
                        .map(|a| self.arg(a, dot, root))
                        .collect::<Result<Vec<_>, _>>()?;
                    values.extend(piped.take());
                    self.call(name, values, root)?
                }
                _ if args.is_empty() && piped.is_none() => self.arg(head, dot, root)?,
                _ => return Err(format!("{command:?}: not a function call")),
            };
            piped = Some(value);
        }
        piped.ok_or_else(|| "an empty pipeline".into())
    }

    fn arg(&self, arg: &Arg, dot: &Value, root: &Value) -> Result<Value, String> {
        match arg {
            Arg::Str(s) => Ok(Value::String(s.clone())),
            Arg::Num(n) => Ok(Value::from(*n)),
            Arg::Paren(pipe) => self.eval(pipe, dot, root),
            Arg::Func(name) => self.call(name, Vec::new(), root),
            Arg::Field { from_root, path } => {
                let mut v = if *from_root { root } else { dot };
                for key in path {
                    v = v
                        .get(key)
                        .ok_or_else(|| format!(".{}: no such value", path.join(".")))?;
                }
                Ok(v.clone())
            }
        }
    }

    fn call(&self, name: &str, args: Vec<Value>, root: &Value) -> Result<Value, String> {
        let n = args.len();
        let want = |count: usize| {
            if n == count {
                Ok(())
            } else {
                Err(format!("{name}: {count} arguments, got {n}"))
            }
        };
        let int = |v: &Value| {
            v.as_i64()
                .ok_or_else(|| format!("{name}: {v} is not a number"))
        };
        Ok(match name {
            "include" => {
                want(2)?;
                let template = args[0].as_str().ok_or("include: a name")?;
                let body = self
                    .defines
                    .get(template)
                    .ok_or_else(|| format!("include {template:?}: not defined"))?;
                Value::String(self.render(body, &args[1], root)?)
            }
            "default" => {
                want(2)?;
                if truthy(&args[1]) {
                    args[1].clone()
                } else {
                    args[0].clone()
                }
            }
            "toYaml" => {
                want(1)?;
                let yaml = serde_yaml::to_string(&args[0]).map_err(|e| e.to_string())?;
                Value::String(yaml.trim_end_matches('\n').to_string())
            }
            "nindent" | "indent" => {
                want(2)?;
                let pad = " ".repeat(int(&args[0])? as usize);
                let text = text(&args[1])?;
                let indented: Vec<String> = text.split('\n').map(|l| format!("{pad}{l}")).collect();
                let prefix = if name == "nindent" { "\n" } else { "" };
                Value::String(format!("{prefix}{}", indented.join("\n")))
            }
            "quote" => {
                want(1)?;
                Value::String(serde_json::to_string(&text(&args[0])?).unwrap())
            }
            "trunc" => {
                want(2)?;
                let text = text(&args[1])?;
                Value::String(text.chars().take(int(&args[0])? as usize).collect())
            }
            "trimSuffix" => {
                want(2)?;
                let suffix = text(&args[0])?;
                let text = text(&args[1])?;
                Value::String(text.strip_suffix(&suffix).unwrap_or(&text).to_string())
            }
            "printf" => {
                let format = text(args.first().ok_or("printf: a format")?)?;
                let mut values = args[1..].iter();
                let mut out = String::new();
                let mut chars = format.chars();
                while let Some(c) = chars.next() {
                    if c != '%' {
                        out.push(c);
                        continue;
                    }
                    match chars.next() {
                        Some('s' | 'v' | 'd') => {
                            out.push_str(&text(values.next().ok_or("printf: too few")?)?)
                        }
                        other => return Err(format!("printf: %{other:?} not supported")),
                    }
                }
                Value::String(out)
            }
            "sha256sum" => {
                want(1)?;
                let digest = sha2::Sha256::digest(text(&args[0])?.as_bytes());
                Value::String(digest.iter().map(|b| format!("{b:02x}")).collect())
            }
            "not" => {
                want(1)?;
                Value::Bool(!truthy(&args[0]))
            }
            _ => return Err(format!("{name}: not a function this renderer knows")),
        })
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// How a value prints.
fn text(v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!("{other} printed as is: use toYaml")),
    }
}

fn parse_string(s: &str) -> Result<String, String> {
    serde_json::from_str(s).map_err(|e| format!("{s}: not a string literal: {e}"))
}

fn parse_pipe(src: &str) -> Result<Pipe, String> {
    let tokens = tokenize(src)?;
    let mut pos = 0;
    let pipe = pipe_of(&tokens, &mut pos)?;
    if pos != tokens.len() {
        return Err(format!("{src}: unexpected {:?}", tokens[pos]));
    }
    Ok(pipe)
}

fn tokenize(src: &str) -> Result<Vec<String>, String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = src.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if "|()".contains(c) {
            tokens.push(c.to_string());
            i += 1;
        } else if c == '"' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            tokens.push(chars[start..i.min(chars.len())].iter().collect());
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !"|()".contains(chars[i]) {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        }
    }
    Ok(tokens)
}

fn pipe_of(tokens: &[String], pos: &mut usize) -> Result<Pipe, String> {
    let mut pipe = vec![Vec::new()];
    while *pos < tokens.len() {
        let t = &tokens[*pos];
        *pos += 1;
        match t.as_str() {
            ")" => {
                *pos -= 1;
                break;
            }
            "|" => pipe.push(Vec::new()),
            "(" => {
                let inner = pipe_of(tokens, pos)?;
                if tokens.get(*pos).map(String::as_str) != Some(")") {
                    return Err("an unclosed (".into());
                }
                *pos += 1;
                pipe.last_mut().unwrap().push(Arg::Paren(inner));
            }
            _ => pipe.last_mut().unwrap().push(arg_of(t)?),
        }
    }
    if pipe.iter().any(Vec::is_empty) {
        return Err("an empty command in a pipeline".into());
    }
    Ok(pipe)
}

fn arg_of(t: &str) -> Result<Arg, String> {
    let field = |from_root: bool, rest: &str| Arg::Field {
        from_root,
        path: rest
            .split('.')
            .filter(|p| !p.is_empty())
            .map(String::from)
            .collect(),
    };
    Ok(if t.starts_with('"') {
        Arg::Str(parse_string(t)?)
    } else if let Some(rest) = t.strip_prefix('$') {
        field(true, rest)
    } else if t.starts_with('.') {
        field(false, t)
    } else if let Ok(n) = t.parse() {
        Arg::Num(n)
    } else if t.chars().all(|c| c.is_ascii_alphanumeric()) {
        Arg::Func(t.to_string())
    } else {
        return Err(format!("{t}: not understood by this renderer"));
    })
}

#[test]
fn the_renderer_trims_and_branches_as_go_templates_do() {
    let mut engine = Engine::default();
    let root = json!({ "Values": { "a": { "b": "x" }, "on": false, "list": [1, 2], "m": {} } });
    let cases = [
        ("k: {{ .Values.a.b }}\n", "k: x\n"),
        (
            "a\n  {{- if .Values.on }}\nyes\n  {{- else }}\nno\n  {{- end }}\nz",
            "a\nno\nz",
        ),
        (
            "{{- with .Values.a }}\n{{ .b | quote }}{{ end }}",
            "\n\"x\"",
        ),
        ("{{- with .Values.m }}x{{ end }}-", "-"),
        (
            "l:{{- toYaml .Values.list | nindent 2 }}",
            "l:\n  - 1\n  - 2",
        ),
        (
            "{{ printf \"%s-%s\" \"ab\" .Values.a.b | trunc 3 | trimSuffix \"-\" }}",
            "ab",
        ),
        ("{{ default \"d\" .Values.on }}", "d"),
        ("{{/* a comment */}}x", "x"),
    ];
    for (template, expected) in cases {
        let nodes = engine.parse(template).unwrap();
        assert_eq!(
            engine.render(&nodes, &root, &root).unwrap(),
            expected,
            "{template}"
        );
    }
    let defined = engine
        .parse("{{- define \"n\" -}}\n{{ .Values.a.b }}!\n{{- end -}}")
        .unwrap();
    assert!(engine.render(&defined, &root, &root).unwrap().is_empty());
    let include = engine.parse("[{{ include \"n\" . }}]").unwrap();
    assert_eq!(engine.render(&include, &root, &root).unwrap(), "[x!]");
    // A value values.yaml lacks, or a form the renderer does not know, is an error.
    let missing = engine.parse("{{ .Values.nope }}").unwrap();
    assert!(engine.render(&missing, &root, &root).is_err());
    assert!(engine.parse("{{ range .Values.list }}{{ end }}").is_err());
    assert!(engine
        .parse("{{ lookup \"v1\" }}")
        .is_ok_and(|n| engine.render(&n, &root, &root).is_err()));
}
