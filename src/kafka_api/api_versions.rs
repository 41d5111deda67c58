//! ApiVersions, and the one list of the APIs and versions this broker offers: what librdkafka
//! (kcat included), the Java client and kafka-python negotiate, within what the codecs decode,
//! leaving out versions that need features the embedded log does not have (topic ids in Fetch
//! 13+, batched OffsetFetch 8+ and FindCoordinator 4+, consumer-protocol heartbeats, client
//! telemetry).

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Message;
use kafka_protocol::ResponseError;
use std::ops::RangeInclusive;

/// (api, our min, our max); the offered range is this within the codec's own.
const OFFERED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 3),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    // Idempotent producers only: a transactional id is refused (init_producer_id).
    (ApiKey::InitProducerId, 0, 5),
    // Answered with ILLEGAL_SASL_STATE when `kafka_auth` is off, as Kafka's plaintext listeners do.
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

fn codec(api: ApiKey) -> (i16, i16) {
    let v = match api {
        ApiKey::Produce => ProduceRequest::VERSIONS,
        ApiKey::Fetch => FetchRequest::VERSIONS,
        ApiKey::ListOffsets => ListOffsetsRequest::VERSIONS,
        ApiKey::Metadata => MetadataRequest::VERSIONS,
        ApiKey::OffsetCommit => OffsetCommitRequest::VERSIONS,
        ApiKey::OffsetFetch => OffsetFetchRequest::VERSIONS,
        ApiKey::FindCoordinator => FindCoordinatorRequest::VERSIONS,
        ApiKey::JoinGroup => JoinGroupRequest::VERSIONS,
        ApiKey::Heartbeat => HeartbeatRequest::VERSIONS,
        ApiKey::LeaveGroup => LeaveGroupRequest::VERSIONS,
        ApiKey::SyncGroup => SyncGroupRequest::VERSIONS,
        ApiKey::DescribeGroups => DescribeGroupsRequest::VERSIONS,
        ApiKey::ListGroups => ListGroupsRequest::VERSIONS,
        ApiKey::ApiVersions => ApiVersionsRequest::VERSIONS,
        ApiKey::CreateTopics => CreateTopicsRequest::VERSIONS,
        ApiKey::InitProducerId => InitProducerIdRequest::VERSIONS,
        ApiKey::SaslHandshake => SaslHandshakeRequest::VERSIONS,
        ApiKey::SaslAuthenticate => SaslAuthenticateRequest::VERSIONS,
        _ => return (0, -1),
    };
    (v.min, v.max)
}

/// Every offered API with its version range.
fn offered() -> impl Iterator<Item = (ApiKey, i16, i16)> {
    OFFERED.iter().map(|&(api, min, max)| {
        let (cmin, cmax) = codec(api);
        (api, min.max(cmin), max.min(cmax))
    })
}

/// The versions of `api` this broker answers, if it offers it at all.
pub fn supported(api: ApiKey) -> Option<RangeInclusive<i16>> {
    offered()
        .find(|(a, _, _)| *a == api)
        .map(|(_, min, max)| min..=max)
}

/// The offered APIs and versions.
pub fn handle() -> ApiVersionsResponse {
    let keys = offered()
        .map(|(api, min, max)| {
            ApiVersion::default()
                .with_api_key(api as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    ApiVersionsResponse::default().with_api_keys(keys)
}

/// For an ApiVersions request of a version this broker does not speak: UNSUPPORTED_VERSION,
/// and the list, encoded as v0 so any client reads it.
pub fn unsupported() -> ApiVersionsResponse {
    handle().with_error_code(ResponseError::UnsupportedVersion.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_clients_need() {
        // librdkafka < 2.11 enables magic v2 only if Produce covers 3 and Fetch covers 4, and
        // groups only if these start at 0 (notes/kafka-protocol.md).
        for (api, v) in [
            (ApiKey::Produce, 3),
            (ApiKey::Fetch, 4),
            (ApiKey::Fetch, 12),
            (ApiKey::OffsetFetch, 1),
            (ApiKey::OffsetCommit, 2),
        ] {
            assert!(supported(api).unwrap().contains(&v), "{api:?} v{v}");
        }
        for api in [
            ApiKey::FindCoordinator,
            ApiKey::JoinGroup,
            ApiKey::SyncGroup,
            ApiKey::Heartbeat,
            ApiKey::LeaveGroup,
            ApiKey::ApiVersions,
            ApiKey::Metadata,
        ] {
            assert_eq!(*supported(api).unwrap().start(), 0, "{api:?}");
        }
        assert_eq!(supported(ApiKey::Fetch), Some(4..=12), "no topic ids");
        assert_eq!(supported(ApiKey::DeleteTopics), None);
        // librdkafka enables idempotence only with InitProducerId.
        assert_eq!(supported(ApiKey::InitProducerId), Some(0..=5));
    }
}
