//! Counting what the gateway stored against what was published: lost records, duplicates and
//! order per device.

use crate::publish::DEVICES;
use crate::support::Stored;
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

/// Exact counts of what the log holds for messages `0..n`.
#[derive(Debug)]
pub(crate) struct Tally {
    pub(crate) records: usize,
    pub(crate) lost: Vec<usize>,
    /// (seq, copies) for every message stored more than once.
    pub(crate) duplicated: Vec<(usize, usize)>,
    /// Extra copies over all messages.
    pub(crate) duplicates: usize,
    /// A device's message stored (for the first time) after a later one of the same device.
    pub(crate) disorder: Vec<String>,
}

pub(crate) fn tally(parts: &BTreeMap<u32, Vec<Stored>>, n: usize) -> Tally {
    let mut copies = vec![0usize; n];
    let mut last: HashMap<usize, usize> = HashMap::new();
    let mut disorder = Vec::new();
    let mut records = 0;
    for (partition, stored) in parts {
        for r in stored {
            records += 1;
            let (device, seq) = r
                .value_str()
                .split_once(':')
                .expect("payload is device:seq");
            let (device, seq): (usize, usize) = (device.parse().unwrap(), seq.parse().unwrap());
            assert!(
                seq < n && seq % DEVICES == device,
                "unexpected payload {:?}",
                r.value_str()
            );
            assert_eq!(r.key.as_deref(), Some(format!("d{device}").as_bytes()));
            copies[seq] += 1;
            if copies[seq] > 1 {
                continue; // a redelivered duplicate
            }
            if let Some(prev) = last.insert(device, seq) {
                if prev > seq {
                    disorder.push(format!(
                        "partition {partition} offset {}: device {device} seq {seq} after {prev}",
                        r.offset
                    ));
                }
            }
        }
    }
    let lost = (0..n).filter(|&s| copies[s] == 0).collect();
    let duplicated: Vec<(usize, usize)> = (0..n)
        .filter(|&s| copies[s] > 1)
        .map(|s| (s, copies[s]))
        .collect();
    let duplicates = duplicated.iter().map(|(_, c)| c - 1).sum();
    Tally {
        records,
        lost,
        duplicated,
        duplicates,
        disorder,
    }
}

/// `[1, 2, 3, 7]` -> `"1-3 7"`.
pub(crate) fn ranges(seqs: impl IntoIterator<Item = usize>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(usize, usize)> = None;
    for s in seqs {
        run = match run {
            Some((a, b)) if s == b + 1 => Some((a, s)),
            Some((a, b)) => {
                out.push(if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                });
                Some((s, s))
            }
            None => Some((s, s)),
        };
    }
    if let Some((a, b)) = run {
        out.push(if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        });
    }
    out.join(" ")
}

pub(crate) fn report(name: &str, t: &Tally) {
    println!(
        "{name}: {} records; lost {} [{}]; duplicates {} over {} messages [{}]; order violations {}",
        t.records,
        t.lost.len(),
        ranges(t.lost.iter().copied().take(50)),
        t.duplicates,
        t.duplicated.len(),
        ranges(t.duplicated.iter().map(|(s, _)| *s)),
        t.disorder.len()
    );
    for d in t.disorder.iter().take(20) {
        println!("  order: {d}");
    }
}

/// Waits until `count()` reaches `n` and then stops growing (two equal reads 500 ms apart).
pub(crate) fn wait_drained(limit: Duration, n: usize, mut count: impl FnMut() -> usize) -> usize {
    let deadline = Instant::now() + limit;
    let mut last = usize::MAX;
    loop {
        let now = count();
        if now >= n && now == last {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "only {now} of {n} records stored after {limit:?}"
        );
        last = now;
        std::thread::sleep(Duration::from_millis(500));
    }
}
