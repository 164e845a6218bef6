//! nfirewalld's metrics, served as Prometheus text at `GET /metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The daemon's counters and gauges.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    encoding: Mutex<()>,
    /// Rulesets rendered.
    pub renders: Counter,
    /// Rulesets loaded into the kernel.
    pub applies: Counter,
    /// Rulesets nft refused or failed to load (the previous one stayed).
    pub apply_errors: Counter,
    /// Rules left out of the last ruleset (invalid, or naming a missing group).
    pub skipped_rules: Gauge,
    /// Guests filtered by the last ruleset.
    pub guests: Gauge,
    /// 1 when bridged traffic reaches the rules (`bridge-nf-call-iptables` is 1).
    pub bridge_filtering: Gauge,
    /// Unix time of the last successful load.
    pub last_success: Gauge,
    healthy: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every family registered under the prefix `nfirewalld`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("nfirewalld");
        let m = Metrics {
            registry: Registry::default(),
            encoding: Mutex::new(()),
            renders: Counter::default(),
            applies: Counter::default(),
            apply_errors: Counter::default(),
            skipped_rules: Gauge::default(),
            guests: Gauge::default(),
            bridge_filtering: Gauge::default(),
            last_success: Gauge::default(),
            healthy: AtomicU64::new(0),
        };
        registry.register("renders", "Rulesets rendered", m.renders.clone());
        registry.register(
            "applies",
            "Rulesets loaded into the kernel",
            m.applies.clone(),
        );
        registry.register(
            "apply_errors",
            "Rulesets nft refused or failed to load (the previous ruleset stayed in force)",
            m.apply_errors.clone(),
        );
        registry.register(
            "skipped_rules",
            "Rules left out of the last ruleset (invalid, or naming a missing group)",
            m.skipped_rules.clone(),
        );
        registry.register(
            "guests",
            "Guests of this hypervisor filtered by the last ruleset",
            m.guests.clone(),
        );
        registry.register(
            "bridge_filtering",
            "1 when net.bridge.bridge-nf-call-iptables is 1 where the rules apply",
            m.bridge_filtering.clone(),
        );
        registry.register(
            "last_success_timestamp_seconds",
            "Unix time of the last successful load",
            m.last_success.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Marks that a ruleset is in force (from the first successful load on).
    pub fn set_healthy(&self) {
        self.healthy.store(1, Ordering::Relaxed);
    }

    /// Has a ruleset been put in force?
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) == 1
    }

    /// The text exposition (OpenMetrics text, which Prometheus reads).
    pub fn encode(&self) -> String {
        let _one = self.encoding.lock().unwrap_or_else(|p| p.into_inner());
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
    fn text_has_every_family() {
        let m = Metrics::new();
        m.apply_errors.inc();
        m.guests.set(3);
        let text = m.encode();
        assert!(text.contains("nfirewalld_apply_errors_total 1"), "{text}");
        assert!(text.contains("nfirewalld_applies_total 0"), "{text}");
        assert!(text.contains("nfirewalld_guests 3"), "{text}");
        assert!(text.contains("nfirewalld_bridge_filtering 0"), "{text}");
        assert!(!m.is_healthy());
        m.set_healthy();
        assert!(m.is_healthy());
    }
}
