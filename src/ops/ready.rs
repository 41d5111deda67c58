//! Readiness: is the gateway doing its job right now? Decided by a pure function over facts
//! and the time ([`decide`]), so every case is a unit test; [`Probes`] gathers the facts.
//!
//! Ready means every configured ingress face is up (the broker session connected) and the sink
//! is writing: no append has been waiting longer than [`HUNG_APPEND`] (a hung disk or Kafka),
//! and the last append that failed (a full disk, Kafka away) has not been followed yet by one
//! that succeeded. Each of these clears by itself once the cause is gone: the session comes
//! back, the stuck append completes, a later append succeeds.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// An append still waiting after this long makes the gateway not ready.
pub const HUNG_APPEND: Duration = Duration::from_secs(10);

/// What readiness is decided on.
#[derive(Debug, Clone, Copy)]
pub struct Facts<'a> {
    /// Each configured ingress face and whether it is up now.
    pub faces: &'a [(&'static str, bool)],
    /// When the oldest append still waiting was made.
    pub oldest_append: Option<Instant>,
    /// Why appends fail, while they do.
    pub append_failure: Option<&'a str>,
}

/// Ready, or not with every reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(Vec<String>),
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Readiness::Ready => writeln!(f, "ready"),
            Readiness::NotReady(reasons) => {
                writeln!(f, "not ready")?;
                reasons.iter().try_for_each(|r| writeln!(f, "{r}"))
            }
        }
    }
}

/// The readiness `facts` give at `now`, with an append counted as hung after `hung_after`.
pub fn decide(facts: &Facts<'_>, now: Instant, hung_after: Duration) -> Readiness {
    let mut reasons = Vec::new();
    for (face, up) in facts.faces {
        if !up {
            reasons.push(format!("ingress {face}: not connected to the MQTT broker"));
        }
    }
    if let Some(since) = facts.oldest_append {
        let waiting = now.saturating_duration_since(since);
        if waiting > hung_after {
            reasons.push(format!(
                "sink: an append has not completed for {:.1} s (limit {} s): the sink is not writing",
                waiting.as_secs_f64(),
                hung_after.as_secs()
            ));
        }
    }
    if let Some(error) = facts.append_failure {
        reasons.push(format!("sink: appends are failing: {error}"));
    }
    match reasons.is_empty() {
        true => Readiness::Ready,
        false => Readiness::NotReady(reasons),
    }
}

/// Appends in flight and the last failure, as the sink reports them: a pure state machine,
/// fed with the time by its caller.
#[derive(Debug, Default)]
pub struct AppendWatch {
    /// The ticket of `appends[0]`; tickets are consecutive along the queue.
    front: u64,
    /// When each append from `front` on was made, `None` once it ended; ended ones leave from
    /// the front, so the first is the oldest still waiting. Tickets grow with time.
    appends: VecDeque<Option<Instant>>,
    /// The failed append's ticket and why it failed.
    failure: Option<(u64, String)>,
}

/// Names one append to [`AppendWatch`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

impl AppendWatch {
    /// An append was made at `now`.
    pub fn started(&mut self, now: Instant) -> Ticket {
        let ticket = self.front + self.appends.len() as u64;
        self.appends.push_back(Some(now));
        Ticket(ticket)
    }

    fn remove(&mut self, ticket: Ticket) {
        let Some(i) = ticket.0.checked_sub(self.front) else {
            return;
        };
        if let Some(slot) = self.appends.get_mut(i as usize) {
            *slot = None;
        }
        while self.appends.front().is_some_and(Option::is_none) {
            self.appends.pop_front();
            self.front += 1;
        }
    }

    /// It is durable: the sink writes, unless a failure came from an append made after it.
    pub fn succeeded(&mut self, ticket: Ticket) {
        self.remove(ticket);
        if self.failure.as_ref().is_some_and(|(t, _)| *t < ticket.0) {
            self.failure = None;
        }
    }

    /// It failed: the sink is failing until an append made after this one succeeds.
    pub fn failed(&mut self, ticket: Ticket, error: String) {
        self.remove(ticket);
        if self.failure.as_ref().is_none_or(|(t, _)| *t <= ticket.0) {
            self.failure = Some((ticket.0, error));
        }
    }

    /// It ended without an outcome that says anything about the sink (the sink refused it
    /// only to keep order behind an earlier failure, or its caller dropped it).
    pub fn ended(&mut self, ticket: Ticket) {
        self.remove(ticket);
    }

    /// When the oldest append still waiting was made.
    pub fn oldest(&self) -> Option<Instant> {
        self.appends.front().copied().flatten()
    }

    /// Why appends fail, while they do.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_ref().map(|(_, e)| e.as_str())
    }
}

/// The facts' sources at run time: each face's connected flag and the sink's appends.
#[derive(Debug, Clone)]
pub struct Probes {
    faces: Vec<(&'static str, watch::Receiver<bool>)>,
    appends: Arc<Mutex<AppendWatch>>,
    hung_after: Duration,
}

impl Probes {
    /// `appends` is the watch the sink reports to (see [`super::WatchedSink`]).
    pub fn new(appends: Arc<Mutex<AppendWatch>>) -> Probes {
        Probes {
            faces: Vec::new(),
            appends,
            hung_after: HUNG_APPEND,
        }
    }

    /// A configured ingress face, up while `connected` says so.
    pub fn face(mut self, name: &'static str, connected: watch::Receiver<bool>) -> Probes {
        self.faces.push((name, connected));
        self
    }

    /// Readiness now.
    pub fn readiness(&self) -> Readiness {
        let faces: Vec<(&'static str, bool)> = self
            .faces
            .iter()
            .map(|(name, up)| (*name, *up.borrow()))
            .collect();
        let appends = self.appends.lock().unwrap_or_else(|e| e.into_inner());
        let facts = Facts {
            faces: &faces,
            oldest_append: appends.oldest(),
            append_failure: appends.failure(),
        };
        decide(&facts, Instant::now(), self.hung_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT_UP: &[(&str, bool)] = &[("client", true)];

    fn facts(faces: &'static [(&'static str, bool)]) -> Facts<'static> {
        Facts {
            faces,
            oldest_append: None,
            append_failure: None,
        }
    }

    fn reasons(r: Readiness) -> Vec<String> {
        match r {
            Readiness::Ready => Vec::new(),
            Readiness::NotReady(reasons) => reasons,
        }
    }

    #[test]
    fn ready_while_connected_and_writing() {
        let now = Instant::now();
        assert_eq!(
            decide(&facts(CLIENT_UP), now, HUNG_APPEND),
            Readiness::Ready
        );
        let busy = Facts {
            oldest_append: Some(now - Duration::from_secs(9)),
            ..facts(CLIENT_UP)
        };
        assert_eq!(
            decide(&busy, now, HUNG_APPEND),
            Readiness::Ready,
            "a slow append is not a hung one"
        );
    }

    #[test]
    fn a_lost_session_is_not_ready() {
        let r = reasons(decide(
            &facts(&[("client", false)]),
            Instant::now(),
            HUNG_APPEND,
        ));
        assert_eq!(r, ["ingress client: not connected to the MQTT broker"]);
    }

    #[test]
    fn an_append_waiting_over_the_limit_is_a_hung_sink() {
        let start = Instant::now();
        let f = Facts {
            oldest_append: Some(start),
            ..facts(CLIENT_UP)
        };
        assert_eq!(
            decide(&f, start + HUNG_APPEND, HUNG_APPEND),
            Readiness::Ready
        );
        let r = reasons(decide(
            &f,
            start + HUNG_APPEND + Duration::from_millis(500),
            HUNG_APPEND,
        ));
        assert_eq!(r.len(), 1);
        assert!(
            r[0].starts_with("sink: an append has not completed for 10.5 s"),
            "{r:?}"
        );
    }

    #[test]
    fn every_reason_is_given() {
        let now = Instant::now();
        let f = Facts {
            faces: &[("client", false)],
            oldest_append: Some(now - Duration::from_secs(60)),
            append_failure: Some("data/telemetry/0: No space left on device"),
        };
        let r = reasons(decide(&f, now, HUNG_APPEND));
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(
            r[2],
            "sink: appends are failing: data/telemetry/0: No space left on device"
        );
        let body = Readiness::NotReady(r).to_string();
        assert!(body.starts_with("not ready\ningress client:"), "{body}");
    }

    #[test]
    fn the_oldest_waiting_append_counts() {
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut w = AppendWatch::default();
        let a = w.started(at(0));
        let b = w.started(at(1));
        let c = w.started(at(2));
        assert_eq!(w.oldest(), Some(at(0)));
        w.succeeded(b);
        assert_eq!(w.oldest(), Some(at(0)), "a still waits");
        w.succeeded(a);
        assert_eq!(w.oldest(), Some(at(2)));
        w.ended(c);
        assert_eq!(w.oldest(), None);
    }

    #[test]
    fn a_failure_holds_until_a_later_append_succeeds() {
        let now = Instant::now();
        let mut w = AppendWatch::default();
        let before = w.started(now);
        let failed = w.started(now);
        let fenced = w.started(now);
        w.failed(failed, "disk full".into());
        assert_eq!(w.failure(), Some("disk full"));
        w.succeeded(before);
        assert_eq!(
            w.failure(),
            Some("disk full"),
            "an append made before the failure says nothing about the sink now"
        );
        w.ended(fenced);
        assert_eq!(w.failure(), Some("disk full"));
        let retry = w.started(now);
        w.failed(retry, "disk still full".into());
        assert_eq!(w.failure(), Some("disk still full"));
        let retry = w.started(now);
        w.succeeded(retry);
        assert_eq!(w.failure(), None, "writing again");
        assert_eq!(w.oldest(), None);
    }

    #[test]
    fn an_older_failure_does_not_replace_a_newer_one() {
        let now = Instant::now();
        let mut w = AppendWatch::default();
        let old = w.started(now);
        let new = w.started(now);
        w.failed(new, "new".into());
        w.failed(old, "old".into());
        assert_eq!(w.failure(), Some("new"));
    }

    #[test]
    fn probes_read_the_faces_and_the_watch() {
        let appends = Arc::new(Mutex::new(AppendWatch::default()));
        let (tx, rx) = watch::channel(false);
        let probes = Probes::new(appends.clone()).face("client", rx);
        assert!(matches!(probes.readiness(), Readiness::NotReady(_)));
        tx.send_replace(true);
        assert_eq!(probes.readiness(), Readiness::Ready);
        let t = appends.lock().unwrap().started(Instant::now());
        appends.lock().unwrap().failed(t, "refused".into());
        assert_eq!(
            probes.readiness(),
            Readiness::NotReady(vec!["sink: appends are failing: refused".into()])
        );
    }
}
