//! cdhcpd's flags: the original's (`-d`, `-k`, `-c`, `-l`) and the port's.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use lochness::heartbeat::parse_duration;
use mistify_http::LogFormat;

/// The ISC configuration directory of the original.
pub const DEFAULT_CONF_DIR: &str = "/etc/dhcp/";

/// When the ISC files are checked with `dhcpd -t -cf` before they replace the old ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum IscCheck {
    /// When the `--dhcpd` program is found.
    Auto,
    /// Always (a missing dhcpd fails every write).
    Always,
    /// Never.
    Never,
}

/// `cdhcpd`.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "cdhcpd",
    version,
    about = "Keeps the DHCP server's host reservations equal to the cluster in etcd: ISC dhcpd include files and/or Kea DHCPv4 through its control socket"
)]
pub struct Args {
    /// The cluster's domain: hypervisors get `nodes.DOMAIN`, guests `guests.DOMAIN`, PXE
    /// points at `ipxe.services.DOMAIN` and `tftp.services.DOMAIN`.
    #[arg(short = 'd', long)]
    pub domain: String,
    /// etcd v3 endpoints, comma-separated (Consul is not supported).
    #[arg(
        short = 'k',
        long = "kv",
        visible_alias = "etcd",
        default_value = "http://127.0.0.1:2379"
    )]
    pub kv: String,
    /// A key prefix in front of `lochness/` (one cluster per prefix).
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Where `hypervisors.conf` and `guests.conf` are written. Default `/etc/dhcp/`,
    /// unless `--kea-socket` is given: then ISC files are written only when this is set.
    #[arg(short = 'c', long)]
    pub conf_dir: Option<PathBuf>,
    /// Run after an ISC file changed (`sh -c CMD`), e.g. `systemctl restart
    /// isc-dhcp-server`. None by default.
    #[arg(long, value_name = "CMD")]
    pub isc_reload: Option<String>,
    /// Check each new ISC file with `dhcpd -t -cf FILE` before it replaces the old one.
    #[arg(long, value_enum, default_value = "auto")]
    pub isc_check: IscCheck,
    /// The dhcpd program of `--isc-check`.
    #[arg(long, default_value = "dhcpd")]
    pub dhcpd: PathBuf,
    /// Kea DHCPv4's unix control socket: keep its reservations equal to etcd.
    #[arg(long, value_name = "PATH")]
    pub kea_socket: Option<PathBuf>,
    /// The TFTP server's address sent as `next-server` to PXE-booting hypervisors (Kea
    /// needs an address; the name `tftp.services.DOMAIN` is always sent as server name
    /// and option 66).
    #[arg(long, value_name = "IP")]
    pub kea_next_server: Option<Ipv4Addr>,
    /// How often Kea's running configuration is compared with etcd's (a restarted Kea,
    /// or one whose socket failed, gets the reservations again).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub kea_check_interval: Duration,
    /// The limit on one control-socket exchange.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub kea_timeout: Duration,
    /// How long after the first of a burst of etcd changes the configuration is rendered
    /// (the changes that arrived meanwhile are rendered together).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub debounce: Duration,
    /// Log level: error, warning, info, debug, trace (or a filter).
    #[arg(short = 'l', long, default_value = "warning")]
    pub log_level: String,
    /// Log format: `pretty` (human lines) or `json` (one object per line).
    #[arg(long, default_value = "pretty")]
    pub log_format: LogFormat,
    /// Port of `/metrics` and `/healthz` (0 disables the listener).
    #[arg(
        short = 'p',
        long = "http",
        visible_alias = "port",
        default_value_t = 7547
    )]
    pub http: u16,
    /// The address the metrics listener binds.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
}

impl Args {
    /// The ISC directory to write, if any.
    pub fn isc_dir(&self) -> Option<PathBuf> {
        match (&self.conf_dir, &self.kea_socket) {
            (Some(d), _) => Some(d.clone()),
            (None, None) => Some(PathBuf::from(DEFAULT_CONF_DIR)),
            (None, Some(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_originals_flags_parse_and_the_domain_is_required() {
        let a = Args::try_parse_from([
            "cdhcpd",
            "-d",
            "x.test",
            "-k",
            "http://127.0.0.1:1",
            "-c",
            "/tmp/d/",
            "-l",
            "debug",
        ])
        .unwrap();
        assert_eq!(a.domain, "x.test");
        assert_eq!(a.isc_dir(), Some(PathBuf::from("/tmp/d/")));
        assert!(Args::try_parse_from(["cdhcpd"]).is_err());
        let a = Args::try_parse_from(["cdhcpd", "-d", "x", "--kea-socket", "/run/kea/s"]).unwrap();
        assert_eq!(a.isc_dir(), None);
        let a = Args::try_parse_from(["cdhcpd", "-d", "x"]).unwrap();
        assert_eq!(a.isc_dir(), Some(PathBuf::from(DEFAULT_CONF_DIR)));
        assert_eq!(a.debounce, Duration::from_millis(100));
    }
}
