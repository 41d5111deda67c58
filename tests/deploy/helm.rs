//! The Helm chart: rendered by tests/deploy/gotmpl.rs and checked resource by resource, with
//! values that change what they say, and linted by Helm itself.

use crate::common::{files_under, read, repo, yaml_documents};
use crate::gotmpl;
use crate::pods::{by_kind, check_pod, container, container_args, container_env};
use crate::support;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const CHART: &str = "deploy/helm/tributary";

/// Renders the chart as `helm template RELEASE CHART` would, with `overrides` merged over
/// values.yaml: every template but the `_` helpers, by file name.
fn render_chart(release: &str, overrides: Value) -> BTreeMap<String, String> {
    let chart: Value =
        yaml_documents(&read(&format!("{CHART}/Chart.yaml")), "Chart.yaml").remove(0);
    let mut values =
        yaml_documents(&read(&format!("{CHART}/values.yaml")), "values.yaml").remove(0);
    merge(&mut values, overrides);
    let root = json!({
        "Values": values,
        "Release": { "Name": release, "Namespace": "iot", "Service": "Helm" },
        "Chart": {
            "Name": chart["name"],
            "Version": chart["version"],
            "AppVersion": chart["appVersion"],
        },
    });
    let mut engine = gotmpl::Engine::default();
    let mut files = Vec::new();
    files_under(&repo(&format!("{CHART}/templates")), &mut files);
    files.sort();
    let mut sources = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        let nodes = engine
            .parse(&text)
            .unwrap_or_else(|e| panic!("templates/{name}: {e}"));
        sources.push((name, nodes));
    }
    sources
        .into_iter()
        .filter(|(name, _)| !name.starts_with('_'))
        .map(|(name, nodes)| {
            let out = engine
                .render(&nodes, &root, &root)
                .unwrap_or_else(|e| panic!("templates/{name}: {e}"));
            (name, out)
        })
        .collect()
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(base), Value::Object(over)) => {
            for (k, v) in over {
                merge(base.entry(k).or_insert(Value::Null), v);
            }
        }
        (base, over) => *base = over,
    }
}

fn rendered_docs(rendered: &BTreeMap<String, String>) -> Vec<Value> {
    rendered
        .iter()
        .filter(|(name, _)| name.ends_with(".yaml"))
        .flat_map(|(name, text)| yaml_documents(text, &format!("rendered templates/{name}")))
        .collect()
}

#[test]
fn helm_chart_renders_a_statefulset_configmap_and_service() {
    let rendered = render_chart("telemetry", json!({}));
    let docs = rendered_docs(&rendered);
    let kinds: BTreeSet<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["ConfigMap", "Service", "StatefulSet"])
    );
    for doc in &docs {
        assert_eq!(doc["metadata"]["name"], "telemetry-tributary");
        assert_eq!(
            doc["metadata"]["labels"]["app.kubernetes.io/instance"],
            "telemetry"
        );
        assert_eq!(
            doc["metadata"]["labels"]["helm.sh/chart"],
            "tributary-0.1.0"
        );
    }
    let statefulset = by_kind(&docs, "StatefulSet");
    let configmap = by_kind(&docs, "ConfigMap");
    check_pod("helm chart", statefulset, configmap, true);

    // The config is values.config, whole.
    let values = yaml_documents(&read(&format!("{CHART}/values.yaml")), "values.yaml").remove(0);
    let bridge = configmap["data"]["bridge.yaml"].as_str().unwrap();
    assert_eq!(yaml_documents(bridge, "bridge.yaml")[0], values["config"]);

    let tributary = container(statefulset, "tributary");
    assert_eq!(tributary["image"], "registry.example.com/tributary:0.1.0");
    assert_eq!(tributary["resources"], values["resources"]);
    let selector = &statefulset["spec"]["selector"]["matchLabels"];
    assert_eq!(
        &statefulset["spec"]["template"]["metadata"]["labels"], selector,
        "the pods carry the selector's labels"
    );
    assert_eq!(by_kind(&docs, "Service")["spec"]["selector"], *selector);
    let claim = &statefulset["spec"]["volumeClaimTemplates"][0];
    assert_eq!(claim["metadata"]["name"], "data");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "10Gi");
    assert!(claim["spec"].get("storageClassName").is_none());
    let checksum = statefulset["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        .as_str()
        .unwrap();
    assert_eq!(checksum.len(), 64, "a SHA-256 of the config: {checksum}");

    let notes = &rendered["NOTES.txt"];
    assert!(
        notes.contains("statefulset/telemetry-tributary 9464"),
        "{notes}"
    );
    assert!(!notes.contains("WARNING"), "{notes}");
}

#[test]
fn helm_chart_values_change_what_they_say() {
    let rendered = render_chart(
        "edge",
        json!({
            "fullnameOverride": "bridge",
            "image": { "tag": "0.2.0" },
            "logFormat": "json",
            "service": { "ports": { "http": 9100, "kafka": 19092 } },
            "metrics": { "annotations": false },
            "persistence": { "enabled": false, "storageClass": "fast" },
            "mqttPasswordSecret": { "name": "mqtt" },
            "extraEnv": [{ "name": "TRIBUTARY_MQTT__KEEP_ALIVE", "value": "10s" }],
            "nodeSelector": { "disktype": "ssd" },
            "podAnnotations": { "team": "iot" },
            "config": { "mqtt": { "max_inflight": 256 } },
        }),
    );
    let docs = rendered_docs(&rendered);
    let statefulset = by_kind(&docs, "StatefulSet");
    let configmap = by_kind(&docs, "ConfigMap");
    assert_eq!(statefulset["metadata"]["name"], "bridge");
    check_pod("helm chart with overrides", statefulset, configmap, false);

    let tributary = container(statefulset, "tributary");
    assert_eq!(tributary["image"], "registry.example.com/tributary:0.2.0");
    assert_eq!(
        container_args(tributary),
        [
            "run",
            "-c",
            "/etc/tributary/bridge.yaml",
            "--log-format",
            "json"
        ]
    );
    let env = container_env(tributary);
    assert_eq!(env["TRIBUTARY_HTTP__LISTEN"], "0.0.0.0:9100");
    assert_eq!(
        env["TRIBUTARY_LOG__EMBEDDED__KAFKA_LISTENER"],
        "0.0.0.0:19092"
    );
    assert_eq!(env["TRIBUTARY_MQTT__KEEP_ALIVE"], "10s");
    let secret = tributary["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "TRIBUTARY_MQTT__PASSWORD")
        .expect("the password from the Secret");
    assert_eq!(
        secret["valueFrom"]["secretKeyRef"],
        json!({ "name": "mqtt", "key": "password" })
    );
    let pod = &statefulset["spec"]["template"];
    assert_eq!(pod["metadata"]["annotations"]["team"], "iot");
    assert_eq!(pod["spec"]["nodeSelector"], json!({ "disktype": "ssd" }));
    // No claim: an emptyDir, and NOTES.txt says what that costs.
    assert!(statefulset["spec"].get("volumeClaimTemplates").is_none());
    let data = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "data")
        .expect("a data volume");
    assert_eq!(data["emptyDir"], json!({}));
    assert!(rendered["NOTES.txt"].contains("WARNING: persistence.enabled is false"));
    let service = by_kind(&docs, "Service");
    let ports: Vec<u64> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_u64().unwrap())
        .collect();
    assert_eq!(ports, [19092, 9100]);
    let bridge =
        yaml_documents(configmap["data"]["bridge.yaml"].as_str().unwrap(), "bridge").remove(0);
    assert_eq!(bridge["mqtt"]["max_inflight"], 256);
    assert_eq!(
        bridge["mqtt"]["url"], "mqtt://mosquitto:1883",
        "merged over the defaults"
    );
}

#[test]
fn helm_chart_storage_class_is_used_when_set() {
    let docs = rendered_docs(&render_chart(
        "t",
        json!({ "persistence": { "storageClass": "fast", "size": "50Gi" } }),
    ));
    let claim = &by_kind(&docs, "StatefulSet")["spec"]["volumeClaimTemplates"][0]["spec"];
    assert_eq!(claim["storageClassName"], "fast");
    assert_eq!(claim["resources"]["requests"]["storage"], "50Gi");
}

/// Helm's own lint (Helm v4's Go library, from PyPI's helm-sdkpy): the chart file, the values
/// and every template rendered with them as YAML. Infos (no icon) are fine; warnings are not.
#[test]
fn helm_lint_passes() {
    let python = support::require(
        &std::env::var("TRIBUTARY_PYTHON").unwrap_or_else(|_| "python3".into()),
        "apt-get install -y python3 python3-pip",
    );
    let out = Command::new(python)
        .arg(repo("tests/python/helm_lint.py"))
        .arg(repo(CHART))
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "helm lint could not run: {stderr}");
    let result: Value = serde_json::from_slice(&out.stdout).unwrap();
    let problems: Vec<&Value> = result["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["severity"].as_u64().unwrap() >= 2)
        .collect();
    assert!(
        problems.is_empty(),
        "helm lint ({}): {problems:?} (severity 2 warning, 3 error; the library drops the \
         message text: the helm_chart_* tests render the same templates and say more)",
        result["library"]
    );
}
