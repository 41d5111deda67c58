//! The group state machine alone: no runtime, no channels, a clock the tests move by hand.

use super::*;
use ResponseError::{
    FencedInstanceId, IllegalGeneration, InconsistentGroupProtocol, NotCoordinator,
    RebalanceInProgress, UnknownMemberId,
};

const SESSION: Duration = Duration::from_secs(10);
const REBALANCE: Duration = Duration::from_secs(30);
const DELAY: Duration = Duration::from_millis(100);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn spec_with(protocols: &[(&str, &[u8])]) -> JoinSpec {
    JoinSpec {
        instance_id: None,
        client_id: "client".into(),
        client_host: "/127.0.0.1".into(),
        session_timeout: SESSION,
        rebalance_timeout: REBALANCE,
        protocol_type: "consumer".into(),
        protocols: protocols
            .iter()
            .map(|(name, meta)| (name.to_string(), Bytes::copy_from_slice(meta)))
            .collect(),
        id_required: false,
    }
}

fn spec() -> JoinSpec {
    spec_with(&[("range", b"range-meta")])
}

/// As JoinGroup v4+ asks: no id, no membership.
fn id_required() -> JoinSpec {
    JoinSpec {
        id_required: true,
        ..spec()
    }
}

fn held(member: &str) -> JoinReply {
    JoinReply::Held {
        member: member.into(),
    }
}

/// An outcome in short: `join a: gen 2 led by a [a,b]`, `join b: UnknownMemberId`,
/// `sync b: b2` (the assignment, `-` if empty), `removed b: SessionTimeout`.
fn event(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Join {
            member,
            result: Ok(j),
        } => {
            let ids: Vec<&str> = j.members.iter().map(|m| m.id.as_str()).collect();
            let (generation, leader) = (j.generation, &j.leader);
            format!(
                "join {member}: gen {generation} led by {leader} [{}]",
                ids.join(",")
            )
        }
        Outcome::Sync {
            member,
            result: Ok(s),
        } if s.assignment.is_empty() => format!("sync {member}: -"),
        Outcome::Sync {
            member,
            result: Ok(s),
        } => format!("sync {member}: {}", String::from_utf8_lossy(&s.assignment)),
        Outcome::Join {
            member,
            result: Err(e),
        }
        | Outcome::Sync {
            member,
            result: Err(e),
        } => {
            let request = if matches!(outcome, Outcome::Join { .. }) {
                "join"
            } else {
                "sync"
            };
            format!("{request} {member}: {e:?}")
        }
        Outcome::Removed { member, why } => format!("removed {member}: {why:?}"),
    }
}

/// A group and the time.
struct Fixture {
    g: Group,
    now: Instant,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            g: Group::new(DELAY),
            now: Instant::now(),
        }
    }

    /// Member "a" alone, Stable at generation 1 with assignment "a1".
    fn stable_one() -> Fixture {
        let mut f = Fixture::new();
        assert_eq!(f.join_new("a"), held("a"));
        f.advance(DELAY);
        assert_eq!(f.sync("a", 1, &[("a", b"a1")]), SyncReply::Held);
        assert_eq!(f.events(), ["join a: gen 1 led by a [a]", "sync a: a1"]);
        assert_eq!(f.g.state(), GroupState::Stable);
        f
    }

    /// "a" (leading) and "b", Stable at generation 2 with assignments "a2" and "b2".
    fn stable_two() -> Fixture {
        let mut f = Fixture::stable_one();
        assert_eq!(f.join_new("b"), held("b"));
        assert_eq!(f.rejoin("a"), held("a"));
        assert_eq!(f.sync("b", 2, &[]), SyncReply::Held);
        assert_eq!(
            f.sync("a", 2, &[("a", b"a2"), ("b", b"b2")]),
            SyncReply::Held
        );
        assert_eq!(
            f.events(),
            [
                "join a: gen 2 led by a [a,b]",
                "join b: gen 2 led by a []",
                "sync a: a2",
                "sync b: b2"
            ]
        );
        f
    }

    /// Moves the clock and acts on the deadlines due.
    fn advance(&mut self, by: Duration) {
        self.now += by;
        self.g.sweep(self.now);
    }

    fn join_new(&mut self, id: &str) -> JoinReply {
        self.g.join(Joiner::New(id.into()), spec(), self.now)
    }

    fn rejoin(&mut self, id: &str) -> JoinReply {
        self.g.join(Joiner::Known(id.into()), spec(), self.now)
    }

    fn sync(&mut self, id: &str, generation: i32, assign: &[(&str, &[u8])]) -> SyncReply {
        let spec = SyncSpec {
            member_id: id,
            generation,
            assignments: assign
                .iter()
                .map(|(m, a)| (m.to_string(), Bytes::copy_from_slice(a)))
                .collect(),
            ..SyncSpec::default()
        };
        self.g.sync(spec, self.now)
    }

    fn hb(&mut self, id: &str, generation: i32) -> Result<(), ResponseError> {
        self.g.heartbeat(id, generation, self.now)
    }

    fn commit(&mut self, id: &str, generation: i32) -> Result<(), ResponseError> {
        self.g.check_commit(id, generation, self.now)
    }

    fn leave(&mut self, id: &str) -> Result<(), ResponseError> {
        self.g.leave(id, None, self.now)
    }

    /// The outcomes since the last call, in short.
    fn events(&mut self) -> Vec<String> {
        self.g.take_outcomes().iter().map(event).collect()
    }

    fn members(&self) -> Vec<&str> {
        self.g.members().into_iter().map(|(id, _)| id).collect()
    }
}

#[test]
fn a_first_member_waits_out_the_initial_delay_leads_and_syncs() {
    let mut f = Fixture::new();
    assert_eq!(f.join_new("a"), held("a"));
    assert_eq!(f.g.state(), GroupState::PreparingRebalance);
    f.advance(DELAY - ms(1));
    assert!(f.events().is_empty());
    f.advance(ms(1));
    let joined = Joined {
        generation: 1,
        protocol_type: "consumer".into(),
        protocol: "range".into(),
        leader: "a".into(),
        member_id: "a".into(),
        members: vec![JoinedMember {
            id: "a".into(),
            instance_id: None,
            metadata: Bytes::from_static(b"range-meta"),
        }],
    };
    let answer = Outcome::Join {
        member: "a".into(),
        result: Ok(joined),
    };
    assert_eq!(f.g.take_outcomes(), [answer]);
    assert_eq!(f.g.state(), GroupState::CompletingRebalance);

    assert_eq!(f.sync("a", 1, &[("a", b"mine")]), SyncReply::Held);
    assert_eq!(f.events(), ["sync a: mine"]);
    assert_eq!(f.g.state(), GroupState::Stable);
    assert_eq!(f.hb("a", 1), Ok(()));
    // A SyncGroup sent again while Stable gets the same assignment.
    let again = Synced {
        protocol_type: "consumer".into(),
        protocol: "range".into(),
        assignment: Bytes::from_static(b"mine"),
    };
    assert_eq!(f.sync("a", 1, &[]), SyncReply::Synced(again));

    // Heartbeats keep the member well past its session timeout; silence does not.
    for _ in 0..5 {
        f.advance(SESSION / 2);
        assert_eq!(f.hb("a", 1), Ok(()));
    }
    f.advance(SESSION);
    assert_eq!(f.events(), ["removed a: SessionTimeout"]);
    assert_eq!(f.g.state(), GroupState::Empty);
}

#[test]
fn each_member_joining_during_the_initial_delay_extends_it_up_to_the_rebalance_timeout() {
    let mut f = Fixture::new();
    let spec = JoinSpec {
        rebalance_timeout: ms(250),
        ..spec()
    };
    assert_eq!(
        f.g.join(Joiner::New("a".into()), spec.clone(), f.now),
        held("a")
    );
    f.advance(ms(80));
    assert_eq!(
        f.g.join(Joiner::New("b".into()), spec.clone(), f.now),
        held("b")
    );
    f.advance(ms(90));
    // 100 ms after b would be 180 ms, but c arrives first: 270 ms, capped at 250.
    assert_eq!(f.g.join(Joiner::New("c".into()), spec, f.now), held("c"));
    f.advance(ms(79));
    assert!(f.events().is_empty());
    f.advance(ms(1));
    assert_eq!(
        f.events(),
        [
            "join a: gen 1 led by a [a,b,c]",
            "join b: gen 1 led by a []",
            "join c: gen 1 led by a []"
        ]
    );
}

#[test]
fn handed_out_member_ids_are_used_or_forgotten() {
    let mut f = Fixture::new();
    let reply = f.g.join(Joiner::New("late".into()), id_required(), f.now);
    assert_eq!(reply, JoinReply::MemberIdRequired("late".into()));
    assert!(f.members().is_empty(), "not a member yet");
    assert_eq!(f.g.state(), GroupState::Empty);
    f.advance(SESSION);
    assert_eq!(f.rejoin("late"), JoinReply::Failed(UnknownMemberId));
    assert_eq!(f.rejoin("nobody"), JoinReply::Failed(UnknownMemberId));

    let reply = f.g.join(Joiner::New("a".into()), id_required(), f.now);
    assert_eq!(reply, JoinReply::MemberIdRequired("a".into()));
    assert_eq!(f.rejoin("a"), held("a"));
    f.advance(DELAY);
    assert_eq!(f.events(), ["join a: gen 1 led by a [a]"]);
}

#[test]
fn a_second_member_rebalances_a_stable_group() {
    let mut f = Fixture::stable_one();
    let reply = f.g.join(Joiner::New("b".into()), id_required(), f.now);
    assert_eq!(reply, JoinReply::MemberIdRequired("b".into()));
    assert_eq!(f.hb("a", 1), Ok(()), "handing out an id changes nothing");
    assert_eq!(f.rejoin("b"), held("b"));

    // A learns of the rebalance on its next heartbeat; it may still commit meanwhile.
    assert_eq!(f.hb("a", 1), Err(RebalanceInProgress));
    assert_eq!(f.commit("a", 1), Ok(()));
    assert_eq!(f.sync("a", 1, &[]), SyncReply::Failed(RebalanceInProgress));
    // B waits: A has not rejoined, and the join deadline is far off.
    f.advance(ms(1_000));
    assert!(f.events().is_empty());

    // A rejoins: everyone has, so the join completes at once; only the leader gets the members.
    assert_eq!(f.rejoin("a"), held("a"));
    assert_eq!(
        f.events(),
        ["join a: gen 2 led by a [a,b]", "join b: gen 2 led by a []"]
    );
    // Heartbeats while CompletingRebalance are fine (as in Kafka); commits are not.
    assert_eq!(f.hb("a", 2), Ok(()));
    assert_eq!(f.commit("a", 2), Err(RebalanceInProgress));

    // B syncs first and waits for the leader's assignment.
    assert_eq!(f.sync("b", 2, &[]), SyncReply::Held);
    assert!(f.events().is_empty());
    let assign: &[(&str, &[u8])] = &[("a", b"for-a"), ("b", b"for-b")];
    assert_eq!(f.sync("a", 2, assign), SyncReply::Held);
    assert_eq!(f.events(), ["sync a: for-a", "sync b: for-b"]);
    assert_eq!((f.hb("a", 2), f.hb("b", 2)), (Ok(()), Ok(())));
    assert_eq!(f.hb("a", 1), Err(IllegalGeneration));
    assert_eq!(f.commit("b", 2), Ok(()));
}

#[test]
fn a_silent_member_is_evicted_and_the_other_rebalances() {
    let mut f = Fixture::stable_two();
    // Only A heartbeats; B's session runs out 10 s after its SyncGroup.
    for _ in 0..2 {
        f.advance(ms(4_000));
        assert_eq!(f.hb("a", 2), Ok(()));
    }
    assert_eq!(f.members(), ["a", "b"]);
    f.advance(ms(2_000));
    assert_eq!(f.events(), ["removed b: SessionTimeout"]);
    assert_eq!(f.hb("a", 2), Err(RebalanceInProgress));
    assert_eq!(f.hb("b", 2), Err(UnknownMemberId));

    assert_eq!(f.rejoin("a"), held("a"));
    assert_eq!(f.events(), ["join a: gen 3 led by a [a]"]);
    assert_eq!(f.sync("a", 3, &[("a", b"all")]), SyncReply::Held);
    assert_eq!(f.events(), ["sync a: all"]);
    assert_eq!(f.hb("b", 2), Err(IllegalGeneration));
    assert_eq!(f.hb("b", 3), Err(UnknownMemberId));
}

#[test]
fn members_that_do_not_rejoin_by_the_rebalance_timeout_are_removed() {
    let mut f = Fixture::stable_two();
    assert_eq!(f.join_new("c"), held("c"));
    assert_eq!(f.rejoin("a"), held("a"));
    // B heartbeats (so it is not evicted) but does not rejoin.
    for _ in 0..7 {
        f.advance(ms(4_000));
        assert_eq!(f.hb("b", 2), Err(RebalanceInProgress));
        assert!(f.events().is_empty());
    }
    f.advance(ms(2_000));
    assert_eq!(
        f.events(),
        [
            "removed b: NotRejoined",
            "join a: gen 3 led by a [a,c]",
            "join c: gen 3 led by a []"
        ]
    );
    assert_eq!(f.hb("b", 2), Err(IllegalGeneration));
    assert_eq!(f.hb("b", 3), Err(UnknownMemberId));
}

#[test]
fn a_leader_that_does_not_sync_in_time_is_removed_and_held_syncs_fail() {
    let mut f = Fixture::stable_two();
    assert_eq!(f.join_new("c"), held("c"));
    assert_eq!(f.rejoin("a"), held("a"));
    assert_eq!(f.rejoin("b"), held("b"));
    assert_eq!(f.events().len(), 3, "generation 3 joined");
    assert_eq!(f.sync("b", 3, &[]), SyncReply::Held);
    assert_eq!(f.sync("c", 3, &[]), SyncReply::Held);
    // The leader heartbeats but never syncs; B and C, held, are not evicted meanwhile.
    for _ in 0..7 {
        f.advance(ms(4_000));
        assert_eq!(f.hb("a", 3), Ok(()));
    }
    f.advance(ms(1_999));
    assert!(f.events().is_empty());
    f.advance(ms(1));
    assert_eq!(
        f.events(),
        [
            "removed a: NotSynced",
            "sync b: RebalanceInProgress",
            "sync c: RebalanceInProgress"
        ]
    );
    assert_eq!(f.hb("a", 3), Err(UnknownMemberId));
    assert_eq!(f.hb("b", 3), Err(RebalanceInProgress));
}

#[test]
fn a_held_join_completes_when_the_member_it_waits_for_leaves() {
    let mut f = Fixture::stable_one();
    assert_eq!(f.join_new("b"), held("b"));
    assert_eq!(f.leave("a"), Ok(()));
    assert_eq!(
        f.events(),
        ["removed a: Left", "join b: gen 2 led by b [b]"]
    );
}

#[test]
fn a_leaving_member_s_held_join_fails_and_the_rebalance_goes_on_without_it() {
    let mut f = Fixture::stable_one();
    assert_eq!(f.join_new("b"), held("b"));
    assert_eq!(f.leave("b"), Ok(()));
    assert_eq!(f.events(), ["join b: UnknownMemberId", "removed b: Left"]);
    assert_eq!(f.hb("a", 1), Err(RebalanceInProgress));
    assert_eq!(f.rejoin("a"), held("a"));
    assert_eq!(f.events(), ["join a: gen 2 led by a [a]"]);
}

#[test]
fn held_syncs_fail_when_the_group_rebalances() {
    // The leader leaves mid-sync.
    let mut f = Fixture::stable_two();
    assert_eq!(f.rejoin("a"), held("a"), "the leader rejoining rebalances");
    assert_eq!(f.rejoin("b"), held("b"));
    assert_eq!(f.events().len(), 2);
    assert_eq!(f.sync("b", 3, &[]), SyncReply::Held);
    assert_eq!(f.leave("a"), Ok(()));
    assert_eq!(
        f.events(),
        ["removed a: Left", "sync b: RebalanceInProgress"]
    );

    // A member rejoins with other protocols mid-sync.
    let mut f = Fixture::stable_two();
    assert_eq!(f.rejoin("a"), held("a"));
    assert_eq!(f.rejoin("b"), held("b"));
    f.events();
    assert_eq!(f.sync("b", 3, &[]), SyncReply::Held);
    let other = spec_with(&[("range", b"new")]);
    assert_eq!(f.g.join(Joiner::Known("a".into()), other, f.now), held("a"));
    assert_eq!(f.events(), ["sync b: RebalanceInProgress"]);
}

#[test]
fn a_held_request_keeps_its_member_until_abandoned() {
    let mut f = Fixture::stable_two();
    assert_eq!(f.join_new("c"), held("c"));
    // A and C heartbeat; B, held, outlives its session timeout.
    assert_eq!(f.rejoin("b"), held("b"));
    for _ in 0..3 {
        f.advance(ms(4_000));
        assert_eq!(f.hb("a", 2), Err(RebalanceInProgress));
    }
    assert_eq!(f.members(), ["a", "b", "c"]);
    // Its requester went away: the session timeout applies again.
    f.g.abandon("b", Request::Join);
    f.advance(ms(1));
    assert_eq!(f.events(), ["removed b: SessionTimeout"]);
    assert_eq!(f.rejoin("a"), held("a"));
    assert_eq!(
        f.events(),
        ["join a: gen 3 led by a [a,c]", "join c: gen 3 led by a []"]
    );
}

#[test]
fn members_leave_by_member_id_or_instance_id() {
    let mut f = Fixture::stable_two();
    assert_eq!(f.leave("nobody"), Err(UnknownMemberId));
    assert_eq!(f.g.leave("a", Some("host-1"), f.now), Err(FencedInstanceId));
    assert_eq!(f.leave("b"), Ok(()));
    assert_eq!(f.events(), ["removed b: Left"]);
    // A handed-out id still to come back holds the join phase until it does, or leaves.
    let reply = f.g.join(Joiner::New("p".into()), id_required(), f.now);
    assert_eq!(reply, JoinReply::MemberIdRequired("p".into()));
    assert_eq!(f.rejoin("a"), held("a"));
    assert!(f.events().is_empty());
    assert_eq!(f.leave("p"), Ok(()));
    assert_eq!(f.events(), ["join a: gen 3 led by a [a]"]);

    let host = |id: &str| JoinSpec {
        instance_id: Some(id.into()),
        ..spec()
    };
    assert_eq!(
        f.g.join(Joiner::New("s".into()), host("host-1"), f.now),
        held("s")
    );
    assert_eq!(f.g.leave("", Some("host-2"), f.now), Err(UnknownMemberId));
    assert_eq!(f.g.leave("", Some("host-1"), f.now), Ok(()));
    assert_eq!(f.members(), ["a"]);
}

#[test]
fn a_static_member_replaces_its_previous_incarnation() {
    let mut f = Fixture::new();
    let host = JoinSpec {
        instance_id: Some("host-1".into()),
        ..id_required()
    };
    // A static member joins at once (no MEMBER_ID_REQUIRED).
    assert_eq!(
        f.g.join(Joiner::New("s1".into()), host.clone(), f.now),
        held("s1")
    );
    f.advance(DELAY);
    assert_eq!(f.sync("s1", 1, &[]), SyncReply::Held);
    assert_eq!(f.events(), ["join s1: gen 1 led by s1 [s1]", "sync s1: -"]);
    assert_eq!(f.g.members()[0].1.instance_id(), Some("host-1"));

    // Restarted with the same instance id: replaces the old incarnation at once.
    assert_eq!(f.g.join(Joiner::New("s2".into()), host, f.now), held("s2"));
    assert_eq!(
        f.events(),
        ["removed s1: Fenced", "join s2: gen 2 led by s2 [s2]"]
    );
    assert_eq!(f.hb("s1", 2), Err(UnknownMemberId));
}

#[test]
fn checks_go_generation_then_member_then_state() {
    let mut f = Fixture::stable_one();
    // Wrong generation first, even for an unknown member.
    assert_eq!(f.hb("nobody", 7), Err(IllegalGeneration));
    assert_eq!(f.hb("nobody", 1), Err(UnknownMemberId));
    assert_eq!(f.sync("a", 0, &[]), SyncReply::Failed(IllegalGeneration));
    assert_eq!(f.sync("nobody", 1, &[]), SyncReply::Failed(UnknownMemberId));
    let claiming = |protocol_type, protocol_name| SyncSpec {
        member_id: "a",
        generation: 1,
        protocol_type,
        protocol_name,
        ..SyncSpec::default()
    };
    let now = f.now;
    for (t, n) in [(None, Some("roundrobin")), (Some("connect"), None)] {
        let reply = f.g.sync(claiming(t, n), now);
        assert_eq!(reply, SyncReply::Failed(InconsistentGroupProtocol));
    }
    let reply = f.g.sync(claiming(Some("consumer"), Some("range")), now);
    assert!(matches!(reply, SyncReply::Synced(_)), "{reply:?}");

    assert_eq!(f.commit("a", 2), Err(IllegalGeneration));
    assert_eq!(f.commit("nobody", 1), Err(UnknownMemberId));
    // A simple commit to a group with members is from a stale generation.
    assert_eq!(f.commit("", -1), Err(IllegalGeneration));
    assert_eq!(f.commit("a", 1), Ok(()));
    // Once every member left, simple commits are fine again.
    assert_eq!(f.leave("a"), Ok(()));
    assert_eq!(f.commit("", -1), Ok(()));
    assert_eq!(f.commit("a", 1), Err(IllegalGeneration));
    // A group the coordinator does not have (say, after a restart).
    assert_eq!(check_commit_without_group(-1), Ok(()));
    assert_eq!(check_commit_without_group(3), Err(IllegalGeneration));
}

#[test]
fn the_leader_s_first_choice_among_common_protocols_wins() {
    let both: &[(&str, &[u8])] = &[("range", b"r"), ("roundrobin", b"rr")];
    let rr_first: &[(&str, &[u8])] = &[("roundrobin", b"rr2"), ("range", b"r2")];
    let mut f = Fixture::new();
    let now = f.now;
    assert_eq!(
        f.g.join(Joiner::New("a".into()), spec_with(both), now),
        held("a")
    );
    assert_eq!(
        f.g.join(Joiner::New("b".into()), spec_with(rr_first), now),
        held("b")
    );
    // Nothing in common with the members, or another protocol type.
    let sticky = spec_with(&[("sticky", b"s")]);
    let connect = JoinSpec {
        protocol_type: "connect".into(),
        ..spec_with(both)
    };
    for spec in [sticky, connect] {
        let reply = f.g.join(Joiner::New("c".into()), spec, now);
        assert_eq!(reply, JoinReply::Failed(InconsistentGroupProtocol));
    }
    f.advance(DELAY);
    let chosen = |outcomes: Vec<Outcome>| -> Vec<(String, Vec<Bytes>)> {
        let joined = outcomes.into_iter().map(|o| match o {
            Outcome::Join { result: Ok(j), .. } => j,
            other => panic!("{other:?}"),
        });
        joined
            .map(|j| {
                (
                    j.protocol,
                    j.members.into_iter().map(|m| m.metadata).collect(),
                )
            })
            .collect()
    };
    // The leader (first joiner) prefers range, and gets every member's range metadata.
    let metadata = vec![Bytes::from_static(b"r"), Bytes::from_static(b"r2")];
    assert_eq!(
        chosen(f.g.take_outcomes()),
        [
            ("range".to_string(), metadata),
            ("range".to_string(), vec![])
        ]
    );

    // Only roundrobin in common.
    let mut f = Fixture::new();
    let now = f.now;
    let only_rr = spec_with(&[("roundrobin", b"x")]);
    assert_eq!(
        f.g.join(Joiner::New("a".into()), spec_with(both), now),
        held("a")
    );
    assert_eq!(f.g.join(Joiner::New("b".into()), only_rr, now), held("b"));
    f.advance(DELAY);
    let protocols: Vec<String> = chosen(f.g.take_outcomes())
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(protocols, ["roundrobin", "roundrobin"]);
}

#[test]
fn sweep_says_when_the_next_deadline_is() {
    let mut f = Fixture::new();
    assert_eq!(f.g.sweep(f.now), None);
    let reply = f.g.join(Joiner::New("p".into()), id_required(), f.now);
    assert_eq!(reply, JoinReply::MemberIdRequired("p".into()));
    assert_eq!(f.g.sweep(f.now), Some(f.now + SESSION), "the handed-out id");
    // A member with a held join has no session deadline of its own.
    assert_eq!(f.join_new("a"), held("a"));
    assert_eq!(f.g.sweep(f.now), Some(f.now + DELAY), "the initial delay");
    f.advance(DELAY);
    // CompletingRebalance: the handed-out id comes first, then A's session (10 s after its
    // join completed), then the sync deadline (30 s).
    assert_eq!(f.g.sweep(f.now), Some(f.now - DELAY + SESSION));
}

#[test]
fn stopping_fails_every_held_request() {
    let mut f = Fixture::stable_two();
    assert_eq!(f.rejoin("a"), held("a"));
    assert_eq!(f.rejoin("b"), held("b"));
    f.events();
    assert_eq!(f.sync("b", 3, &[]), SyncReply::Held);
    f.g.fail_held(NotCoordinator);
    assert_eq!(f.events(), ["sync b: NotCoordinator"]);
    assert_eq!(f.join_new("c"), held("c"));
    f.g.fail_held(NotCoordinator);
    assert_eq!(f.events(), ["join c: NotCoordinator"]);
    f.g.fail_held(NotCoordinator);
    assert!(f.events().is_empty(), "each request is answered once");
}
