//! The two bodies cbootstrapd writes, as pure functions: the iPXE script of a hypervisor
//! and its node configuration (`KEY=VALUE` lines).

use std::collections::BTreeMap;

/// The global configuration key whose value is the image version of hypervisors
/// without their own `version`.
pub const DEFAULT_VERSION_KEY: &str = "defaultVersion";
/// The hypervisor configuration key naming its image version.
pub const VERSION_KEY: &str = "version";
/// The configuration line every node gets first: the etcd address cbootstrapd was given.
pub const ETCD_ADDRESS_KEY: &str = "ETCD_ADDRESS";

/// Whether `key` is exported to a node: `^[_A-Z][_A-Z0-9]*$`.
pub fn is_env_key(key: &str) -> bool {
    let mut chars = key.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_ascii_uppercase() => {}
        _ => return false,
    }
    chars.all(|c| c == '_' || c.is_ascii_uppercase() || c.is_ascii_digit())
}

/// The image version of a hypervisor: its own `version` configuration when non-empty,
/// else the global `defaultVersion` when non-empty, else `fallback` (the `-v` flag).
pub fn choose_version<'a>(
    own: Option<&'a str>,
    global: Option<&'a str>,
    fallback: &'a str,
) -> &'a str {
    own.filter(|v| !v.is_empty())
        .or(global.filter(|v| !v.is_empty()))
        .unwrap_or(fallback)
}

/// The iPXE script that boots hypervisor `id` with image `version` from `base`. The
/// kernel line ends in `uuid=<id>`, a space and `options` (so a trailing space when
/// there are none), as the original wrote it.
pub fn ipxe_script(base: &str, version: &str, id: &str, options: &str) -> String {
    format!(
        "#!ipxe\nkernel {base}/images/{version}/vmlinuz uuid={id} {options}\n\
         initrd {base}/images/{version}/initrd\nboot\n"
    )
}

/// The node configuration: `KEY=VALUE` lines sorted by key, from `ETCD_ADDRESS=<kv>`,
/// then the global keys, then the hypervisor's keys (each later source wins), keeping
/// only keys that pass [`is_env_key`].
pub fn node_config<'a>(
    kv: &str,
    global: impl IntoIterator<Item = (&'a str, &'a str)>,
    hypervisor: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    let mut lines: BTreeMap<&str, &str> = BTreeMap::new();
    lines.insert(ETCD_ADDRESS_KEY, kv);
    for (k, v) in global.into_iter().chain(hypervisor) {
        if is_env_key(k) {
            lines.insert(k, v);
        }
    }
    lines.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_keys() {
        for ok in ["A", "_", "_PRIVATE", "DNS_1", "A_FIRST", "ZONE"] {
            assert!(is_env_key(ok), "{ok}");
        }
        for bad in [
            "",
            "1A",
            "lower",
            "Mixed_Case",
            "nested/KEY",
            "A-B",
            "A B",
            "É",
        ] {
            assert!(!is_env_key(bad), "{bad}");
        }
    }

    #[test]
    fn version_order() {
        assert_eq!(choose_version(Some("1.2.3"), Some("9"), "0.1.0"), "1.2.3");
        assert_eq!(choose_version(Some(""), Some("9"), "0.1.0"), "9");
        assert_eq!(choose_version(None, Some(""), "0.1.0"), "0.1.0");
        assert_eq!(choose_version(None, None, "0.1.0"), "0.1.0");
    }

    #[test]
    fn script_keeps_the_trailing_space() {
        assert_eq!(
            ipxe_script("http://b:8888", "1.2.3", "h1", ""),
            "#!ipxe\nkernel http://b:8888/images/1.2.3/vmlinuz uuid=h1 \n\
             initrd http://b:8888/images/1.2.3/initrd\nboot\n"
        );
        assert!(ipxe_script("b", "v", "h", "console=ttyS0 quiet")
            .contains("uuid=h console=ttyS0 quiet\n"));
    }

    #[test]
    fn config_sorted_and_overridden() {
        let text = node_config(
            "http://e:2379",
            [("NTP_SERVER", "ntp.global"), ("lower", "x"), ("DNS_1", "d")],
            [("NTP_SERVER", "ntp.hv"), ("A_FIRST", "1"), ("version", "1")],
        );
        assert_eq!(
            text,
            "A_FIRST=1\nDNS_1=d\nETCD_ADDRESS=http://e:2379\nNTP_SERVER=ntp.hv\n"
        );
        // A global ETCD_ADDRESS overrides the flag's, as in the original.
        assert_eq!(
            node_config("k", [("ETCD_ADDRESS", "x")], []),
            "ETCD_ADDRESS=x\n"
        );
    }
}
