//! DescribeGroups and ListGroups through the coordinator.

use super::*;

#[tokio::test]
async fn describe_and_list_groups() {
    let h = Harness::new();
    let a = stable_one(&h, "active").await;
    commit(&h, "offsets-only", -1, "", &[("t", 0, 1, None)]);
    let mut joining = Box::pin(h.coord.join_group(join_req("joining", "", RANGE), 3));
    assert!(poll_now(joining.as_mut()).is_none());

    let req = DescribeGroupsRequest::default().with_groups(vec![
        gid("active"),
        gid("offsets-only"),
        gid("missing"),
        gid("joining"),
    ]);
    for version in 0..=5 {
        let resp = h.coord.describe_groups(req.clone(), version);
        encodes(&resp, version);
        let summary: Vec<_> = resp
            .groups
            .iter()
            .map(|g| {
                (
                    g.group_id.to_string(),
                    g.error_code,
                    g.group_state.to_string(),
                    g.protocol_type.to_string(),
                    g.protocol_data.to_string(),
                    g.members.len(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "active".into(),
                    0,
                    "Stable".into(),
                    "consumer".into(),
                    "range".into(),
                    1
                ),
                (
                    "offsets-only".into(),
                    0,
                    "Empty".into(),
                    "consumer".into(),
                    String::new(),
                    0
                ),
                (
                    "missing".into(),
                    0,
                    "Dead".into(),
                    String::new(),
                    String::new(),
                    0
                ),
                (
                    "joining".into(),
                    0,
                    "PreparingRebalance".into(),
                    "consumer".into(),
                    String::new(),
                    1
                ),
            ]
        );
        assert_eq!(resp.groups[0].members[0].member_id.as_str(), a);
        // No metadata or assignment while rebalancing, as in Kafka.
        assert!(resp.groups[3].members[0].member_metadata.is_empty());
    }
    let v6 = h.coord.describe_groups(req.clone(), 6);
    encodes(&v6, 6);
    assert_eq!(
        v6.groups[2].error_code,
        ResponseError::GroupIdNotFound.code()
    );

    let list = |states: &[&str], types: &[&str], version| {
        let req = ListGroupsRequest::default()
            .with_states_filter(states.iter().map(|x| s(x)).collect())
            .with_types_filter(types.iter().map(|x| s(x)).collect());
        let resp = h.coord.list_groups(req, version);
        encodes(&resp, version);
        assert_eq!(resp.error_code, 0);
        resp.groups
            .iter()
            .map(|g| {
                (
                    g.group_id.to_string(),
                    g.protocol_type.to_string(),
                    g.group_state.to_string(),
                )
            })
            .collect::<Vec<_>>()
    };
    let all = vec![
        (
            "active".to_owned(),
            "consumer".to_owned(),
            "Stable".to_owned(),
        ),
        (
            "joining".to_owned(),
            "consumer".to_owned(),
            "PreparingRebalance".to_owned(),
        ),
        (
            "offsets-only".to_owned(),
            "consumer".to_owned(),
            "Empty".to_owned(),
        ),
    ];
    for version in 0..=5 {
        assert_eq!(list(&[], &[], version), all, "v{version}");
    }
    // Filters are v4+ / v5+; older versions ignore them.
    assert_eq!(list(&["Stable"], &[], 3), all);
    assert_eq!(
        list(&["stable", "Empty"], &[], 4),
        [all[0].clone(), all[2].clone()]
    );
    assert_eq!(list(&[], &["Classic"], 5), all);
    assert!(list(&[], &["consumer"], 5).is_empty());
    drop(joining);
}
