//! How results are printed: compact JSON with sorted keys, plain ids (for scripts), or
//! aligned tables and trees (for people).

use std::collections::BTreeMap;

use lochness_client::{
    Flavor, FwGroup, Guest, GuestJob, Hypervisor, HypervisorResources, Job, Metadata, Network,
    Resource, Resources, Subnet, Vlan, VlanGroup,
};
use serde::Serialize;
use serde_json::Value;

use crate::CliError;

/// The output format (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One id per line (the job id for guest commands that start a job); trees for a
    /// hypervisor's guests, config and subnets. The default when stdout is not a
    /// terminal.
    Plain,
    /// One compact JSON object per line, keys sorted.
    Json,
    /// Aligned columns. The default when stdout is a terminal.
    Table,
}

/// `value` with the members of every object in sorted order (whatever order the map
/// type keeps).
pub fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// `value` as one line of compact JSON with sorted keys, newline included.
pub fn json_line<T: Serialize + ?Sized>(value: &T) -> Result<String, CliError> {
    let value = serde_json::to_value(value).map_err(|e| CliError::Io {
        what: "encoding JSON".into(),
        source: e.into(),
    })?;
    let mut line = serde_json::to_string(&sorted(value)).map_err(|e| CliError::Io {
        what: "encoding JSON".into(),
        source: e.into(),
    })?;
    line.push('\n');
    Ok(line)
}

/// Aligned columns, two spaces apart, a header row first; line breaks and tabs in cells
/// become spaces, trailing blanks are trimmed.
pub fn table<S: AsRef<str>>(headers: &[&str], rows: &[Vec<S>]) -> String {
    let clean = |s: &str| s.replace(['\n', '\r', '\t'], " ");
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    let rows: Vec<Vec<String>> = std::iter::once(header_row)
        .chain(
            rows.iter()
                .map(|r| r.iter().map(|c| clean(c.as_ref())).collect()),
        )
        .collect();
    let mut widths = vec![0; headers.len()];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths[i].saturating_sub(cell.chars().count()) + 2;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The original `hv` tree: `root`, then one `├── entry` line per entry and `└── entry`
/// for the last.
pub fn tree<S: AsRef<str>>(root: &str, entries: &[S]) -> String {
    let mut out = format!("{root}\n");
    for (i, entry) in entries.iter().enumerate() {
        let branch = if i + 1 == entries.len() {
            "└──"
        } else {
            "├──"
        };
        out.push_str(&format!("{branch} {}\n", entry.as_ref()));
    }
    out
}

/// [`tree`] of a map: `key:value` entries sorted by key.
pub fn tree_map(root: &str, map: &BTreeMap<String, String>) -> String {
    let entries: Vec<String> = map.iter().map(|(k, v)| format!("{k}:{v}")).collect();
    tree(root, &entries)
}

/// [`tree`] of a list, sorted (numbers as numbers: a shorter decimal is smaller).
pub fn tree_list<S: ToString>(root: &str, items: &[S]) -> String {
    let mut entries: Vec<String> = items.iter().map(ToString::to_string).collect();
    entries.sort_by_cached_key(|e| (e.len(), e.clone()));
    tree(root, &entries)
}

/// `-` for an empty cell.
pub fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

/// `k=v,k2=v2`, or `-`.
pub fn metadata(m: &Metadata) -> String {
    let text: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    or_dash(&text.join(","))
}

/// MiB as `512M`.
pub fn mib(n: u64) -> String {
    format!("{n}M")
}

/// `available/total` of one resource.
fn of(available: impl ToString, total: impl ToString) -> String {
    format!("{}/{}", available.to_string(), total.to_string())
}

/// A job time: `-` for Go's zero time.
pub fn time(t: &str) -> String {
    if t.is_empty() || t == lochness_client::ZERO_TIME {
        "-".to_string()
    } else {
        t.to_string()
    }
}

/// How an entity shows in tables and in `get`.
pub trait View: Resource {
    /// The columns of a list.
    const HEADERS: &'static [&'static str];
    /// One row of a list.
    fn row(&self) -> Vec<String>;
    /// `FIELD VALUE` rows of `get`.
    fn fields(&self) -> Vec<(&'static str, String)>;
    /// The key an argument names, checked: a UUID, in lower case (a VLAN: its tag).
    fn parse_key(arg: &str) -> Result<String, CliError> {
        crate::input::uuid(&format!("{} id", Self::NOUN), arg)
    }
    /// The whole `get` view.
    fn details(&self) -> String {
        let rows: Vec<Vec<String>> = self
            .fields()
            .into_iter()
            .map(|(k, v)| vec![k.to_string(), v])
            .collect();
        table(&["FIELD", "VALUE"], &rows)
    }
}

/// A list of entities as a table.
pub fn list_table<R: View>(items: &[R]) -> String {
    let rows: Vec<Vec<String>> = items.iter().map(View::row).collect();
    table(R::HEADERS, &rows)
}

impl View for Guest {
    const HEADERS: &'static [&'static str] = &["ID", "HYPERVISOR", "IP", "FLAVOR", "NETWORK"];
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            or_dash(&self.hypervisor),
            or_dash(&self.ip),
            or_dash(&self.flavor),
            or_dash(&self.network),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        let unplaced = |s: &str| {
            if self.is_placed() || !s.is_empty() {
                or_dash(s)
            } else {
                "- (not placed yet)".to_string()
            }
        };
        vec![
            ("id", self.id.clone()),
            ("type", or_dash(&self.kind)),
            ("flavor", or_dash(&self.flavor)),
            ("network", or_dash(&self.network)),
            ("fwgroup", or_dash(&self.fwgroup)),
            ("vlangroup", or_dash(&self.vlangroup)),
            ("mac", or_dash(&self.mac)),
            ("hypervisor", unplaced(&self.hypervisor)),
            ("subnet", or_dash(&self.subnet)),
            ("ip", or_dash(&self.ip)),
            ("bridge", or_dash(&self.bridge)),
            ("metadata", metadata(&self.metadata)),
        ]
    }
}

impl View for Hypervisor {
    const HEADERS: &'static [&'static str] = &["ID", "IP", "MAC", "MEMORY", "DISK", "CPU"];
    fn row(&self) -> Vec<String> {
        let (a, t) = (&self.available_resources, &self.total_resources);
        vec![
            self.id.clone(),
            or_dash(&self.ip),
            or_dash(&self.mac),
            format!("{}M", of(a.memory, t.memory)),
            format!("{}M", of(a.disk, t.disk)),
            of(a.cpu, t.cpu),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        let res = |r: &Resources| {
            format!(
                "memory {}, disk {}, cpu {}",
                mib(r.memory),
                mib(r.disk),
                r.cpu
            )
        };
        vec![
            ("id", self.id.clone()),
            ("ip", or_dash(&self.ip)),
            ("netmask", or_dash(&self.netmask)),
            ("gateway", or_dash(&self.gateway)),
            ("mac", or_dash(&self.mac)),
            ("total", res(&self.total_resources)),
            ("available", res(&self.available_resources)),
            ("metadata", metadata(&self.metadata)),
        ]
    }
}

impl View for Flavor {
    const HEADERS: &'static [&'static str] = &["ID", "IMAGE", "MEMORY", "DISK", "CPU", "METADATA"];
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            or_dash(&self.image),
            mib(self.memory),
            mib(self.disk),
            self.cpu.to_string(),
            metadata(&self.metadata),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("image", or_dash(&self.image)),
            ("memory", mib(self.memory)),
            ("disk", mib(self.disk)),
            ("cpu", self.cpu.to_string()),
            ("metadata", metadata(&self.metadata)),
        ]
    }
}

impl View for Network {
    const HEADERS: &'static [&'static str] = &["ID", "METADATA"];
    fn row(&self) -> Vec<String> {
        vec![self.id.clone(), metadata(&self.metadata)]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("metadata", metadata(&self.metadata)),
        ]
    }
}

impl View for Subnet {
    const HEADERS: &'static [&'static str] = &["ID", "NETWORK", "CIDR", "GATEWAY", "RANGE"];
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            or_dash(&self.network),
            or_dash(&self.cidr),
            or_dash(&self.gateway),
            format!("{}-{}", or_dash(&self.start), or_dash(&self.end)),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("network", or_dash(&self.network)),
            ("cidr", or_dash(&self.cidr)),
            ("gateway", or_dash(&self.gateway)),
            ("start", or_dash(&self.start)),
            ("end", or_dash(&self.end)),
            ("metadata", metadata(&self.metadata)),
        ]
    }
}

impl View for FwGroup {
    const HEADERS: &'static [&'static str] = &["ID", "RULES", "METADATA"];
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            self.rules.len().to_string(),
            metadata(&self.metadata),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("metadata", metadata(&self.metadata)),
        ]
    }
    fn details(&self) -> String {
        let mut out = table(
            &["FIELD", "VALUE"],
            &self
                .fields()
                .into_iter()
                .map(|(k, v)| vec![k.to_string(), v])
                .collect::<Vec<_>>(),
        );
        let rows: Vec<Vec<String>> = self
            .rules
            .iter()
            .map(|r| {
                let ports = if r.port_start == r.port_end {
                    r.port_start.to_string()
                } else {
                    format!("{}-{}", r.port_start, r.port_end)
                };
                vec![
                    or_dash(r.source.as_deref().unwrap_or_default()),
                    or_dash(r.group.as_deref().unwrap_or_default()),
                    ports,
                    or_dash(&r.protocol),
                    or_dash(&r.action),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["SOURCE", "GROUP", "PORTS", "PROTOCOL", "ACTION"],
            &rows,
        ));
        out
    }
}

impl View for Vlan {
    const HEADERS: &'static [&'static str] = &["TAG", "DESCRIPTION"];
    fn parse_key(arg: &str) -> Result<String, CliError> {
        crate::input::tag(arg).map(|t| t.to_string())
    }
    fn row(&self) -> Vec<String> {
        vec![self.tag.to_string(), or_dash(&self.description)]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("tag", self.tag.to_string()),
            ("description", or_dash(&self.description)),
        ]
    }
}

impl View for VlanGroup {
    const HEADERS: &'static [&'static str] = &["ID", "DESCRIPTION", "METADATA"];
    fn row(&self) -> Vec<String> {
        vec![
            self.id.clone(),
            or_dash(&self.description),
            metadata(&self.metadata),
        ]
    }
    fn fields(&self) -> Vec<(&'static str, String)> {
        vec![
            ("id", self.id.clone()),
            ("description", or_dash(&self.description)),
            ("metadata", metadata(&self.metadata)),
        ]
    }
}

/// Jobs: `ID ACTION GUEST STATUS STARTED FINISHED ERROR`.
pub fn jobs_table(jobs: &[Job]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                j.action.to_string(),
                or_dash(&j.guest),
                j.status.to_string(),
                time(&j.started_at),
                time(&j.finished_at),
                j.error.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "ACTION", "GUEST", "STATUS", "STARTED", "FINISHED", "ERROR",
        ],
        &rows,
    )
}

/// Jobs just queued: `JOB ACTION GUEST`.
pub fn started_table(action: &str, started: &[GuestJob]) -> String {
    let rows: Vec<Vec<String>> = started
        .iter()
        .map(|s| vec![s.id.clone(), action.to_string(), s.guest.id.clone()])
        .collect();
    table(&["JOB", "ACTION", "GUEST"], &rows)
}

/// `HYPERVISOR RESOURCE TOTAL AVAILABLE ALLOCATED FREE`, three rows per hypervisor.
pub fn resources_table(all: &[(String, HypervisorResources)]) -> String {
    /// memory, disk, cpu of `r`, as cells.
    fn cells(r: &Resources) -> [String; 3] {
        [mib(r.memory), mib(r.disk), r.cpu.to_string()]
    }
    let mut rows = Vec::new();
    for (id, r) in all {
        let [total, available, allocated, free] =
            [&r.total, &r.available, &r.allocated, &r.free].map(cells);
        for (i, kind) in ["memory", "disk", "cpu"].into_iter().enumerate() {
            rows.push(vec![
                if i == 0 { id.clone() } else { String::new() },
                kind.to_string(),
                total[i].clone(),
                available[i].clone(),
                allocated[i].clone(),
                free[i].clone(),
            ]);
        }
    }
    table(
        &[
            "HYPERVISOR",
            "RESOURCE",
            "TOTAL",
            "AVAILABLE",
            "ALLOCATED",
            "FREE",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use lochness_client::{FwRule, JobAction, JobStatus};

    #[test]
    fn tables_align_and_trim() {
        let t = table(
            &["ID", "STATE", "NOTE"],
            &[vec!["a", "running", ""], vec!["long-id", "x\ny", "z"]],
        );
        assert_eq!(
            t,
            "ID       STATE    NOTE\na        running\nlong-id  x y      z\n"
        );
    }

    #[test]
    fn trees_like_the_original_hv() {
        assert_eq!(tree::<&str>("hv", &[]), "hv\n");
        assert_eq!(tree_list("hv", &["b", "a"]), "hv\n├── a\n└── b\n");
        let map = BTreeMap::from([
            ("version".into(), "1.2.3".into()),
            ("foo".into(), "bar".into()),
        ]);
        assert_eq!(tree_map("hv", &map), "hv\n├── foo:bar\n└── version:1.2.3\n");
    }

    #[test]
    fn json_lines_sort_keys() {
        let guest = Guest {
            id: "g".into(),
            kind: "kvm".into(),
            ..Guest::default()
        };
        let line = json_line(&GuestJob {
            id: "j".into(),
            guest,
        })
        .unwrap();
        assert!(
            line.starts_with(
                r#"{"guest":{"bridge":"","flavor":"","fwgroup":"","hypervisor":"","id":"g","ip":"""#
            ),
            "{line}"
        );
        assert!(
            line.ends_with("\"vlangroup\":\"\"},\"id\":\"j\"}\n"),
            "{line}"
        );
    }

    #[test]
    fn entity_tables() {
        let guests = [
            Guest {
                id: "ffff0001".into(),
                hypervisor: "aaaa0001".into(),
                ip: "10.10.0.10".into(),
                flavor: "dddd0001".into(),
                network: "cccc0001".into(),
                ..Guest::default()
            },
            Guest {
                id: "ffff0002".into(),
                flavor: "dddd0001".into(),
                network: "cccc0001".into(),
                ..Guest::default()
            },
        ];
        assert_eq!(
            list_table(&guests),
            "ID        HYPERVISOR  IP          FLAVOR    NETWORK\n\
             ffff0001  aaaa0001    10.10.0.10  dddd0001  cccc0001\n\
             ffff0002  -           -           dddd0001  cccc0001\n"
        );
        let details = guests[1].details();
        assert!(
            details.contains("hypervisor  - (not placed yet)\n"),
            "{details}"
        );
        let hv = Hypervisor {
            id: "aaaa0001".into(),
            ip: "192.168.10.11".into(),
            total_resources: Resources {
                memory: 16384,
                disk: 1048576,
                cpu: 8,
            },
            available_resources: Resources {
                memory: 15872,
                disk: 1038336,
                cpu: 8,
            },
            ..Hypervisor::default()
        };
        assert_eq!(
            list_table(&[hv]),
            "ID        IP             MAC  MEMORY        DISK              CPU\n\
             aaaa0001  192.168.10.11  -    15872/16384M  1038336/1048576M  8/8\n"
        );
        let fw = FwGroup {
            id: "eeee0001".into(),
            rules: vec![FwRule {
                source: Some("10.0.0.0/8".into()),
                port_start: 22,
                port_end: 22,
                protocol: "tcp".into(),
                action: "allow".into(),
                ..FwRule::default()
            }],
            ..FwGroup::default()
        };
        assert!(fw.details().ends_with(
            "SOURCE      GROUP  PORTS  PROTOCOL  ACTION\n10.0.0.0/8  -      22     tcp       allow\n"
        ));
        let job = Job {
            id: "j1".into(),
            action: JobAction::SelectHypervisor,
            guest: "g1".into(),
            error: "unable to select candidate g1 - no suitable hypervisors".into(),
            status: JobStatus::Error,
            started_at: lochness_client::ZERO_TIME.into(),
            finished_at: "2026-01-02T03:04:05.5Z".into(),
            ..Job::default()
        };
        assert_eq!(
            jobs_table(&[job]),
            "ID  ACTION             GUEST  STATUS  STARTED  FINISHED                ERROR\n\
             j1  select-hypervisor  g1     error   -        2026-01-02T03:04:05.5Z  unable to select candidate g1 - no suitable hypervisors\n"
        );
        let r = HypervisorResources {
            total: Resources {
                memory: 1024,
                disk: 10,
                cpu: 2,
            },
            free: Resources {
                memory: 512,
                disk: 5,
                cpu: 1,
            },
            ..HypervisorResources::default()
        };
        assert_eq!(
            resources_table(&[("h1".into(), r)]),
            "HYPERVISOR  RESOURCE  TOTAL  AVAILABLE  ALLOCATED  FREE\n\
             h1          memory    1024M  0M         0M         512M\n\
             \x20           disk      10M    0M         0M         5M\n\
             \x20           cpu       2      0          0          1\n"
        );
    }
}
