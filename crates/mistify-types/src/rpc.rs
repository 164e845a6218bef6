//! Request and response objects exchanged between the agent and its sub-agents.
//! Output keys and their presence are those of the Go `rpc` package; input is lenient (every field optional, `null` = zero, unknown keys ignored).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rest::{Guest, GuestCpuMetrics, GuestDiskMetrics, GuestNicMetrics, Snapshot, Volume};
use crate::serde_go::null_default;

/// Stage arguments from the agent configuration.
pub type Args = BTreeMap<String, String>;

/// The request of every guest action (`create`, `reboot`, `containerStart`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestRequest {
    /// Always written; `null` when absent.
    pub guest: Option<Guest>,
    /// The configured action name actually run.
    #[serde(deserialize_with = "null_default")]
    pub action: String,
    /// The current stage's arguments; omitted when empty.
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub args: Args,
}

/// The reply of a guest action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestResponse {
    /// Always written; `null` when the sub-agent returned no guest.
    pub guest: Option<Guest>,
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub message: String,
    /// "Retry after N seconds" (never acted upon by the original agent).
    #[serde(skip_serializing_if = "is_zero", deserialize_with = "null_default")]
    pub retry: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

/// The request of the metrics actions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestMetricsRequest {
    pub guest: Option<Guest>,
    /// `cpu`, `disk` or `nic`.
    #[serde(rename = "type", deserialize_with = "null_default")]
    pub kind: String,
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub args: Args,
}

/// The reply of the metrics actions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestMetricsResponse {
    pub guest: Option<Guest>,
    #[serde(rename = "type", deserialize_with = "null_default")]
    pub kind: String,
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub disk: BTreeMap<String, GuestDiskMetrics>,
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub nic: BTreeMap<String, GuestNicMetrics>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub cpu: Vec<GuestCpuMetrics>,
}

/// The request of the volume methods of a storage sub-agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeRequest {
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Size in MB.
    #[serde(deserialize_with = "null_default")]
    pub size: u64,
}

/// The reply of the volume methods; `volumes` is `null` when nil.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VolumeResponse {
    pub volumes: Option<Vec<Volume>>,
}

/// The reply of the snapshot methods; `snapshots` is `null` when nil.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotResponse {
    pub snapshots: Option<Vec<Snapshot>>,
}

/// The request of a container sub-agent ("mdocker"); `opts` is kept opaque.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerRequest {
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    pub opts: serde_json::Value,
}

/// The reply of a container sub-agent; each container is kept as opaque JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ContainerResponse {
    pub containers: Option<Vec<serde_json::Value>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_keys() {
        let req = GuestRequest {
            guest: Some(Guest {
                id: "g".into(),
                ..Guest::default()
            }),
            action: "reboot".into(),
            ..GuestRequest::default()
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            r#"{"guest":{"id":"g"},"action":"reboot"}"#
        );
        assert_eq!(
            serde_json::to_string(&GuestResponse::default()).unwrap(),
            r#"{"guest":null}"#
        );
        assert_eq!(
            serde_json::to_string(&GuestMetricsRequest {
                kind: "cpu".into(),
                ..Default::default()
            })
            .unwrap(),
            r#"{"guest":null,"type":"cpu"}"#
        );
        assert_eq!(
            serde_json::to_string(&GuestMetricsResponse::default()).unwrap(),
            r#"{"guest":null,"type":""}"#
        );
        assert_eq!(
            serde_json::to_string(&SnapshotResponse::default()).unwrap(),
            r#"{"snapshots":null}"#
        );
        assert_eq!(
            serde_json::to_string(&ContainerRequest::default()).unwrap(),
            r#"{"id":"","opts":null}"#
        );
    }

    #[test]
    fn lenient_input() {
        let r: GuestRequest =
            serde_json::from_str(r#"{"guest":null,"args":null,"extra":1}"#).unwrap();
        assert_eq!(r, GuestRequest::default());
        let r: GuestMetricsResponse =
            serde_json::from_str(r#"{"cpu":[{"cpu_time":1.5}],"disk":null}"#).unwrap();
        assert_eq!(r.cpu[0].cpu_time, 1.5);
    }
}
