//! cbootstrapd's flags: the original's (`-p`, `-k`, `-b`, `-v`, `-i`, `-o`, `-s`) and
//! ours (`--bind`, `--prefix`, `-l`, `--log-format`). Every default is written here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use clap::Parser;
use mistify_http::LogFormat;

/// The port the original listened on.
pub const DEFAULT_PORT: u16 = 8888;
/// The etcd endpoint when `-k` is not given.
pub const DEFAULT_KV: &str = "http://127.0.0.1:2379";
/// The base URL of the boot files when `-b` is not given.
pub const DEFAULT_BASE: &str = "http://ipxe.mistify.local:8888";
/// The image version when neither the hypervisor nor the cluster names one.
pub const DEFAULT_IMAGE_VERSION: &str = "0.1.0";
/// The directory served under `/images/` when `-i` is not given.
pub const DEFAULT_IMAGES: &str = "/var/lib/images";

/// `cbootstrapd`'s command line.
#[derive(Parser, Debug, Clone)]
#[command(
    name = "cbootstrapd",
    about = "Network boot of hypervisors: the iPXE script (/ipxe/{ip}), the node configuration (/config/{ip}) and the boot images (/images/…), from the cluster's etcd",
    version,
    disable_version_flag = true
)]
pub struct Args {
    /// Print the program's version (`-v`/`--version` is the image version, as in the
    /// original).
    #[arg(short = 'V', long = "program-version", action = clap::ArgAction::Version)]
    program_version: Option<bool>,
    /// Port to listen on.
    #[arg(short = 'p', long, default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind: IpAddr,
    /// etcd v3 endpoints, comma-separated (Consul is not supported). The value is also
    /// what `/config/{ip}` hands to the node as `ETCD_ADDRESS`, exactly as written.
    #[arg(short = 'k', long = "kv", visible_alias = "etcd", default_value = DEFAULT_KV)]
    pub kv: String,
    /// A key prefix in front of `lochness/` (one cluster per prefix).
    #[arg(long, default_value = "")]
    pub prefix: String,
    /// Base URL of the boot files in the iPXE script (`<base>/images/<version>/vmlinuz`).
    #[arg(short = 'b', long, default_value = DEFAULT_BASE)]
    pub base: String,
    /// Image version when neither the hypervisor's `version` configuration nor the
    /// cluster's `defaultVersion` names one.
    #[arg(short = 'v', long = "version", default_value = DEFAULT_IMAGE_VERSION)]
    pub image_version: String,
    /// Directory served under `/images/`.
    #[arg(short = 'i', long, default_value = DEFAULT_IMAGES)]
    pub images: PathBuf,
    /// Extra kernel options appended to the kernel line.
    #[arg(short = 'o', long, default_value = "", allow_hyphen_values = true)]
    pub options: String,
    /// statsd sink of the original: accepted and ignored (see `GET /metrics`).
    #[arg(short = 's', long, value_name = "ADDRESS")]
    pub statsd: Option<String>,
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(short = 'l', long, default_value = "info")]
    pub log_level: String,
    /// Log format: pretty (human lines) or json (one object per line).
    #[arg(long, default_value = "pretty")]
    pub log_format: LogFormat,
}

impl Args {
    /// The address to listen on.
    pub fn listen(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_originals() {
        let a = Args::try_parse_from(["cbootstrapd"]).unwrap();
        assert_eq!(a.port, 8888);
        assert_eq!(a.base, "http://ipxe.mistify.local:8888");
        assert_eq!(a.image_version, "0.1.0");
        assert_eq!(a.images, PathBuf::from("/var/lib/images"));
        assert_eq!(a.options, "");
        assert_eq!(a.kv, DEFAULT_KV);
    }

    #[test]
    fn short_flags_of_the_original() {
        let a = Args::try_parse_from([
            "cbootstrapd",
            "-p",
            "9000",
            "-k",
            "http://10.0.0.1:2379",
            "-b",
            "http://boot:9000",
            "-v",
            "2.0",
            "-i",
            "/srv/images",
            "-o",
            "-console=ttyS0",
            "-s",
            "statsd:8125",
        ])
        .unwrap();
        assert_eq!(a.listen().port(), 9000);
        assert_eq!(a.kv, "http://10.0.0.1:2379");
        assert_eq!(a.base, "http://boot:9000");
        assert_eq!(a.image_version, "2.0");
        assert_eq!(a.images, PathBuf::from("/srv/images"));
        assert_eq!(a.options, "-console=ttyS0");
        assert_eq!(a.statsd.as_deref(), Some("statsd:8125"));
        assert!(Args::try_parse_from(["cbootstrapd", "-p", "x"]).is_err());
    }
}
