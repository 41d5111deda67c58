//! The YAML and JSON files under deploy/ parse, every bridge.yaml among them passes
//! `tributary check` with the image's environment, and the compose files mount files that
//! exist.

use crate::common::{files_under, read, repo, yaml_documents, ROOT};
use crate::dockerfile::dockerfile;
use crate::pods::check_config;
use serde_json::Value;

#[test]
fn every_yaml_and_json_file_under_deploy_parses() {
    let mut files = vec![repo("bridge.yaml")];
    files_under(&repo("deploy"), &mut files);
    let templates = repo("deploy/helm/tributary/templates");
    let mut parsed = 0;
    for path in files {
        let name = path.strip_prefix(ROOT).unwrap().display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        match path.extension().and_then(|e| e.to_str()) {
            // Go templates, not YAML yet: rendered and parsed in helm.rs (helm_chart_*).
            _ if path.starts_with(&templates) => continue,
            Some("yaml" | "yml") => {
                assert!(!yaml_documents(&text, &name).is_empty(), "{name}: empty");
            }
            Some("json") => {
                serde_json::from_str::<Value>(&text)
                    .unwrap_or_else(|e| panic!("{name}: invalid JSON: {e}"));
            }
            _ => continue,
        }
        parsed += 1;
    }
    // bridge.yaml, bridge-kafka.yaml, compose.yaml, compose-kafka.yaml, sidecar.yaml,
    // Chart.yaml, values.yaml, the dashboard (and any file added later).
    assert!(parsed >= 8, "{parsed} files");
}

#[test]
fn bridge_configs_in_files_pass_check_with_the_image_environment() {
    let image_env = dockerfile().last().unwrap().env();
    let mut files = vec![repo("bridge.yaml")];
    files_under(&repo("deploy"), &mut files);
    let mut checked = 0;
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy();
        if name.starts_with("bridge") && name.ends_with(".yaml") {
            let origin = path.strip_prefix(ROOT).unwrap().display().to_string();
            check_config(
                &origin,
                &std::fs::read_to_string(&path).unwrap(),
                &image_env,
                None,
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 2,
        "bridge.yaml and deploy/bridge-kafka.yaml at least"
    );
}

#[test]
fn compose_files_mount_files_that_exist() {
    for compose in ["deploy/compose.yaml", "deploy/compose-kafka.yaml"] {
        let doc = &yaml_documents(&read(compose), compose)[0];
        for (name, service) in doc["services"].as_object().unwrap() {
            for volume in service["volumes"].as_array().into_iter().flatten() {
                let host = volume.as_str().unwrap().split(':').next().unwrap();
                if host.starts_with('.') {
                    let path = repo("deploy").join(host);
                    assert!(path.exists(), "{compose}: {name} mounts {host}: missing");
                }
            }
        }
    }
}
