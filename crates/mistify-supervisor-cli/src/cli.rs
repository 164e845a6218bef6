//! `mistify-supervisor`: the command-line client (tables by default, `--json`).

use crate::rest::{Client, ClientError, ClientOptions, WATCH_SECS};
use clap::{Parser, Subcommand};
use mistify_types::supervisor::{LogRecord, ServiceInfo, State, Time};
use std::io::Write;

#[derive(Debug, Parser)]
#[command(
    name = "mistify-supervisor",
    version,
    about = "Client of mistify-supervisord (govisor compatible)"
)]
pub struct Cli {
    /// Server URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8321")]
    pub addr: String,
    /// Basic-auth user.
    #[arg(long, global = true)]
    pub user: Option<String>,
    /// Basic-auth password.
    #[arg(long, global = true)]
    pub pass: Option<String>,
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
    Status { services: Vec<String> },
    /// Details of one service.
    Info { service: String },
    /// Enable a service.
    Enable { service: String },
    /// Disable a service (its dependents wait).
    Disable { service: String },
    /// Restart a service (and the dependents that need it).
    Restart { service: String },
    /// Clear a fault or the throttled state.
    Clear { service: String },
    /// Print a service's log (or the consolidated log).
    Log {
        service: Option<String>,
        /// Keep printing new lines.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// The terminal UI.
    #[command(alias = "ui")]
    Tui,
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
pub async fn run(cli: Cli) -> i32 {
    let opts = ClientOptions {
        user: cli.user.clone(),
        pass: cli.pass.clone(),
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
    let res = match cli.command.unwrap_or(Command::Tui) {
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
        Command::Log { service, follow } => {
            log(&client, service.as_deref(), follow, cli.json).await
        }
        Command::Tui => crate::tui::run(client)
            .await
            .map_err(ClientError::Transport),
    };
    match res {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("Error: {}", strip_code(&e.to_string()));
            1
        }
    }
}

async fn log(
    client: &Client,
    name: Option<&str>,
    follow: bool,
    json: bool,
) -> Result<(), ClientError> {
    let (records, mut last) = client.log(name, None).await?;
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
