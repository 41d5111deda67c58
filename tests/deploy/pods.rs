//! Checks shared by the deploy files, the sidecar example and the Helm chart: a bridge.yaml
//! passing `tributary check` as its container runs it, and what every Tributary pod spec must
//! have.

use crate::common::BIN;
use crate::dockerfile::dockerfile;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};

/// `tributary check -c FILE` (or the given arguments with `run` turned into `check`) with only
/// `env` set among TRIBUTARY_* variables, as the container has them; the log directory is a
/// temporary one (a /data on this machine must not matter).
pub(crate) fn check_config(
    origin: &str,
    yaml: &str,
    env: &BTreeMap<String, String>,
    args: Option<&[String]>,
) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bridge.yaml");
    std::fs::write(&file, yaml).unwrap();
    let file = file.display().to_string();
    let args: Vec<String> = match args {
        None => vec!["check".into(), "-c".into(), file],
        Some(args) => {
            let mut args = args.to_vec();
            let config = args
                .iter()
                .position(|a| a == "-c" || a == "--config")
                .unwrap_or_else(|| panic!("{origin}: no -c in {args:?}"));
            args[config + 1] = file;
            let run = args.iter().position(|a| a == "run").expect("run");
            args[run] = "check".into();
            args
        }
    };
    let mut command = Command::new(BIN);
    command.args(&args).current_dir(dir.path());
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("TRIBUTARY_")) {
        command.env_remove(k);
    }
    command.envs(env);
    command.env(
        "TRIBUTARY_LOG__EMBEDDED__DIR",
        dir.path().join("data").display().to_string(),
    );
    let out: Output = command.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{origin}: `tributary {}` refused it:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The container's literal `TRIBUTARY_*` and `RUST_LOG` variables (those from Secrets are
/// left out: a password changes nothing `check` decides).
pub(crate) fn container_env(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_string(),
                e["value"].as_str()?.to_string(),
            ))
        })
        .collect()
}

pub(crate) fn container_args(container: &Value) -> Vec<String> {
    container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect()
}

pub(crate) fn by_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|d| d["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind}");
    found[0]
}

pub(crate) fn container<'a>(statefulset: &'a Value, name: &str) -> &'a Value {
    statefulset["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no container {name}"))
}

/// What every Tributary pod spec must have, in the example and in the chart's output: the
/// probes on the HTTP port the gateway listens on, the scrape annotations pointing there
/// (when `annotations`), the config from the ConfigMap, the log on the `data` volume, non-root.
pub(crate) fn check_pod(origin: &str, statefulset: &Value, configmap: &Value, annotations: bool) {
    let pod = &statefulset["spec"]["template"];
    let tributary = container(statefulset, "tributary");
    let env = container_env(tributary);

    let http_port = tributary["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "http")
        .expect("a port named http")["containerPort"]
        .as_u64()
        .unwrap();
    // The listen address is the image's (0.0.0.0:9464) unless the pod sets its own.
    let listen = env
        .get("TRIBUTARY_HTTP__LISTEN")
        .cloned()
        .unwrap_or_else(|| dockerfile().last().unwrap().env()["TRIBUTARY_HTTP__LISTEN"].clone());
    assert_eq!(listen, format!("0.0.0.0:{http_port}"), "{origin}");

    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let get = &tributary[probe]["httpGet"];
        assert_eq!(get["path"], path, "{origin}: {probe}");
        assert!(
            get["port"] == "http" || get["port"] == http_port,
            "{origin}: {probe} on {}",
            get["port"]
        );
    }

    let annotations_found = &pod["metadata"]["annotations"];
    if annotations {
        assert_eq!(
            annotations_found["prometheus.io/scrape"], "true",
            "{origin}"
        );
        assert_eq!(
            annotations_found["prometheus.io/port"],
            http_port.to_string(),
            "{origin}: quoted, the port the gateway listens on"
        );
        assert_eq!(
            annotations_found["prometheus.io/path"], "/metrics",
            "{origin}"
        );
    } else {
        assert!(annotations_found.get("prometheus.io/scrape").is_none());
    }

    // bridge.yaml from the ConfigMap, at the path the arguments give.
    let args = container_args(tributary);
    let config_path = &args[args.iter().position(|a| a == "-c").unwrap() + 1];
    let mounts = tributary["volumeMounts"].as_array().unwrap();
    let mount_of = |volume: &str| {
        mounts
            .iter()
            .find(|m| m["name"] == volume)
            .unwrap_or_else(|| panic!("{origin}: {volume} is not mounted"))["mountPath"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        format!("{}/bridge.yaml", mount_of("config")),
        *config_path,
        "{origin}"
    );
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    let config_volume = volumes.iter().find(|v| v["name"] == "config").unwrap();
    assert_eq!(
        config_volume["configMap"]["name"], configmap["metadata"]["name"],
        "{origin}"
    );
    // The log on the data volume, where the image keeps it.
    assert_eq!(mount_of("data"), "/data", "{origin}");

    let security = &pod["spec"]["securityContext"];
    assert_eq!(security["runAsNonRoot"], true, "{origin}");
    assert_eq!(
        security["fsGroup"], 10001,
        "{origin}: the volume writable by the image's user"
    );

    // The config passes `check` as this container would run it.
    let mut env_all = dockerfile().last().unwrap().env();
    env_all.extend(env);
    let yaml = configmap["data"]["bridge.yaml"]
        .as_str()
        .expect("data.bridge.yaml");
    check_config(origin, yaml, &env_all, Some(&args));
}
