//! Command-line flags of the `mistify-libvirt` binary and its `run`.

use std::net::SocketAddr;

use clap::Parser;

use crate::pool::Pool;
use crate::render::{NetworkMode, Options};
use crate::{server, Libvirt};

/// The libvirt sub-agent of mistify: guest lifecycle and metrics over JSON-RPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "mistify-libvirt", version)]
pub struct Flags {
    /// Port to listen on (127.0.0.1 only).
    #[arg(short = 'p', long, default_value_t = 20001)]
    pub port: u16,
    /// ZFS pool (accepted for compatibility; this sub-agent does not use it).
    #[arg(short = 'z', long, default_value = "mistify")]
    pub zpool: String,
    /// Log level: debug, info, warning, error, critical or fatal.
    #[arg(short = 'l', long = "log-level", default_value = "warning")]
    pub log_level: String,
    /// Log format: pretty (human lines, the default) or json (one object per line).
    #[arg(long = "log-format", default_value = "pretty")]
    pub log_format: mistify_http::LogFormat,
    /// libvirt connection URI.
    #[arg(long, default_value = "qemu:///system")]
    pub uri: String,
    /// Most libvirt connections open at once.
    #[arg(long = "max-connections", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_connections: u16,
    /// `ovs`: a libvirt network per NIC on an Open vSwitch bridge with the `vlan-all`
    /// port group; `bridge`: the NIC joins the Linux bridge `nic.network` directly.
    #[arg(long = "network-mode", default_value = "ovs")]
    pub network_mode: NetworkMode,
    /// Root `type` of the domain XML for guests without a type of their own.
    #[arg(long = "domain-type", default_value = "kvm")]
    pub domain_type: String,
    /// Require the agent's bearer token (this file's first non-comment line; the
    /// service's `token` in agent.json) on every call.
    #[arg(long = "token-file")]
    pub token_file: Option<std::path::PathBuf>,
}

/// The `tracing` level for the original's level names.
pub fn tracing_level(level: &str) -> &str {
    match level {
        "warning" => "warn",
        "critical" | "fatal" | "panic" => "error",
        other => other,
    }
}

impl Flags {
    /// The sub-agent these flags describe.
    pub fn libvirt(&self) -> Libvirt {
        Libvirt::new(
            Pool::new(self.uri.clone(), usize::from(self.max_connections)),
            Options {
                domain_type: self.domain_type.clone(),
                network_mode: self.network_mode,
            },
        )
    }
}

/// Sets up logging and serves until SIGTERM or Ctrl-C.
pub async fn run(flags: Flags) -> std::io::Result<()> {
    mistify_http::init_tracing(tracing_level(&flags.log_level), flags.log_format)
        .map_err(std::io::Error::other)?;
    tracing::info!(uri = %flags.uri, port = flags.port, mode = %flags.network_mode, "starting");
    let mut rpc = server(flags.libvirt());
    if let Some(path) = &flags.token_file {
        rpc = rpc.require_token(mistify_rpc::read_token_file(path).map_err(std::io::Error::other)?);
    }
    rpc.bind(SocketAddr::from(([127, 0, 0, 1], flags.port)))
        .await?
        .run()
        .await
}
