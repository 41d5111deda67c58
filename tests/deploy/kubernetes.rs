//! The Kubernetes sidecar example: its pod spec, a claim per pod, a governing Service, and
//! the application reading the log over the Kafka API in the pod.

use crate::common::{read, yaml_documents};
use crate::pods::{by_kind, check_pod, container};

#[test]
fn kubernetes_sidecar_example() {
    let origin = "deploy/kubernetes/sidecar.yaml";
    let docs = yaml_documents(&read(origin), origin);
    let statefulset = by_kind(&docs, "StatefulSet");
    let configmap = by_kind(&docs, "ConfigMap");
    check_pod(origin, statefulset, configmap, true);

    // The log on a claim per pod, and a governing Service that exists.
    let claims = statefulset["spec"]["volumeClaimTemplates"]
        .as_array()
        .unwrap();
    assert_eq!(claims[0]["metadata"]["name"], "data");
    let service = by_kind(&docs, "Service");
    assert_eq!(
        service["metadata"]["name"],
        statefulset["spec"]["serviceName"]
    );
    assert!(
        container(statefulset, "app")["env"]
            .to_string()
            .contains("127.0.0.1:9092"),
        "the application reads the log over the Kafka API in the pod"
    );
}
