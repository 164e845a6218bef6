//! The `mistify` operator CLI: flags ([`Cli`]), and [`run`], which carries a parsed
//! command out over a [`Client`].
//!
//! Output goes to stdout (plain aligned tables, or with `--json` the JSON of the answer);
//! progress (spinners while a job runs, the byte counter of a download) goes to stderr
//! and only when stderr is a terminal. Errors are returned as [`CliError`], whose
//! [`CliError::exit_code`] is 1 for agent and transport errors and 2 for bad input.

use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use tokio::time::Instant;

use mistify_client::{Accepted, Client, ClientError, DownloadStream, MetadataPatch, TlsFiles};
use mistify_types::{
    Disk, Guest, GuestAction, Image, ImageRequest, Job, JobStatus, Metadata, Nic, Snapshot,
    SnapshotRequest,
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
}

#[derive(Debug, Subcommand)]
pub enum GuestsCmd {
    /// List every guest.
    List,
    /// Show one guest.
    Get {
        /// Guest id.
        id: String,
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
    Delete(ActionArgs),
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
    /// Writing the output failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
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

/// Where results go: stdout, as a table or as JSON.
struct Out {
    json: bool,
}

impl Out {
    fn write(&self, text: &str) -> Result<(), CliError> {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(io_error("writing to stdout"))
    }

    /// `value` as JSON with `--json`, else `render(value)`.
    fn show<T: Serialize + ?Sized>(
        &self,
        value: &T,
        render: impl FnOnce(&T) -> String,
    ) -> Result<(), CliError> {
        if self.json {
            let mut text = serde_json::to_string_pretty(value).map_err(|e| CliError::Io {
                what: "encoding JSON".into(),
                source: e.into(),
            })?;
            text.push('\n');
            self.write(&text)
        } else {
            self.write(&render(value))
        }
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
async fn wait_for_job(client: &Client, id: &str, limit: Option<Duration>) -> Result<Job, CliError> {
    let started = Instant::now();
    let bar = spinner(format!("job {id}: waiting"));
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

/// Prints `job`; an `Error` job becomes [`CliError::JobFailed`].
fn finish_job(out: &Out, job: &Job) -> Result<(), CliError> {
    out.show(job, |j| jobs_table(std::slice::from_ref(j)))?;
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

/// After an asynchronous request: with `wait`, follows the job to its end and prints
/// it; otherwise prints the job as it stands now. Without a job id (a Go agent's
/// snapshot routes) prints the answer's body.
async fn after_accepted<T: Serialize>(
    client: &Client,
    out: &Out,
    accepted: Accepted<T>,
    wait: bool,
) -> Result<(), CliError> {
    let Some(job_id) = accepted.job_id else {
        return out.show(&accepted.body, |_| {
            format!("accepted (HTTP {}), no job id\n", accepted.status)
        });
    };
    let job = if wait {
        wait_for_job(client, &job_id, None).await?
    } else {
        client.get_job(&job_id).await?
    };
    if wait {
        finish_job(out, &job)
    } else {
        out.show(&job, |j| jobs_table(std::slice::from_ref(j)))
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
    let mut client = Client::new(&cli.agent)?.with_timeout(Duration::from_secs(cli.timeout));
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
    let out = Out { json: cli.json };
    match cli.command {
        Command::Guests(cmd) => guests(&client, &out, cmd).await,
        Command::Jobs(cmd) => jobs(&client, &out, cmd).await,
        Command::Metadata(cmd) => metadata(&client, &out, cmd).await,
        Command::Images(cmd) => images(&client, &out, cmd).await,
        Command::Snapshots(cmd) => snapshots(&client, &out, cmd).await,
    }
}

async fn guests(client: &Client, out: &Out, cmd: GuestsCmd) -> Result<(), CliError> {
    let (action, args) = match cmd {
        GuestsCmd::List => {
            let guests = client.list_guests().await?;
            return out.show(&guests, |g| guests_table(g));
        }
        GuestsCmd::Get { id } => {
            let guest = client.get_guest(&id).await?;
            return out.show(&guest, guest_details);
        }
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
            return after_accepted(client, out, accepted, args.wait).await;
        }
        GuestsCmd::Shutdown(a) => (GuestAction::Shutdown, a),
        GuestsCmd::Reboot(a) => (GuestAction::Reboot, a),
        GuestsCmd::Restart(a) => (GuestAction::Restart, a),
        GuestsCmd::Poweroff(a) => (GuestAction::Poweroff, a),
        GuestsCmd::Start(a) => (GuestAction::Start, a),
        GuestsCmd::Suspend(a) => (GuestAction::Suspend, a),
        GuestsCmd::Resume(a) => (GuestAction::Resume, a),
        GuestsCmd::Delete(a) => (GuestAction::Delete, a),
    };
    let accepted = client.guest_action(&args.id, action).await?;
    after_accepted(client, out, accepted, args.wait).await
}

async fn jobs(client: &Client, out: &Out, cmd: JobsCmd) -> Result<(), CliError> {
    match cmd {
        JobsCmd::List { limit, guest } => {
            let jobs = match guest {
                Some(guest) => client.list_guest_jobs(&guest, limit).await?,
                None => client.list_jobs(limit).await?,
            };
            out.show(&jobs, |j| jobs_table(j))
        }
        JobsCmd::Get { job } => {
            let job = client.get_job(&job).await?;
            out.show(&job, |j| jobs_table(std::slice::from_ref(j)))
        }
        JobsCmd::Wait { job, timeout } => {
            let limit = timeout.map(Duration::from_secs);
            let job = wait_for_job(client, &job, limit).await?;
            if !job.status.is_done() {
                out.show(&job, |j| jobs_table(std::slice::from_ref(j)))?;
                return Err(CliError::StillRunning {
                    id: job.id,
                    status: job.status,
                    after: timeout.unwrap_or_default(),
                });
            }
            finish_job(out, &job)
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
    out.show(&current, metadata_table)
}

async fn images(client: &Client, out: &Out, cmd: ImagesCmd) -> Result<(), CliError> {
    match cmd {
        ImagesCmd::List { kind } => {
            let images = client.list_images(kind.as_deref()).await?;
            out.show(&images, |i| images_table(i))
        }
        ImagesCmd::Get { id } => {
            let image = client.get_image(&id).await?;
            out.show(&image, |i| images_table(std::slice::from_ref(i)))
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
            after_accepted(client, out, accepted, wait).await
        }
        ImagesCmd::Delete { id, wait } => {
            let accepted = client.delete_image(&id).await?;
            after_accepted(client, out, accepted, wait).await
        }
    }
}

async fn snapshots(client: &Client, out: &Out, cmd: SnapshotsCmd) -> Result<(), CliError> {
    match cmd {
        SnapshotsCmd::List { guest, disk } => {
            let snapshots = client.list_snapshots(&guest, disk.as_deref()).await?;
            out.show(&snapshots, |s| snapshots_table(s))
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
            after_accepted(client, out, accepted, wait).await
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
            after_accepted(client, out, accepted, wait).await
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
            after_accepted(client, out, accepted, wait).await
        }
        SnapshotsCmd::Download {
            guest,
            name,
            disk,
            output,
        } => download(client, &guest, disk.as_deref(), &name, output.as_deref()).await,
    }
}

/// Streams a snapshot to `output` (through a `.part` file renamed at the end, with a
/// byte progress bar on stderr) or to stdout (no progress output at all).
async fn download(
    client: &Client,
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

    let mut part_name = path.as_os_str().to_owned();
    part_name.push(".part");
    let part = PathBuf::from(part_name);
    let result = download_to(stream, &part).await;
    match result {
        Ok(()) => std::fs::rename(&part, path)
            .map_err(io_error(format!("renaming to {}", path.display()))),
        Err(e) => {
            let _ = std::fs::remove_file(&part);
            Err(e)
        }
    }
}

async fn download_to(mut stream: DownloadStream, part: &Path) -> Result<(), CliError> {
    let bar = match stream.content_length {
        Some(len) => {
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            bar
        }
        None => {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template("{spinner} {bytes} {binary_bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            bar
        }
    };
    let mut file =
        std::fs::File::create(part).map_err(io_error(format!("creating {}", part.display())))?;
    let result = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            file.write_all(&chunk)
                .map_err(io_error(format!("writing {}", part.display())))?;
            bar.inc(chunk.len() as u64);
        }
        file.sync_all()
            .map_err(io_error(format!("writing {}", part.display())))
    }
    .await;
    bar.finish_and_clear();
    result
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

    impl Cli {
        fn command_for_tests() -> clap::Command {
            <Cli as clap::CommandFactory>::command()
        }
    }
}
