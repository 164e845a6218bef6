//! `lochness-heartbeat`: keeps a hypervisor alive in etcd and reports its resources
//! (the port of nheartbeatd).

use std::time::Duration;

use clap::Parser;

/// Keep a hypervisor's heartbeat key alive and its resources current.
#[derive(Parser, Debug)]
#[command(name = "lochness-heartbeat", version)]
struct Args {
    /// etcd endpoints, comma separated.
    #[arg(short = 'k', long, default_value = "http://127.0.0.1:2379")]
    etcd: String,
    /// Hypervisor id (default: $HYPERVISOR_ID, then the hostname).
    #[arg(short = 'd', long, default_value = "")]
    hypervisor_id: String,
    /// Heartbeat TTL: seconds, or a duration like `120s`, `2m`.
    #[arg(short = 't', long, default_value = "120s", value_parser = lochness::heartbeat::parse_duration)]
    ttl: Duration,
    /// Time between beats (default: ttl / 2): seconds, or a duration like `30s`.
    #[arg(short = 'i', long, value_parser = lochness::heartbeat::parse_duration)]
    interval: Option<Duration>,
    /// Directory whose filesystem holds guest disks (default: the hypervisor's
    /// `guestDiskDir` config, else /mistify/guests).
    #[arg(long)]
    guest_disk_dir: Option<String>,
    /// Key prefix in etcd (normally none).
    #[arg(long)]
    prefix: Option<String>,
    /// Log level (error, warn, info, debug, trace).
    #[arg(short = 'l', long, default_value = "info")]
    log_level: String,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log_level))
        .init();
    let config = lochness::heartbeat::DaemonConfig {
        etcd: args.etcd.split(',').map(str::to_string).collect(),
        prefix: args.prefix,
        hypervisor_id: args.hypervisor_id,
        ttl: args.ttl,
        interval: args.interval.unwrap_or(args.ttl / 2),
        guest_disk_dir: args.guest_disk_dir,
    };
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    if let Err(e) = lochness::heartbeat::run_daemon(config, shutdown).await {
        tracing::error!(error = %e, "lochness-heartbeat failed");
        eprintln!("lochness-heartbeat: {e}");
        std::process::exit(1);
    }
}
