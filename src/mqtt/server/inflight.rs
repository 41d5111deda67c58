//! One connection's unfinished publishes, both ways: a pure state machine, no I/O.
//!
//! [`Inflight`]: what the client published.
//!
//! Publishes are registered in arrival order; the pipeline reports each stored, and acks leave
//! strictly in arrival order (PUBACK for QoS 1, PUBREC for QoS 2), as MQTT requires. A QoS 2
//! packet id is held from its PUBLISH until its PUBREL, so a PUBLISH sent again with that id
//! (DUP) is not stored twice, and each such PUBLISH is answered with a PUBREC (MQTT-4.3.3):
//! at once if stored, else once it is. Every held publish counts against the receive maximum until its
//! PUBACK, or for QoS 2 its PUBCOMP.

use super::codec::{Outbound, Reason};
use crate::message::Qos;
use std::collections::{HashMap, VecDeque};

/// Names one registered publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token(u64);

#[derive(Debug, Clone, Copy)]
struct Entry {
    pkid: u16,
    qos2: bool,
    /// `Some` once settled: stored (success) or refused with a reason.
    outcome: Option<Reason>,
}

/// Where a QoS 2 packet id stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exactly {
    /// Being stored; PUBREC not sent yet. `again`: PUBLISHes of it sent again meanwhile, each
    /// owed its own PUBREC.
    Storing { again: u16 },
    /// Stored and PUBREC sent: waiting for PUBREL.
    Recorded,
}

/// What to do with a PUBLISH.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// New: hand it to the pipeline and report it with the token.
    Store(Token),
    /// A QoS 2 publish already held: not stored again; send this (PUBREC) if anything.
    Duplicate(Option<Outbound>),
}

#[derive(Debug, Default)]
pub struct Inflight {
    /// Sequence number of `queue[0]`.
    front_seq: u64,
    queue: VecDeque<Entry>,
    exactly: HashMap<u16, Exactly>,
    recorded: usize,
}

impl Inflight {
    /// A connection's state, continuing a session whose QoS 2 ids in `recorded` were stored
    /// and PUBRECed on an earlier connection.
    pub fn resume(recorded: impl IntoIterator<Item = u16>) -> Inflight {
        let exactly: HashMap<u16, Exactly> = recorded
            .into_iter()
            .map(|p| (p, Exactly::Recorded))
            .collect();
        Inflight {
            recorded: exactly.len(),
            exactly,
            ..Inflight::default()
        }
    }

    /// A QoS 1 or 2 PUBLISH arrived (QoS 0 needs no state).
    pub fn publish(&mut self, qos: Qos, pkid: u16) -> Admit {
        let qos2 = qos == Qos::ExactlyOnce;
        if qos2 {
            match self.exactly.get_mut(&pkid) {
                Some(Exactly::Storing { again }) => {
                    *again = again.saturating_add(1);
                    return Admit::Duplicate(None);
                }
                Some(Exactly::Recorded) => {
                    return Admit::Duplicate(Some(Outbound::PubRec {
                        pkid,
                        reason: Reason::Success,
                    }))
                }
                None => {
                    self.exactly.insert(pkid, Exactly::Storing { again: 0 });
                }
            }
        }
        Admit::Store(self.push(Entry {
            pkid,
            qos2,
            outcome: None,
        }))
    }

    /// A QoS 1 or 2 PUBLISH refused with `reason` (it is not stored): its ack takes its turn.
    pub fn refuse(&mut self, qos: Qos, pkid: u16, reason: Reason) -> Vec<Outbound> {
        let qos2 = qos == Qos::ExactlyOnce;
        if qos2 && self.exactly.contains_key(&pkid) {
            // The id is in use by a publish being stored or awaiting PUBREL: a duplicate.
            return match self.publish(qos, pkid) {
                Admit::Duplicate(reply) => reply.into_iter().collect(),
                Admit::Store(_) => Vec::new(),
            };
        }
        self.push(Entry {
            pkid,
            qos2,
            outcome: Some(reason),
        });
        self.release_settled()
    }

    /// The publish is stored: the acks now due, in arrival order. Unknown or repeated tokens
    /// change nothing.
    pub fn stored(&mut self, token: Token) -> Vec<Outbound> {
        let Some(index) = token.0.checked_sub(self.front_seq) else {
            return Vec::new();
        };
        match self.queue.get_mut(index as usize) {
            Some(entry) if entry.outcome.is_none() => entry.outcome = Some(Reason::Success),
            _ => return Vec::new(),
        }
        self.release_settled()
    }

    /// PUBREL: the QoS 2 flow ends with PUBCOMP.
    pub fn release(&mut self, pkid: u16) -> Outbound {
        let reason = match self.exactly.get(&pkid) {
            Some(Exactly::Recorded) => {
                self.exactly.remove(&pkid);
                self.recorded -= 1;
                Reason::Success
            }
            // Not PUBRECed (still storing, or unknown): nothing to release.
            _ => Reason::PacketIdentifierNotFound,
        };
        Outbound::PubComp { pkid, reason }
    }

    /// QoS 2 publishes not stored yet.
    pub fn storing(&self) -> usize {
        self.exactly.len() - self.recorded
    }

    /// Publishes that count against the receive maximum.
    pub fn unacked(&self) -> usize {
        self.queue.len() + self.recorded
    }

    /// QoS 2 ids stored and awaiting PUBREL: what a persistent session keeps.
    pub fn recorded(&self) -> Vec<u16> {
        let mut ids: Vec<u16> = self
            .exactly
            .iter()
            .filter(|(_, s)| **s == Exactly::Recorded)
            .map(|(p, _)| *p)
            .collect();
        ids.sort_unstable();
        ids
    }

    fn push(&mut self, entry: Entry) -> Token {
        let token = Token(self.front_seq + self.queue.len() as u64);
        self.queue.push_back(entry);
        token
    }

    fn release_settled(&mut self) -> Vec<Outbound> {
        let mut acks = Vec::new();
        while let Some(reason) = self.queue.front().and_then(|e| e.outcome) {
            let entry = self.queue.pop_front().expect("checked");
            self.front_seq += 1;
            let pkid = entry.pkid;
            if !entry.qos2 {
                acks.push(Outbound::PubAck { pkid, reason });
                continue;
            }
            let again = match self.exactly.get(&pkid) {
                Some(Exactly::Storing { again }) => *again,
                _ => 0,
            };
            // A refused one was never held (see `refuse`).
            if reason == Reason::Success {
                self.exactly.insert(pkid, Exactly::Recorded);
                self.recorded += 1;
            }
            for _ in 0..=again {
                acks.push(Outbound::PubRec { pkid, reason });
            }
        }
        acks
    }
}

/// What the listener published to the client (egress): QoS 1 packet ids awaiting PUBACK, at
/// most the client's receive maximum.
#[derive(Debug)]
pub struct Pushes<T> {
    sent: HashMap<u16, T>,
    next: u16,
    limit: usize,
}

impl<T> Pushes<T> {
    pub fn new(limit: u16) -> Pushes<T> {
        Pushes {
            sent: HashMap::new(),
            next: 0,
            limit: usize::from(limit.max(1)),
        }
    }

    /// Whether another QoS 1 PUBLISH may go out now.
    pub fn has_room(&self) -> bool {
        self.sent.len() < self.limit
    }

    /// A packet id for a QoS 1 PUBLISH, holding `waiter` until its PUBACK.
    pub fn send(&mut self, waiter: T) -> u16 {
        loop {
            self.next = self.next.checked_add(1).unwrap_or(1);
            if !self.sent.contains_key(&self.next) {
                self.sent.insert(self.next, waiter);
                return self.next;
            }
        }
    }

    /// PUBACK: the waiter of `pkid`, if one was waiting.
    pub fn acked(&mut self, pkid: u16) -> Option<T> {
        self.sent.remove(&pkid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(admit: Admit) -> Token {
        match admit {
            Admit::Store(t) => t,
            other => panic!("expected Store, got {other:?}"),
        }
    }

    fn puback(pkid: u16) -> Outbound {
        Outbound::PubAck {
            pkid,
            reason: Reason::Success,
        }
    }

    fn pubrec(pkid: u16) -> Outbound {
        Outbound::PubRec {
            pkid,
            reason: Reason::Success,
        }
    }

    #[test]
    fn acks_leave_in_arrival_order_across_qos() {
        let mut f = Inflight::default();
        let a = token(f.publish(Qos::AtLeastOnce, 1));
        let b = token(f.publish(Qos::ExactlyOnce, 2));
        let c = token(f.publish(Qos::AtLeastOnce, 3));
        assert_eq!(f.stored(c), vec![]);
        assert_eq!(f.stored(b), vec![]);
        assert_eq!(f.unacked(), 3);
        assert_eq!(f.stored(a), vec![puback(1), pubrec(2), puback(3)]);
        assert_eq!(f.unacked(), 1, "the QoS 2 id waits for PUBREL");
        assert_eq!(
            f.release(2),
            Outbound::PubComp {
                pkid: 2,
                reason: Reason::Success
            }
        );
        assert_eq!(f.unacked(), 0);
    }

    #[test]
    fn a_resent_qos2_publish_is_stored_once() {
        let mut f = Inflight::default();
        let t = token(f.publish(Qos::ExactlyOnce, 5));
        assert_eq!(
            f.publish(Qos::ExactlyOnce, 5),
            Admit::Duplicate(None),
            "still storing"
        );
        assert_eq!(f.storing(), 1);
        assert_eq!(
            f.stored(t),
            vec![pubrec(5), pubrec(5)],
            "one PUBREC per PUBLISH"
        );
        assert_eq!(f.storing(), 0);
        assert_eq!(
            f.publish(Qos::ExactlyOnce, 5),
            Admit::Duplicate(Some(pubrec(5))),
            "stored: PUBREC again"
        );
        f.release(5);
        assert!(
            matches!(f.publish(Qos::ExactlyOnce, 5), Admit::Store(_)),
            "after PUBCOMP the id is free for a new message"
        );
    }

    #[test]
    fn a_refusal_waits_its_turn() {
        let mut f = Inflight::default();
        let a = token(f.publish(Qos::AtLeastOnce, 1));
        assert_eq!(f.refuse(Qos::ExactlyOnce, 2, Reason::QuotaExceeded), vec![]);
        let refused = Outbound::PubRec {
            pkid: 2,
            reason: Reason::QuotaExceeded,
        };
        assert_eq!(f.stored(a), vec![puback(1), refused]);
        assert_eq!(f.unacked(), 0, "a refused QoS 2 id is not held");
        assert!(matches!(
            f.release(2),
            Outbound::PubComp {
                reason: Reason::PacketIdentifierNotFound,
                ..
            }
        ));
    }

    #[test]
    fn a_resumed_session_remembers_recorded_ids() {
        let mut f = Inflight::resume([7, 9]);
        assert_eq!(f.unacked(), 2);
        assert_eq!(
            f.publish(Qos::ExactlyOnce, 7),
            Admit::Duplicate(Some(pubrec(7)))
        );
        f.release(9);
        assert_eq!(f.recorded(), vec![7]);
    }

    #[test]
    fn pushes_take_free_ids_up_to_the_limit() {
        let mut p = Pushes::new(2);
        let a = p.send("a");
        let b = p.send("b");
        assert_ne!(a, b);
        assert!(!p.has_room());
        assert_eq!(p.acked(a), Some("a"));
        assert_eq!(p.acked(a), None, "an id acks once");
        assert!(p.has_room());
        let c = p.send("c");
        assert!(c != b && c != 0);
    }

    #[test]
    fn repeated_and_unknown_tokens_are_ignored() {
        let mut f = Inflight::default();
        let a = token(f.publish(Qos::AtLeastOnce, 1));
        assert_eq!(f.stored(a), vec![puback(1)]);
        assert_eq!(f.stored(a), vec![]);
        assert_eq!(f.stored(Token(42)), vec![]);
    }
}
