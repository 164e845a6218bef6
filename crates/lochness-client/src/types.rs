//! The JSON of the cluster daemons' entities, member for member.
//!
//! Every type encodes exactly as the daemons (and the Go originals) write it: the member
//! names and order, empty strings for unset ids and addresses, `{}` and `[]` rather than
//! `null`, `error` of a job and `source`/`group` of a firewall rule omitted when unset.
//! Decoding is lenient: every member is optional, `null` is the zero value and unknown
//! members are ignored. Addresses, CIDRs and times stay text, so what a daemon sent is
//! what an encode gives back.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Free-form `metadata` of an entity (encoded with sorted keys, as Go does).
pub type Metadata = BTreeMap<String, String>;

/// How Go writes a `time.Time` that was never set (`started_at`/`finished_at` of a job
/// that has not started or finished).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// `null` decodes as the type's zero value (Go writes `null` for a nil map or slice).
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// Memory and disk in MiB, virtual CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, deserialize_with = "null_default")]
    pub memory: u64,
    #[serde(default, deserialize_with = "null_default")]
    pub disk: u64,
    #[serde(default, deserialize_with = "null_default")]
    pub cpu: u32,
}

/// A physical host (`/hypervisors`). Its config, subnet links and guests have their own
/// routes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hypervisor {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Metadata,
    /// Dotted quad, `""` when unset.
    #[serde(default, deserialize_with = "null_default")]
    pub ip: String,
    /// A netmask written as an address (`255.255.255.0`).
    #[serde(default, deserialize_with = "null_default")]
    pub netmask: String,
    #[serde(default, deserialize_with = "null_default")]
    pub gateway: String,
    /// Lower-case, colon separated.
    #[serde(default, deserialize_with = "null_default")]
    pub mac: String,
    #[serde(default, deserialize_with = "null_default")]
    pub total_resources: Resources,
    /// What the hypervisor's heartbeat last reported.
    #[serde(default, deserialize_with = "null_default")]
    pub available_resources: Resources,
}

/// `GET /hypervisors/{id}/resources`: what the hypervisor has, what it last reported
/// free, what placement has promised to guests, and what is left to place.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HypervisorResources {
    #[serde(default, deserialize_with = "null_default")]
    pub total: Resources,
    #[serde(default, deserialize_with = "null_default")]
    pub available: Resources,
    #[serde(default, deserialize_with = "null_default")]
    pub allocated: Resources,
    #[serde(default, deserialize_with = "null_default")]
    pub free: Resources,
}

/// A virtual machine (`/guests`). `hypervisor`, `subnet`, `ip` and `bridge` are set by
/// placement and are empty until the guest is placed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guest {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Metadata,
    /// Free text handed to the agent (`kvm`); the JSON member is `type`.
    #[serde(rename = "type", default, deserialize_with = "null_default")]
    pub kind: String,
    #[serde(default, deserialize_with = "null_default")]
    pub flavor: String,
    #[serde(default, deserialize_with = "null_default")]
    pub hypervisor: String,
    #[serde(default, deserialize_with = "null_default")]
    pub network: String,
    #[serde(default, deserialize_with = "null_default")]
    pub subnet: String,
    #[serde(default, deserialize_with = "null_default")]
    pub fwgroup: String,
    #[serde(default, deserialize_with = "null_default")]
    pub vlangroup: String,
    #[serde(default, deserialize_with = "null_default")]
    pub mac: String,
    #[serde(default, deserialize_with = "null_default")]
    pub ip: String,
    #[serde(default, deserialize_with = "null_default")]
    pub bridge: String,
}

impl Guest {
    /// Whether placement has put the guest on a hypervisor.
    pub fn is_placed(&self) -> bool {
        !self.hypervisor.is_empty()
    }
}

/// A resource template (`/flavors`); the resources are flat members of its JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flavor {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// The id of the image guests of this flavor boot from.
    #[serde(default, deserialize_with = "null_default")]
    pub image: String,
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Metadata,
    #[serde(default, deserialize_with = "null_default")]
    pub memory: u64,
    #[serde(default, deserialize_with = "null_default")]
    pub disk: u64,
    #[serde(default, deserialize_with = "null_default")]
    pub cpu: u32,
}

impl Flavor {
    /// What a guest of this flavor takes.
    pub fn resources(&self) -> Resources {
        Resources {
            memory: self.memory,
            disk: self.disk,
            cpu: self.cpu,
        }
    }
}

/// A group of subnets guests are attached to (`/networks`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Metadata,
}

/// An IPv4 range guests get their addresses from (`/subnets`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Metadata,
    /// The network the subnet belongs to, `""` for none.
    #[serde(default, deserialize_with = "null_default")]
    pub network: String,
    #[serde(default, deserialize_with = "null_default")]
    pub gateway: String,
    /// `a.b.c.d/len`, the network address.
    #[serde(default, deserialize_with = "null_default")]
    pub cidr: String,
    /// First address handed out.
    #[serde(default, deserialize_with = "null_default")]
    pub start: String,
    /// Last address handed out.
    #[serde(default, deserialize_with = "null_default")]
    pub end: String,
}

/// One ingress rule of a firewall group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwRule {
    /// Allowed source addresses (a CIDR); omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Another firewall group whose members are allowed; omitted when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    #[serde(rename = "portStart", default, deserialize_with = "null_default")]
    pub port_start: u64,
    #[serde(rename = "portEnd", default, deserialize_with = "null_default")]
    pub port_end: u64,
    /// `tcp`, `udp`, …
    #[serde(default, deserialize_with = "null_default")]
    pub protocol: String,
    #[serde(default, deserialize_with = "null_default")]
    pub action: String,
}

/// A named set of ingress rules guests refer to (`/fwgroups`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwGroup {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Metadata,
    #[serde(default, deserialize_with = "null_default")]
    pub rules: Vec<FwRule>,
}

/// A VLAN (`/vlans/tags`), known by its tag (1–4095).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vlan {
    #[serde(default, deserialize_with = "null_default")]
    pub tag: u16,
    #[serde(default, deserialize_with = "null_default")]
    pub description: String,
}

/// A group of VLANs guests refer to (`/vlans/groups`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanGroup {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    #[serde(default, deserialize_with = "null_default")]
    pub description: String,
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: Metadata,
}

// ----- jobs ----------------------------------------------------------------------------

/// Declares a string enum with its wire spellings and an `Unknown` variant keeping any
/// other text (a newer daemon's value survives a decode and an encode unchanged).
macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)+
            /// A value this client does not know, kept as sent.
            Unknown(String),
        }

        impl $name {
            /// The wire spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Unknown(text) => text,
                }
            }

            /// Reads a wire spelling; anything else is [`Self::Unknown`].
            pub fn parse(text: &str) -> $name {
                match text {
                    $($text => $name::$variant,)+
                    other => $name::Unknown(other.to_string()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text: Option<String> = Option::deserialize(d)?;
                Ok($name::parse(text.as_deref().unwrap_or_default()))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name::Unknown(String::new())
            }
        }
    };
}

wire_enum! {
    /// Where a job stands.
    JobStatus {
        /// Queued, not yet claimed.
        New = "new",
        /// A placer or worker is on it.
        Working = "working",
        /// Finished.
        Done = "done",
        /// Failed; the job's `error` says why.
        Error = "error",
    }
}

impl JobStatus {
    /// `done` or `error`: the job will not change any more.
    pub fn is_finished(&self) -> bool {
        matches!(self, JobStatus::Done | JobStatus::Error)
    }

    fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }
}

wire_enum! {
    /// What a job does (it moves from `select-hypervisor` through `fetch` to `create`
    /// for a new guest).
    JobAction {
        SelectHypervisor = "select-hypervisor",
        Fetch = "fetch",
        Create = "create",
        Delete = "delete",
        Shutdown = "shutdown",
        Reboot = "reboot",
        Restart = "restart",
        Poweroff = "poweroff",
        Start = "start",
        Suspend = "suspend",
    }
}

/// A guest job's record (`GET /jobs/{id}` on cguestd).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    #[serde(default, deserialize_with = "null_default")]
    pub id: String,
    /// The agent's job id while a worker drives the agent, else `""`.
    #[serde(default, deserialize_with = "null_default")]
    pub remote: String,
    #[serde(default)]
    pub action: JobAction,
    /// The guest's id.
    #[serde(default, deserialize_with = "null_default")]
    pub guest: String,
    /// Why the job failed; omitted while empty.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "String::is_empty"
    )]
    pub error: String,
    #[serde(default, skip_serializing_if = "JobStatus::is_empty")]
    pub status: JobStatus,
    /// RFC 3339; [`ZERO_TIME`] until a worker first claims the job.
    #[serde(default, deserialize_with = "null_default")]
    pub started_at: String,
    /// RFC 3339; [`ZERO_TIME`] until the job is `done` or `error`.
    #[serde(default, deserialize_with = "null_default")]
    pub finished_at: String,
}

impl Job {
    /// `done` or `error`.
    pub fn is_finished(&self) -> bool {
        self.status.is_finished()
    }

    /// When a worker first claimed the job, `None` before that.
    pub fn started(&self) -> Option<&str> {
        set_time(&self.started_at)
    }

    /// When the job ended, `None` before that.
    pub fn finished(&self) -> Option<&str> {
        set_time(&self.finished_at)
    }
}

fn set_time(t: &str) -> Option<&str> {
    (!t.is_empty() && t != ZERO_TIME).then_some(t)
}

/// The guest actions of `POST /guests/{id}/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestAction {
    Shutdown,
    Reboot,
    Restart,
    Poweroff,
    Start,
    Suspend,
}

impl GuestAction {
    /// Every action, in the order the originals list them.
    pub const ALL: [GuestAction; 6] = [
        GuestAction::Shutdown,
        GuestAction::Reboot,
        GuestAction::Restart,
        GuestAction::Poweroff,
        GuestAction::Start,
        GuestAction::Suspend,
    ];

    /// The path segment (and the job's action).
    pub fn as_str(self) -> &'static str {
        match self {
            GuestAction::Shutdown => "shutdown",
            GuestAction::Reboot => "reboot",
            GuestAction::Restart => "restart",
            GuestAction::Poweroff => "poweroff",
            GuestAction::Start => "start",
            GuestAction::Suspend => "suspend",
        }
    }
}

impl fmt::Display for GuestAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of the [`GuestAction`]s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown guest action {0:?} (one of shutdown, reboot, restart, poweroff, start, suspend)")]
pub struct UnknownGuestAction(pub String);

impl FromStr for GuestAction {
    type Err = UnknownGuestAction;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GuestAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownGuestAction(s.to_string()))
    }
}

impl From<GuestAction> for JobAction {
    fn from(action: GuestAction) -> Self {
        match action {
            GuestAction::Shutdown => JobAction::Shutdown,
            GuestAction::Reboot => JobAction::Reboot,
            GuestAction::Restart => JobAction::Restart,
            GuestAction::Poweroff => JobAction::Poweroff,
            GuestAction::Start => JobAction::Start,
            GuestAction::Suspend => JobAction::Suspend,
        }
    }
}

/// What cguestd answers when it queued a job for a guest (create, delete, an action):
/// the job's id from the `X-Guest-Job-ID` header and the guest as it was before the job
/// ran. Encodes as `{"id":<job id>,"guest":{…}}`, the original `guest` CLI's JSON output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestJob {
    /// The job's id.
    pub id: String,
    pub guest: Guest,
}

// ----- which daemon serves what ---------------------------------------------------------

/// The three REST daemons of the control plane.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Daemon {
    /// `cguestd`: guests, jobs, flavors.
    Guests,
    /// `chypervisord`: hypervisors, their config, subnet links, guests, resources.
    Hypervisors,
    /// `cnetworkd`: VLANs, VLAN groups, networks, subnets, firewall groups.
    Networks,
}

impl Daemon {
    /// The program's name, as errors name it.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Guests => "cguestd",
            Daemon::Hypervisors => "chypervisord",
            Daemon::Networks => "cnetworkd",
        }
    }

    /// Where it listens by default on this host.
    pub fn default_url(self) -> &'static str {
        match self {
            Daemon::Guests => "http://127.0.0.1:18000",
            Daemon::Hypervisors => "http://127.0.0.1:17000",
            Daemon::Networks => "http://127.0.0.1:19000",
        }
    }
}

impl fmt::Display for Daemon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An entity with a collection route: listed, read and patched the same way on every
/// daemon (`GET /<path>`, `GET|PATCH /<path>/{key}`).
pub trait Resource: Serialize + serde::de::DeserializeOwned + Send + 'static {
    /// The daemon that serves it.
    const DAEMON: Daemon;
    /// The collection's path segments (`["vlans", "tags"]`).
    const PATH: &'static [&'static str];
    /// The singular noun, for messages (`guest`, `VLAN`).
    const NOUN: &'static str;
    /// The path segment naming this entity: its id, or a VLAN's tag.
    fn key(&self) -> String;
}

/// A [`Resource`] that is created (`POST` → 201 with the entity) and deleted (`DELETE` →
/// 200 with the entity) synchronously: everything but guests, whose create and delete are
/// jobs.
pub trait Managed: Resource {}

macro_rules! resource {
    ($ty:ty, $daemon:ident, [$($seg:literal),+], $noun:literal, managed) => {
        resource!($ty, $daemon, [$($seg),+], $noun);
        impl Managed for $ty {}
    };
    ($ty:ty, $daemon:ident, [$($seg:literal),+], $noun:literal) => {
        impl Resource for $ty {
            const DAEMON: Daemon = Daemon::$daemon;
            const PATH: &'static [&'static str] = &[$($seg),+];
            const NOUN: &'static str = $noun;
            fn key(&self) -> String {
                self.id.clone()
            }
        }
    };
}

resource!(Guest, Guests, ["guests"], "guest");
resource!(Flavor, Guests, ["flavors"], "flavor", managed);
resource!(
    Hypervisor,
    Hypervisors,
    ["hypervisors"],
    "hypervisor",
    managed
);
resource!(Network, Networks, ["networks"], "network", managed);
resource!(Subnet, Networks, ["subnets"], "subnet", managed);
resource!(FwGroup, Networks, ["fwgroups"], "firewall group", managed);
resource!(
    VlanGroup,
    Networks,
    ["vlans", "groups"],
    "VLAN group",
    managed
);

impl Resource for Vlan {
    const DAEMON: Daemon = Daemon::Networks;
    const PATH: &'static [&'static str] = &["vlans", "tags"];
    const NOUN: &'static str = "VLAN";
    fn key(&self) -> String {
        self.tag.to_string()
    }
}
impl Managed for Vlan {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn job_enums_keep_their_spelling() {
        for text in [
            "select-hypervisor",
            "fetch",
            "create",
            "delete",
            "shutdown",
            "reboot",
            "restart",
            "poweroff",
            "start",
            "suspend",
        ] {
            let action = JobAction::parse(text);
            assert!(!matches!(action, JobAction::Unknown(_)), "{text}");
            assert_eq!(action.as_str(), text);
        }
        assert_eq!(
            JobAction::parse("migrate"),
            JobAction::Unknown("migrate".into())
        );
        for (text, finished) in [
            ("new", false),
            ("working", false),
            ("done", true),
            ("error", true),
        ] {
            let status = JobStatus::parse(text);
            assert_eq!(status.as_str(), text);
            assert_eq!(status.is_finished(), finished);
        }
        assert!(!JobStatus::parse("paused").is_finished());
        for action in GuestAction::ALL {
            assert_eq!(action.as_str().parse::<GuestAction>(), Ok(action));
            assert_eq!(JobAction::from(action).as_str(), action.as_str());
        }
        assert!("resume".parse::<GuestAction>().is_err());
    }

    #[test]
    fn job_error_is_omitted_while_empty() {
        let job: Job = serde_json::from_value(json!({
            "id": "j", "remote": "", "action": "fetch", "guest": "g", "status": "new",
            "started_at": ZERO_TIME, "finished_at": ZERO_TIME
        }))
        .unwrap();
        assert_eq!(job.action, JobAction::Fetch);
        assert_eq!(job.started(), None);
        assert_eq!(
            serde_json::to_string(&job).unwrap(),
            r#"{"id":"j","remote":"","action":"fetch","guest":"g","status":"new","started_at":"0001-01-01T00:00:00Z","finished_at":"0001-01-01T00:00:00Z"}"#
        );
        let failed = Job {
            error: "boom".into(),
            status: JobStatus::Error,
            ..job
        };
        let text = serde_json::to_string(&failed).unwrap();
        assert!(
            text.contains(r#""guest":"g","error":"boom","status":"error""#),
            "{text}"
        );
    }

    #[test]
    fn nulls_are_zero_values() {
        let h: Hypervisor = serde_json::from_value(json!({
            "id": "h", "metadata": null, "ip": null, "total_resources": null, "bogus": 1
        }))
        .unwrap();
        assert_eq!(h.metadata, Metadata::new());
        assert_eq!(h.ip, "");
        assert_eq!(h.total_resources, Resources::default());
        let fw: FwGroup = serde_json::from_value(json!({"id": "f", "rules": null})).unwrap();
        assert_eq!(
            serde_json::to_string(&fw).unwrap(),
            r#"{"id":"f","metadata":{},"rules":[]}"#
        );
    }
}
