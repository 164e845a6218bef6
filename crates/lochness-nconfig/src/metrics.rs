//! nconfigd's figures (`/metrics` when `--metrics-port` is given): runs by result, the
//! last run's exit code, keys waiting for the next run, whether a run is going on, and
//! how often a watch lost its history.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RunLabels {
    result: String,
}

/// The daemon's figures.
pub struct Metrics {
    registry: Registry,
    runs: Family<RunLabels, Counter>,
    last_exit: Gauge,
    waiting: Gauge,
    running: Gauge,
    lost: Counter,
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
        let mut registry = Registry::with_prefix("nconfigd");
        let runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "runs",
            "Runs of the command by result (ok, failed: non-zero exit or signal, not_started)",
            runs.clone(),
        );
        let last_exit = Gauge::default();
        registry.register(
            "last_exit_code",
            "Exit code of the last run (-1: killed by a signal or not started)",
            last_exit.clone(),
        );
        let waiting = Gauge::default();
        registry.register(
            "waiting_keys",
            "Changed keys waiting for the next run (including those of a failed run)",
            waiting.clone(),
        );
        let running = Gauge::default();
        registry.register("running", "1 while a run is going on", running.clone());
        let lost = Counter::default();
        registry.register(
            "watch_restarts",
            "Watches started again after their history was compacted (each followed by a full run)",
            lost.clone(),
        );
        Metrics {
            registry,
            runs,
            last_exit,
            waiting,
            running,
            lost,
            encoding: Mutex::new(()),
        }
    }

    /// A run started.
    pub fn started(&self) {
        self.running.set(1);
    }

    /// A run ended: `result` (`ok`, `failed`, `not_started`) and its exit code.
    pub fn ended(&self, result: &str, code: Option<i32>) {
        self.running.set(0);
        self.runs
            .get_or_create(&RunLabels {
                result: result.to_string(),
            })
            .inc();
        self.last_exit.set(code.map_or(-1, i64::from));
    }

    /// The keys now waiting.
    pub fn waiting(&self, keys: usize) {
        self.waiting.set(i64::try_from(keys).unwrap_or(i64::MAX));
    }

    /// A watch lost its history.
    pub fn watch_restarted(&self) {
        self.lost.inc();
    }

    /// The text exposition.
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
    fn figures_are_written() {
        let m = Metrics::new();
        m.started();
        m.ended("failed", Some(3));
        m.waiting(2);
        let text = m.encode();
        assert!(
            text.contains(r#"nconfigd_runs_total{result="failed"} 1"#),
            "{text}"
        );
        assert!(text.contains("nconfigd_last_exit_code 3"), "{text}");
        assert!(text.contains("nconfigd_waiting_keys 2"), "{text}");
        assert!(text.contains("nconfigd_running 0"), "{text}");
    }
}
