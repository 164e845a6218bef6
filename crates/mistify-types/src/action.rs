//! Actions as types.
//!
//! An agent configuration (`agent.json`) names its actions with the original's words:
//! `create`, `reboot`, `containerStart`, `cpuMetrics`, `fetchImage`, … — a [`Verb`], for a
//! container guest or image or not. [`Action`] is that pair; [`Action::parse`] is the one
//! whitelist (an unknown name is refused when the configuration is loaded), and
//! [`Action::kind`] says how the agent runs it ([`ActionType`]). [`GuestAction`] is the
//! smaller set a client may name in `POST /guests/{id}/{action}`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How the agent runs an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ActionType {
    /// Synchronously inside the request, under the guest's Info limit.
    Info,
    /// Bytes proxied from the one stage, under the guest's Stream limit.
    Stream,
    /// Queued on the guest's FIFO, one at a time per guest; answered with a job id.
    Async,
}

/// What an action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    Create,
    Delete,
    Start,
    Reboot,
    Restart,
    Poweroff,
    Shutdown,
    Suspend,
    Resume,
    Status,
    CpuMetrics,
    DiskMetrics,
    NicMetrics,
    ListImages,
    GetImage,
    DeleteImage,
    FetchImage,
    ListSnapshots,
    GetSnapshot,
    CreateSnapshot,
    DeleteSnapshot,
    RollbackSnapshot,
    DownloadSnapshot,
}

impl Verb {
    /// Every verb.
    pub const ALL: [Verb; 23] = [
        Verb::Create,
        Verb::Delete,
        Verb::Start,
        Verb::Reboot,
        Verb::Restart,
        Verb::Poweroff,
        Verb::Shutdown,
        Verb::Suspend,
        Verb::Resume,
        Verb::Status,
        Verb::CpuMetrics,
        Verb::DiskMetrics,
        Verb::NicMetrics,
        Verb::ListImages,
        Verb::GetImage,
        Verb::DeleteImage,
        Verb::FetchImage,
        Verb::ListSnapshots,
        Verb::GetSnapshot,
        Verb::CreateSnapshot,
        Verb::DeleteSnapshot,
        Verb::RollbackSnapshot,
        Verb::DownloadSnapshot,
    ];

    /// The configuration word of the plain (non-container) action.
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Create => "create",
            Verb::Delete => "delete",
            Verb::Start => "start",
            Verb::Reboot => "reboot",
            Verb::Restart => "restart",
            Verb::Poweroff => "poweroff",
            Verb::Shutdown => "shutdown",
            Verb::Suspend => "suspend",
            Verb::Resume => "resume",
            Verb::Status => "status",
            Verb::CpuMetrics => "cpuMetrics",
            Verb::DiskMetrics => "diskMetrics",
            Verb::NicMetrics => "nicMetrics",
            Verb::ListImages => "listImages",
            Verb::GetImage => "getImage",
            Verb::DeleteImage => "deleteImage",
            Verb::FetchImage => "fetchImage",
            Verb::ListSnapshots => "listSnapshots",
            Verb::GetSnapshot => "getSnapshot",
            Verb::CreateSnapshot => "createSnapshot",
            Verb::DeleteSnapshot => "deleteSnapshot",
            Verb::RollbackSnapshot => "rollbackSnapshot",
            Verb::DownloadSnapshot => "downloadSnapshot",
        }
    }

    /// How the action runs.
    pub fn kind(self) -> ActionType {
        match self {
            Verb::Status
            | Verb::CpuMetrics
            | Verb::DiskMetrics
            | Verb::NicMetrics
            | Verb::ListImages
            | Verb::GetImage
            | Verb::ListSnapshots
            | Verb::GetSnapshot => ActionType::Info,
            Verb::DownloadSnapshot => ActionType::Stream,
            _ => ActionType::Async,
        }
    }

    /// Whether the action acts on a guest (create, delete, the power actions, status).
    pub fn is_guest_action(self) -> bool {
        matches!(
            self,
            Verb::Create
                | Verb::Delete
                | Verb::Start
                | Verb::Reboot
                | Verb::Restart
                | Verb::Poweroff
                | Verb::Shutdown
                | Verb::Suspend
                | Verb::Resume
                | Verb::Status
        )
    }

    /// Whether a `container…` variant of the action exists.
    pub fn has_container_variant(self) -> bool {
        self.is_guest_action()
            || matches!(
                self,
                Verb::ListImages | Verb::GetImage | Verb::DeleteImage | Verb::FetchImage
            )
    }
}

/// A configured action: a verb, for a container guest or image (`containerStart`) or
/// not (`start`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Action {
    verb: Verb,
    container: bool,
}

/// A name that is not an action of the whitelist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} is not a valid action")]
pub struct UnknownAction(pub String);

impl Action {
    /// The plain action of `verb`.
    pub const fn plain(verb: Verb) -> Action {
        Action {
            verb,
            container: false,
        }
    }

    /// The action of `verb` for a guest or image of type `kind`: the `container…`
    /// variant when `kind` is `container` (the original's rule). Such a pair may not be
    /// on the whitelist (`containerCpuMetrics`): it is then simply not configured.
    pub fn for_kind(kind: &str, verb: Verb) -> Action {
        Action {
            verb,
            container: kind == "container",
        }
    }

    /// Parses a configuration word: exactly the whitelist.
    pub fn parse(name: &str) -> Result<Action, UnknownAction> {
        let unknown = || UnknownAction(name.to_string());
        let (container, base) = match name.strip_prefix("container") {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_uppercase()) => (true, rest),
            _ => (false, name),
        };
        let verb = Verb::ALL
            .into_iter()
            .find(|v| {
                let word = v.as_str();
                if container {
                    // `containerStart`: the word with its first letter upper-cased.
                    base.len() == word.len()
                        && base[..1].eq_ignore_ascii_case(&word[..1])
                        && base[1..] == word[1..]
                } else {
                    base == word
                }
            })
            .ok_or_else(unknown)?;
        if container && !verb.has_container_variant() {
            return Err(unknown());
        }
        Ok(Action { verb, container })
    }

    pub fn verb(self) -> Verb {
        self.verb
    }

    pub fn is_container(self) -> bool {
        self.container
    }

    /// Whether the action is on the whitelist.
    pub fn is_valid(self) -> bool {
        !self.container || self.verb.has_container_variant()
    }

    /// How the action runs.
    pub fn kind(self) -> ActionType {
        self.verb.kind()
    }

    /// The configuration word, e.g. `containerStart`.
    pub fn name(self) -> String {
        let word = self.verb.as_str();
        if !self.container {
            return word.to_string();
        }
        let mut out = String::with_capacity(9 + word.len());
        out.push_str("container");
        out.push_str(&word[..1].to_ascii_uppercase());
        out.push_str(&word[1..]);
        out
    }

    /// Every action of the whitelist.
    pub fn all() -> impl Iterator<Item = Action> {
        Verb::ALL.into_iter().map(Action::plain).chain(
            Verb::ALL
                .into_iter()
                .filter(|v| v.has_container_variant())
                .map(|verb| Action {
                    verb,
                    container: true,
                }),
        )
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Action {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::parse(s)
    }
}

impl Serialize for Action {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.name())
    }
}

impl<'de> Deserialize<'de> for Action {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Action::parse(&name).map_err(serde::de::Error::custom)
    }
}

/// The guest actions reachable as `POST /guests/{id}/{action}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuestAction {
    Shutdown,
    Reboot,
    Restart,
    Poweroff,
    Start,
    Suspend,
    Resume,
    Delete,
}

/// The error of parsing an unknown guest action word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown guest action {0:?} (expected one of shutdown, reboot, restart, poweroff, start, suspend, resume, delete)")]
pub struct UnknownGuestAction(pub String);

impl GuestAction {
    /// Every action, in route-table order.
    pub const ALL: [GuestAction; 8] = [
        GuestAction::Shutdown,
        GuestAction::Reboot,
        GuestAction::Restart,
        GuestAction::Poweroff,
        GuestAction::Start,
        GuestAction::Suspend,
        GuestAction::Resume,
        GuestAction::Delete,
    ];

    /// What the action does.
    pub fn verb(self) -> Verb {
        match self {
            GuestAction::Shutdown => Verb::Shutdown,
            GuestAction::Reboot => Verb::Reboot,
            GuestAction::Restart => Verb::Restart,
            GuestAction::Poweroff => Verb::Poweroff,
            GuestAction::Start => Verb::Start,
            GuestAction::Suspend => Verb::Suspend,
            GuestAction::Resume => Verb::Resume,
            GuestAction::Delete => Verb::Delete,
        }
    }

    /// The last path segment of the action's route, e.g. `poweroff`.
    pub fn as_str(self) -> &'static str {
        self.verb().as_str()
    }
}

impl fmt::Display for GuestAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GuestAction {
    type Err = UnknownGuestAction;

    /// Parses the route word exactly (`reboot`, not `Reboot`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GuestAction::ALL
            .into_iter()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownGuestAction(s.to_string()))
    }
}

/// The metrics a client may ask for: `GET /guests/{id}/metrics/{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricsKind {
    Cpu,
    Disk,
    Nic,
}

impl MetricsKind {
    /// Parses the route word (`cpu`, `disk`, `nic`).
    pub fn parse(word: &str) -> Option<MetricsKind> {
        match word {
            "cpu" => Some(MetricsKind::Cpu),
            "disk" => Some(MetricsKind::Disk),
            "nic" => Some(MetricsKind::Nic),
            _ => None,
        }
    }

    /// The route word, also the member of the sub-agent's reply that holds the figures.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricsKind::Cpu => "cpu",
            MetricsKind::Disk => "disk",
            MetricsKind::Nic => "nic",
        }
    }

    /// The configured action that reads these metrics.
    pub fn action(self) -> Action {
        Action::plain(match self {
            MetricsKind::Cpu => Verb::CpuMetrics,
            MetricsKind::Disk => Verb::DiskMetrics,
            MetricsKind::Nic => Verb::NicMetrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whitelist_round_trips() {
        let names: Vec<String> = Action::all().map(Action::name).collect();
        assert_eq!(names.len(), 37);
        for name in &names {
            let action = Action::parse(name).expect(name);
            assert_eq!(&action.name(), name);
            assert!(action.is_valid());
        }
        assert!(names.contains(&"containerListImages".to_string()));
        assert!(names.contains(&"downloadSnapshot".to_string()));
        for bad in [
            "",
            "run",
            "Create",
            "containercreate",
            "containerCpuMetrics",
            "container",
            "containerDownloadSnapshot",
            "create ",
            "containerXreate",
        ] {
            assert!(Action::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn kinds_and_container_variants() {
        let start = Action::for_kind("container", Verb::Start);
        assert_eq!(start.name(), "containerStart");
        assert_eq!(Action::for_kind("kvm", Verb::Start).name(), "start");
        assert_eq!(Action::for_kind("", Verb::Start).name(), "start");
        let odd = Action::for_kind("container", Verb::CpuMetrics);
        assert!(!odd.is_valid());
        assert_eq!(odd.name(), "containerCpuMetrics");
        assert_eq!(Action::plain(Verb::Status).kind(), ActionType::Info);
        assert_eq!(
            Action::plain(Verb::DownloadSnapshot).kind(),
            ActionType::Stream
        );
        assert_eq!(Action::plain(Verb::FetchImage).kind(), ActionType::Async);
        let json = serde_json::to_string(&start).expect("json");
        assert_eq!(json, "\"containerStart\"");
        assert_eq!(serde_json::from_str::<Action>(&json).expect("back"), start);
        assert!(serde_json::from_str::<Action>("\"bogus\"").is_err());
    }

    #[test]
    fn guest_actions_and_metrics() {
        for a in GuestAction::ALL {
            assert_eq!(a.as_str().parse::<GuestAction>(), Ok(a));
        }
        assert!("Reboot".parse::<GuestAction>().is_err());
        assert!("status".parse::<GuestAction>().is_err());
        assert_eq!(MetricsKind::parse("nic"), Some(MetricsKind::Nic));
        assert_eq!(MetricsKind::parse("gpu"), None);
        assert_eq!(MetricsKind::Disk.action().name(), "diskMetrics");
    }
}
