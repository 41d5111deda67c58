//! DescribeGroups and ListGroups: the groups with members or committed offsets, their states
//! and members.

use super::coordinator::{lock, Coordinator};
use super::state::{Group, GroupState, CONSUMER_PROTOCOL_TYPE};
use crate::kafka_api::str_bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use std::collections::BTreeMap;

/// The group type ListGroups v5 reports: every group here uses the classic protocol.
const CLASSIC_GROUP_TYPE: &str = "classic";
/// A state name for groups that do not exist, as Kafka reports it.
const DEAD: &str = "Dead";

impl Coordinator {
    /// DescribeGroups (v0–6). Member metadata and assignments are reported while Stable only,
    /// as Kafka does; a group with committed offsets only is Empty, an unknown one Dead (v6:
    /// GROUP_ID_NOT_FOUND).
    pub fn describe_groups(
        &self,
        req: DescribeGroupsRequest,
        version: i16,
    ) -> DescribeGroupsResponse {
        let groups = lock(&self.groups);
        let described = req
            .groups
            .into_iter()
            .map(|group_id| {
                if let Some(entry) = groups.by_id.get(group_id.as_str()) {
                    describe(group_id, &entry.group)
                } else if !self.offsets.group(group_id.as_str()).is_empty() {
                    DescribedGroup::default()
                        .with_group_id(group_id)
                        .with_group_state(str_bytes(GroupState::Empty.name()))
                        .with_protocol_type(str_bytes(CONSUMER_PROTOCOL_TYPE))
                } else {
                    let described = DescribedGroup::default()
                        .with_group_id(group_id.clone())
                        .with_group_state(str_bytes(DEAD));
                    if version >= 6 {
                        described
                            .with_error_code(ResponseError::GroupIdNotFound.code())
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Group {} not found.",
                                group_id.as_str()
                            ))))
                    } else {
                        described
                    }
                }
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(described)
    }

    /// ListGroups (v0–5): groups with members or committed offsets (the latter Empty, protocol
    /// type "consumer"), filtered by state (v4+) and type (v5: every group is "classic").
    pub fn list_groups(&self, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
        let mut listed: BTreeMap<String, (&'static str, String)> = BTreeMap::new();
        {
            let groups = lock(&self.groups);
            for (id, entry) in &groups.by_id {
                let group = &entry.group;
                let state = group.state().name();
                listed.insert(id.clone(), (state, group.protocol_type().to_owned()));
            }
        }
        for id in self.offsets.groups() {
            listed
                .entry(id)
                .or_insert_with(|| (GroupState::Empty.name(), CONSUMER_PROTOCOL_TYPE.to_owned()));
        }
        let state_ok = |state: &str| {
            version < 4
                || req.states_filter.is_empty()
                || req
                    .states_filter
                    .iter()
                    .any(|f| f.as_str().eq_ignore_ascii_case(state))
        };
        let type_ok = version < 5
            || req.types_filter.is_empty()
            || req
                .types_filter
                .iter()
                .any(|f| f.as_str().eq_ignore_ascii_case(CLASSIC_GROUP_TYPE));
        let groups = listed
            .into_iter()
            .filter(|(_, (state, _))| type_ok && state_ok(state))
            .map(|(id, (state, protocol_type))| {
                ListedGroup::default()
                    .with_group_id(GroupId(StrBytes::from_string(id)))
                    .with_protocol_type(StrBytes::from_string(protocol_type))
                    .with_group_state(str_bytes(state))
                    .with_group_type(str_bytes(CLASSIC_GROUP_TYPE))
            })
            .collect();
        ListGroupsResponse::default().with_groups(groups)
    }
}

/// A group with members, as DescribeGroups reports it.
fn describe(group_id: GroupId, group: &Group) -> DescribedGroup {
    let stable = group.state() == GroupState::Stable;
    let protocol = match group.protocol() {
        Some(protocol) if stable => protocol,
        _ => "",
    };
    let members = group
        .members()
        .into_iter()
        .map(|(id, m)| {
            let member = DescribedGroupMember::default()
                .with_member_id(str_bytes(id))
                .with_group_instance_id(m.instance_id().map(str_bytes))
                .with_client_id(str_bytes(m.client_id()))
                .with_client_host(str_bytes(m.client_host()));
            if stable {
                member
                    .with_member_metadata(m.metadata_for(protocol))
                    .with_member_assignment(m.assignment().clone())
            } else {
                member
            }
        })
        .collect();
    DescribedGroup::default()
        .with_group_id(group_id)
        .with_group_state(str_bytes(group.state().name()))
        .with_protocol_type(str_bytes(group.protocol_type()))
        .with_protocol_data(str_bytes(protocol))
        .with_members(members)
}
