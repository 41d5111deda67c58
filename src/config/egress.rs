//! The `egress` section: routes from log topics back to MQTT devices.

use super::{scalar, Qos};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EgressRouteConfig {
    /// Where the route stands in the file's `egress` list (set by the loader).
    #[serde(skip)]
    pub index: usize,
    /// Defaults to `egress-<index>`; names the committed positions, so keep it stable.
    #[serde(default, deserialize_with = "scalar::opt_string")]
    pub name: Option<String>,
    /// The log topic read.
    #[serde(deserialize_with = "scalar::string")]
    pub from: String,
    /// MQTT topic template over the record: `{key}`, `{header.NAME}`, `{payload.a.b}`,
    /// `{partition}`.
    #[serde(deserialize_with = "scalar::string")]
    pub to: String,
    #[serde(default = "default_qos", deserialize_with = "scalar::via_number")]
    pub qos: Qos,
    #[serde(default, deserialize_with = "scalar::boolean")]
    pub retain: bool,
    /// Where a route seen for the first time starts.
    #[serde(default)]
    pub start: EgressStart,
}

impl EgressRouteConfig {
    pub fn name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| format!("egress-{}", self.index))
    }
}

fn default_qos() -> Qos {
    Qos::AtLeastOnce
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EgressStart {
    /// From the first record the topic holds.
    Earliest,
    /// From the records appended after the route first starts.
    #[default]
    Latest,
}
