//! `lochness`: the operator CLI of the cluster control plane (`docs/cli.md`).
//!
//! [`Cli`] holds the flags; [`run`] carries a parsed command out over a
//! [`lochness_client::Client`]; [`main`] is the whole program, including the `guest` and
//! `hv` names (symlinks to `lochness` behave as `lochness guest …` and `lochness hv …`,
//! so scripts written for the original CLIs keep working).
//!
//! Results go to stdout: one JSON object per line with `-j`, ids (or the original `hv`
//! trees) in plain mode, aligned tables for people. Progress (the spinner of `--wait`)
//! goes to stderr, and only when it is a terminal. Errors are printed as `error: …` on
//! stderr; the exit status is 0 on success, 1 for a daemon, transport or job error, 2 for
//! a usage error (nothing was sent).

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use clap::{Parser, Subcommand};
use lochness_client::{Client, Daemon, Endpoints};

pub mod entity;
pub mod guest;
pub mod hv;
pub mod input;
pub mod man;
pub mod output;

use output::{Format, View};

// ----- flags ---------------------------------------------------------------------------

/// Operator CLI of the lochness cluster: guests, hypervisors, flavors, networks, subnets,
/// firewall groups and VLANs, over the REST daemons cguestd, chypervisord and cnetworkd.
#[derive(Debug, Parser)]
#[command(
    name = "lochness",
    version,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    /// Base URL of cguestd (guests, jobs, flavors).
    #[arg(long, global = true, help_heading = "Global options", env = "LOCHNESS_GUESTS", value_name = "URL",
          default_value = Daemon::Guests.default_url())]
    pub guests: String,

    /// Base URL of chypervisord (hypervisors).
    #[arg(long, global = true, help_heading = "Global options", env = "LOCHNESS_HYPERVISORS", value_name = "URL",
          default_value = Daemon::Hypervisors.default_url())]
    pub hypervisors: String,

    /// Base URL of cnetworkd (networks, subnets, firewall groups, VLANs).
    #[arg(long, global = true, help_heading = "Global options", env = "LOCHNESS_NETWORKS", value_name = "URL",
          default_value = Daemon::Networks.default_url())]
    pub networks: String,

    /// Base URL of the command's own daemon (cguestd for guest and flavor, chypervisord
    /// for hv, cnetworkd for the others); wins over --guests/--hypervisors/--networks.
    #[arg(
        short,
        long,
        global = true,
        help_heading = "Global options",
        value_name = "URL"
    )]
    pub server: Option<String>,

    /// Print one compact JSON object per line, keys sorted (same as `-o json`).
    #[arg(
        short,
        long,
        global = true,
        help_heading = "Global options",
        conflicts_with = "output"
    )]
    pub json: bool,

    /// Output format; default: table when stdout is a terminal, else plain.
    #[arg(
        short,
        long,
        global = true,
        help_heading = "Global options",
        value_enum,
        value_name = "FORMAT"
    )]
    pub output: Option<Format>,

    /// Deadline of each request, in seconds.
    #[arg(long, global = true, help_heading = "Global options", value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub timeout: u64,

    /// With --wait: give up (exit 1) when a job has not ended after this many seconds;
    /// default: wait as long as it takes.
    #[arg(long, global = true, help_heading = "Global options", value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub wait_timeout: Option<u64>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Guests (cguestd): list, show, create, modify, delete, act on them, their jobs.
    #[command(subcommand)]
    Guest(guest::GuestCmd),
    /// Hypervisors (chypervisord): list, create, modify, delete; their guests, config,
    /// subnet links and resources.
    #[command(subcommand)]
    Hv(hv::HvCmd),
    /// Flavors (cguestd): the resources and image of a guest.
    #[command(subcommand)]
    Flavor(entity::FlavorCmd),
    /// Networks (cnetworkd) and their subnets.
    #[command(subcommand)]
    Network(entity::NetworkCmd),
    /// Subnets (cnetworkd): address ranges of a network.
    #[command(subcommand)]
    Subnet(entity::SubnetCmd),
    /// Firewall groups (cnetworkd): ingress rules of guests.
    #[command(subcommand)]
    Fwgroup(entity::FwgroupCmd),
    /// VLANs (cnetworkd) and the groups they are in.
    #[command(subcommand)]
    Vlan(entity::VlanCmd),
    /// VLAN groups (cnetworkd) and their VLANs.
    #[command(subcommand)]
    Vlangroup(entity::VlangroupCmd),
    /// A shell completion script on stdout (e.g. `lochness completions bash >
    /// /etc/bash_completion.d/lochness`).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The manual page (roff) on stdout, e.g. `lochness man | man -l -`.
    Man,
}

impl Command {
    /// The daemon `-s/--server` names for this command.
    pub fn daemon(&self) -> Option<Daemon> {
        match self {
            Command::Guest(_) | Command::Flavor(_) => Some(Daemon::Guests),
            Command::Hv(_) => Some(Daemon::Hypervisors),
            Command::Network(_)
            | Command::Subnet(_)
            | Command::Fwgroup(_)
            | Command::Vlan(_)
            | Command::Vlangroup(_) => Some(Daemon::Networks),
            Command::Completions { .. } | Command::Man => None,
        }
    }
}

// ----- errors --------------------------------------------------------------------------

/// A job that ended in `error` while the command waited for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailedJob {
    pub id: String,
    pub action: String,
    pub guest: String,
    pub reason: String,
}

impl std::fmt::Display for FailedJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let reason = if self.reason.is_empty() {
            "(no reason given)"
        } else {
            &self.reason
        };
        write!(
            f,
            "job {} ({} of guest {}) failed: {reason}",
            self.id, self.action, self.guest
        )
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad arguments; nothing was sent.
    #[error("{0}")]
    Usage(String),
    /// A daemon refused the request, or it could not be sent or read.
    #[error("{0}")]
    Client(#[from] lochness_client::Error),
    /// Jobs waited for ended in `error` (one line each).
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\nerror: "))]
    JobsFailed(Vec<FailedJob>),
    /// Reading stdin or writing stdout failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl CliError {
    /// 2 for usage errors (nothing was sent), 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Client(lochness_client::Error::InvalidInput(_)) => 2,
            _ => 1,
        }
    }
}

/// The one-line message of an error, with the causes its own text leaves out (the
/// "connection refused" under a transport error).
pub fn message_of(e: &CliError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    if let CliError::Client(inner) = e {
        source = std::error::Error::source(inner);
    }
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

// ----- running -------------------------------------------------------------------------

/// What every command needs: the client, the output format, how long to wait for jobs.
pub struct Ctx {
    pub client: Client,
    pub format: Format,
    pub wait_timeout: Option<Duration>,
}

impl Ctx {
    /// Writes `text` to stdout.
    pub fn print(&self, text: &str) -> Result<(), CliError> {
        let mut stdout = std::io::stdout().lock();
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush())
            .map_err(|source| CliError::Io {
                what: "writing to stdout".into(),
                source,
            })
    }

    /// Entities as a list: JSON lines, keys (plain), or a table.
    pub fn items<R: View>(&self, items: &[R]) -> Result<(), CliError> {
        let text = match self.format {
            Format::Json => json_lines(items)?,
            Format::Plain => items.iter().map(|i| format!("{}\n", i.key())).collect(),
            Format::Table => output::list_table(items),
        };
        self.print(&text)
    }

    /// Entities in detail (`get`): JSON lines, or each one's fields.
    pub fn details<R: View>(&self, items: &[R]) -> Result<(), CliError> {
        let text = match self.format {
            Format::Json => json_lines(items)?,
            Format::Plain | Format::Table => items
                .iter()
                .map(View::details)
                .collect::<Vec<_>>()
                .join("\n"),
        };
        self.print(&text)
    }
}

/// Each item as a JSON line.
pub fn json_lines<T: serde::Serialize>(items: &[T]) -> Result<String, CliError> {
    items.iter().map(output::json_line).collect()
}

/// The endpoints the flags name, `-s` replacing the command's own daemon.
pub fn endpoints(cli: &Cli) -> Endpoints {
    let mut endpoints = Endpoints {
        guests: cli.guests.clone(),
        hypervisors: cli.hypervisors.clone(),
        networks: cli.networks.clone(),
    };
    if let (Some(server), Some(daemon)) = (&cli.server, cli.command.daemon()) {
        let slot = match daemon {
            Daemon::Guests => &mut endpoints.guests,
            Daemon::Hypervisors => &mut endpoints.hypervisors,
            Daemon::Networks => &mut endpoints.networks,
        };
        *slot = server.clone();
    }
    endpoints
}

/// The output format the flags ask for; without one, a table on a terminal and plain
/// otherwise.
pub fn format(cli: &Cli, stdout_is_terminal: bool) -> Format {
    match (cli.json, cli.output) {
        (true, _) => Format::Json,
        (false, Some(format)) => format,
        (false, None) if stdout_is_terminal => Format::Table,
        (false, None) => Format::Plain,
    }
}

/// Carries out a parsed command line.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let ctx = Ctx {
        client: Client::new(&endpoints(&cli))?.with_timeout(Duration::from_secs(cli.timeout)),
        format: format(&cli, std::io::stdout().is_terminal()),
        wait_timeout: cli.wait_timeout.map(Duration::from_secs),
    };
    match cli.command {
        Command::Guest(cmd) => guest::run(&ctx, cmd).await,
        Command::Hv(cmd) => hv::run(&ctx, cmd).await,
        Command::Flavor(cmd) => entity::flavor(&ctx, cmd).await,
        Command::Network(cmd) => entity::network(&ctx, cmd).await,
        Command::Subnet(cmd) => entity::subnet(&ctx, cmd).await,
        Command::Fwgroup(cmd) => entity::fwgroup(&ctx, cmd).await,
        Command::Vlan(cmd) => entity::vlan(&ctx, cmd).await,
        Command::Vlangroup(cmd) => entity::vlangroup(&ctx, cmd).await,
        Command::Completions { shell } => ctx.print(&man::completions(shell)),
        Command::Man => {
            let page = man::page().map_err(|source| CliError::Io {
                what: "rendering the manual page".into(),
                source,
            })?;
            ctx.print(&page)
        }
    }
}

/// The arguments as `lochness` reads them: invoked as `guest` or `hv` (a symlink), the
/// name becomes the first subcommand.
pub fn dispatch_argv0(mut args: Vec<OsString>) -> Vec<OsString> {
    let name = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .map(str::to_string);
    if let Some(name @ ("guest" | "hv")) = name.as_deref() {
        args[0] = OsString::from("lochness");
        args.insert(1, OsString::from(name));
    }
    args
}

/// The program: parses the process's arguments (usage errors exit 2), runs the command,
/// prints an error as `error: …` on stderr and returns the exit status.
pub fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse_from(dispatch_argv0(std::env::args_os().collect())) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(CliError::Io { source, .. }) if source.kind() == std::io::ErrorKind::BrokenPipe => {
            // The reader went away (`lochness guest list | head`): not worth a message.
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("error: {}", message_of(&e));
            std::process::ExitCode::from(e.exit_code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(dispatch_argv0(args.iter().map(OsString::from).collect()))
    }

    #[test]
    fn the_command_is_consistent() {
        <Cli as clap::CommandFactory>::command().debug_assert();
    }

    #[test]
    fn guest_and_hv_names_dispatch() {
        let args = dispatch_argv0(vec![
            "/usr/local/bin/hv".into(),
            "config".into(),
            "list".into(),
        ]);
        assert_eq!(args, vec!["lochness", "hv", "config", "list"]);
        let args = dispatch_argv0(vec!["lochness".into(), "hv".into()]);
        assert_eq!(args, vec!["lochness", "hv"]);
        let cli = parse(&["guest", "-j", "-s", "http://g:1", "list"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Guest(guest::GuestCmd::List(_))
        ));
        assert!(cli.json);
        assert_eq!(endpoints(&cli).guests, "http://g:1");
        assert_eq!(
            endpoints(&cli).hypervisors,
            Daemon::Hypervisors.default_url()
        );
        let cli = parse(&["hv", "subnets", "delete", "a", "b", "--server", "h:2"]).unwrap();
        assert_eq!(endpoints(&cli).hypervisors, "h:2");
        assert_eq!(endpoints(&cli).guests, Daemon::Guests.default_url());
    }

    #[test]
    fn server_flags() {
        let cli = parse(&[
            "lochness",
            "--networks",
            "http://n:3",
            "vlan",
            "list",
            "--guests",
            "http://g:1",
        ])
        .unwrap();
        let e = endpoints(&cli);
        assert_eq!(
            (e.guests.as_str(), e.networks.as_str()),
            ("http://g:1", "http://n:3")
        );
        let cli = parse(&["lochness", "-s", "http://x:9", "fwgroup", "list"]).unwrap();
        assert_eq!(endpoints(&cli).networks, "http://x:9");
    }

    #[test]
    fn output_formats() {
        let cli = parse(&["lochness", "guest", "list"]).unwrap();
        assert_eq!(format(&cli, true), Format::Table);
        assert_eq!(format(&cli, false), Format::Plain);
        let cli = parse(&["lochness", "guest", "list", "-o", "table"]).unwrap();
        assert_eq!(format(&cli, false), Format::Table);
        let cli = parse(&["lochness", "guest", "list", "--json"]).unwrap();
        assert_eq!(format(&cli, true), Format::Json);
        assert!(parse(&["lochness", "guest", "list", "-j", "-o", "table"]).is_err());
        assert!(parse(&["lochness", "guest", "list", "-o", "yaml"]).is_err());
    }

    #[test]
    fn usage_errors_exit_2() {
        let e = parse(&["lochness", "guest", "reboot", "--wait-timeout", "0", "x"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["lochness", "guest", "resume", "x"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        let e = parse(&["lochness", "guest", "create", "--metadata", "novalue"]).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert_eq!(CliError::Usage("x".into()).exit_code(), 2);
        assert_eq!(
            CliError::Client(lochness_client::Error::InvalidInput("x".into())).exit_code(),
            2
        );
        let failed = CliError::JobsFailed(vec![
            FailedJob {
                id: "j1".into(),
                action: "delete".into(),
                guest: "g1".into(),
                reason: "agent said no".into(),
            },
            FailedJob {
                id: "j2".into(),
                action: "start".into(),
                guest: "g2".into(),
                reason: String::new(),
            },
        ]);
        assert_eq!(failed.exit_code(), 1);
        assert_eq!(
            format!("error: {}", message_of(&failed)),
            "error: job j1 (delete of guest g1) failed: agent said no\n\
             error: job j2 (start of guest g2) failed: (no reason given)"
        );
    }
}
