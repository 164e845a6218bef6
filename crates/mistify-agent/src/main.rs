//! `mistify-agent`: flags, logging, then the library's `run`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use mistify_agent::config::{Config, DEFAULT_DB_PATH, DEFAULT_JOBLOG_MAX};
use mistify_agent::Settings;
use mistify_http as limits;
use mistify_http::{init_tracing, LogFormat};

#[derive(Parser)]
#[command(
    name = "mistify-agent",
    version,
    about = "The mistify hypervisor agent",
    subcommand_negates_reqs = true
)]
struct Flags {
    #[command(subcommand)]
    command: Option<Command>,
    /// Listen address of the REST API (`:PORT` means every interface).
    #[arg(short, long, default_value = ":8080")]
    address: String,
    /// debug, info, warning, error, critical or fatal (or a tracing filter).
    #[arg(short, long, default_value = "warning")]
    log_level: String,
    /// Config file (agent.json); repeat to merge several.
    #[arg(short = 'c', long = "config-file", required = true)]
    config_file: Vec<PathBuf>,
    /// Store file; overrides the config's `dbpath` (default /var/lib/mistify/agent.redb).
    #[arg(long)]
    db_path: Option<PathBuf>,
    /// Log format: pretty (human lines, the default) or json (one object per line).
    #[arg(long, default_value = "pretty")]
    log_format: LogFormat,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Bearer tokens required by the REST API, one per line (`ro:` in front: read-only,
    /// GET only); `/healthz` stays open. Read again on SIGHUP.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// PEM certificate (chain): serve HTTPS instead of HTTP (with --tls-key).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA: every client must present a certificate it signed (mTLS; needs --tls-cert).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    client_ca: Option<PathBuf>,
    /// Longest wait for running jobs on SIGTERM, in seconds.
    #[arg(long, default_value_t = 30)]
    drain_timeout: u64,
    /// Most requests handled at once; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_IN_FLIGHT as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_in_flight: u64,
    /// Longest wait, in seconds, for a complete request head (also closes idle
    /// keep-alive connections).
    #[arg(long, default_value_t = limits::DEFAULT_HEADER_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout: u64,
    /// Longest pause, in seconds, between two chunks of a request body (408 after).
    #[arg(long, default_value_t = limits::DEFAULT_BODY_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_timeout: u64,
    /// Largest request head in bytes (431 above).
    #[arg(long, default_value_t = limits::DEFAULT_MAX_HEADER_BYTES as u64,
          value_parser = clap::value_parser!(u64).range(1024..=1_048_576))]
    max_header_bytes: u64,
    /// Threads that serve requests and run pipelines (0: one per CPU).
    #[arg(long, default_value_t = 0,
          value_parser = clap::value_parser!(u64).range(0..=1024))]
    worker_threads: u64,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Copy the guests, metadata and job log of a Go agent's SQLite database into the
    /// store (`--db-path`, default /var/lib/mistify/agent.redb).
    ImportGoDb {
        /// The Go agent's database file.
        path: PathBuf,
    },
}

fn main() {
    let flags = Flags::parse();
    // The import is a plain command-line tool: it waits for its writes, outside any
    // runtime.
    if let Some(Command::ImportGoDb { path }) = &flags.command {
        let dest = flags
            .db_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DB_PATH));
        std::process::exit(import(path.as_path(), &dest));
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if flags.worker_threads > 0 {
        runtime.worker_threads(flags.worker_threads as usize);
    }
    match runtime.enable_all().build() {
        Ok(runtime) => runtime.block_on(agent_main(flags)),
        Err(e) => {
            eprintln!("mistify-agent: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    }
}

async fn agent_main(flags: Flags) {
    if let Err(e) = init_tracing(
        mistify_http::runtime::go_level(&flags.log_level),
        flags.log_format,
    ) {
        eprintln!("mistify-agent: {e}");
        std::process::exit(2);
    }
    let config = match Config::load(&flags.config_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mistify-agent: invalid configuration:\n{e}");
            std::process::exit(2);
        }
    };
    let auth = match flags
        .token_file
        .as_deref()
        .map(mistify_http::auth::Tokens::load)
    {
        None => None,
        Some(Ok(auth)) => Some(auth),
        Some(Err(e)) => {
            eprintln!("mistify-agent: {e}");
            std::process::exit(2);
        }
    };
    let tls = match (&flags.tls_cert, &flags.tls_key) {
        (Some(cert), Some(key)) => {
            match limits::tls_config(cert, key, flags.client_ca.as_deref()) {
                Ok(config) => Some(mistify_agent::TlsSettings {
                    config,
                    client_certs: flags.client_ca.is_some(),
                }),
                Err(e) => {
                    eprintln!("mistify-agent: {e}");
                    std::process::exit(2);
                }
            }
        }
        // clap's `requires` makes the flags come together.
        _ => None,
    };
    if flags.check_config {
        println!(
            "configuration OK: {} actions, {} services",
            config.actions.len(),
            config.services.len()
        );
        return;
    }
    let address = match mistify_agent::parse_address(&flags.address) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("mistify-agent: {e}");
            std::process::exit(2);
        }
    };
    let settings = Settings {
        db_path: flags
            .db_path
            .or_else(|| config.db_path.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DB_PATH)),
        joblog_max: config.joblog_max.unwrap_or(DEFAULT_JOBLOG_MAX),
        drain_timeout: Duration::from_secs(flags.drain_timeout),
        limits: limits::Limits {
            max_header_bytes: flags.max_header_bytes as usize,
            header_timeout: Duration::from_secs(flags.header_timeout),
            body_timeout: Duration::from_secs(flags.body_timeout),
            max_in_flight: flags.max_in_flight as usize,
        },
        tls,
        config,
    };
    if let Err(e) = mistify_agent::run(settings, address, auth).await {
        tracing::error!("{e}");
        eprintln!("mistify-agent: {e}");
        std::process::exit(1);
    }
}

fn import(go_db: &std::path::Path, dest: &std::path::Path) -> i32 {
    if go_db.canonicalize().ok() == dest.canonicalize().ok() {
        eprintln!("mistify-agent: the Go database is the destination; move it aside first");
        return 2;
    }
    let store = match mistify_agent::store::Store::open(dest, DEFAULT_JOBLOG_MAX) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mistify-agent: {e}");
            return 1;
        }
    };
    match mistify_agent::import::import_go_db(go_db, &store) {
        Ok(report) => {
            println!(
                "imported {} guests, {} metadata keys, {} jobs into {}",
                report.guests,
                report.metadata,
                report.jobs,
                dest.display()
            );
            for line in &report.skipped {
                println!("skipped: {line}");
            }
            0
        }
        Err(e) => {
            eprintln!("mistify-agent: {e}");
            1
        }
    }
}
