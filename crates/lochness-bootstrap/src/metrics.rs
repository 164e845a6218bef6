//! `GET /metrics` (Prometheus text): requests by route template and status, how many
//! hypervisors the address index holds, and how often it was read from etcd as a whole.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status: String,
}

/// The daemon's figures.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    indexed: Gauge,
    loads: Gauge,
    encoding: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every figure at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cbootstrapd");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route template and status",
            requests.clone(),
        );
        let indexed = Gauge::default();
        registry.register(
            "indexed_hypervisors",
            "Hypervisors with an address in the address index",
            indexed.clone(),
        );
        let loads = Gauge::default();
        registry.register(
            "index_loads",
            "Times the address index was read from etcd as a whole (1 at start, one more per restarted watch)",
            loads.clone(),
        );
        Metrics {
            registry,
            requests,
            indexed,
            loads,
            encoding: Mutex::new(()),
        }
    }

    /// One request on `route` answered with `status`.
    pub fn request(&self, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                route: route.to_string(),
                status: status.to_string(),
            })
            .inc();
    }

    /// The text exposition, with the index figures as they are now.
    pub fn encode(&self, indexed: usize, loads: u64) -> String {
        let _one = self.encoding.lock().unwrap_or_else(|p| p.into_inner());
        self.indexed.set(i64::try_from(indexed).unwrap_or(i64::MAX));
        self.loads.set(i64::try_from(loads).unwrap_or(i64::MAX));
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_are_written() {
        let m = Metrics::new();
        m.request("/ipxe/{ip}", 200);
        m.request("/ipxe/{ip}", 200);
        let text = m.encode(3, 1);
        assert!(
            text.contains(r#"cbootstrapd_http_requests_total{route="/ipxe/{ip}",status="200"} 2"#),
            "{text}"
        );
        assert!(text.contains("cbootstrapd_indexed_hypervisors 3"), "{text}");
        assert!(text.contains("cbootstrapd_index_loads 1"), "{text}");
    }
}
