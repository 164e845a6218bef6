//! nconfigd's flags and environment, and its configuration file: watched key prefixes
//! and the tags a change under each selects.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use clap::Parser;
use mistify_http::LogFormat;

/// The etcd address when neither `--kv` nor the environment names one.
pub const DEFAULT_KV: &str = "http://127.0.0.1:2379";
/// The directory whose `run` is executed, when `-a` is not given.
pub const DEFAULT_ANSIBLE_DIR: &str = "/var/lib/ansible";
/// The environment variable read first when `--kv` is not given.
pub const ENV_KV: &str = "NCONFIGD_KV_ADDRESS";
/// The environment variable read second.
pub const ENV_ETCD: &str = "NCONFIGD_ETCD_ADDRESS";

/// `nconfigd`'s command line.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "nconfigd",
    version,
    about = "Runs <ansible dir>/run when watched etcd keys change, with the tags their prefixes select; one run at a time"
)]
pub struct Args {
    /// etcd v3 endpoints, comma-separated; passed to the command as `--kv <address>`
    /// exactly as written. Without it: $NCONFIGD_KV_ADDRESS, else
    /// $NCONFIGD_ETCD_ADDRESS, else http://127.0.0.1:2379.
    #[arg(short = 'k', long = "kv", visible_alias = "etcd")]
    pub kv: Option<String>,
    /// Directory containing the `run` command (also its working directory).
    #[arg(short = 'a', long, default_value = DEFAULT_ANSIBLE_DIR)]
    pub ansible: PathBuf,
    /// JSON file mapping watched key prefixes to tags: {"<prefix>": ["tag", …], …}; an
    /// empty list means a full run. Without it nothing is watched.
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    /// Run once (a full run) and exit with the run's status.
    #[arg(short = 'o', long)]
    pub once: bool,
    /// Port of `/metrics` and `/healthz` (none when not given).
    #[arg(long)]
    pub metrics_port: Option<u16>,
    /// Address the metrics listener binds.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(short = 'l', long, default_value = "info")]
    pub log_level: String,
    /// Log format: pretty (human lines) or json (one object per line).
    #[arg(long, default_value = "pretty")]
    pub log_format: LogFormat,
}

/// The etcd address: `--kv` when given, else the first non-empty of
/// `NCONFIGD_KV_ADDRESS` and `NCONFIGD_ETCD_ADDRESS`, else [`DEFAULT_KV`].
pub fn resolve_kv(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> String {
    if let Some(f) = flag {
        return f.to_string();
    }
    [ENV_KV, ENV_ETCD]
        .iter()
        .filter_map(|name| env(name))
        .find(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_KV.to_string())
}

/// Why the configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is not a JSON object of string lists.
    #[error("{path}: not a JSON object of tag lists ({{\"<prefix>\": [\"tag\", …]}}): {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// It is an empty object.
    #[error("{path}: empty config (no prefix to watch)")]
    Empty {
        /// The file.
        path: PathBuf,
    },
}

/// What a batch of changed keys runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// `run --kv <addr>`.
    Full,
    /// `run --kv <addr> -t <tag> …` with these tags, in order.
    Tags(BTreeSet<String>),
}

/// The configuration: watched prefix → tags (an empty set means a full run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TagMap {
    map: BTreeMap<String, BTreeSet<String>>,
}

impl TagMap {
    /// From (prefix, tags) pairs; a leading `/` of a prefix is dropped (keys never have
    /// one).
    pub fn new<P: Into<String>, T: Into<String>>(
        pairs: impl IntoIterator<Item = (P, Vec<T>)>,
    ) -> TagMap {
        let map = pairs
            .into_iter()
            .map(|(p, tags)| {
                let p: String = p.into();
                let p = p.strip_prefix('/').map(str::to_string).unwrap_or(p);
                (p, tags.into_iter().map(Into::into).collect())
            })
            .collect();
        TagMap { map }
    }

    /// The file at `path` (`None`: no file, nothing watched).
    pub fn load(path: Option<&Path>) -> Result<TagMap, ConfigError> {
        let Some(path) = path else {
            return Ok(TagMap::default());
        };
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let parsed: BTreeMap<String, Option<Vec<String>>> =
            serde_json::from_slice(&text).map_err(|source| ConfigError::Parse {
                path: path.to_path_buf(),
                source,
            })?;
        if parsed.is_empty() {
            return Err(ConfigError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(TagMap::new(
            parsed.into_iter().map(|(p, t)| (p, t.unwrap_or_default())),
        ))
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The prefixes to watch: every configured prefix that no other configured prefix
    /// already covers.
    pub fn watch_prefixes(&self) -> Vec<String> {
        let all: Vec<&String> = self.map.keys().collect();
        all.iter()
            .filter(|p| !all.iter().any(|q| q != *p && p.starts_with(q.as_str())))
            .map(|p| p.to_string())
            .collect()
    }

    /// The tags of `key`: those of the exact entry when there is one, else those of the
    /// longest configured prefix that `key` starts with; `None` when nothing matches.
    pub fn tags(&self, key: &str) -> Option<&BTreeSet<String>> {
        if let Some(tags) = self.map.get(key) {
            return Some(tags);
        }
        self.map
            .iter()
            .filter(|(p, _)| key.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, tags)| tags)
    }

    /// What `keys` run: a full run when any key has no tags (no match, or an empty
    /// list), else the union of their tags.
    pub fn select<'a>(&self, keys: impl IntoIterator<Item = &'a String>) -> Selection {
        let mut union = BTreeSet::new();
        for key in keys {
            match self.tags(key) {
                Some(tags) if !tags.is_empty() => union.extend(tags.iter().cloned()),
                _ => return Selection::Full,
            }
        }
        if union.is_empty() {
            Selection::Full
        } else {
            Selection::Tags(union)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> TagMap {
        TagMap::new([
            ("lochness/hypervisors/", vec!["hv"]),
            ("lochness/hypervisors/h1/config/", vec!["h1config", "net"]),
            ("lochness/config/", vec![]),
            ("lochness/guests/g1/metadata", vec!["exact"]),
            ("lochness/guests/", vec!["guests"]),
            ("/lochness/subnets/", vec!["subnets"]),
        ])
    }

    fn keys(k: &[&str]) -> Vec<String> {
        k.iter().map(|s| s.to_string()).collect()
    }

    fn tags(t: &[&str]) -> Selection {
        Selection::Tags(t.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn longest_prefix_wins_and_exact_first() {
        let m = map();
        let t = |k: &str| m.tags(k).map(|t| t.iter().cloned().collect::<Vec<_>>());
        assert_eq!(t("lochness/hypervisors/h2/metadata").unwrap(), ["hv"]);
        assert_eq!(
            t("lochness/hypervisors/h1/config/x").unwrap(),
            ["h1config", "net"]
        );
        assert_eq!(t("lochness/guests/g1/metadata").unwrap(), ["exact"]);
        assert_eq!(t("lochness/guests/g2/metadata").unwrap(), ["guests"]);
        // Every entry is a prefix too: the longest one that matches.
        assert_eq!(t("lochness/guests/g1/metadata.old").unwrap(), ["exact"]);
        assert_eq!(t("lochness/subnets/s/metadata").unwrap(), ["subnets"]);
        assert!(t("lochness/config/x").unwrap().is_empty());
        assert_eq!(t("other"), None);
    }

    #[test]
    fn selection() {
        let m = map();
        assert_eq!(
            m.select(&keys(&[
                "lochness/hypervisors/h2/metadata",
                "lochness/guests/g9/metadata",
                "lochness/hypervisors/h1/config/a"
            ])),
            tags(&["guests", "h1config", "hv", "net"])
        );
        assert_eq!(
            m.select(&keys(&["lochness/guests/x", "lochness/config/k"])),
            Selection::Full
        );
        assert_eq!(m.select(&keys(&["unmatched"])), Selection::Full);
        assert_eq!(m.select(&keys(&[])), Selection::Full);
    }

    #[test]
    fn covered_prefixes_are_not_watched_twice() {
        assert_eq!(
            map().watch_prefixes(),
            [
                "lochness/config/",
                "lochness/guests/",
                "lochness/hypervisors/",
                "lochness/subnets/"
            ]
        );
    }

    #[test]
    fn kv_resolution_order() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let both: &[(&str, &str)] = &[(ENV_KV, "http://kv:1"), (ENV_ETCD, "http://etcd:2")];
        assert_eq!(
            resolve_kv(Some("http://flag:3"), env(both)),
            "http://flag:3"
        );
        assert_eq!(resolve_kv(None, env(both)), "http://kv:1");
        assert_eq!(
            resolve_kv(None, env(&[(ENV_KV, ""), (ENV_ETCD, "http://etcd:2")])),
            "http://etcd:2"
        );
        assert_eq!(resolve_kv(None, env(&[])), DEFAULT_KV);
    }

    #[test]
    fn config_files() {
        let dir = std::env::temp_dir().join(format!("mistify-nconfig-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        assert_eq!(TagMap::load(None).unwrap(), TagMap::default());
        let good = write("good.json", r#"{"a/": ["x", "y"], "b/": [], "c/": null}"#);
        let m = TagMap::load(Some(&good)).unwrap();
        assert_eq!(m.select(&keys(&["a/1"])), tags(&["x", "y"]));
        assert_eq!(m.select(&keys(&["c/1"])), Selection::Full);
        let empty = write("empty.json", "{}");
        assert!(matches!(
            TagMap::load(Some(&empty)),
            Err(ConfigError::Empty { .. })
        ));
        let bad = write("bad.json", r#"{"a/": "x"}"#);
        assert!(matches!(
            TagMap::load(Some(&bad)),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            TagMap::load(Some(&dir.join("missing.json"))),
            Err(ConfigError::Read { .. })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
