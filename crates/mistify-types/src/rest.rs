//! The JSON types of the agent's REST API (and the data types shared with sub-agents).
//!
//! Output is exactly what the Go agent wrote: key names, key order, which keys are
//! omitted when empty and which are always present (`"vlans": null`, every `Disk` key).
//! Input is lenient like Go's decoder: every field is optional with a
//! zero default, `null` means the zero value, unknown keys are ignored.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::serde_go::{float, go_time, null_default};

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_i64(v: &i64) -> bool {
    *v == 0
}

/// A string→string map as the API carries it (metadata). Sorted, as Go wrote map keys.
pub type Metadata = BTreeMap<String, String>;

/// A guest (virtual machine or container) as the agent stores and returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Guest {
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    #[serde(
        rename = "type",
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub kind: String,
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub image: String,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub nics: Vec<Nic>,
    #[serde(
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_default"
    )]
    pub disks: Vec<Disk>,
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub state: String,
    /// Memory in MB.
    #[serde(skip_serializing_if = "is_zero_u64", deserialize_with = "null_default")]
    pub memory: u64,
    /// Number of virtual CPUs.
    #[serde(skip_serializing_if = "is_zero_u32", deserialize_with = "null_default")]
    pub cpu: u32,
    /// VNC port.
    #[serde(skip_serializing_if = "is_zero_i64", deserialize_with = "null_default")]
    pub vnc: i64,
    #[serde(
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_default"
    )]
    pub metadata: Metadata,
}

/// A guest network interface.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Nic {
    /// Guest-side name (`eth0`), or libvirt's alias once the guest runs.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub name: String,
    /// Host bridge, e.g. the OVS bridge `mistify0`.
    #[serde(deserialize_with = "null_default")]
    pub network: String,
    #[serde(deserialize_with = "null_default")]
    pub model: String,
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub mac: String,
    #[serde(deserialize_with = "null_default")]
    pub address: String,
    #[serde(deserialize_with = "null_default")]
    pub netmask: String,
    #[serde(deserialize_with = "null_default")]
    pub gateway: String,
    /// Host tap device, e.g. `vnet0`.
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub device: String,
    /// VLAN tags. `None` is written as `null` (a Go nil slice), `Some(vec![])` as `[]`.
    pub vlans: Option<Vec<i64>>,
}

/// A guest disk. Every key is always present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Disk {
    /// `ide`, `scsi`, `sata` or `virtio`.
    #[serde(deserialize_with = "null_default")]
    pub bus: String,
    /// Guest target device, e.g. `vda`.
    #[serde(deserialize_with = "null_default")]
    pub device: String,
    /// Size in MB (ignored for image-based disks on create).
    #[serde(deserialize_with = "null_default")]
    pub size: u64,
    /// Storage volume (dataset) name.
    #[serde(deserialize_with = "null_default")]
    pub volume: String,
    /// Image id to clone; empty for a blank disk.
    #[serde(deserialize_with = "null_default")]
    pub image: String,
    /// Host device path.
    #[serde(deserialize_with = "null_default")]
    pub source: String,
}

/// CPU metrics of one virtual CPU, in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestCpuMetrics {
    #[serde(serialize_with = "float", deserialize_with = "null_default")]
    pub cpu_time: f64,
    #[serde(serialize_with = "float", deserialize_with = "null_default")]
    pub vcpu_time: f64,
}

/// Block device metrics. Times in seconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestDiskMetrics {
    #[serde(deserialize_with = "null_default")]
    pub disk: String,
    #[serde(deserialize_with = "null_default")]
    pub read_ops: i64,
    #[serde(deserialize_with = "null_default")]
    pub read_bytes: i64,
    #[serde(serialize_with = "float", deserialize_with = "null_default")]
    pub read_time: f64,
    #[serde(deserialize_with = "null_default")]
    pub write_ops: i64,
    #[serde(deserialize_with = "null_default")]
    pub write_bytes: i64,
    #[serde(serialize_with = "float", deserialize_with = "null_default")]
    pub write_time: f64,
    #[serde(deserialize_with = "null_default")]
    pub flush_ops: i64,
    #[serde(serialize_with = "float", deserialize_with = "null_default")]
    pub flush_time: f64,
}

/// Network interface metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GuestNicMetrics {
    #[serde(deserialize_with = "null_default")]
    pub name: String,
    #[serde(deserialize_with = "null_default")]
    pub rx_bytes: i64,
    #[serde(deserialize_with = "null_default")]
    pub rx_packets: i64,
    #[serde(deserialize_with = "null_default")]
    pub rx_errors: i64,
    #[serde(deserialize_with = "null_default")]
    pub rx_drops: i64,
    #[serde(deserialize_with = "null_default")]
    pub tx_bytes: i64,
    #[serde(deserialize_with = "null_default")]
    pub tx_packets: i64,
    #[serde(deserialize_with = "null_default")]
    pub tx_errors: i64,
    #[serde(deserialize_with = "null_default")]
    pub tx_drops: i64,
}

/// The state of an asynchronous job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobStatus {
    #[default]
    Queued,
    Running,
    Complete,
    Error,
}

impl JobStatus {
    /// `Complete` or `Error`: the job will not change any more.
    pub fn is_done(self) -> bool {
        matches!(self, JobStatus::Complete | JobStatus::Error)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "Queued",
            JobStatus::Running => "Running",
            JobStatus::Complete => "Complete",
            JobStatus::Error => "Error",
        }
    }
}

impl std::fmt::Display for JobStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the agent's job log. Keys are the Go field names (`ID`, `GuestID`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Job {
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    /// The guest id, or `agent` for image jobs.
    #[serde(rename = "GuestID", deserialize_with = "null_default")]
    pub guest_id: String,
    #[serde(rename = "Action", deserialize_with = "null_default")]
    pub action: String,
    #[serde(rename = "QueuedAt", with = "go_time")]
    pub queued_at: DateTime<Utc>,
    /// Go's zero time (`0001-01-01T00:00:00Z`) until the job starts.
    #[serde(rename = "StartedAt", with = "go_time")]
    pub started_at: DateTime<Utc>,
    #[serde(rename = "UpdatedAt", with = "go_time")]
    pub updated_at: DateTime<Utc>,
    #[serde(rename = "Status", deserialize_with = "null_default")]
    pub status: JobStatus,
    /// The error text when `status` is `Error`, else empty.
    #[serde(rename = "Message", deserialize_with = "null_default")]
    pub message: String,
}

impl Default for Job {
    fn default() -> Self {
        Job {
            id: String::new(),
            guest_id: String::new(),
            action: String::new(),
            queued_at: go_time::zero(),
            started_at: go_time::zero(),
            updated_at: go_time::zero(),
            status: JobStatus::Queued,
            message: String::new(),
        }
    }
}

impl Job {
    /// Whether the job has started (its `StartedAt` is not Go's zero time).
    pub fn has_started(&self) -> bool {
        self.started_at != go_time::zero()
    }
}

/// A disk or container image held by a storage sub-agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Image {
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// `""` for disk images, `container` for container images.
    #[serde(rename = "type", deserialize_with = "null_default")]
    pub kind: String,
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub volume: String,
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub snapshot: String,
    /// Size in MB.
    #[serde(deserialize_with = "null_default")]
    pub size: u64,
    #[serde(
        skip_serializing_if = "String::is_empty",
        deserialize_with = "null_default"
    )]
    pub status: String,
}

/// A storage volume. Every key is always present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Volume {
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Size in MB.
    #[serde(deserialize_with = "null_default")]
    pub size: u64,
    #[serde(deserialize_with = "null_default")]
    pub device: String,
}

/// A storage snapshot (`id` is the full dataset name, pool included).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Snapshot {
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    /// Size in MB.
    #[serde(deserialize_with = "null_default")]
    pub size: u64,
}

/// Body of `POST /images` and the request of the image actions. All keys always present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageRequest {
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    #[serde(rename = "type", deserialize_with = "null_default")]
    pub kind: String,
    #[serde(deserialize_with = "null_default")]
    pub dest: String,
    #[serde(deserialize_with = "null_default")]
    pub source: String,
}

/// Reply of the image actions; `images` is `null` when nil, as in Go.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageResponse {
    pub images: Option<Vec<Image>>,
}

/// Body of the snapshot routes and the request of the snapshot actions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SnapshotRequest {
    #[serde(deserialize_with = "null_default")]
    pub id: String,
    #[serde(deserialize_with = "null_default")]
    pub dest: String,
    #[serde(deserialize_with = "null_default")]
    pub recursive: bool,
    #[serde(rename = "destroyMoreRecent", deserialize_with = "null_default")]
    pub destroy_more_recent: bool,
}

/// The error body of every agent error: `{"message","code","stack"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ErrorBody {
    #[serde(deserialize_with = "null_default")]
    pub message: String,
    /// The HTTP status, repeated.
    #[serde(deserialize_with = "null_default")]
    pub code: u16,
    /// Never `null`; the Rust agent sends `[]`.
    #[serde(deserialize_with = "null_default")]
    pub stack: Vec<String>,
}

impl ErrorBody {
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        ErrorBody {
            message: message.into(),
            code,
            stack: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn guest_output_matches_go() {
        let g = Guest {
            id: "g1".into(),
            nics: vec![Nic {
                network: "br0".into(),
                model: "virtio".into(),
                ..Nic::default()
            }],
            disks: vec![Disk::default()],
            memory: 512,
            ..Guest::default()
        };
        assert_eq!(
            serde_json::to_string(&g).unwrap(),
            r#"{"id":"g1","nics":[{"network":"br0","model":"virtio","address":"","netmask":"","gateway":"","vlans":null}],"disks":[{"bus":"","device":"","size":0,"volume":"","image":"","source":""}],"memory":512}"#
        );
        assert_eq!(
            serde_json::to_string(&Guest::default()).unwrap(),
            r#"{"id":""}"#
        );
    }

    #[test]
    fn input_is_lenient() {
        let g: Guest = serde_json::from_value(json!({
            "id": "x", "nics": null, "memory": null, "bogus": [1, 2],
            "disks": [{"image": "i"}], "metadata": {"a": "b"}
        }))
        .unwrap();
        assert_eq!(g.id, "x");
        assert!(g.nics.is_empty());
        assert_eq!(g.memory, 0);
        assert_eq!(g.disks[0].image, "i");
        assert_eq!(g.metadata["a"], "b");
        let g: Guest = serde_json::from_str("{}").unwrap();
        assert_eq!(g, Guest::default());
    }

    #[test]
    fn vlans_keep_null_and_empty_apart() {
        let n: Nic = serde_json::from_str(r#"{"vlans":[]}"#).unwrap();
        assert_eq!(n.vlans, Some(vec![]));
        assert!(serde_json::to_string(&n)
            .unwrap()
            .ends_with(r#""vlans":[]}"#));
        let n: Nic = serde_json::from_str(r#"{"vlans":null}"#).unwrap();
        assert!(serde_json::to_string(&n)
            .unwrap()
            .ends_with(r#""vlans":null}"#));
    }

    #[test]
    fn floats_are_written_like_go() {
        let m = GuestCpuMetrics {
            cpu_time: 0.0,
            vcpu_time: 1.5,
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"cpu_time":0,"vcpu_time":1.5}"#
        );
    }

    #[test]
    fn job_round_trips_with_go_names_and_zero_time() {
        let text = r#"{"ID":"j","GuestID":"g","Action":"reboot","QueuedAt":"2015-06-01T12:00:00.123456789Z","StartedAt":"0001-01-01T00:00:00Z","UpdatedAt":"2015-06-01T12:00:00.1Z","Status":"Queued","Message":""}"#;
        let job: Job = serde_json::from_str(text).unwrap();
        assert!(!job.has_started());
        assert_eq!(job.status, JobStatus::Queued);
        assert_eq!(serde_json::to_string(&job).unwrap(), text);
        let err: Result<Job, _> = serde_json::from_str(r#"{"Status":"Bogus"}"#);
        assert!(err.is_err());
    }

    #[test]
    fn image_and_snapshot_request_keys() {
        assert_eq!(
            serde_json::to_string(&ImageRequest::default()).unwrap(),
            r#"{"id":"","type":"","dest":"","source":""}"#
        );
        assert_eq!(
            serde_json::to_string(&SnapshotRequest::default()).unwrap(),
            r#"{"id":"","dest":"","recursive":false,"destroyMoreRecent":false}"#
        );
        assert_eq!(
            serde_json::to_string(&ImageResponse::default()).unwrap(),
            r#"{"images":null}"#
        );
        assert_eq!(
            serde_json::to_string(&Image {
                id: "i".into(),
                size: 1024,
                status: "complete".into(),
                ..Image::default()
            })
            .unwrap(),
            r#"{"id":"i","type":"","size":1024,"status":"complete"}"#
        );
        assert_eq!(
            serde_json::to_string(&ErrorBody::new(404, "not found")).unwrap(),
            r#"{"message":"not found","code":404,"stack":[]}"#
        );
    }
}
