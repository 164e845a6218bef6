//! The etcd endpoints of a daemon's `-k/--kv/--etcd` flag, parsed once for every
//! program of the cluster.

/// Why a `--kv` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--kv {value:?}: {why}")]
pub struct KvError {
    /// The flag's value.
    pub value: String,
    /// What is wrong with it.
    pub why: String,
}

/// The etcd endpoints of a `--kv` value: comma-separated `http://host:port`,
/// `https://…`, `etcd://host:port` (read as `http://`) or `host:port`. A `consul://`
/// address is refused: the port keeps the cluster in etcd v3 only.
pub fn kv_endpoints(value: &str) -> Result<Vec<String>, KvError> {
    let bad = |why: String| KvError {
        value: value.to_string(),
        why,
    };
    let mut out = Vec::new();
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (scheme, rest) = part.split_once("://").unwrap_or(("http", part));
        let endpoint = match scheme.to_ascii_lowercase().as_str() {
            "consul" => {
                return Err(bad(
                    "Consul is not supported: the cluster keeps its state in etcd v3; give etcd endpoints such as http://127.0.0.1:2379".into(),
                ))
            }
            "http" | "etcd" => format!("http://{rest}"),
            "https" => format!("https://{rest}"),
            other => return Err(bad(format!("unknown scheme {other:?} (http, https or etcd)"))),
        };
        if rest.is_empty() || rest.contains('/') && !rest.ends_with('/') {
            return Err(bad(format!("{part:?} is not host:port")));
        }
        out.push(endpoint.trim_end_matches('/').to_string());
    }
    if out.is_empty() {
        return Err(bad("no etcd endpoint given".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            kv_endpoints("http://127.0.0.1:2379").unwrap(),
            ["http://127.0.0.1:2379"]
        );
        assert_eq!(
            kv_endpoints("127.0.0.1:1, etcd://127.0.0.2:2,https://h:3/").unwrap(),
            ["http://127.0.0.1:1", "http://127.0.0.2:2", "https://h:3"]
        );
        let e = kv_endpoints("consul://127.0.0.1:8500").unwrap_err();
        assert!(e.to_string().contains("Consul is not supported"), "{e}");
        assert!(kv_endpoints("").is_err());
        assert!(kv_endpoints("ftp://x:1").is_err());
        assert!(kv_endpoints("http://h:1/v3/kv").is_err());
    }
}
