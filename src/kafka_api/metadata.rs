//! Metadata: the one broker (at its advertised address) and the partitions of the topics asked
//! for; every partition is led by this broker, with itself as the only replica.

use super::{str_bytes as s, Context, NODE_ID};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::ResponseError;

/// The broker and the topics asked for (every topic for null, or for an empty list at v0).
pub fn handle(ctx: &Context<'_>, r: MetadataRequest, version: i16) -> MetadataResponse {
    let existing = ctx.log.partition_counts();
    // v0: an empty list means every topic; v1+: null means every topic, empty means none.
    let wanted: Vec<String> = match r.topics {
        None => existing.keys().cloned().collect(),
        Some(t) if t.is_empty() && version == 0 => existing.keys().cloned().collect(),
        Some(t) => t
            .into_iter()
            .filter_map(|t| t.name.map(|n| n.0.to_string()))
            .collect(),
    };
    // Topics appear when Tributary writes them (or a producer does); consumers do not create
    // them, whatever `allow_auto_topic_creation` says.
    let topics = wanted
        .into_iter()
        .map(|name| {
            let topic =
                MetadataResponseTopic::default().with_name(Some(TopicName(s(name.clone()))));
            match existing.get(&name) {
                Some(&n) => topic.with_partitions(
                    (0..n as i32)
                        .map(|p| {
                            MetadataResponsePartition::default()
                                .with_partition_index(p)
                                .with_leader_id(BrokerId(NODE_ID))
                                .with_leader_epoch(-1)
                                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                                .with_isr_nodes(vec![BrokerId(NODE_ID)])
                        })
                        .collect(),
                ),
                None => topic.with_error_code(ResponseError::UnknownTopicOrPartition.code()),
            }
        })
        .collect();
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(s(ctx.host.clone()))
        .with_port(i32::from(ctx.port));
    MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(s(ctx.cluster_id)))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics)
}
