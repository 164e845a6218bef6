//! `mistify-supervisor`: the command-line client (tables by default, `--json`).

use crate::rest::{Client, ClientError, ClientOptions, WATCH_SECS};
use clap::{Parser, Subcommand};
use mistify_types::supervisor::{LogRecord, ServiceInfo, State, Time};
use std::io::Write;

/// The environment variable of the Basic-auth user (after `--user`).
pub const USER_ENV: &str = "MISTIFY_SUPERVISOR_USER";
/// The environment variable of the Basic-auth password (after `--pass` and `--pass-file`).
pub const PASS_ENV: &str = "MISTIFY_SUPERVISOR_PASS";

#[derive(Debug, Parser)]
#[command(
    name = "mistify-supervisor",
    version,
    about = "Client of mistify-supervisord (govisor compatible)",
    long_about = "Client of mistify-supervisord (and govisord): service status, actions and \
                  logs on the command line, or the terminal UI when no command is given."
)]
pub struct Cli {
    /// Server URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8321")]
    pub addr: String,
    /// Basic-auth user (default: $MISTIFY_SUPERVISOR_USER).
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// Basic-auth password; other users can read it in ps(1): prefer --pass-file or
    /// $MISTIFY_SUPERVISOR_PASS.
    #[arg(long, global = true)]
    pub pass: Option<String>,
    /// Read the Basic-auth password from the first line of FILE (before
    /// $MISTIFY_SUPERVISOR_PASS).
    #[arg(long, global = true, value_name = "FILE", conflicts_with = "pass")]
    pub pass_file: Option<std::path::PathBuf>,
    /// PEM file of CA certificates (https:// only).
    #[arg(long, global = true)]
    pub cacert: Option<std::path::PathBuf>,
    /// Skip TLS verification (https:// only).
    #[arg(long, global = true)]
    pub insecure: bool,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Service names, sorted.
    #[command(alias = "services")]
    List,
    /// One line per service: name, state, time in state, reason.
    Status {
        /// Only these services (default: every one).
        services: Vec<String>,
    },
    /// Details of one service.
    Info {
        /// The service's name, e.g. subagent:zfs.
        service: String,
    },
    /// Enable a service.
    Enable {
        /// The service's name.
        service: String,
    },
    /// Disable a service (its dependents wait).
    Disable {
        /// The service's name.
        service: String,
    },
    /// Restart a service (and the dependents that need it).
    Restart {
        /// The service's name.
        service: String,
    },
    /// Clear a fault or the throttled state.
    Clear {
        /// The service's name.
        service: String,
    },
    /// Print a service's log (or the consolidated log).
    Log {
        /// The service (default: the consolidated log of every service).
        service: Option<String>,
        /// Keep printing new lines.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines (then, with -f, the new ones).
        #[arg(short = 'n', long = "lines", value_name = "N")]
        lines: Option<usize>,
    },
    /// The terminal UI (also when no command is given).
    #[command(alias = "ui")]
    Tui,
    /// A shell completion script on stdout, e.g. `mistify-supervisor completions bash >
    /// /etc/bash_completion.d/mistify-supervisor`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The manual page (roff) on stdout, e.g. `mistify-supervisor man | man -l -`.
    Man,
}

/// The Basic-auth credentials: `--user`, else `$MISTIFY_SUPERVISOR_USER`; `--pass`,
/// else the first line of `--pass-file`, else `$MISTIFY_SUPERVISOR_PASS` (an empty
/// variable counts as unset). `env` reads the environment.
pub fn credentials(
    cli: &Cli,
    env: impl Fn(&str) -> Option<String>,
) -> Result<(Option<String>, Option<String>), String> {
    let env = |name: &str| env(name).filter(|v| !v.is_empty());
    let user = cli.user.clone().or_else(|| env(USER_ENV));
    let pass = match (&cli.pass, &cli.pass_file) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(file)) => {
            let text = std::fs::read_to_string(file)
                .map_err(|e| format!("--pass-file {}: {e}", file.display()))?;
            match text.lines().next() {
                Some(line) if !line.is_empty() => Some(line.to_string()),
                _ => {
                    return Err(format!(
                        "--pass-file {}: no password on its first line",
                        file.display()
                    ))
                }
            }
        }
        (None, None) => env(PASS_ENV),
    };
    Ok((user, pass))
}

/// Why there is no TUI without a terminal (exit status 2).
pub const NO_TERMINAL: &str =
    "mistify-supervisor: no terminal for the TUI; give a command (status, log, …)";

/// The completion script of `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "mistify-supervisor", &mut script);
    script
}

/// The manual page `mistify-supervisor(1)` in roff: clap's name, synopsis, description
/// and options, then every command with its usage and arguments, the TUI's keys, the
/// environment, the exit status.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    use clap_mangen::roff::{bold, italic, roman, Roff};
    let mut command = <Cli as clap::CommandFactory>::command();
    command.build();
    let man = clap_mangen::Man::new(command.clone());
    let mut page = Vec::new();
    man.render_title(&mut page)?;
    man.render_name_section(&mut page)?;
    man.render_synopsis_section(&mut page)?;
    man.render_description_section(&mut page)?;
    man.render_options_section(&mut page)?;
    let mut roff = Roff::default();
    roff.control("SH", ["COMMANDS"]);
    for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
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
        let aliases: Vec<&str> = sub.get_all_aliases().collect();
        if !aliases.is_empty() {
            roff.control("br", []);
            roff.text([roman(format!("Alias: {}.", aliases.join(", ")))]);
        }
        for arg in sub
            .get_arguments()
            .filter(|a| !a.is_hide_set() && !a.is_global_set() && a.get_id().as_str() != "help")
        {
            let value = arg
                .get_value_names()
                .map(|v| v.join(" "))
                .unwrap_or_else(|| arg.get_id().as_str().to_uppercase());
            let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
            let name = match (arg.get_short(), arg.get_long()) {
                (Some(s), Some(l)) => format!("-{s}, --{l}"),
                (None, Some(l)) => format!("--{l}"),
                (Some(s), None) => format!("-{s}"),
                (None, None) => String::new(),
            };
            let name = match (name.is_empty(), takes_value) {
                (true, _) => value,
                (false, true) => format!("{name} {value}"),
                (false, false) => name,
            };
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
                help.push_str(&format!(" (one of: {})", values.join(", ")));
            }
            roff.control("RS", []);
            roff.control("TP", []);
            roff.text([italic(name)]);
            roff.text([roman(help)]);
            roff.control("RE", []);
        }
    }
    roff.control("SH", ["TERMINAL UI"]);
    roff.text([roman(
        "Without a command (or with tui), on a terminal: the services, coloured by \
         state, updated as they change. Keys:",
    )]);
    roff.control("nf", []);
    for line in crate::tui::HELP.lines() {
        roff.text([roman(line.strip_prefix("  ").unwrap_or(line).to_string())]);
    }
    roff.control("fi", []);
    roff.control("SH", ["ENVIRONMENT"]);
    roff.control("TP", []);
    roff.text([bold(USER_ENV)]);
    roff.text([roman("The Basic-auth user when --user is not given.")]);
    roff.control("TP", []);
    roff.text([bold(PASS_ENV)]);
    roff.text([roman(
        "The Basic-auth password when neither --pass nor --pass-file is given \
         (--pass, then --pass-file, then this variable).",
    )]);
    roff.control("SH", ["EXIT STATUS"]);
    roff.text([roman(
        "0 on success; 1 when the server refuses a request or cannot be reached; \
         2 for a bad command line (an unknown command, a missing argument, an unreadable \
         --pass-file) and for the terminal UI without a terminal.",
    )]);
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(
        "mistify-supervisord(8), mistify(1); /usr/share/doc/mistify/supervisor.md.",
    )]);
    roff.to_writer(&mut page)?;
    Ok(title_first(page))
}

/// The page with its `.TH` line first: the roff writer puts its definition of the
/// apostrophe (`Aq`) above it, once per part; one definition, after it, is enough.
fn title_first(page: Vec<u8>) -> Vec<u8> {
    let text = String::from_utf8_lossy(&page);
    let mut seen = std::collections::HashSet::new();
    let mut lines: Vec<&str> = text
        .lines()
        .filter(|l| !(l.starts_with(".ie ") || l.starts_with(".el ")) || seen.insert(*l))
        .collect();
    if let Some(i) = lines.iter().position(|l| l.starts_with(".TH ")) {
        let th = lines.remove(i);
        lines.insert(0, th);
    }
    let mut out = lines.join("\n");
    out.push('\n');
    out.into_bytes()
}

/// `H:MM:SS` since `t`.
pub fn elapsed(t: Time) -> String {
    let secs = (chrono::Utc::now() - t.0).num_seconds().max(0);
    format!("{}:{:02}:{:02}", secs / 3600, (secs / 60) % 60, secs % 60)
}

/// Failed first, then enabled, then by name (govisor's order).
pub fn sort_services(list: &mut [ServiceInfo]) {
    list.sort_by(|a, b| {
        let fa = matches!(a.state, State::Failed | State::Throttled) || a.failed;
        let fb = matches!(b.state, State::Failed | State::Throttled) || b.failed;
        fb.cmp(&fa)
            .then(b.enabled.cmp(&a.enabled))
            .then(a.name.cmp(&b.name))
    });
}

/// One status line: name (20), state (10), elapsed (10, right), reason.
pub fn status_line(s: &ServiceInfo) -> String {
    let mut reason = s.status.clone();
    if let (State::Throttled, Some(u)) = (s.state, s.throttled_until) {
        reason.push_str(&format!(" (until {})", u.0.format("%H:%M:%S")));
    }
    format!(
        "{:<20}{:<10}{:>10}   {}",
        s.name,
        s.state.as_str(),
        elapsed(s.tstamp),
        reason
    )
}

/// `Mmm dd hh:mm:ss.mmm <text>`
pub fn log_line(r: &LogRecord) -> String {
    format!("{} {}", r.time.0.format("%b %d %H:%M:%S%.3f"), r.text)
}

fn info_text(s: &ServiceInfo) -> String {
    let list = |v: &[String]| v.join(", ");
    let mut out = String::new();
    let rows = [
        ("Name", s.name.clone()),
        ("Desc", s.description.clone()),
        ("Status", s.state.as_str().to_string()),
        ("Since", elapsed(s.tstamp)),
        ("Detail", s.status.clone()),
        ("Ready", s.ready.to_string()),
        (
            "PID",
            s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        ),
        ("Restarts", s.restarts.to_string()),
        (
            "Throttled",
            s.throttled_until
                .map(|t| format!("until {}", t.0.to_rfc3339()))
                .unwrap_or_else(|| "no".into()),
        ),
        ("Provides", list(&s.provides)),
        ("Depends", list(&s.depends)),
        ("Conflicts", list(&s.conflicts)),
    ];
    for (k, v) in rows {
        out.push_str(&format!("{k:>10}: {v}\n"));
    }
    out
}

fn print_json<T: serde::Serialize>(v: &T) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("Error: {e}"),
    }
}

fn strip_code(message: &str) -> String {
    // "404 Not Found" style messages lose their leading code, as govisor's CLI did.
    let mut parts = message.splitn(2, ' ');
    match (parts.next(), parts.next()) {
        (Some(c), Some(rest))
            if c.len() == 3 && c.starts_with('4') && c.chars().all(|ch| ch.is_ascii_digit()) =>
        {
            rest.to_string()
        }
        _ => message.to_string(),
    }
}

/// Runs the CLI; the process exit status.
pub async fn run(mut cli: Cli) -> i32 {
    let command = cli.command.take().unwrap_or(Command::Tui);
    // Commands that need no server.
    match &command {
        Command::Completions { shell } => return write_out(&completions(*shell)),
        Command::Man => {
            return match man_page() {
                Ok(page) => write_out(&page),
                Err(e) => {
                    eprintln!("Error: {e}");
                    1
                }
            }
        }
        Command::Tui if !has_terminal() => {
            eprintln!("{NO_TERMINAL}");
            return 2;
        }
        _ => {}
    }
    let (user, pass) = match credentials(&cli, |name| std::env::var(name).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return 2;
        }
    };
    let opts = ClientOptions {
        user,
        pass,
        cacert: cli.cacert.clone(),
        insecure: cli.insecure,
    };
    let client = match Client::connect(&cli.addr, &opts).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error: {e}");
            return 1;
        }
    };
    let res = match command {
        Command::List => client.names().await.map(|names| {
            if cli.json {
                print_json(&names);
            } else {
                for n in names {
                    println!("{n}");
                }
            }
        }),
        Command::Status { services } => client.all().await.map(|(mut all, _)| {
            if !services.is_empty() {
                all.retain(|s| services.contains(&s.name));
            }
            sort_services(&mut all);
            if cli.json {
                print_json(&all);
            } else {
                println!("{:<20}{:<10}{:>10}   REASON", "NAME", "STATE", "SINCE");
                for s in &all {
                    println!("{}", status_line(s));
                }
            }
        }),
        Command::Info { service } => client.service(&service).await.map(|s| {
            if cli.json {
                print_json(&s);
            } else {
                print!("{}", info_text(&s));
            }
        }),
        Command::Enable { service } => client.enable(&service).await,
        Command::Disable { service } => client.disable(&service).await,
        Command::Restart { service } => client.restart(&service).await,
        Command::Clear { service } => client.clear(&service).await,
        Command::Log {
            service,
            follow,
            lines,
        } => log(&client, service.as_deref(), follow, lines, cli.json).await,
        Command::Tui => crate::tui::run(client)
            .await
            .map_err(ClientError::Transport),
        Command::Completions { .. } | Command::Man => Ok(()),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {}", strip_code(&e.to_string()));
            1
        }
    }
}

/// Whether stdin and stdout are a terminal (the TUI needs both).
fn has_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal() && std::io::stdout().is_terminal()
}

/// Writes `bytes` to stdout; the exit status.
fn write_out(bytes: &[u8]) -> i32 {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {e}");
            1
        }
    }
}

async fn log(
    client: &Client,
    name: Option<&str>,
    follow: bool,
    lines: Option<usize>,
    json: bool,
) -> Result<(), ClientError> {
    let (mut records, mut last) = client.log(name, None).await?;
    if let Some(n) = lines {
        records.drain(..records.len().saturating_sub(n));
    }
    let print = |records: &[LogRecord]| {
        let mut out = std::io::stdout().lock();
        for r in records {
            let line = if json {
                serde_json::to_string(r).unwrap_or_default()
            } else {
                log_line(r)
            };
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    };
    print(&records);
    if !follow {
        return Ok(());
    }
    loop {
        if let Some((records, id)) = client.watch_log(name, last, WATCH_SECS).await? {
            print(&records);
            last = id;
        }
    }
}
