//! The three daemons, their flags and defaults (docs/cluster.md, "Common flags of the
//! daemons"). Every default is written here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use mistify_http::LogFormat;

/// The default etcd endpoint.
pub const DEFAULT_ETCD: &str = "http://127.0.0.1:2379";

/// Which daemon a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Daemon {
    /// `cguestd`: guests, jobs, flavors (port 18000).
    Guests,
    /// `chypervisord`: hypervisors (port 17000).
    Hypervisors,
    /// `cnetworkd`: VLANs, VLAN groups, networks, subnets, firewall groups (port 19000).
    Networks,
}

impl Daemon {
    /// The program's name.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Guests => "cguestd",
            Daemon::Hypervisors => "chypervisord",
            Daemon::Networks => "cnetworkd",
        }
    }

    /// The port the original listened on.
    pub fn default_port(self) -> u16 {
        match self {
            Daemon::Guests => 18000,
            Daemon::Hypervisors => 17000,
            Daemon::Networks => 19000,
        }
    }

    /// [`Daemon::default_port`] as text (for the flags' help).
    pub fn default_port_text(self) -> &'static str {
        match self {
            Daemon::Guests => "18000",
            Daemon::Hypervisors => "17000",
            Daemon::Networks => "19000",
        }
    }

    /// One line on what it serves.
    pub fn about(self) -> &'static str {
        match self {
            Daemon::Guests => "The cluster's guest API: guests, their jobs, flavors",
            Daemon::Hypervisors => {
                "The cluster's hypervisor API: hypervisors, their configuration, subnet links, guests and resources"
            }
            Daemon::Networks => {
                "The cluster's network API: VLANs, VLAN groups, networks, subnets, firewall groups"
            }
        }
    }
}

/// The flags every daemon takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Flags {
    /// Port to listen on (the original's: cguestd 18000, chypervisord 17000, cnetworkd
    /// 19000).
    #[arg(short = 'p', long)]
    pub port: Option<u16>,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind: IpAddr,
    /// etcd v3 endpoints, comma-separated (Consul is not supported).
    #[arg(short = 'k', long = "kv", visible_alias = "etcd", default_value = DEFAULT_ETCD)]
    pub kv: String,
    /// A key prefix in front of `lochness/` (one cluster per prefix).
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(short = 'l', long, default_value = "info")]
    pub log_level: String,
    /// Log format: pretty (human lines) or json (one object per line).
    #[arg(long, default_value = "pretty")]
    pub log_format: LogFormat,
    /// beanstalkd address of the original: accepted and ignored (jobs live in etcd).
    #[arg(short = 'b', long, value_name = "ADDRESS")]
    pub beanstalk: Option<String>,
    /// statsd sink of the original: accepted and ignored (see GET /metrics).
    #[arg(short = 's', long, value_name = "ADDRESS")]
    pub statsd: Option<String>,
}

impl Flags {
    /// The address to listen on.
    pub fn listen(&self, daemon: Daemon) -> SocketAddr {
        SocketAddr::new(self.bind, self.port.unwrap_or(daemon.default_port()))
    }
}

pub use lochness::{kv_endpoints, KvError};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(Daemon::Guests.default_port(), 18000);
        assert_eq!(Daemon::Hypervisors.default_port(), 17000);
        assert_eq!(Daemon::Networks.default_port(), 19000);
        for d in [Daemon::Guests, Daemon::Hypervisors, Daemon::Networks] {
            assert_eq!(d.default_port_text(), d.default_port().to_string());
        }
    }
}
