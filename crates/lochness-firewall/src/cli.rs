//! nfirewalld's flags: the original's `-k/--kv`, `-i/--id` and `-f/--file`, and ours.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use lochness::heartbeat::parse_duration;
use mistify_http::LogFormat;

/// `nfirewalld`: this hypervisor's guest firewall.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "nfirewalld",
    version,
    about = "Keeps this hypervisor's nftables table equal to its guests' firewall groups in etcd"
)]
pub struct Args {
    /// etcd v3 endpoints, comma-separated (`http://host:port`). Consul is not supported.
    #[arg(
        short = 'k',
        long = "kv",
        visible_alias = "etcd",
        default_value = "http://127.0.0.1:2379"
    )]
    pub etcd: String,
    /// This hypervisor's id (default: $HYPERVISOR_ID, then the hostname).
    #[arg(short = 'i', long = "id", default_value = "")]
    pub id: String,
    /// The rules file: it holds only our table (see docs/firewall.md), written each time
    /// a new ruleset is loaded.
    #[arg(short = 'f', long = "file", default_value = "/etc/nftables.conf")]
    pub file: PathBuf,
    /// The nftables table we own (`table inet NAME`); no other table is touched.
    #[arg(long, default_value = "mistify")]
    pub table: String,
    /// Apply the rules inside this network namespace (`ip netns exec NAME nft …`), for
    /// guest bridges that live in a namespace; etcd is still reached from ours.
    #[arg(long)]
    pub netns: Option<String>,
    /// The nft program.
    #[arg(long, default_value = "nft")]
    pub nft: String,
    /// Run even when `net.bridge.bridge-nf-call-iptables` is not 1 where the rules
    /// apply (guests on routed interfaces, no bridge): bridged traffic then bypasses
    /// the rules, which is logged as an error on every load.
    #[arg(long)]
    pub allow_unbridged: bool,
    /// How long to gather a burst of changes before rendering (`100ms`, `1s`).
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub debounce: Duration,
    /// Port of `/metrics` and `/healthz` (0 disables the listener).
    #[arg(short = 'p', long = "http", default_value_t = 7545)]
    pub http: u16,
    /// The address the metrics listener binds.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
    /// A key prefix in front of `lochness/` (one cluster per prefix).
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Log level: error, warn, info, debug, trace (or a filter).
    #[arg(short = 'l', long, default_value = "info")]
    pub log_level: String,
    /// Log format: `pretty` (human lines) or `json` (one object per line).
    #[arg(long, default_value = "pretty")]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_originals_flags_parse() {
        let a = Args::try_parse_from([
            "nfirewalld",
            "-k",
            "http://127.0.0.1:1",
            "-i",
            "h1",
            "-f",
            "/tmp/x.nft",
        ])
        .unwrap();
        assert_eq!((a.id.as_str(), a.table.as_str()), ("h1", "mistify"));
        assert_eq!(a.file, PathBuf::from("/tmp/x.nft"));
        assert_eq!((a.http, a.netns), (7545, None));
        assert_eq!(a.debounce, Duration::from_millis(100));
        let b = Args::try_parse_from(["nfirewalld", "--netns", "hv", "--table", "fw", "-p", "0"])
            .unwrap();
        assert_eq!(b.netns.as_deref(), Some("hv"));
        assert_eq!(
            Args::try_parse_from(["nfirewalld"]).unwrap().file,
            PathBuf::from("/etc/nftables.conf")
        );
    }
}
