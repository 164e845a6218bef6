//! The daemons' flags (docs/cluster.md, "Common flags of the daemons") and what `main`
//! does with them before the work starts.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser};
use lochness::heartbeat::parse_duration;
use mistify_http::LogFormat;

/// Flags every worker daemon takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// etcd v3 endpoints, comma-separated (`http://host:port`). Consul is not supported.
    #[arg(
        short = 'k',
        long = "etcd",
        visible_alias = "kv",
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd: String,
    /// A key prefix in front of `lochness/` (one cluster per prefix).
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Log level: error, warn, info, debug, trace (or a filter).
    #[arg(short = 'l', long, default_value = "info")]
    pub log_level: String,
    /// Log format: `pretty` (human lines) or `json` (one object per line).
    #[arg(long, default_value = "pretty")]
    pub log_format: LogFormat,
    /// Ignored (there is no beanstalkd: jobs queue in etcd); accepted so that existing
    /// units keep working.
    #[arg(short = 'b', long)]
    pub beanstalk: Option<String>,
    /// The address the metrics listener binds.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// TTL of the lease the process's claims are bound to (`10s`, `2m`, seconds): how
    /// long a job claimed by a dead process waits before another resumes it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
}

/// `cplacerd`: places guests.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "cplacerd",
    version,
    about = "Places guests on hypervisors: takes select-hypervisor jobs from etcd"
)]
pub struct PlacerArgs {
    /// Flags of every daemon.
    #[command(flatten)]
    pub common: Common,
    /// Port of `/metrics` and `/healthz` (0 disables the listener).
    #[arg(
        short = 'p',
        long = "http",
        visible_alias = "port",
        default_value_t = 7543
    )]
    pub http: u16,
    /// Jobs placed at once by this process.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrency: u32,
    /// Most placements on one subnet written in one etcd transaction (those waiting at
    /// once go together, within etcd's 128 operations; 1 writes each alone).
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=128))]
    pub batch: u32,
}

/// `cworkerd`: drives the agents.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "cworkerd",
    version,
    about = "Works the cluster's jobs on the hypervisors' agents: fetch, create, delete, guest actions"
)]
pub struct WorkerArgs {
    /// Flags of every daemon.
    #[command(flatten)]
    pub common: Common,
    /// Port of `/metrics` and `/healthz` (0 disables the listener).
    #[arg(
        short = 'p',
        long = "http",
        visible_alias = "port",
        default_value_t = 7544
    )]
    pub http: u16,
    /// Jobs worked at once by this process.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub concurrency: u32,
    /// The agents' port when a hypervisor has no `agentPort` configuration.
    #[arg(short = 'a', long, default_value_t = lochness::agent::DEFAULT_AGENT_PORT)]
    pub agent_port: u16,
    /// A file whose first non-comment line is the bearer token sent to every agent
    /// (agents started with `--token-file`).
    #[arg(long)]
    pub agent_token_file: Option<PathBuf>,
    /// Speak HTTPS to the agents, verifying them with this CA (PEM).
    #[arg(long)]
    pub agent_ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) for agents that require one (with `--agent-client-key`).
    #[arg(long, requires = "agent_client_key")]
    pub agent_client_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, requires = "agent_client_cert")]
    pub agent_client_key: Option<PathBuf>,
    /// How long an agent that does not answer (connection refused, timeout, 5xx) is
    /// retried before its job fails with the reason (`2m`, `30s`, seconds).
    #[arg(long, default_value = "2m", value_parser = parse_duration)]
    pub agent_retry_for: Duration,
}

/// Installs logging and says what the flags mean for this run: `-b` ignored.
pub fn init(program: &str, common: &Common) -> Result<(), String> {
    mistify_http::init_tracing(&common.log_level, common.log_format)?;
    if let Some(b) = &common.beanstalk {
        tracing::warn!(
            beanstalk = %b,
            "{program}: -b/--beanstalk is ignored: jobs wait in etcd (there is no beanstalkd)"
        );
    }
    Ok(())
}

/// The token of `--agent-token-file`: the first token of the file (the format of the
/// agent's own `--token-file`, so a line of it can be copied as it is).
pub fn read_token(path: &std::path::Path) -> Result<String, String> {
    mistify_types::token::TokenFile::load(path)
        .map(|file| file.first().to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_of_the_originals_parse() {
        let p = PlacerArgs::try_parse_from([
            "cplacerd",
            "-p",
            "0",
            "-k",
            "http://127.0.0.1:1",
            "-b",
            "127.0.0.1:11300",
        ])
        .unwrap();
        assert_eq!(p.http, 0);
        assert_eq!(p.common.beanstalk.as_deref(), Some("127.0.0.1:11300"));
        assert_eq!(p.common.lease_ttl, Duration::from_secs(10));
        assert_eq!((p.concurrency, p.batch), (16, 32));
        assert!(PlacerArgs::try_parse_from(["cplacerd", "--batch", "0"]).is_err());
        let w = WorkerArgs::try_parse_from([
            "cworkerd",
            "--kv",
            "http://127.0.0.1:1",
            "-a",
            "9000",
            "--lease-ttl",
            "3s",
            "--concurrency",
            "4",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!((w.http, w.agent_port, w.concurrency), (7544, 9000, 4));
        assert_eq!(w.common.lease_ttl, Duration::from_secs(3));
        assert_eq!(w.common.log_format, LogFormat::Json);
        assert!(WorkerArgs::try_parse_from(["cworkerd", "--concurrency", "0"]).is_err());
        assert!(
            WorkerArgs::try_parse_from(["cworkerd", "--agent-client-cert", "c.pem"]).is_err(),
            "a client certificate needs its key"
        );
    }
}
