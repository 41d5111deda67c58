//! A trie of topic filters: finds every route matching a topic in time proportional to the
//! topic's depth and the number of matches, not to the number of routes.
//!
//! Nodes live in one vector, in insertion order, so a route's nodes sit side by side in memory:
//! with thousands of routes, matching costs a few cache misses, not one per pointer.

use super::filter::{Filter, Level};
use smallvec::SmallVec;
use std::collections::HashMap;

/// Route ids matching one topic; most topics match a handful of routes.
pub type Matches = SmallVec<[u32; 8]>;

/// Index of a node; 0 is the root, which is never a child, so 0 also means "none".
type NodeId = u32;

#[derive(Debug, Default)]
struct Node {
    literal: HashMap<Box<str>, NodeId, foldhash::fast::RandomState>,
    single: NodeId,
    /// Routes whose filter ends in `#` here: they match this level and everything below.
    multi: Vec<u32>,
    /// Routes whose filter ends exactly here.
    end: Vec<u32>,
}

/// Filters by route index.
#[derive(Debug)]
pub struct FilterTrie {
    nodes: Vec<Node>,
}

impl Default for FilterTrie {
    fn default() -> Self {
        FilterTrie {
            nodes: vec![Node::default()],
        }
    }
}

impl FilterTrie {
    pub fn insert(&mut self, filter: &Filter, id: u32) {
        let mut at: usize = 0;
        for level in filter.levels() {
            let next = match level {
                Level::Literal(s) => self.nodes[at].literal.get(s.as_str()).copied(),
                Level::Single(_) => Some(self.nodes[at].single).filter(|&n| n != 0),
                Level::Multi(_) => {
                    self.nodes[at].multi.push(id);
                    return;
                }
            };
            at = match next {
                Some(n) => n as usize,
                None => {
                    let n = self.nodes.len() as NodeId;
                    self.nodes.push(Node::default());
                    match level {
                        Level::Literal(s) => {
                            self.nodes[at].literal.insert(s.as_str().into(), n);
                        }
                        _ => self.nodes[at].single = n,
                    }
                    n as usize
                }
            };
        }
        self.nodes[at].end.push(id);
    }

    /// The ids of every filter matching the topic split into `levels`, in id order.
    pub fn matches(&self, levels: &[&str]) -> Matches {
        let mut out = Matches::new();
        // MQTT: wildcards at the first level do not match topics starting with '$'.
        let system = levels.first().is_some_and(|l| l.starts_with('$'));
        if system {
            if let Some(&child) = self.nodes[0].literal.get(levels[0]) {
                self.walk(child, &levels[1..], &mut out);
            }
        } else {
            self.walk(0, levels, &mut out);
        }
        out.sort_unstable();
        out
    }

    fn walk(&self, at: NodeId, levels: &[&str], out: &mut Matches) {
        let node = &self.nodes[at as usize];
        out.extend_from_slice(&node.multi);
        let Some((first, rest)) = levels.split_first() else {
            out.extend_from_slice(&node.end);
            return;
        };
        if let Some(&child) = node.literal.get(*first) {
            self.walk(child, rest, out);
        }
        if node.single != 0 {
            self.walk(node.single, rest, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn trie_of(filters: &[Filter]) -> FilterTrie {
        let mut trie = FilterTrie::default();
        for (i, f) in filters.iter().enumerate() {
            trie.insert(f, i as u32);
        }
        trie
    }

    fn trie_matches(trie: &FilterTrie, topic: &str) -> Vec<u32> {
        let levels: Vec<&str> = topic.split('/').collect();
        trie.matches(&levels).into_vec()
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
            .prop_filter("MQTT filters are never empty", |f| !f.is_empty())
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
                let expected: Vec<u32> = parsed
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.matches(&topic))
                    .map(|(i, _)| i as u32)
                    .collect();
                prop_assert_eq!(trie_matches(&trie, &topic), expected, "topic {:?}", topic);
            }
        }
    }
}
