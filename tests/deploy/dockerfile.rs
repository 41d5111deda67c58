//! The Dockerfile parsed into stages and instructions (continuations joined, shell words and
//! exec form split), and the patterns of `.dockerignore`.

use crate::common::read;
use std::collections::BTreeMap;

/// One instruction: its keyword (upper case) and the rest of its line, continuations joined.
#[derive(Debug, Clone)]
pub(crate) struct Instruction {
    pub(crate) keyword: String,
    pub(crate) args: String,
}

#[derive(Debug)]
pub(crate) struct Stage {
    pub(crate) base: String,
    pub(crate) name: Option<String>,
    pub(crate) instructions: Vec<Instruction>,
}

impl Stage {
    pub(crate) fn all(&self, keyword: &str) -> Vec<&Instruction> {
        self.instructions
            .iter()
            .filter(|i| i.keyword == keyword)
            .collect()
    }

    pub(crate) fn last(&self, keyword: &str) -> &Instruction {
        self.all(keyword)
            .pop()
            .unwrap_or_else(|| panic!("stage {:?} has no {keyword}", self.name))
    }

    /// The stage's environment: every `ENV K=V ...` (and the old `ENV K V`) form.
    pub(crate) fn env(&self) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for i in self.all("ENV") {
            if i.args.contains('=') {
                for word in shell_words(&i.args) {
                    let (k, v) = word.split_once('=').expect("ENV K=V");
                    env.insert(k.to_string(), v.to_string());
                }
            } else {
                let (k, v) = i.args.split_once(' ').expect("ENV K V");
                env.insert(k.to_string(), v.trim().to_string());
            }
        }
        env
    }
}

/// The Dockerfile's stages, with `ARG`s declared before the first `FROM` substituted into it.
pub(crate) fn dockerfile() -> Vec<Stage> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        // Comment lines are dropped, also inside a continued instruction (as Docker does).
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    assert!(
        current.is_empty(),
        "Dockerfile ends inside a continued line"
    );

    let mut args = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for line in logical {
        let (keyword, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        assert_eq!(
            keyword,
            keyword.to_uppercase(),
            "Dockerfile: instructions in upper case: {line}"
        );
        let rest = rest.split_whitespace().collect::<Vec<_>>().join(" ");
        match keyword {
            "ARG" if stages.is_empty() => {
                let (k, v) = rest.split_once('=').unwrap_or((&rest, ""));
                args.insert(k.to_string(), v.to_string());
            }
            "FROM" => {
                let mut base_and_name = rest.split(" AS ").map(str::trim);
                let mut base = base_and_name.next().unwrap().to_string();
                for (k, v) in &args {
                    base = base.replace(&format!("${{{k}}}"), v);
                }
                assert!(!base.contains('$'), "FROM {base}: an undeclared ARG");
                stages.push(Stage {
                    base,
                    name: base_and_name.next().map(String::from),
                    instructions: Vec::new(),
                });
            }
            _ => stages
                .last_mut()
                .expect("an instruction before the first FROM")
                .instructions
                .push(Instruction {
                    keyword: keyword.to_string(),
                    args: rest,
                }),
        }
    }
    stages
}

/// Splits on spaces, keeping single- and double-quoted parts together (quotes removed).
pub(crate) fn shell_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote = None;
    for c in s.chars() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ' ') => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            _ => word.push(c),
        }
    }
    if !word.is_empty() {
        words.push(word);
    }
    words
}

/// An exec-form argument (`["a", "b"]`), as Docker reads it: JSON.
pub(crate) fn exec_form(args: &str) -> Vec<String> {
    serde_json::from_str(args)
        .unwrap_or_else(|e| panic!("not an exec-form JSON array: {args}: {e}"))
}

/// `COPY [--from=X] [--chown=..] SRC... DEST`: (from, sources, destination).
pub(crate) fn copy_parts(i: &Instruction) -> (Option<String>, Vec<String>, String) {
    let mut from = None;
    let mut words: Vec<String> = Vec::new();
    for w in i.args.split_whitespace() {
        if let Some(stage) = w.strip_prefix("--from=") {
            from = Some(stage.to_string());
        } else if !w.starts_with("--") {
            words.push(w.to_string());
        }
    }
    let dest = words.pop().expect("COPY without a destination");
    (from, words, dest)
}

pub(crate) fn build_stage(stages: &[Stage]) -> &Stage {
    stages
        .iter()
        .find(|s| s.name.as_deref() == Some("build"))
        .expect("a stage named build")
}

pub(crate) fn dockerignore() -> Vec<String> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            assert!(!l.starts_with('!'), "exceptions are not checked here: {l}");
            l.trim_matches('/').to_string()
        })
        .collect()
}

/// Whether `.dockerignore` excludes `path` (or a file under it): the pattern forms it uses.
pub(crate) fn ignored(patterns: &[String], path: &str) -> bool {
    let path = path.trim_start_matches("./").trim_end_matches('/');
    patterns.iter().any(|p| {
        if let Some(suffix) = p.strip_prefix("**/*") {
            path.ends_with(suffix)
        } else {
            assert!(!p.contains('*'), "a pattern form not checked here: {p}");
            path == p || path.starts_with(&format!("{p}/"))
        }
    })
}
