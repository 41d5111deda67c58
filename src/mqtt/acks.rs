//! The in-order ack tracker: a pure state machine, no I/O.
//!
//! Every received message is registered in arrival order with the connection generation it
//! came on. When the pipeline has stored all of a message's records it reports the message
//! done; acks are released strictly in arrival order (MQTT-4.6.0-2), and only for messages of
//! the current connection: after a reconnect the broker numbers packets afresh (with
//! `session_present = 0` from 1 again), so an old ack could confirm a new, unstored message.
//! Messages of an older connection are still tracked until done (they hold pipeline slots) but
//! are never acked: the broker redelivers them.

use std::collections::VecDeque;

/// Identifies one received message to the tracker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    seq: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    generation: u64,
    /// Packet id to ack; `None` for QoS 0, which needs no ack.
    pkid: Option<u16>,
    done: bool,
}

#[derive(Debug, Default)]
pub struct AckTracker {
    generation: u64,
    /// Sequence number of `queue[0]`; sequence numbers are consecutive along the queue.
    front_seq: u64,
    queue: VecDeque<Entry>,
}

impl AckTracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a message just received on the current connection.
    pub fn received(&mut self, pkid: Option<u16>) -> Token {
        let seq = self.front_seq + self.queue.len() as u64;
        self.queue.push_back(Entry {
            generation: self.generation,
            pkid,
            done: false,
        });
        Token { seq }
    }

    /// Marks a message stored; returns the packet ids to ack now, in order. Unknown or
    /// repeated tokens change nothing.
    pub fn completed(&mut self, token: Token) -> Vec<u16> {
        let Some(index) = token.seq.checked_sub(self.front_seq) else {
            return Vec::new();
        };
        match self.queue.get_mut(index as usize) {
            Some(entry) => entry.done = true,
            None => return Vec::new(),
        }
        let mut acks = Vec::new();
        while self.queue.front().is_some_and(|e| e.done) {
            let entry = self.queue.pop_front().expect("checked");
            self.front_seq += 1;
            if entry.generation == self.generation {
                acks.extend(entry.pkid);
            }
        }
        acks
    }

    /// The connection is gone: nothing received so far may be acked any more.
    pub fn connection_lost(&mut self) {
        self.generation += 1;
    }

    /// Messages registered and not yet released.
    pub fn inflight(&self) -> usize {
        self.queue.len()
    }

    /// The current connection's number: 0 for the first, one more after each loss. A message
    /// released while the generation it was received in is still current is acked (or, at
    /// QoS 0, needs no ack); one from an older generation is not.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_leave_in_arrival_order() {
        let mut t = AckTracker::new();
        let a = t.received(Some(1));
        let b = t.received(Some(2));
        let c = t.received(Some(3));
        assert_eq!(t.completed(c), Vec::<u16>::new(), "3 waits for 1 and 2");
        assert_eq!(t.completed(b), Vec::<u16>::new());
        assert_eq!(t.inflight(), 3);
        assert_eq!(t.completed(a), vec![1, 2, 3]);
        assert_eq!(t.inflight(), 0);
    }

    #[test]
    fn qos0_needs_no_ack_but_keeps_its_place() {
        let mut t = AckTracker::new();
        let a = t.received(None);
        let b = t.received(Some(7));
        assert_eq!(t.completed(b), Vec::<u16>::new());
        assert_eq!(t.completed(a), vec![7]);
    }

    #[test]
    fn repeated_and_unknown_tokens_are_ignored() {
        let mut t = AckTracker::new();
        let a = t.received(Some(1));
        assert_eq!(t.completed(a), vec![1]);
        assert_eq!(t.completed(a), Vec::<u16>::new());
        assert_eq!(t.completed(Token { seq: 99 }), Vec::<u16>::new());
        let b = t.received(Some(2));
        assert_eq!(t.completed(b), vec![2]);
    }

    #[test]
    fn acks_of_an_older_connection_are_never_sent() {
        let mut t = AckTracker::new();
        let old1 = t.received(Some(1));
        let old2 = t.received(Some(2));
        t.connection_lost();
        // The broker reuses packet id 1 on the new connection.
        let new1 = t.received(Some(1));
        assert_eq!(
            t.completed(new1),
            Vec::<u16>::new(),
            "behind the old messages"
        );
        assert_eq!(t.completed(old2), Vec::<u16>::new());
        assert_eq!(
            t.inflight(),
            3,
            "old messages keep their pipeline slots until done"
        );
        assert_eq!(
            t.completed(old1),
            vec![1],
            "only the new connection's packet 1"
        );
        assert_eq!(t.inflight(), 0);
    }

    #[test]
    fn every_ack_of_the_current_connection_is_released_exactly_once() {
        // Random completion orders over random reconnects. Packet ids are unique here, so each
        // names one message: every ack released belongs to the connection current at that
        // moment, comes out once and in arrival order, and at the end every message of the last
        // connection has been acked.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..200 {
            let mut t = AckTracker::new();
            let mut generation = 0;
            let mut sent: Vec<(Token, u16, u64)> = Vec::new();
            let mut released: Vec<u16> = Vec::new();
            let check = |acks: Vec<u16>,
                         generation: u64,
                         sent: &[(Token, u16, u64)],
                         released: &mut Vec<u16>| {
                for pkid in acks {
                    assert_eq!(
                        sent[pkid as usize].2, generation,
                        "ack {pkid} from an older connection"
                    );
                    assert!(
                        released.last().is_none_or(|&last| last < pkid),
                        "order: {pkid} after {released:?}"
                    );
                    released.push(pkid);
                }
            };
            for i in 0..50u16 {
                if next() % 10 == 0 {
                    t.connection_lost();
                    generation += 1;
                }
                sent.push((t.received(Some(i)), i, generation));
                if next() % 3 == 0 {
                    let k = (next() % sent.len() as u64) as usize;
                    let acks = t.completed(sent[k].0);
                    check(acks, generation, &sent, &mut released);
                }
            }
            // A random completion order for the rest.
            let mut order: Vec<(u64, usize)> = (0..sent.len()).map(|k| (next(), k)).collect();
            order.sort_unstable();
            for (_, k) in order {
                let acks = t.completed(sent[k].0);
                check(acks, generation, &sent, &mut released);
            }
            for (_, pkid, g) in &sent {
                if *g == generation {
                    assert!(
                        released.contains(pkid),
                        "{pkid} of the last connection was acked"
                    );
                }
            }
            assert_eq!(t.inflight(), 0);
        }
    }
}
