//! The agent configuration: the original `agent.json` format, plus optional keys the Go
//! agent ignores (`timeout` per service, `joblog_max`). Several files merge into one; a
//! file is validated whole before anything of it is merged, and every problem is
//! reported with the file and the action or service named, in sorted order.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use mistify_types::serde_go::null_default;
pub use mistify_types::{Action, ActionType};

/// Where the store lives unless the config or `--db-path` says otherwise.
pub const DEFAULT_DB_PATH: &str = "/var/lib/mistify/agent.redb";
/// Jobs kept in the log by default.
pub const DEFAULT_JOBLOG_MAX: usize = 1000;
/// Calls in flight per service when `max_pending` is missing or 0 (as the original).
pub const DEFAULT_MAX_PENDING: usize = 4;
/// Default per-service call timeout.
pub const DEFAULT_SERVICE_TIMEOUT: Duration = Duration::from_secs(30);
/// The RPC path of a service without `path`.
pub const DEFAULT_RPC_PATH: &str = mistify_rpc::RPC_PATH;

/// One sub-agent.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceDef {
    pub port: u16,
    pub path: String,
    pub max_pending: usize,
    pub timeout: Duration,
    /// Bearer token the sub-agent requires (our addition; Go ignores the key).
    pub token: Option<String>,
}

/// One stage of an action.
#[derive(Debug, Clone, PartialEq)]
pub struct StageDef {
    pub service: String,
    pub method: String,
    pub args: BTreeMap<String, String>,
}

/// A configured action: its stages (how it runs is [`Action::kind`]).
#[derive(Debug, Clone, PartialEq)]
pub struct ActionDef {
    pub stages: Vec<StageDef>,
}

/// The merged configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    pub actions: BTreeMap<Action, ActionDef>,
    pub services: BTreeMap<String, ServiceDef>,
    /// `dbpath` of the first file that set it.
    pub db_path: Option<PathBuf>,
    /// `joblog_max` of the first file that set it.
    pub joblog_max: Option<usize>,
    /// The file each action was last defined in (named by [`Config::check`]).
    pub action_files: BTreeMap<Action, String>,
}

/// A problem with the configuration; the text names the file and the entry.
#[derive(Debug, thiserror::Error)]
#[error("{}", .problems.join("\n"))]
pub struct ConfigError {
    pub problems: Vec<String>,
}

/// Unknown keys are ignored, as the Go agent did.
#[derive(Deserialize)]
struct FileConfig {
    #[serde(default, deserialize_with = "null_default")]
    actions: BTreeMap<String, FileAction>,
    #[serde(default, deserialize_with = "null_default")]
    services: BTreeMap<String, FileService>,
    #[serde(default, deserialize_with = "null_default")]
    dbpath: String,
    #[serde(default)]
    joblog_max: Option<usize>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FileAction {
    #[serde(deserialize_with = "null_default")]
    stages: Vec<FileStage>,
    /// Accepted and ignored: the type always comes from the whitelist.
    #[serde(rename = "type")]
    _kind: serde_json::Value,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FileStage {
    #[serde(deserialize_with = "null_default")]
    service: String,
    #[serde(deserialize_with = "null_default")]
    method: String,
    #[serde(deserialize_with = "null_default")]
    args: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct FileService {
    #[serde(deserialize_with = "null_default")]
    port: u64,
    #[serde(deserialize_with = "null_default")]
    path: String,
    #[serde(deserialize_with = "null_default")]
    max_pending: usize,
    /// Seconds; our addition.
    timeout: Option<f64>,
    /// Our addition.
    token: Option<String>,
}

impl Config {
    /// Reads and merges each file in order, then checks the whole (every stage's
    /// service exists, Stream actions have one stage).
    pub fn load(files: &[PathBuf]) -> Result<Config, ConfigError> {
        let mut config = Config::default();
        for file in files {
            config.add_file(file)?;
        }
        config.check()?;
        Ok(config)
    }

    /// Parses `text` as if read from `name` and merges it (tests, embedding).
    pub fn add_str(&mut self, name: &str, text: &str) -> Result<(), ConfigError> {
        let one = |p: String| ConfigError { problems: vec![p] };
        let file: FileConfig =
            serde_json::from_str(text).map_err(|e| one(format!("{name}: invalid JSON: {e}")))?;
        let mut problems = Vec::new();
        let mut services = BTreeMap::new();
        for (sname, s) in file.services {
            if self.services.contains_key(&sname) {
                problems.push(format!("{name}: service {sname} has already been defined"));
                continue;
            }
            let port = match u16::try_from(s.port) {
                Ok(0) => {
                    problems.push(format!("{name}: service {sname} has no port"));
                    continue;
                }
                Ok(p) => p,
                Err(_) => {
                    problems.push(format!(
                        "{name}: service {sname}: port {} is out of range",
                        s.port
                    ));
                    continue;
                }
            };
            let path = if s.path.is_empty() {
                DEFAULT_RPC_PATH.to_string()
            } else if !s.path.starts_with('/') {
                problems.push(format!(
                    "{name}: service {sname}: path {:?} must start with /",
                    s.path
                ));
                continue;
            } else {
                s.path
            };
            let timeout = match s.timeout {
                None => DEFAULT_SERVICE_TIMEOUT,
                Some(t) if t.is_finite() && t > 0.0 && t <= 86_400.0 => Duration::from_secs_f64(t),
                Some(t) => {
                    problems.push(format!(
                        "{name}: service {sname}: timeout {t} must be between 0 and 86400 seconds"
                    ));
                    continue;
                }
            };
            if let Some(t) = &s.token {
                if t.is_empty() || !t.bytes().all(|b| b.is_ascii_graphic()) {
                    problems.push(format!(
                        "{name}: service {sname}: token must be non-empty printable ASCII without spaces"
                    ));
                    continue;
                }
            }
            let max_pending = if s.max_pending == 0 {
                DEFAULT_MAX_PENDING
            } else {
                s.max_pending
            };
            services.insert(
                sname,
                ServiceDef {
                    port,
                    path,
                    max_pending,
                    timeout,
                    token: s.token,
                },
            );
        }
        let mut actions = BTreeMap::new();
        for (aname, a) in file.actions {
            // The whitelist: the type always comes from the action's name.
            let action = match Action::parse(&aname) {
                Ok(action) => action,
                Err(e) => {
                    problems.push(format!("{name}: action {e}"));
                    continue;
                }
            };
            if self.actions.contains_key(&action) {
                problems.push(format!("{name}: action {aname} has already been defined"));
                continue;
            }
            let mut stages = Vec::new();
            for (i, st) in a.stages.into_iter().enumerate() {
                if st.method.is_empty() {
                    problems.push(format!(
                        "{name}: {aname}: stage {i}: method cannot be empty"
                    ));
                }
                if st.service.is_empty() {
                    problems.push(format!(
                        "{name}: {aname}: stage {i}: service cannot be empty"
                    ));
                }
                stages.push(StageDef {
                    service: st.service,
                    method: st.method,
                    args: st.args,
                });
            }
            if action.kind() == ActionType::Stream && stages.len() != 1 {
                problems.push(format!(
                    "{name}: {aname}: a Stream action must have exactly one stage, it has {}",
                    stages.len()
                ));
            }
            actions.insert(action, ActionDef { stages });
        }
        if file.joblog_max == Some(0) {
            problems.push(format!("{name}: joblog_max must be at least 1"));
        }
        if !problems.is_empty() {
            problems.sort();
            return Err(ConfigError { problems });
        }
        self.services.extend(services);
        for action in actions.keys() {
            self.action_files.insert(*action, name.to_string());
        }
        self.actions.extend(actions);
        if self.db_path.is_none() && !file.dbpath.is_empty() {
            self.db_path = Some(PathBuf::from(file.dbpath));
        }
        if self.joblog_max.is_none() {
            self.joblog_max = file.joblog_max;
        }
        Ok(())
    }

    /// Reads one file and merges it.
    pub fn add_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            problems: vec![format!("{name}: {e}")],
        })?;
        self.add_str(&name, &text)
    }

    /// The post-load check: every stage's service exists.
    pub fn check(&self) -> Result<(), ConfigError> {
        let mut problems: Vec<String> = self
            .actions
            .iter()
            .flat_map(|(aname, a)| {
                a.stages
                    .iter()
                    .filter(|st| !st.service.is_empty() && !self.services.contains_key(&st.service))
                    .map(move |st| {
                        let file = self.action_files.get(aname).map_or("", String::as_str);
                        format!("{file}: {aname} unable to find service {}", st.service)
                    })
            })
            .collect();
        problems.sort();
        problems.dedup();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { problems })
        }
    }

    /// The services that a stage of a guest action calls (create, delete, start, …,
    /// status, and their container variants): without them the agent cannot serve
    /// guests.
    pub fn guest_action_services(&self) -> std::collections::BTreeSet<&str> {
        self.actions
            .iter()
            .filter(|(action, _)| action.verb().is_guest_action())
            .flat_map(|(_, def)| def.stages.iter().map(|stage| stage.service.as_str()))
            .collect()
    }

    /// The stages of `action`, when it is configured.
    pub fn action(&self, action: Action) -> Option<&ActionDef> {
        self.actions.get(&action)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
        "actions": {
            "create": {"type": 7, "stages": [
                {"service": "storage", "method": "ImageStore.CreateGuestDisks"},
                {"service": "libvirt", "method": "Libvirt.CreateGuest", "args": {"a": "b"}}]},
            "downloadSnapshot": {"stages": [{"service": "dl", "method": "ImageStore.DownloadSnapshot"}]}
        },
        "services": {
            "libvirt": {"port": 20001},
            "storage": {"port": 19999, "timeout": 3600, "max_pending": 0},
            "dl": {"port": 19999, "path": "/snapshots/download"}
        },
        "dbpath": "/tmp/x.redb", "joblog_max": 50
    }"#;

    #[test]
    fn loads_with_defaults() {
        let mut c = Config::default();
        c.add_str("a.json", GOOD).unwrap();
        c.check().unwrap();
        let create = Action::parse("create").unwrap();
        assert_eq!(create.kind(), ActionType::Async);
        assert_eq!(c.actions[&create].stages[1].args["a"], "b");
        assert_eq!(c.services["storage"].max_pending, 4);
        assert_eq!(c.services["storage"].timeout, Duration::from_secs(3600));
        assert_eq!(c.services["libvirt"].path, "/_mistify_RPC_");
        assert_eq!(c.services["dl"].path, "/snapshots/download");
        assert_eq!(c.db_path, Some(PathBuf::from("/tmp/x.redb")));
        assert_eq!(c.joblog_max, Some(50));
    }

    #[test]
    fn every_problem_is_reported_and_nothing_merged() {
        let mut c = Config::default();
        let err = c
            .add_str(
                "bad.json",
                r#"{"actions": {"run": {}, "reboot": {"stages": [{"service": "", "method": ""}]},
                    "downloadSnapshot": {"stages": [{"service":"s","method":"A.B"},{"service":"s","method":"A.C"}]}},
                    "services": {"s": {"port": 0}, "t": {"port": 70000}, "u": {"port": 1}}}"#,
            )
            .unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                "bad.json: action run is not a valid action",
                "bad.json: downloadSnapshot: a Stream action must have exactly one stage, it has 2",
                "bad.json: reboot: stage 0: method cannot be empty",
                "bad.json: reboot: stage 0: service cannot be empty",
                "bad.json: service s has no port",
                "bad.json: service t: port 70000 is out of range",
            ]
        );
        assert_eq!(c, Config::default(), "a failing file merges nothing");
    }

    #[test]
    fn duplicates_across_files_and_missing_services() {
        let mut c = Config::default();
        c.add_str("a.json", GOOD).unwrap();
        let err = c
            .add_str(
                "b.json",
                r#"{"services": {"libvirt": {"port": 1}}, "actions": {"create": {}}}"#,
            )
            .unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                "b.json: action create has already been defined",
                "b.json: service libvirt has already been defined"
            ]
        );
        let mut c = Config::default();
        c.add_str(
            "c.json",
            r#"{"actions": {"reboot": {"stages": [{"service": "nope", "method": "A.B"}]}}}"#,
        )
        .unwrap();
        assert_eq!(
            c.check().unwrap_err().problems,
            vec!["c.json: reboot unable to find service nope"]
        );
        assert!(Config::default().add_str("d.json", "{,").is_err());
        assert!(Config::default()
            .add_str("e.json", r#"{"bogus": 1}"#)
            .is_ok());
    }
}
