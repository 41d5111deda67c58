//! OffsetCommit and OffsetFetch through the coordinator, and again after a restart.

use super::*;
use ResponseError::{IllegalGeneration, OffsetMetadataTooLarge, UnknownTopicOrPartition};

#[tokio::test]
async fn simple_commits_without_members() {
    let h = Harness::new();
    assert_eq!(
        commit(&h, "manual", -1, "", &[("t", 0, 10, Some("m"))]),
        [0]
    );
    let resp = h
        .coord
        .offset_fetch(fetch_req("manual", Some(&[("t", &[0])])), 3);
    assert_eq!(fetched(&resp), [("t".into(), 0, 10, "m".into(), 0)]);
    // Also on a group whose members all left.
    let a = stable_one(&h, "g").await;
    h.coord.leave_group(leave_v3("g", &[(&a, None)]), 3);
    assert_eq!(commit(&h, "g", -1, "", &[("t", 1, 3, None)]), [0]);
    assert_eq!(h.coord.offsets.fetch("g", "t", 1).unwrap().offset, 3);
    // A generation that is not the group's.
    assert_eq!(
        commit(&h, "g", 1, &a, &[("t", 1, 4, None)]),
        [IllegalGeneration.code()]
    );
}

#[tokio::test]
async fn commit_then_fetch_and_again_after_a_restart() {
    let mut h = Harness::new();
    let a = stable_one(&h, "g").await;
    let resp = h.coord.offset_commit(
        commit_req(
            "g",
            1,
            &a,
            &[
                ("t", 0, 42, Some("meta")),
                ("t", 1, 7, None),
                ("u", 3, 0, Some("")),
                ("t", -1, 1, None),
                ("u", 4, 1, Some(&"x".repeat(4097))),
            ],
        ),
        2,
    );
    encodes(&resp, 2);
    assert_eq!(
        commit_errors(&resp),
        [
            ("t".into(), 0, 0),
            ("t".into(), 1, 0),
            ("t".into(), -1, UnknownTopicOrPartition.code()),
            ("u".into(), 3, 0),
            ("u".into(), 4, OffsetMetadataTooLarge.code()),
        ]
    );
    let expect = vec![
        ("t".to_owned(), 0, 42, "meta".to_owned(), 0),
        ("t".to_owned(), 1, 7, String::new(), 0),
        ("t".to_owned(), 2, -1, String::new(), 0),
        ("u".to_owned(), 3, 0, String::new(), 0),
        ("v".to_owned(), 0, -1, String::new(), 0),
    ];
    let req = || fetch_req("g", Some(&[("t", &[0, 1, 2]), ("u", &[3]), ("v", &[0])]));
    for version in [1, 5, 7] {
        let resp = h.coord.offset_fetch(req(), version);
        encodes(&resp, version);
        assert_eq!(fetched(&resp), expect, "v{version}");
        assert_eq!(resp.error_code, 0);
    }

    h.restart();
    assert_eq!(fetched(&h.coord.offset_fetch(req(), 7)), expect);
    // Group membership is not durable: the old generation is gone.
    assert_eq!(
        commit(&h, "g", 1, &a, &[("t", 0, 43, None)]),
        [IllegalGeneration.code()]
    );

    // Unknown group: -1, "" and no error for every partition asked for.
    let resp = h
        .coord
        .offset_fetch(fetch_req("other", Some(&[("t", &[0, 1])])), 6);
    assert_eq!(
        fetched(&resp),
        [
            ("t".into(), 0, -1, String::new(), 0),
            ("t".into(), 1, -1, String::new(), 0)
        ]
    );
}

#[tokio::test]
async fn offset_fetch_with_null_topics_returns_every_committed_partition() {
    let h = Harness::new();
    commit(
        &h,
        "g",
        -1,
        "",
        &[
            ("b", 1, 11, None),
            ("a", 0, 5, Some("x")),
            ("b", 0, 10, None),
        ],
    );
    let resp = h.coord.offset_fetch(fetch_req("g", None), 2);
    encodes(&resp, 2);
    assert_eq!(
        fetched(&resp),
        [
            ("a".into(), 0, 5, "x".into(), 0),
            ("b".into(), 0, 10, String::new(), 0),
            ("b".into(), 1, 11, String::new(), 0),
        ]
    );
    assert!(h
        .coord
        .offset_fetch(fetch_req("none", None), 7)
        .topics
        .is_empty());

    // v8+: a list of groups.
    let req = OffsetFetchRequest::default()
        .with_topics(None)
        .with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(gid("g"))
                .with_topics(None),
            OffsetFetchRequestGroup::default()
                .with_group_id(gid("none"))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(TopicName(s("a")))
                    .with_partition_indexes(vec![0])])),
        ]);
    let resp = h.coord.offset_fetch(req, 8);
    encodes(&resp, 8);
    let got: Vec<_> = resp
        .groups
        .iter()
        .flat_map(|g| {
            g.topics.iter().flat_map(move |t| {
                t.partitions.iter().map(move |p| {
                    (
                        g.group_id.to_string(),
                        t.name.to_string(),
                        p.partition_index,
                        p.committed_offset,
                    )
                })
            })
        })
        .collect();
    assert_eq!(
        got,
        [
            ("g".into(), "a".into(), 0, 5),
            ("g".into(), "b".into(), 0, 10),
            ("g".into(), "b".into(), 1, 11),
            ("none".into(), "a".into(), 0, -1),
        ]
    );
}
