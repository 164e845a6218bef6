//! cdhcpd's metrics (`GET /metrics`, Prometheus text).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabels {
    file: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// The counters and gauges of one cdhcpd.
pub struct Metrics {
    registry: Registry,
    /// Renders of the configuration (after a change, debounced).
    pub renders: Counter,
    /// Full reloads of the model (start, compacted watch).
    pub reloads: Counter,
    /// The etcd revision the model reflects.
    pub revision: Gauge,
    files_written: Family<FileLabels, Counter>,
    file_failures: Family<FileLabels, Counter>,
    /// Failed runs of `--isc-reload`.
    pub isc_reload_failures: Counter,
    /// Kea configurations applied with `config-set`.
    pub kea_applies: Counter,
    kea_failures: Family<StageLabels, Counter>,
    reservations: Family<KindLabels, Gauge>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("cdhcpd");
        let m = Metrics {
            registry: Registry::default(),
            renders: Counter::default(),
            reloads: Counter::default(),
            revision: Gauge::default(),
            files_written: Family::default(),
            file_failures: Family::default(),
            isc_reload_failures: Counter::default(),
            kea_applies: Counter::default(),
            kea_failures: Family::default(),
            reservations: Family::default(),
        };
        registry.register(
            "renders",
            "Configurations rendered after changes in etcd",
            m.renders.clone(),
        );
        registry.register(
            "model_reloads",
            "Full reads of hypervisors, subnets and guests from etcd",
            m.reloads.clone(),
        );
        registry.register(
            "revision",
            "The etcd revision the configuration reflects",
            m.revision.clone(),
        );
        registry.register(
            "isc_files_written",
            "ISC files replaced (unchanged content is not rewritten)",
            m.files_written.clone(),
        );
        registry.register(
            "isc_file_failures",
            "ISC files not installed (write error or refused by the dhcpd check)",
            m.file_failures.clone(),
        );
        registry.register(
            "isc_reload_failures",
            "Failed runs of the --isc-reload command",
            m.isc_reload_failures.clone(),
        );
        registry.register(
            "kea_applies",
            "Configurations applied to Kea with config-set",
            m.kea_applies.clone(),
        );
        registry.register("kea_failures", "Failed Kea syncs by stage (get: socket or Kea down, test: config-test refused, set: config-set failed and the previous configuration was re-applied, restore: that re-apply failed too)", m.kea_failures.clone());
        registry.register(
            "reservations",
            "Host reservations in the rendered configuration",
            m.reservations.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a replaced ISC file.
    pub fn file_written(&self, file: &str) {
        self.files_written
            .get_or_create(&FileLabels { file: file.into() })
            .inc();
    }

    /// Counts an ISC file that could not be installed.
    pub fn file_failed(&self, file: &str) {
        self.file_failures
            .get_or_create(&FileLabels { file: file.into() })
            .inc();
    }

    /// Counts a failed Kea sync.
    pub fn kea_failed(&self, stage: &str) {
        self.kea_failures
            .get_or_create(&StageLabels {
                stage: stage.into(),
            })
            .inc();
    }

    /// Sets the reservation gauge of `kind` (`guest`, `hypervisor`).
    pub fn set_reservations(&self, kind: &str, n: usize) {
        self.reservations
            .get_or_create(&KindLabels { kind: kind.into() })
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The Prometheus text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
