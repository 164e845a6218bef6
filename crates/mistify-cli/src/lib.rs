//! The `mistify` operator CLI: flags ([`Cli`]), and [`run`], which carries a parsed
//! command out over a [`Client`].
//!
//! Output goes to stdout (plain aligned tables, with `--json` the JSON of the answer, with
//! `-q` only ids); progress (spinners while a job runs, the progress bar of a download)
//! goes to stderr and only when stderr is a terminal; so do the agent's `Warning` headers.
//! Errors are returned as [`CliError`], whose [`CliError::exit_code`] is 1 for agent and
//! transport errors and 2 for bad input.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::time::Instant;

use mistify_client::{
    warning_text, Accepted, Client, ClientError, DownloadStream, MetadataPatch, TlsFiles,
};
use mistify_types::{
    Disk, Guest, GuestAction, GuestCpuMetrics, GuestDiskMetrics, GuestNicMetrics, Image,
    ImageRequest, Job, JobStatus, Metadata, Nic, Snapshot, SnapshotRequest,
};

/// The agent address used when neither `--agent` nor `MISTIFY_AGENT` gives one.
pub const DEFAULT_AGENT: &str = "http://127.0.0.1:8080";

/// How long one long-poll of a job may last; the spinner's message is refreshed after
/// each.
const POLL_CHUNK: Duration = Duration::from_secs(10);

// ----- flags ---------------------------------------------------------------------------

/// Operator CLI of the mistify agent.
#[derive(Debug, Parser)]
#[command(name = "mistify", version, propagate_version = true)]
pub struct Cli {
    /// Base URL of the agent.
    #[arg(long, global = true, env = "MISTIFY_AGENT", default_value = DEFAULT_AGENT, value_name = "URL")]
    pub agent: String,

    /// File holding the bearer token for an agent started with `--token-file` (its first
    /// non-empty, non-comment line; an `ro:` prefix is dropped).
    #[arg(long, global = true, env = "MISTIFY_TOKEN_FILE", value_name = "FILE")]
    pub token_file: Option<std::path::PathBuf>,

    /// PEM file of the CA that signed an `https://` agent's certificate (default: the
    /// system's trusted CAs).
    #[arg(long, global = true, env = "MISTIFY_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,

    /// PEM client certificate for an agent started with `--client-ca` (with `--client-key`).
    #[arg(long, global = true, env = "MISTIFY_CLIENT_CERT", value_name = "FILE")]
    pub client_cert: Option<std::path::PathBuf>,

    /// PEM private key of `--client-cert`.
    #[arg(long, global = true, env = "MISTIFY_CLIENT_KEY", value_name = "FILE")]
    pub client_key: Option<std::path::PathBuf>,

    /// Print the JSON of the answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,

    /// Print only ids, one per line: the new guest of `guests create`, the image of
    /// `images fetch`, the job a command started (with `--wait`, the guest or image it
    /// acted on), the ids of a list. No spinners or progress bars.
    #[arg(short, long, global = true, conflicts_with = "json")]
    pub quiet: bool,

    /// Deadline of each request to the agent, in seconds (given before the command).
    #[arg(long, value_name = "SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Guests: list, show, create, and act on them.
    #[command(subcommand)]
    Guests(GuestsCmd),
    /// The agent's job log.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// Hypervisor or guest metadata.
    #[command(subcommand)]
    Metadata(MetadataCmd),
    /// Disk and container images.
    #[command(subcommand)]
    Images(ImagesCmd),
    /// Snapshots of a guest's disks.
    #[command(subcommand)]
    Snapshots(SnapshotsCmd),
    /// The agent's health: its status, then each sub-agent, whether it answered and how
    /// fast. Exits 0 when ok, 1 when degraded.
    Health,
    /// A shell completion script on stdout (e.g. `mistify completions bash >
    /// /etc/bash_completion.d/mistify`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The manual page (roff) on stdout, e.g. `mistify man | man -l -`.
    Man,
}

#[derive(Debug, Subcommand)]
pub enum GuestsCmd {
    /// List every guest.
    List,
    /// Show one guest.
    Get {
        /// Guest id.
        id: String,
        /// Ask the sub-agents for the guest's state first (the agent's `status` action)
        /// instead of showing what the agent has stored.
        #[arg(long)]
        refresh: bool,
    },
    /// A running guest's CPU, disk and NIC figures (or one kind of them).
    Metrics {
        /// Guest id.
        id: String,
        /// Only this kind (default: all three).
        #[arg(value_enum)]
        kind: Option<MetricKind>,
    },
    /// Create a guest.
    Create(CreateArgs),
    /// Shut a guest down gracefully.
    Shutdown(ActionArgs),
    /// Reboot a guest.
    Reboot(ActionArgs),
    /// Restart a guest.
    Restart(ActionArgs),
    /// Power a guest off.
    Poweroff(ActionArgs),
    /// Start a guest.
    Start(ActionArgs),
    /// Suspend a guest.
    Suspend(ActionArgs),
    /// Resume a suspended guest.
    Resume(ActionArgs),
    /// Delete a guest.
    Delete(DeleteArgs),
}

/// A kind of guest metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MetricKind {
    /// Per virtual CPU.
    Cpu,
    /// Per block device.
    Disk,
    /// Per network interface.
    Nic,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Guest id.
    pub id: String,
    /// Remove the guest even when a stage fails (its storage or domain is stuck); the
    /// job ends Complete and its message names what failed.
    #[arg(long)]
    pub force: bool,
    /// Wait for the job to end and print it.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Guest id.
    pub id: String,
    /// Wait for the job to end and print it.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Memory in MB.
    #[arg(long, value_name = "MB")]
    pub memory: Option<u64>,
    /// Number of virtual CPUs.
    #[arg(long, value_name = "N")]
    pub cpu: Option<u32>,
    /// Image id of the guest (container guests).
    #[arg(long, value_name = "ID")]
    pub image: Option<String>,
    /// Guest type, e.g. `container`.
    #[arg(long = "type", value_name = "T")]
    pub kind: Option<String>,
    /// A network interface: `network=br0,model=virtio,mac=…` (also name, address,
    /// netmask, gateway, vlan=N repeated). Repeat for more interfaces.
    #[arg(long, value_name = "SPEC", value_parser = parse_nic)]
    pub nic: Vec<Nic>,
    /// A disk: `image=ID,size=MB,bus=virtio` (also device, volume). Repeat for more disks.
    #[arg(long, value_name = "SPEC", value_parser = parse_disk)]
    pub disk: Vec<Disk>,
    /// A metadata entry `key=value`. Repeat for more.
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub metadata: Vec<(String, String)>,
    /// The guest id (the agent picks one when absent).
    #[arg(long, value_name = "UUID")]
    pub id: Option<String>,
    /// Wait for the job to end and print it.
    #[arg(long)]
    pub wait: bool,
}

#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// List the latest jobs, newest first.
    List {
        /// At most this many jobs.
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
        /// Only the jobs of this guest.
        #[arg(long, value_name = "ID")]
        guest: Option<String>,
    },
    /// Show one job.
    Get {
        /// Job id.
        job: String,
    },
    /// Cancel a queued job (the agent refuses, 409, one that runs or ended).
    Cancel {
        /// Job id.
        job: String,
    },
    /// Wait for a job to end and print it; exits 1 when it ends in error.
    Wait {
        /// Job id.
        job: String,
        /// Give up (exit 1) after this many seconds; default: wait as long as it takes.
        #[arg(long, value_name = "S", value_parser = clap::value_parser!(u64).range(1..))]
        timeout: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum MetadataCmd {
    /// Show the hypervisor's metadata, or a guest's.
    Get {
        /// The guest whose metadata to show.
        #[arg(long, value_name = "ID")]
        guest: Option<String>,
    },
    /// Set keys (`k=v`) or delete them (`k=`); prints the metadata afterwards.
    Set {
        /// The guest whose metadata to change.
        #[arg(long, value_name = "ID")]
        guest: Option<String>,
        /// `key=value` to set, `key=` to delete.
        #[arg(required = true, value_name = "KEY=VALUE", value_parser = parse_key_value)]
        entries: Vec<(String, String)>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ImagesCmd {
    /// List images.
    List {
        /// Only images of this type (e.g. `container`).
        #[arg(long = "type", value_name = "T")]
        kind: Option<String>,
    },
    /// Show one image.
    Get {
        /// Image id.
        id: String,
    },
    /// Fetch an image onto the hypervisor.
    Fetch {
        /// Image id.
        id: String,
        /// Where to fetch it from.
        #[arg(long, value_name = "URL")]
        source: Option<String>,
        /// Image type (e.g. `container`).
        #[arg(long = "type", value_name = "T")]
        kind: Option<String>,
        /// Wait for the job to end and print it.
        #[arg(long)]
        wait: bool,
    },
    /// Delete an image.
    Delete {
        /// Image id.
        id: String,
        /// Wait for the job to end and print it.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotsCmd {
    /// List the snapshots of a guest (or of one disk).
    List {
        /// Guest id.
        guest: String,
        /// Only this disk.
        #[arg(long, value_name = "D")]
        disk: Option<String>,
    },
    /// Take a snapshot.
    Create {
        /// Guest id.
        guest: String,
        /// Snapshot name (the agent picks one when absent).
        #[arg(long, value_name = "N")]
        name: Option<String>,
        /// Only this disk.
        #[arg(long, value_name = "D")]
        disk: Option<String>,
        /// Wait for the job to end and print it.
        #[arg(long)]
        wait: bool,
    },
    /// Delete a snapshot.
    Delete {
        /// Guest id.
        guest: String,
        /// Snapshot name.
        name: String,
        /// Only this disk.
        #[arg(long, value_name = "D")]
        disk: Option<String>,
        /// Wait for the job to end and print it.
        #[arg(long)]
        wait: bool,
    },
    /// Roll back to a snapshot.
    Rollback {
        /// Guest id.
        guest: String,
        /// Snapshot name.
        name: String,
        /// Only this disk.
        #[arg(long, value_name = "D")]
        disk: Option<String>,
        /// Allow destroying snapshots more recent than this one.
        #[arg(long)]
        destroy_more_recent: bool,
        /// Wait for the job to end and print it.
        #[arg(long)]
        wait: bool,
    },
    /// Download a snapshot to a file (with a progress bar) or to stdout.
    Download {
        /// Guest id.
        guest: String,
        /// Snapshot name.
        name: String,
        /// Only this disk.
        #[arg(long, value_name = "D")]
        disk: Option<String>,
        /// Write to this file instead of stdout.
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

// ----- input parsing -------------------------------------------------------------------

/// `key=value` (the value may be empty; the key may not).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?} (no `=`)"))?;
    let key = key.trim();
    if key.is_empty() {
        return Err(format!("expected KEY=VALUE, got {s:?} (empty key)"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// The `k=v` pairs of a comma-separated spec.
fn spec_pairs(s: &str) -> Result<Vec<(String, String)>, String> {
    if s.trim().is_empty() {
        return Err("expected key=value[,key=value…], got an empty spec".to_string());
    }
    s.split(',').map(parse_key_value).collect()
}

/// A `--nic` spec: `network=br0,model=virtio,mac=…,vlan=10,vlan=20`.
pub fn parse_nic(s: &str) -> Result<Nic, String> {
    let mut nic = Nic::default();
    for (key, value) in spec_pairs(s)? {
        match key.as_str() {
            "network" => nic.network = value,
            "model" => nic.model = value,
            "mac" => nic.mac = value,
            "name" => nic.name = value,
            "address" => nic.address = value,
            "netmask" => nic.netmask = value,
            "gateway" => nic.gateway = value,
            "vlan" => {
                let tag: i64 = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("vlan must be a number, got {value:?}"))?;
                nic.vlans.get_or_insert_with(Vec::new).push(tag);
            }
            other => {
                return Err(format!(
                    "unknown nic key {other:?} (expected network, model, mac, name, address, netmask, gateway, vlan)"
                ))
            }
        }
    }
    Ok(nic)
}

/// A `--disk` spec: `image=ID,size=MB,bus=virtio,device=vda,volume=…`.
pub fn parse_disk(s: &str) -> Result<Disk, String> {
    let mut disk = Disk::default();
    for (key, value) in spec_pairs(s)? {
        match key.as_str() {
            "image" => disk.image = value,
            "size" => {
                disk.size = value
                    .trim()
                    .parse()
                    .map_err(|_| format!("disk size must be a number of MB, got {value:?}"))?
            }
            "bus" => {
                if !["ide", "scsi", "sata", "virtio"].contains(&value.as_str()) {
                    return Err(format!(
                        "disk bus must be ide, scsi, sata or virtio, got {value:?}"
                    ));
                }
                disk.bus = value;
            }
            "device" => disk.device = value,
            "volume" => disk.volume = value,
            other => {
                return Err(format!(
                    "unknown disk key {other:?} (expected image, size, bus, device, volume)"
                ))
            }
        }
    }
    Ok(disk)
}

// ----- errors --------------------------------------------------------------------------

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The agent refused the request, or it could not be sent or read.
    #[error("{0}")]
    Client(#[from] ClientError),
    /// A job waited for ended in `Error`.
    #[error("job {id} ({action}) failed: {message}")]
    JobFailed {
        id: String,
        action: String,
        message: String,
    },
    /// A job was still not done when the wait gave up.
    #[error("job {id} is still {status} after {after}s")]
    StillRunning {
        id: String,
        status: JobStatus,
        after: u64,
    },
    /// `health`: the agent answered, but some of its sub-agents did not.
    #[error("{}", degraded_message(unreachable, *serves_guests))]
    Degraded {
        /// The sub-agents that did not answer.
        unreachable: Vec<String>,
        /// False when one of them serves guest actions (the agent answered 503).
        serves_guests: bool,
    },
    /// Writing the output failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn degraded_message(unreachable: &[String], serves_guests: bool) -> String {
    let names = if unreachable.is_empty() {
        "(none named)".to_string()
    } else {
        unreachable.join(", ")
    };
    let effect = if serves_guests {
        ""
    } else {
        "; guest actions cannot run"
    };
    format!("the agent is degraded: sub-agents not answering: {names}{effect}")
}

impl CliError {
    /// The process exit status: 2 for input refused before anything was sent, 1 for the
    /// rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Client(ClientError::InvalidInput(_)) => 2,
            _ => 1,
        }
    }
}

fn io_error(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> CliError {
    let what = what.into();
    move |source| CliError::Io { what, source }
}

// ----- output --------------------------------------------------------------------------

/// Plain aligned columns: two spaces between columns, the last one not padded.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let clean = |s: &str| s.replace(['\n', '\r', '\t'], " ");
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| clean(c)).collect())
        .collect();
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header_row).chain(rows.iter()) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i].saturating_sub(cell.chars().count());
                line.push_str(cell);
                line.push_str(&" ".repeat(pad + 2));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn or_dash(s: &str) -> String {
    if s.is_empty() {
        "-".to_string()
    } else {
        s.to_string()
    }
}

fn megabytes(mb: u64) -> String {
    if mb == 0 {
        "-".to_string()
    } else {
        format!("{mb}M")
    }
}

pub fn guests_table(guests: &[Guest]) -> String {
    let rows: Vec<Vec<String>> = guests
        .iter()
        .map(|g| {
            vec![
                g.id.clone(),
                or_dash(&g.state),
                megabytes(g.memory),
                g.cpu.to_string(),
                or_dash(&g.kind),
            ]
        })
        .collect();
    table(&["ID", "STATE", "MEMORY", "CPU", "TYPE"], &rows)
}

/// One guest in detail: its fields, then its NICs, disks and metadata.
pub fn guest_details(g: &Guest) -> String {
    let mut out = table(
        &["FIELD", "VALUE"],
        &[
            vec!["id".into(), g.id.clone()],
            vec!["type".into(), or_dash(&g.kind)],
            vec!["state".into(), or_dash(&g.state)],
            vec!["memory".into(), megabytes(g.memory)],
            vec!["cpu".into(), g.cpu.to_string()],
            vec!["image".into(), or_dash(&g.image)],
            vec!["vnc".into(), g.vnc.to_string()],
        ],
    );
    if !g.nics.is_empty() {
        let rows: Vec<Vec<String>> = g
            .nics
            .iter()
            .map(|n| {
                let vlans = n
                    .vlans
                    .as_deref()
                    .unwrap_or_default()
                    .iter()
                    .map(i64::to_string)
                    .collect::<Vec<_>>()
                    .join(",");
                vec![
                    or_dash(&n.name),
                    or_dash(&n.network),
                    or_dash(&n.model),
                    or_dash(&n.mac),
                    or_dash(&n.address),
                    or_dash(&vlans),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(
            &["NIC", "NETWORK", "MODEL", "MAC", "ADDRESS", "VLANS"],
            &rows,
        ));
    }
    if !g.disks.is_empty() {
        let rows: Vec<Vec<String>> = g
            .disks
            .iter()
            .map(|d| {
                vec![
                    or_dash(&d.device),
                    or_dash(&d.bus),
                    megabytes(d.size),
                    or_dash(&d.image),
                    or_dash(&d.volume),
                ]
            })
            .collect();
        out.push('\n');
        out.push_str(&table(&["DISK", "BUS", "SIZE", "IMAGE", "VOLUME"], &rows));
    }
    if !g.metadata.is_empty() {
        out.push('\n');
        out.push_str(&metadata_table(&g.metadata));
    }
    out
}

fn time(t: &chrono::DateTime<chrono::Utc>) -> String {
    if *t == mistify_types::serde_go::go_time::zero() {
        "-".to_string()
    } else {
        t.format("%Y-%m-%d %H:%M:%S").to_string()
    }
}

pub fn jobs_table(jobs: &[Job]) -> String {
    let rows: Vec<Vec<String>> = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                or_dash(&j.guest_id),
                or_dash(&j.action),
                j.status.to_string(),
                time(&j.updated_at),
                j.message.clone(),
            ]
        })
        .collect();
    table(
        &["ID", "GUEST", "ACTION", "STATUS", "UPDATED", "MESSAGE"],
        &rows,
    )
}

pub fn metadata_table(metadata: &Metadata) -> String {
    let rows: Vec<Vec<String>> = metadata
        .iter()
        .map(|(k, v)| vec![k.clone(), v.clone()])
        .collect();
    table(&["KEY", "VALUE"], &rows)
}

pub fn images_table(images: &[Image]) -> String {
    let rows: Vec<Vec<String>> = images
        .iter()
        .map(|i| {
            vec![
                i.id.clone(),
                or_dash(&i.kind),
                megabytes(i.size),
                or_dash(&i.status),
            ]
        })
        .collect();
    table(&["ID", "TYPE", "SIZE", "STATUS"], &rows)
}

pub fn snapshots_table(snapshots: &[Snapshot]) -> String {
    let rows: Vec<Vec<String>> = snapshots
        .iter()
        .map(|s| vec![s.id.clone(), megabytes(s.size)])
        .collect();
    table(&["ID", "SIZE"], &rows)
}

/// Seconds with a millisecond's precision, `1.250s`.
fn seconds(s: f64) -> String {
    format!("{s:.3}s")
}

/// A byte count in binary units without a space: `512B`, `1.5K`, `20.0M`.
pub fn bytes(n: i64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if n.unsigned_abs() < 1024 {
        return format!("{n}B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

pub fn cpu_table(cpu: &[GuestCpuMetrics]) -> String {
    let rows: Vec<Vec<String>> = cpu
        .iter()
        .enumerate()
        .map(|(i, c)| vec![i.to_string(), seconds(c.cpu_time), seconds(c.vcpu_time)])
        .collect();
    table(&["CPU", "CPU-TIME", "VCPU-TIME"], &rows)
}

pub fn disk_table(disks: &BTreeMap<String, GuestDiskMetrics>) -> String {
    let rows: Vec<Vec<String>> = disks
        .iter()
        .map(|(name, d)| {
            vec![
                name.clone(),
                d.read_ops.to_string(),
                bytes(d.read_bytes),
                seconds(d.read_time),
                d.write_ops.to_string(),
                bytes(d.write_bytes),
                seconds(d.write_time),
                d.flush_ops.to_string(),
                seconds(d.flush_time),
            ]
        })
        .collect();
    table(
        &[
            "DISK",
            "READS",
            "READ",
            "READ-TIME",
            "WRITES",
            "WRITTEN",
            "WRITE-TIME",
            "FLUSHES",
            "FLUSH-TIME",
        ],
        &rows,
    )
}

pub fn nic_table(nics: &BTreeMap<String, GuestNicMetrics>) -> String {
    let rows: Vec<Vec<String>> = nics
        .iter()
        .map(|(name, n)| {
            vec![
                name.clone(),
                bytes(n.rx_bytes),
                n.rx_packets.to_string(),
                n.rx_errors.to_string(),
                n.rx_drops.to_string(),
                bytes(n.tx_bytes),
                n.tx_packets.to_string(),
                n.tx_errors.to_string(),
                n.tx_drops.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "NIC",
            "RX",
            "RX-PACKETS",
            "RX-ERRORS",
            "RX-DROPS",
            "TX",
            "TX-PACKETS",
            "TX-ERRORS",
            "TX-DROPS",
        ],
        &rows,
    )
}

/// The agent's `/healthz` report, read leniently (a field it lacks takes its default;
/// an answer that is not an object is a status line of its own).
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    pub status: String,
    pub version: String,
    pub draining: bool,
    pub serves_guests: bool,
    pub unreachable: Vec<String>,
    pub guests: u64,
    /// The sub-agents, by name.
    pub services: Vec<HealthService>,
}

/// One sub-agent of a [`Health`] report.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthService {
    pub name: String,
    pub url: String,
    pub reachable: bool,
    /// `Ok(milliseconds)` or `Err(error)`.
    pub answer: Result<f64, String>,
}

impl Health {
    /// Reads a report; a missing `status` counts as `ok` (the agent answered 200).
    pub fn of(report: &serde_json::Value) -> Health {
        let text = |key: &str| report[key].as_str().unwrap_or_default().to_string();
        let status = match report {
            serde_json::Value::String(s) if !s.is_empty() => s.clone(),
            _ => report["status"].as_str().unwrap_or("ok").to_string(),
        };
        let services = report["services"]
            .as_object()
            .map(|services| {
                services
                    .iter()
                    .map(|(name, s)| {
                        let reachable = s["reachable"].as_bool().unwrap_or(false);
                        let answer = match (s["answered_in_ms"].as_f64(), s["error"].as_str()) {
                            (Some(ms), _) if reachable => Ok(ms),
                            (_, Some(error)) => Err(error.to_string()),
                            (Some(ms), None) => Ok(ms),
                            (None, None) => Err("(no answer time or error given)".to_string()),
                        };
                        HealthService {
                            name: name.clone(),
                            url: s["url"].as_str().unwrap_or_default().to_string(),
                            reachable,
                            answer,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut unreachable: Vec<String> = report["unreachable"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        // The agent names them in the order the probes ended.
        unreachable.sort();
        Health {
            status,
            version: text("version"),
            draining: report["draining"].as_bool().unwrap_or(false),
            serves_guests: report["serves_guests"].as_bool().unwrap_or(true),
            unreachable,
            guests: report["guests"].as_u64().unwrap_or(0),
            services,
        }
    }

    /// The status line, then a table of the sub-agents.
    pub fn render(&self) -> String {
        let mut first = format!("status: {}", self.status);
        let mut notes = Vec::new();
        if !self.version.is_empty() {
            notes.push(format!("agent {}", self.version));
        }
        notes.push(format!(
            "{} guest{}",
            self.guests,
            if self.guests == 1 { "" } else { "s" }
        ));
        if self.draining {
            notes.push("draining".to_string());
        }
        if !self.unreachable.is_empty() {
            notes.push(format!("not answering: {}", self.unreachable.join(", ")));
        }
        if !self.serves_guests {
            notes.push("guest actions cannot run".to_string());
        }
        let _ = write!(first, " ({})", notes.join(", "));
        first.push('\n');
        if self.services.is_empty() {
            return first;
        }
        let rows: Vec<Vec<String>> = self
            .services
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    or_dash(&s.url),
                    if s.reachable { "yes" } else { "no" }.to_string(),
                    match &s.answer {
                        Ok(ms) => format!("{ms}ms"),
                        Err(e) => e.clone(),
                    },
                ]
            })
            .collect();
        first + &table(&["SERVICE", "URL", "REACHABLE", "ANSWERED-IN/ERROR"], &rows)
    }
}

/// Where results go: stdout, as a table, as JSON (`--json`) or as ids (`-q`).
struct Out {
    json: bool,
    quiet: bool,
}

/// The ids of `items`, for `-q`.
fn ids_of<T>(items: &[T], id: impl Fn(&T) -> &str) -> Vec<String> {
    items.iter().map(|i| id(i).to_string()).collect()
}

impl Out {
    fn write(&self, text: &str) -> Result<(), CliError> {
        self.write_bytes(text.as_bytes())
    }

    fn write_bytes(&self, bytes: &[u8]) -> Result<(), CliError> {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(bytes)
            .and_then(|()| stdout.flush())
            .map_err(io_error("writing to stdout"))
    }

    /// `value` as JSON with `--json`, its `ids` one per line with `-q`, else
    /// `render(value)`.
    fn show<T: Serialize + ?Sized>(
        &self,
        value: &T,
        ids: impl FnOnce(&T) -> Vec<String>,
        render: impl FnOnce(&T) -> String,
    ) -> Result<(), CliError> {
        if self.json {
            let mut text = serde_json::to_string_pretty(value).map_err(|e| CliError::Io {
                what: "encoding JSON".into(),
                source: e.into(),
            })?;
            text.push('\n');
            self.write(&text)
        } else if self.quiet {
            self.write_ids(ids(value))
        } else {
            self.write(&render(value))
        }
    }

    /// `ids`, one per line (empty ones left out).
    fn write_ids(&self, ids: Vec<String>) -> Result<(), CliError> {
        let mut text = String::new();
        for id in ids.iter().filter(|i| !i.is_empty()) {
            text.push_str(id);
            text.push('\n');
        }
        self.write(&text)
    }

    /// A job as a table row, its JSON, or `quiet_id` with `-q`.
    fn show_job(&self, job: &Job, quiet_id: &str) -> Result<(), CliError> {
        self.show(
            job,
            |_| vec![quiet_id.to_string()],
            |j| jobs_table(std::slice::from_ref(j)),
        )
    }

    /// A spinner on stderr (hidden with `-q`, or when stderr is not a terminal).
    fn spinner(&self, message: String) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        spinner(message)
    }
}

// ----- jobs ----------------------------------------------------------------------------

fn spinner(message: String) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.set_message(message);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Long-polls job `id` until it is done, or until `limit` has passed (then the job as
/// it stands). A spinner on stderr shows its status meanwhile.
async fn wait_for_job(
    client: &Client,
    out: &Out,
    id: &str,
    limit: Option<Duration>,
) -> Result<Job, CliError> {
    let started = Instant::now();
    let bar = out.spinner(format!("job {id}: waiting"));
    let result = async {
        loop {
            let chunk = match limit {
                Some(limit) => {
                    let left = limit.saturating_sub(started.elapsed());
                    if left.is_zero() {
                        // One last look, without waiting.
                        return client.get_job(id).await;
                    }
                    left.min(POLL_CHUNK)
                }
                None => POLL_CHUNK,
            };
            let job = client.wait_job(id, chunk).await?;
            bar.set_message(format!("job {id} ({}): {}", job.action, job.status));
            if job.status.is_done() {
                return Ok(job);
            }
        }
    }
    .await;
    bar.finish_and_clear();
    Ok(result?)
}

/// Prints `job` (`quiet_id` with `-q`); an `Error` job becomes [`CliError::JobFailed`].
fn finish_job(out: &Out, job: &Job, quiet_id: &str) -> Result<(), CliError> {
    out.show_job(job, quiet_id)?;
    if job.status == JobStatus::Error {
        return Err(CliError::JobFailed {
            id: job.id.clone(),
            action: job.action.clone(),
            message: if job.message.is_empty() {
                "(no message)".into()
            } else {
                job.message.clone()
            },
        });
    }
    Ok(())
}

/// What `-q` prints for a command that starts a job: the job's id, or the id of what the
/// job acts on (`id`) after `--wait`, or always when `always` (`guests create`, `images
/// fetch`: the new thing is what a script needs).
struct Subject {
    id: String,
    always: bool,
}

impl Subject {
    /// The job id, or `id` after `--wait`.
    fn after_wait(id: &str) -> Subject {
        Subject {
            id: id.to_string(),
            always: false,
        }
    }

    /// `id` in every case.
    fn always(id: &str) -> Subject {
        Subject {
            id: id.to_string(),
            always: true,
        }
    }
}

/// After an asynchronous request: with `wait`, follows the job to its end and prints
/// it; otherwise prints the job as it stands now. Without a job id (a Go agent's
/// snapshot routes) prints the answer's body. Returns the job.
async fn after_accepted<T: Serialize>(
    client: &Client,
    out: &Out,
    accepted: Accepted<T>,
    wait: bool,
    subject: Subject,
) -> Result<Option<Job>, CliError> {
    let Some(job_id) = accepted.job_id else {
        out.show(
            &accepted.body,
            |_| vec![subject.id.clone()],
            |_| format!("accepted (HTTP {}), no job id\n", accepted.status),
        )?;
        return Ok(None);
    };
    let quiet_id = if subject.always || wait {
        subject.id.as_str()
    } else {
        job_id.as_str()
    };
    if wait {
        let job = wait_for_job(client, out, &job_id, None).await?;
        finish_job(out, &job, quiet_id)?;
        Ok(Some(job))
    } else if out.quiet {
        // No need to look the job up for its id.
        out.write_ids(vec![quiet_id.to_string()])?;
        Ok(None)
    } else {
        let job = client.get_job(&job_id).await?;
        out.show_job(&job, quiet_id)?;
        Ok(Some(job))
    }
}

// ----- commands ------------------------------------------------------------------------

/// The token of `path` (a token file; its first token, `ro:` prefix dropped, so an
/// agent's token file line can be copied as is).
fn read_token(path: &std::path::Path) -> Result<String, ClientError> {
    mistify_types::token::TokenFile::load(path)
        .map(|file| file.first().to_string())
        .map_err(|e| ClientError::InvalidInput(e.to_string()))
}

/// Carries out a parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let out = Out {
        json: cli.json,
        quiet: cli.quiet,
    };
    // Commands that need no agent.
    match &cli.command {
        Command::Completions { shell } => return out.write_bytes(&completions(*shell)),
        Command::Man => return out.write_bytes(&man_page()?),
        _ => {}
    }
    let mut client = Client::new(&cli.agent)?
        .with_timeout(Duration::from_secs(cli.timeout))
        .with_strict_fields()
        .on_warning(|value| eprintln!("mistify: warning: {}", warning_text(value)));
    let tls = TlsFiles {
        ca: cli.ca_cert.clone(),
        cert: cli.client_cert.clone(),
        key: cli.client_key.clone(),
    };
    if !tls.is_empty() {
        client = client.with_tls(&tls)?;
    }
    if let Some(path) = &cli.token_file {
        client = client.with_token(&read_token(path)?)?;
    }
    match cli.command {
        Command::Guests(cmd) => guests(&client, &out, cmd).await,
        Command::Jobs(cmd) => jobs(&client, &out, cmd).await,
        Command::Metadata(cmd) => metadata(&client, &out, cmd).await,
        Command::Images(cmd) => images(&client, &out, cmd).await,
        Command::Snapshots(cmd) => snapshots(&client, &out, cmd).await,
        Command::Health => health(&client, &out).await,
        Command::Completions { .. } | Command::Man => Ok(()),
    }
}

async fn guests(client: &Client, out: &Out, cmd: GuestsCmd) -> Result<(), CliError> {
    let (action, args) = match cmd {
        GuestsCmd::List => {
            let guests = client.list_guests().await?;
            return out.show(&guests, |g| ids_of(g, |g| &g.id), |g| guests_table(g));
        }
        GuestsCmd::Get { id, refresh } => {
            let guest = if refresh {
                client.get_guest_refreshed(&id).await?
            } else {
                client.get_guest(&id).await?
            };
            return out.show(&guest, |g| vec![g.id.clone()], guest_details);
        }
        GuestsCmd::Metrics { id, kind } => return metrics(client, out, &id, kind).await,
        GuestsCmd::Create(args) => {
            let guest = Guest {
                id: args.id.unwrap_or_default(),
                kind: args.kind.unwrap_or_default(),
                image: args.image.unwrap_or_default(),
                nics: args.nic,
                disks: args.disk,
                memory: args.memory.unwrap_or_default(),
                cpu: args.cpu.unwrap_or_default(),
                metadata: args.metadata.into_iter().collect(),
                ..Guest::default()
            };
            let accepted = client.create_guest(&guest).await?;
            let id = if accepted.body.id.is_empty() {
                guest.id.clone()
            } else {
                accepted.body.id.clone()
            };
            after_accepted(client, out, accepted, args.wait, Subject::always(&id)).await?;
            return Ok(());
        }
        GuestsCmd::Delete(args) => return delete_guest(client, out, args).await,
        GuestsCmd::Shutdown(a) => (GuestAction::Shutdown, a),
        GuestsCmd::Reboot(a) => (GuestAction::Reboot, a),
        GuestsCmd::Restart(a) => (GuestAction::Restart, a),
        GuestsCmd::Poweroff(a) => (GuestAction::Poweroff, a),
        GuestsCmd::Start(a) => (GuestAction::Start, a),
        GuestsCmd::Suspend(a) => (GuestAction::Suspend, a),
        GuestsCmd::Resume(a) => (GuestAction::Resume, a),
    };
    let accepted = client.guest_action(&args.id, action).await?;
    after_accepted(
        client,
        out,
        accepted,
        args.wait,
        Subject::after_wait(&args.id),
    )
    .await?;
    Ok(())
}

/// `guests delete [--force]`: with `--force` and `--wait`, a job whose message names a
/// stage that failed (something may be left behind) is reported on stderr.
async fn delete_guest(client: &Client, out: &Out, args: DeleteArgs) -> Result<(), CliError> {
    let accepted = if args.force {
        client.delete_guest_forced(&args.id).await?
    } else {
        client.guest_action(&args.id, GuestAction::Delete).await?
    };
    let job = after_accepted(
        client,
        out,
        accepted,
        args.wait,
        Subject::after_wait(&args.id),
    )
    .await?;
    if let Some(job) = job.filter(|j| args.wait && j.status.is_done() && !j.message.is_empty()) {
        eprintln!(
            "mistify: warning: guest {} deleted; what may be left behind: {}",
            args.id, job.message
        );
    }
    Ok(())
}

/// The guest's metrics of one kind, or of all three (JSON: `{"cpu","disk","nic"}`).
async fn metrics(
    client: &Client,
    out: &Out,
    id: &str,
    kind: Option<MetricKind>,
) -> Result<(), CliError> {
    match kind {
        Some(MetricKind::Cpu) => {
            let cpu = client.cpu_metrics(id).await?;
            out.show(&cpu, |c| cpu_ids(c), |c| cpu_table(c))
        }
        Some(MetricKind::Disk) => {
            let disk = client.disk_metrics(id).await?;
            out.show(&disk, |d| d.keys().cloned().collect(), disk_table)
        }
        Some(MetricKind::Nic) => {
            let nic = client.nic_metrics(id).await?;
            out.show(&nic, |n| n.keys().cloned().collect(), nic_table)
        }
        None => {
            let all = AllMetrics {
                cpu: client.cpu_metrics(id).await?,
                disk: client.disk_metrics(id).await?,
                nic: client.nic_metrics(id).await?,
            };
            out.show(
                &all,
                |a| {
                    let mut ids = cpu_ids(&a.cpu);
                    ids.extend(a.disk.keys().cloned());
                    ids.extend(a.nic.keys().cloned());
                    ids
                },
                |a| [cpu_table(&a.cpu), disk_table(&a.disk), nic_table(&a.nic)].join("\n"),
            )
        }
    }
}

/// The three answers of `guests metrics ID`.
#[derive(Serialize)]
struct AllMetrics {
    cpu: Vec<GuestCpuMetrics>,
    disk: BTreeMap<String, GuestDiskMetrics>,
    nic: BTreeMap<String, GuestNicMetrics>,
}

/// The virtual CPUs' numbers, for `-q`.
fn cpu_ids(cpu: &[GuestCpuMetrics]) -> Vec<String> {
    (0..cpu.len()).map(|i| i.to_string()).collect()
}

/// `mistify health`: the agent's report; exit status 1 (after the report) when degraded.
async fn health(client: &Client, out: &Out) -> Result<(), CliError> {
    let report = client.healthz().await?;
    let health = Health::of(&report);
    out.show(&report, |_| Vec::new(), |_| health.render())?;
    if health.status == "ok" {
        Ok(())
    } else {
        Err(CliError::Degraded {
            unreachable: health.unreachable,
            serves_guests: health.serves_guests,
        })
    }
}

async fn jobs(client: &Client, out: &Out, cmd: JobsCmd) -> Result<(), CliError> {
    match cmd {
        JobsCmd::List { limit, guest } => {
            let jobs = match guest {
                Some(guest) => client.list_guest_jobs(&guest, limit).await?,
                None => client.list_jobs(limit).await?,
            };
            out.show(&jobs, |j| ids_of(j, |j| &j.id), |j| jobs_table(j))
        }
        JobsCmd::Get { job } => {
            let job = client.get_job(&job).await?;
            out.show_job(&job, &job.id)
        }
        JobsCmd::Cancel { job } => {
            let job = client.cancel_job(&job).await?;
            out.show_job(&job, &job.id)
        }
        JobsCmd::Wait { job, timeout } => {
            let limit = timeout.map(Duration::from_secs);
            let job = wait_for_job(client, out, &job, limit).await?;
            if !job.status.is_done() {
                out.show_job(&job, &job.id)?;
                return Err(CliError::StillRunning {
                    id: job.id,
                    status: job.status,
                    after: timeout.unwrap_or_default(),
                });
            }
            finish_job(out, &job, &job.id)
        }
    }
}

async fn metadata(client: &Client, out: &Out, cmd: MetadataCmd) -> Result<(), CliError> {
    let current = match cmd {
        MetadataCmd::Get { guest } => match &guest {
            Some(g) => client.get_guest_metadata(g).await?,
            None => client.get_metadata().await?,
        },
        MetadataCmd::Set { guest, entries } => {
            let patch: MetadataPatch = entries
                .into_iter()
                .map(|(k, v)| (k, Some(v).filter(|v| !v.is_empty())))
                .collect();
            match &guest {
                Some(g) => client.patch_guest_metadata(g, &patch).await?,
                None => client.patch_metadata(&patch).await?,
            }
        }
    };
    out.show(&current, |m| m.keys().cloned().collect(), metadata_table)
}

async fn images(client: &Client, out: &Out, cmd: ImagesCmd) -> Result<(), CliError> {
    match cmd {
        ImagesCmd::List { kind } => {
            let images = client.list_images(kind.as_deref()).await?;
            out.show(&images, |i| ids_of(i, |i| &i.id), |i| images_table(i))
        }
        ImagesCmd::Get { id } => {
            let image = client.get_image(&id).await?;
            out.show(
                &image,
                |i| vec![i.id.clone()],
                |i| images_table(std::slice::from_ref(i)),
            )
        }
        ImagesCmd::Fetch {
            id,
            source,
            kind,
            wait,
        } => {
            let request = ImageRequest {
                id,
                kind: kind.unwrap_or_default(),
                source: source.unwrap_or_default(),
                ..ImageRequest::default()
            };
            let accepted = client.fetch_image(&request).await?;
            after_accepted(client, out, accepted, wait, Subject::always(&request.id)).await?;
            Ok(())
        }
        ImagesCmd::Delete { id, wait } => {
            let accepted = client.delete_image(&id).await?;
            after_accepted(client, out, accepted, wait, Subject::after_wait(&id)).await?;
            Ok(())
        }
    }
}

async fn snapshots(client: &Client, out: &Out, cmd: SnapshotsCmd) -> Result<(), CliError> {
    let (accepted, wait, guest) = match cmd {
        SnapshotsCmd::List { guest, disk } => {
            let snapshots = client.list_snapshots(&guest, disk.as_deref()).await?;
            return out.show(&snapshots, |s| ids_of(s, |s| &s.id), |s| snapshots_table(s));
        }
        SnapshotsCmd::Create {
            guest,
            name,
            disk,
            wait,
        } => {
            let request = SnapshotRequest {
                dest: name.unwrap_or_default(),
                ..SnapshotRequest::default()
            };
            let accepted = client
                .create_snapshot(&guest, disk.as_deref(), &request)
                .await?;
            (accepted, wait, guest)
        }
        SnapshotsCmd::Delete {
            guest,
            name,
            disk,
            wait,
        } => {
            let accepted = client
                .delete_snapshot(&guest, disk.as_deref(), &name)
                .await?;
            (accepted, wait, guest)
        }
        SnapshotsCmd::Rollback {
            guest,
            name,
            disk,
            destroy_more_recent,
            wait,
        } => {
            let request = SnapshotRequest {
                destroy_more_recent,
                ..SnapshotRequest::default()
            };
            let accepted = client
                .rollback_snapshot(&guest, disk.as_deref(), &name, &request)
                .await?;
            (accepted, wait, guest)
        }
        SnapshotsCmd::Download {
            guest,
            name,
            disk,
            output,
        } => {
            return download(
                client,
                out,
                &guest,
                disk.as_deref(),
                &name,
                output.as_deref(),
            )
            .await
        }
    };
    after_accepted(client, out, accepted, wait, Subject::after_wait(&guest)).await?;
    Ok(())
}

/// Streams a snapshot to `output` (through a `.part` file renamed at the end, with a
/// progress bar on stderr) or to stdout (no progress output at all).
async fn download(
    client: &Client,
    out: &Out,
    guest: &str,
    disk: Option<&str>,
    name: &str,
    output: Option<&Path>,
) -> Result<(), CliError> {
    let stream = client.download_snapshot(guest, disk, name).await?;
    let Some(path) = output else {
        let mut stream = stream;
        let mut stdout = std::io::stdout().lock();
        while let Some(chunk) = stream.next().await {
            stdout
                .write_all(&chunk?)
                .map_err(io_error("writing to stdout"))?;
        }
        return stdout.flush().map_err(io_error("writing to stdout"));
    };

    let bar = if out.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let total = match stream.content_length {
            Some(length) => Some(length),
            // The agent streams without a length: the snapshot's size in the listing.
            None => client
                .get_snapshot(guest, disk, name)
                .await
                .ok()
                .and_then(|s| snapshot_bytes(&s)),
        };
        download_bar(total)
    };
    let mut part_name = path.as_os_str().to_owned();
    part_name.push(".part");
    let part = PathBuf::from(part_name);
    let result = download_to(stream, &part, &bar).await;
    bar.finish_and_clear();
    match result {
        Ok(()) => std::fs::rename(&part, path)
            .map_err(io_error(format!("renaming to {}", path.display()))),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

/// The size in bytes of the snapshots a download streams, from their sizes in MB in the
/// listing; `None` when the listing gives none.
pub fn snapshot_bytes(snapshots: &[Snapshot]) -> Option<u64> {
    let mb = snapshots
        .iter()
        .fold(0u64, |sum, s| sum.saturating_add(s.size));
    (mb > 0).then(|| mb.saturating_mul(1024 * 1024))
}

/// The progress bar of a download: bytes done of `total` and the rate when the size is
/// known, else bytes and rate. Drawn at once (a short download shows its size too).
fn download_bar(total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr()),
            "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()),
            "{spinner} {bytes} {binary_bytes_per_sec}",
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.tick();
    bar
}

async fn download_to(
    mut stream: DownloadStream,
    part: &Path,
    bar: &ProgressBar,
) -> Result<(), CliError> {
    let mut file =
        std::fs::File::create(part).map_err(io_error(format!("creating {}", part.display())))?;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        file.write_all(&chunk)
            .map_err(io_error(format!("writing {}", part.display())))?;
        bar.inc(chunk.len() as u64);
        // The listing's size is rounded: never show more done than the whole.
        if bar.length().is_some_and(|len| bar.position() > len) {
            bar.set_length(bar.position());
        }
    }
    file.sync_all()
        .map_err(io_error(format!("writing {}", part.display())))
}

// ----- completions and the manual page -------------------------------------------------

/// The completion script of `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "mistify", &mut script);
    script
}

/// The manual page `mistify(1)` in roff: clap's page of the top level (flags and
/// commands), then every command with its usage and flags, exit status, environment.
pub fn man_page() -> Result<Vec<u8>, CliError> {
    use clap_mangen::roff::{bold, italic, roman, Roff};
    let mut command = <Cli as clap::CommandFactory>::command();
    command.build();
    let mut page = Vec::new();
    let encode = |e: std::io::Error| CliError::Io {
        what: "rendering the manual page".into(),
        source: e,
    };
    // clap's sections, less its list of subcommands (it names a page per subcommand;
    // this one page has them all, under COMMANDS).
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(&mut page).map_err(encode)?;
    man.render_name_section(&mut page).map_err(encode)?;
    man.render_synopsis_section(&mut page).map_err(encode)?;
    man.render_description_section(&mut page).map_err(encode)?;
    man.render_options_section(&mut page).map_err(encode)?;

    let mut roff = Roff::default();
    roff.control("SH", ["COMMANDS"]);
    let mut leaves = Vec::new();
    collect_leaves(&command, &mut leaves);
    for sub in leaves {
        let usage = sub
            .clone()
            .render_usage()
            .to_string()
            .trim_start_matches("Usage:")
            .trim()
            .to_string();
        roff.control("TP", []);
        roff.text([bold(usage)]);
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            roff.text([roman(about.to_string())]);
        }
        for arg in sub.get_arguments().filter(|a| {
            !a.is_hide_set()
                && !a.is_global_set()
                && !["help", "version"].contains(&a.get_id().as_str())
        }) {
            let value = arg
                .get_value_names()
                .map(|names| names.join(" "))
                .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
            let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
            let name = match (arg.get_long(), arg.get_short()) {
                (Some(long), Some(short)) => format!("-{short}, --{long}"),
                (Some(long), None) => format!("--{long}"),
                (None, Some(short)) => format!("-{short}"),
                (None, None) => String::new(),
            };
            let name = match (name.is_empty(), takes_value) {
                (true, _) => value,
                (false, true) => format!("{name} {value}"),
                (false, false) => name,
            };
            roff.control("RS", []);
            roff.control("TP", []);
            roff.text([italic(name)]);
            let mut help = arg
                .get_long_help()
                .or(arg.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default();
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_string())
                .collect();
            if !values.is_empty() {
                let _ = write!(help, " (one of: {})", values.join(", "));
            }
            if !help.is_empty() {
                roff.text([roman(help)]);
            }
            roff.control("RE", []);
        }
    }
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(
        "0 on success; 1 for an agent error, a transport error or timeout, a failed job, \
         a degraded agent (health); 2 for bad input (flag syntax, key=value syntax, \
         numbers, an id the client refuses).",
    )]);
    roff.control("SH", ["ENVIRONMENT"]);
    roff.text([roman(
        "MISTIFY_AGENT (--agent), MISTIFY_TOKEN_FILE (--token-file), MISTIFY_CA_CERT \
         (--ca-cert), MISTIFY_CLIENT_CERT (--client-cert), MISTIFY_CLIENT_KEY \
         (--client-key).",
    )]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "mistify-supervisor(1); /usr/share/doc/mistify/cli.md, agent.md and operations.md.",
    )]);
    roff.to_writer(&mut page).map_err(encode)?;
    man.render_version_section(&mut page).map_err(encode)?;
    Ok(page)
}

/// The commands of `command` that take no subcommand, depth first (no `help`).
fn collect_leaves(command: &clap::Command, leaves: &mut Vec<clap::Command>) {
    for sub in command.get_subcommands() {
        if sub.get_name() == "help" || sub.is_hide_set() {
            continue;
        }
        if sub.has_subcommands() {
            collect_leaves(sub, leaves);
        } else {
            leaves.push(sub.clone());
        }
    }
}

/// Parses the process's arguments, runs the command and returns the exit status;
/// errors are printed as `mistify: <message>` on stderr.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mistify: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(CliError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            // The reader went away (`mistify … | head`): not worth a message.
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("mistify: {}", message_of(&e));
            std::process::ExitCode::from(e.exit_code())
        }
    }
}

/// The one-line message of an error, with the causes its own text leaves out (e.g. the
/// "connection refused" under a transport error).
pub fn message_of(e: &CliError) -> String {
    let mut text = e.to_string();
    // Each error's text already includes its direct cause; start one level deeper.
    let mut source = std::error::Error::source(e).and_then(std::error::Error::source);
    if let CliError::Client(inner) = e {
        source = std::error::Error::source(inner).and_then(std::error::Error::source);
    }
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            let _ = write!(text, ": {part}");
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values() {
        assert_eq!(parse_key_value("a=b"), Ok(("a".into(), "b".into())));
        assert_eq!(parse_key_value("a="), Ok(("a".into(), String::new())));
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_key_value("nokey").unwrap_err().contains("KEY=VALUE"));
        assert!(parse_key_value("=v").is_err());
    }

    #[test]
    fn nic_and_disk_specs() {
        let nic = parse_nic("network=br0,model=virtio,mac=02:00:00:00:00:01,vlan=5").unwrap();
        assert_eq!(nic.network, "br0");
        assert_eq!(nic.model, "virtio");
        assert_eq!(nic.mac, "02:00:00:00:00:01");
        assert_eq!(nic.vlans, Some(vec![5]));
        assert!(parse_nic("network=br0,speed=10")
            .unwrap_err()
            .contains("speed"));
        assert!(parse_nic("vlan=x").unwrap_err().contains("number"));
        assert!(parse_nic("").is_err());

        let disk = parse_disk("image=img,size=1024,bus=virtio").unwrap();
        assert_eq!((disk.image.as_str(), disk.size), ("img", 1024));
        assert!(parse_disk("size=big").unwrap_err().contains("number"));
        assert!(parse_disk("bus=usb").unwrap_err().contains("virtio"));
    }

    #[test]
    fn tables_align() {
        let t = table(
            &["ID", "STATE"],
            &[
                vec!["a".into(), "running".into()],
                vec!["long-id".into(), "x\ny".into()],
            ],
        );
        assert_eq!(t, "ID       STATE\na        running\nlong-id  x y\n");
    }

    #[test]
    fn flags_parse() {
        Cli::command_for_tests().debug_assert();
        let cli = Cli::try_parse_from([
            "mistify",
            "--timeout",
            "5",
            "jobs",
            "wait",
            "j",
            "--timeout",
            "9",
        ])
        .unwrap();
        assert_eq!(cli.timeout, 5);
        assert!(matches!(
            cli.command,
            Command::Jobs(JobsCmd::Wait {
                timeout: Some(9),
                ..
            })
        ));
        assert!(Cli::try_parse_from(["mistify", "guests", "create", "--memory", "abc"]).is_err());
        assert!(Cli::try_parse_from(["mistify", "metadata", "set", "nokey"]).is_err());
        let cli = Cli::try_parse_from(["mistify", "guests", "list", "--json"]).unwrap();
        assert!(cli.json);
    }

    #[test]
    fn quiet_flags() {
        let cli = Cli::try_parse_from(["mistify", "-q", "guests", "list"]).unwrap();
        assert!(cli.quiet);
        let cli = Cli::try_parse_from(["mistify", "guests", "create", "--quiet"]).unwrap();
        assert!(cli.quiet);
        assert!(Cli::try_parse_from(["mistify", "-q", "--json", "health"]).is_err());
        let cli =
            Cli::try_parse_from(["mistify", "guests", "delete", "g", "--force", "--wait"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Guests(GuestsCmd::Delete(DeleteArgs {
                force: true,
                wait: true,
                ..
            }))
        ));
    }

    #[test]
    fn byte_counts() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(20 * 1024 * 1024), "20.0M");
        assert_eq!(bytes(i64::MAX), "8.0E");
        assert_eq!(bytes(-2048), "-2.0K");
    }

    #[test]
    fn download_totals_from_the_listing() {
        let snap = |size| Snapshot {
            id: "s".into(),
            size,
        };
        assert_eq!(snapshot_bytes(&[]), None);
        assert_eq!(snapshot_bytes(&[snap(0)]), None);
        assert_eq!(snapshot_bytes(&[snap(2), snap(3)]), Some(5 * 1024 * 1024));
        assert_eq!(snapshot_bytes(&[snap(u64::MAX), snap(1)]), Some(u64::MAX));
    }

    #[test]
    fn health_reports() {
        let report = serde_json::json!({
            "status": "degraded", "version": "1.2.3", "draining": true,
            "serves_guests": false, "unreachable": ["zfs", "libvirt"], "guests": 1,
            "services": {
                "libvirt": {"url": "http://127.0.0.1:1/", "reachable": false, "error": "refused"},
                "zfs": {"url": "http://127.0.0.1:2/", "reachable": true, "answered_in_ms": 0.5}
            }
        });
        let health = Health::of(&report);
        assert_eq!(health.unreachable, ["libvirt", "zfs"]);
        assert_eq!(
            health.render(),
            "status: degraded (agent 1.2.3, 1 guest, draining, not answering: libvirt, zfs, \
             guest actions cannot run)\n\
             SERVICE  URL                  REACHABLE  ANSWERED-IN/ERROR\n\
             libvirt  http://127.0.0.1:1/  no         refused\n\
             zfs      http://127.0.0.1:2/  yes        0.5ms\n"
        );
        // A bare answer (not the agent's report) is a status of its own.
        let bare = Health::of(&serde_json::json!("ok"));
        assert_eq!(bare.status, "ok");
        assert_eq!(bare.render(), "status: ok (0 guests)\n");
        assert_eq!(Health::of(&serde_json::json!({})).status, "ok");
    }

    impl Cli {
        fn command_for_tests() -> clap::Command {
            <Cli as clap::CommandFactory>::command()
        }
    }
}
