//! Shared by the deployment tests: the repository's files and the binary, every file under a
//! directory, and YAML documents read as JSON values.

use serde_json::Value;
use std::path::{Path, PathBuf};

pub(crate) const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_tributary");

pub(crate) fn repo(path: &str) -> PathBuf {
    Path::new(ROOT).join(path)
}

pub(crate) fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

pub(crate) fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

pub(crate) fn yaml_documents(text: &str, origin: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            let value: serde_yaml::Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{origin}: invalid YAML: {e}"));
            serde_json::to_value(value).unwrap_or_else(|e| panic!("{origin}: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}
