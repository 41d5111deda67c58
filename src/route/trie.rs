//! A trie of topic filters: finds every route matching a topic in time proportional to the
//! topic's depth and the number of matches, not to the number of routes.

use super::filter::{Filter, Level};
use std::collections::HashMap;

#[derive(Debug, Default)]
struct Node {
    literal: HashMap<Box<str>, Node>,
    single: Option<Box<Node>>,
    /// Routes whose filter ends in `#` here: they match this level and everything below.
    multi: Vec<usize>,
    /// Routes whose filter ends exactly here.
    end: Vec<usize>,
}

/// Filters by route index.
#[derive(Debug, Default)]
pub struct FilterTrie {
    root: Node,
}

impl FilterTrie {
    pub fn insert(&mut self, filter: &Filter, id: usize) {
        let mut node = &mut self.root;
        for level in filter.levels() {
            node = match level {
                Level::Literal(s) => node.literal.entry(s.as_str().into()).or_default(),
                Level::Single(_) => node.single.get_or_insert_with(Default::default),
                Level::Multi(_) => {
                    node.multi.push(id);
                    return;
                }
            };
        }
        node.end.push(id);
    }

    /// Appends the ids of every filter matching the topic split into `levels`, in id order.
    pub fn matches(&self, levels: &[&str], out: &mut Vec<usize>) {
        let start = out.len();
        // MQTT: wildcards at the first level do not match topics starting with '$'.
        let system = levels.first().is_some_and(|l| l.starts_with('$'));
        if system {
            if let Some(child) = self.root.literal.get(levels[0]) {
                walk(child, &levels[1..], out);
            }
        } else {
            walk(&self.root, levels, out);
        }
        out[start..].sort_unstable();
    }
}

fn walk(node: &Node, levels: &[&str], out: &mut Vec<usize>) {
    out.extend_from_slice(&node.multi);
    let Some((first, rest)) = levels.split_first() else {
        out.extend_from_slice(&node.end);
        return;
    };
    if let Some(child) = node.literal.get(*first) {
        walk(child, rest, out);
    }
    if let Some(child) = &node.single {
        walk(child, rest, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trie_of(filters: &[Filter]) -> FilterTrie {
        let mut trie = FilterTrie::default();
        for (i, f) in filters.iter().enumerate() {
            trie.insert(f, i);
        }
        trie
    }

    fn trie_matches(trie: &FilterTrie, topic: &str) -> Vec<usize> {
        let levels: Vec<&str> = topic.split('/').collect();
        let mut out = Vec::new();
        trie.matches(&levels, &mut out);
        out
    }

    #[test]
    fn finds_every_matching_filter_in_route_order() {
        let filters: Vec<Filter> = [
            "a/b", "#", "a/+", "a/#", "+/+", "$SYS/#", "a/b/c", "{x}/{*y}",
        ]
        .iter()
        .map(|f| Filter::parse(f).unwrap())
        .collect();
        let trie = trie_of(&filters);
        assert_eq!(trie_matches(&trie, "a/b"), vec![0, 1, 2, 3, 4, 7]);
        assert_eq!(trie_matches(&trie, "a"), vec![1, 3, 7]);
        assert_eq!(trie_matches(&trie, "$SYS/x"), vec![5]);
        assert_eq!(trie_matches(&trie, "a/b/c"), vec![1, 3, 6, 7]);
        assert_eq!(trie_matches(&trie, "b"), vec![1, 7]);
    }

    fn level() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just(String::new()),
            Just("$s".to_string()),
        ]
    }

    fn filter_level() -> impl Strategy<Value = String> {
        prop_oneof![3 => level(), 1 => Just("+".to_string()), 1 => Just("{c}".to_string())]
    }

    fn filter() -> impl Strategy<Value = String> {
        (
            proptest::collection::vec(filter_level(), 1..5),
            prop_oneof![Just(""), Just("/#"), Just("/{*r}")],
        )
            .prop_map(|(levels, tail)| {
                // At most one {c} capture per filter: later ones become '+'.
                let mut seen = false;
                let levels: Vec<String> = levels
                    .into_iter()
                    .map(|l| match l.as_str() {
                        "{c}" if seen => "+".to_string(),
                        "{c}" => {
                            seen = true;
                            l
                        }
                        _ => l,
                    })
                    .collect();
                format!("{}{tail}", levels.join("/"))
            })
    }

    proptest! {
        /// The trie agrees with the direct MQTT matcher on random filters and topics.
        #[test]
        fn trie_equals_reference(
            filters in proptest::collection::vec(prop_oneof![4 => filter(), 1 => Just("#".to_string())], 1..30),
            topics in proptest::collection::vec(proptest::collection::vec(level(), 1..6), 1..30),
        ) {
            let parsed: Vec<Filter> = filters.iter().map(|f| Filter::parse(f).unwrap()).collect();
            let trie = trie_of(&parsed);
            for topic in topics.iter().map(|t| t.join("/")) {
                let expected: Vec<usize> = parsed
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.matches(&topic))
                    .map(|(i, _)| i)
                    .collect();
                prop_assert_eq!(trie_matches(&trie, &topic), expected, "topic {:?}", topic);
            }
        }
    }
}
