//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup through the coordinator.

use super::*;
use ResponseError::{
    IllegalGeneration, InconsistentGroupProtocol, InvalidGroupId, InvalidSessionTimeout,
    MemberIdRequired, RebalanceInProgress, UnknownMemberId,
};

#[tokio::test]
async fn one_member_joins_leads_syncs_and_heartbeats() {
    let h = Harness::new();
    // v3: no MEMBER_ID_REQUIRED; held for the initial delay.
    let mut join = Box::pin(h.coord.join_group(join_req("g", "", RANGE), 3));
    assert!(poll_now(join.as_mut()).is_none());
    let preparing = describe_one(&h, "g", 0);
    assert_eq!(preparing.group_state.as_str(), "PreparingRebalance");
    assert_eq!(preparing.members.len(), 1);
    h.advance(DELAY - ms(1));
    assert!(poll_now(join.as_mut()).is_none());
    h.advance(ms(1));
    let joined = ready(join.as_mut());
    encodes(&joined, 3);
    let id = joined.member_id.to_string();
    assert!(id.starts_with("member-"), "{id}");
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.generation_id, 1);
    assert_eq!(joined.leader.as_str(), id);
    assert_eq!(joined.protocol_name.as_deref(), Some("range"));
    assert_eq!(member_ids(&joined), [id.as_str()]);
    assert_eq!(&joined.members[0].metadata[..], b"range-meta");
    assert_eq!(
        describe_one(&h, "g", 0).group_state.as_str(),
        "CompletingRebalance"
    );

    let sync = h
        .coord
        .sync_group(sync_req("g", 1, &id, &[(&id, b"mine")]), 5)
        .await;
    encodes(&sync, 5);
    assert_eq!(sync.error_code, 0);
    assert_eq!(&sync.assignment[..], b"mine");
    assert_eq!(sync.protocol_name.as_deref(), Some("range"));
    assert_eq!(sync.protocol_type.as_deref(), Some("consumer"));
    assert_eq!(hb(&h, "g", 1, &id), 0);
    // A SyncGroup sent again while Stable gets the same assignment.
    let again = h.coord.sync_group(sync_req("g", 1, &id, &[]), 0).await;
    assert_eq!((again.error_code, &again.assignment[..]), (0, &b"mine"[..]));

    let described = describe_one(&h, "g", 5);
    assert_eq!(described.group_state.as_str(), "Stable");
    assert_eq!(described.protocol_type.as_str(), "consumer");
    assert_eq!(described.protocol_data.as_str(), "range");
    assert_eq!(described.members.len(), 1);
    assert_eq!(&described.members[0].member_assignment[..], b"mine");
    assert_eq!(&described.members[0].member_metadata[..], b"range-meta");

    // Heartbeats keep the member well past its session timeout.
    for _ in 0..5 {
        h.advance(ms(SESSION_MS as u64 / 2));
        assert_eq!(hb(&h, "g", 1, &id), 0);
    }
}

#[tokio::test]
async fn member_id_required_then_rejoin() {
    let h = Harness::new();
    for version in [4, 7] {
        let group = format!("g{version}");
        let first = h
            .coord
            .join_group_with_client(join_req(&group, "", RANGE), version, "rdkafka", "/10.0.0.1")
            .await;
        encodes(&first, version);
        assert_eq!(first.error_code, MemberIdRequired.code());
        assert_eq!(first.generation_id, -1);
        assert_eq!(first.protocol_name.is_none(), version >= 7);
        let id = first.member_id.to_string();
        assert!(id.starts_with("rdkafka-"), "{id}");
        // Not a member yet.
        assert_eq!(describe_one(&h, &group, 0).members.len(), 0);

        let mut join = Box::pin(h.coord.join_group_with_client(
            join_req(&group, &id, RANGE),
            version,
            "rdkafka",
            "/10.0.0.1",
        ));
        assert!(poll_now(join.as_mut()).is_none());
        h.advance(DELAY);
        let joined = ready(join.as_mut());
        encodes(&joined, version);
        assert_eq!((joined.error_code, joined.generation_id), (0, 1));
        assert_eq!(joined.member_id.as_str(), id);
        assert_eq!(joined.leader.as_str(), id);
        let described = describe_one(&h, &group, 0);
        assert_eq!(described.members[0].client_id.as_str(), "rdkafka");
        assert_eq!(described.members[0].client_host.as_str(), "/10.0.0.1");
    }
}

#[tokio::test]
async fn join_v0_uses_the_session_timeout_as_rebalance_timeout() {
    let h = Harness::new();
    let mut join_a = Box::pin(h.coord.join_group(join_req("g", "", RANGE), 0));
    assert!(poll_now(join_a.as_mut()).is_none());
    h.advance(DELAY);
    let join_a = ready(join_a.as_mut());
    encodes(&join_a, 0);
    let a = join_a.member_id.to_string();
    let sync = h.coord.sync_group(sync_req("g", 1, &a, &[]), 0).await;
    encodes(&sync, 0);
    assert_eq!(sync.error_code, 0);

    let mut join_b = Box::pin(h.coord.join_group(join_req("g", "", RANGE), 0));
    assert!(poll_now(join_b.as_mut()).is_none());
    // A keeps heartbeating but never rejoins: after the session timeout (not the 30 s
    // rebalance timeout of the request, which v0 does not have) the join completes without A.
    h.advance(ms(5_000));
    assert_eq!(hb(&h, "g", 1, &a), RebalanceInProgress.code());
    h.advance(ms(4_999));
    assert_eq!(hb(&h, "g", 1, &a), RebalanceInProgress.code());
    assert!(poll_now(join_b.as_mut()).is_none());
    h.advance(ms(1));
    let join_b = ready(join_b.as_mut());
    assert_eq!((join_b.error_code, join_b.generation_id), (0, 2));
    assert_eq!(join_b.leader, join_b.member_id);
    assert_eq!(member_ids(&join_b), [join_b.member_id.to_string()]);
    assert_eq!(hb(&h, "g", 1, &a), IllegalGeneration.code());
    assert_eq!(hb(&h, "g", 2, &a), UnknownMemberId.code());
}

#[tokio::test]
async fn leave_group_v0_and_v3() {
    let h = Harness::new();
    let (a, b) = stable_two(&h, "g").await;
    let left = h.coord.leave_group(
        LeaveGroupRequest::default()
            .with_group_id(gid("g"))
            .with_member_id(s(&b)),
        0,
    );
    encodes(&left, 0);
    assert_eq!(left.error_code, 0);
    assert_eq!(hb(&h, "g", 2, &a), RebalanceInProgress.code());
    let join_a = h.coord.join_group(join_req("g", &a, RANGE), 5).await;
    assert_eq!(
        (join_a.generation_id, member_ids(&join_a)),
        (3, vec![a.clone()])
    );
    h.coord.sync_group(sync_req("g", 3, &a, &[]), 5).await;

    // Unknown member, unknown group (v0–2: the top-level error).
    for (group, member) in [("g", b.as_str()), ("nope", a.as_str())] {
        let left = h.coord.leave_group(
            LeaveGroupRequest::default()
                .with_group_id(gid(group))
                .with_member_id(s(member)),
            1,
        );
        encodes(&left, 1);
        assert_eq!(left.error_code, UnknownMemberId.code());
    }

    // v3+: a list, with an error per member.
    let left = h
        .coord
        .leave_group(leave_v3("g", &[(&a, None), ("nobody", None)]), 3);
    encodes(&left, 3);
    assert_eq!(left.error_code, 0);
    let errors: Vec<_> = left
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.error_code))
        .collect();
    assert_eq!(
        errors,
        [
            (a.clone(), 0),
            ("nobody".to_owned(), UnknownMemberId.code())
        ]
    );
    let described = describe_one(&h, "g", 0);
    assert_eq!(described.group_state.as_str(), "Empty");
    assert!(described.members.is_empty());
    assert_eq!(hb(&h, "g", 4, &a), UnknownMemberId.code());
    let left = h.coord.leave_group(leave_v3("nope", &[(&a, None)]), 5);
    encodes(&left, 5);
    assert_eq!(left.members[0].error_code, UnknownMemberId.code());
}

#[tokio::test]
async fn static_members_are_replaced_and_leave_by_instance_id() {
    let h = Harness::new();
    let with_instance =
        |member: &str| join_req("g", member, RANGE).with_group_instance_id(Some(s("host-1")));
    // A static member gets its id at once (no MEMBER_ID_REQUIRED).
    let mut join = Box::pin(h.coord.join_group(with_instance(""), 5));
    assert!(poll_now(join.as_mut()).is_none());
    h.advance(DELAY);
    let old = ready(join.as_mut());
    assert_eq!((old.error_code, old.generation_id), (0, 1));
    assert!(old.member_id.starts_with("host-1-"), "{}", old.member_id);
    assert_eq!(old.members[0].group_instance_id.as_deref(), Some("host-1"));
    encodes(&old, 5);
    h.coord
        .sync_group(sync_req("g", 1, &old.member_id, &[]), 5)
        .await;

    // Restarted with the same instance id: replaces the old incarnation.
    let new = h.coord.join_group(with_instance(""), 5).await;
    assert_eq!((new.error_code, new.generation_id), (0, 2));
    assert_ne!(new.member_id, old.member_id);
    assert_eq!(member_ids(&new), [new.member_id.to_string()]);
    assert_eq!(hb(&h, "g", 2, &old.member_id), UnknownMemberId.code());

    let left = h
        .coord
        .leave_group(leave_v3("g", &[("", Some("host-1"))]), 4);
    assert_eq!(left.members[0].error_code, 0);
    assert_eq!(describe_one(&h, "g", 4).group_state.as_str(), "Empty");
}

#[tokio::test]
async fn errors_for_unknown_groups_and_inconsistent_requests() {
    let h = Harness::new();
    let a = stable_one(&h, "g").await;
    assert_eq!(hb(&h, "nope", 1, &a), UnknownMemberId.code());
    let unknown_group = h.coord.sync_group(sync_req("nope", 1, &a, &[]), 3).await;
    assert_eq!(unknown_group.error_code, UnknownMemberId.code());
    // SyncGroup v5 states the protocol, which must be the group's; older versions do not.
    let roundrobin = || sync_req("g", 1, &a, &[]).with_protocol_name(Some(s("roundrobin")));
    let v5 = h.coord.sync_group(roundrobin(), 5).await;
    assert_eq!(v5.error_code, InconsistentGroupProtocol.code());
    let v3 = h.coord.sync_group(roundrobin(), 3).await;
    assert_eq!((v3.error_code, &v3.assignment[..]), (0, &b"a1"[..]));
    let t = &[("t", 0, 1, None)];
    // A generation on a group that does not exist (say, after a restart).
    assert_eq!(commit(&h, "nope", 3, &a, t), [IllegalGeneration.code()]);
    assert_eq!(commit(&h, "", -1, "", t), [InvalidGroupId.code()]);
    assert_eq!(commit(&h, "g", 2, &a, t), [IllegalGeneration.code()]);
    assert_eq!(commit(&h, "g", 1, &a, t), [0]);
}

#[tokio::test]
async fn join_validation_errors() {
    let h = Harness::new();
    let short = join_req("g", "", RANGE).with_session_timeout_ms(1_000);
    let resp = h.coord.join_group(short, 5).await;
    assert_eq!(resp.error_code, InvalidSessionTimeout.code());
    let resp = h.coord.join_group(join_req("", "", RANGE), 5).await;
    assert_eq!(resp.error_code, InvalidGroupId.code());
    let resp = h.coord.join_group(join_req("g", "", &[]), 5).await;
    assert_eq!(resp.error_code, InconsistentGroupProtocol.code());
    encodes(&resp, 5);
    for version in 0..=9 {
        encodes(
            &join_error(version, ResponseError::UnknownMemberId, "m"),
            version,
        );
    }
}

#[tokio::test]
async fn held_requests_are_answered_once_and_the_last_one_wins() {
    let h = Harness::new();
    // A JoinGroup sent again before the first is answered: the first is answered at once.
    let a = stable_one(&h, "g1").await;
    let first = h.coord.join_group(join_req("g1", "", RANGE), 7).await;
    let b = first.member_id.to_string();
    let mut first = Box::pin(h.coord.join_group(join_req("g1", &b, RANGE), 7));
    assert!(poll_now(first.as_mut()).is_none());
    let mut second = Box::pin(h.coord.join_group(join_req("g1", &b, RANGE), 7));
    assert!(poll_now(second.as_mut()).is_none());
    let replaced = ready(first.as_mut());
    encodes(&replaced, 7);
    assert_eq!(replaced.error_code, RebalanceInProgress.code());
    assert_eq!(
        replaced.protocol_name, None,
        "v7 errors have a null protocol name"
    );
    h.coord.join_group(join_req("g1", &a, RANGE), 5).await;
    assert_eq!(ready(second.as_mut()).generation_id, 2);

    // A follower's held SyncGroup fails when the leader leaves mid-sync.
    let (a, b) = stable_two(&h, "g2").await;
    let mut join_a = Box::pin(h.coord.join_group(join_req("g2", &a, RANGE), 5));
    assert!(poll_now(join_a.as_mut()).is_none());
    let join_b = h.coord.join_group(join_req("g2", &b, RANGE), 5).await;
    assert_eq!(join_b.generation_id, 3);
    assert_eq!(ready(join_a.as_mut()).generation_id, 3);
    let mut sync_b = Box::pin(h.coord.sync_group(sync_req("g2", 3, &b, &[]), 5));
    assert!(poll_now(sync_b.as_mut()).is_none());
    h.coord.leave_group(leave_v3("g2", &[(&a, None)]), 3);
    let failed = ready(sync_b.as_mut());
    assert_eq!(failed.error_code, RebalanceInProgress.code());

    // A member waiting on a held join outlives its session timeout, unless its requester went
    // away.
    let (a, b) = stable_two(&h, "g3").await;
    let other: &[(&str, &[u8])] = &[("range", b"new")];
    let mut rejoin_b = Box::pin(h.coord.join_group(join_req("g3", &b, other), 5));
    assert!(poll_now(rejoin_b.as_mut()).is_none());
    for _ in 0..3 {
        h.advance(ms(4_000));
        assert_eq!(hb(&h, "g3", 2, &a), RebalanceInProgress.code());
    }
    assert_eq!(describe_one(&h, "g3", 0).members.len(), 2);
    drop(rejoin_b);
    h.advance(ms(1));
    assert_eq!(describe_one(&h, "g3", 0).members.len(), 1);
}
