//! The daemons' metrics (served at `GET /metrics` by [`crate::server`]): jobs by action
//! and outcome, how long each step took, the queues' depth and the claims this process
//! holds — as Prometheus text ([`Metrics::encode`]) or as one JSON object
//! ([`Metrics::snapshot`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use lochness::{JobAction, Queue};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// How a step of a job ended, as counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The placer placed the guest (the job went on to the workers).
    Placed,
    /// The placer found no place (the job is `error`).
    Unplaceable,
    /// The image is fetched; the job goes on with `create`.
    Fetched,
    /// The job is `done`.
    Done,
    /// The job is `error`.
    Failed,
    /// The process gave the job back (its lease was lost, or etcd failed); another
    /// process resumes it.
    GivenBack,
}

impl Outcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Placed => "placed",
            Outcome::Unplaceable => "unplaceable",
            Outcome::Fetched => "fetched",
            Outcome::Done => "done",
            Outcome::Failed => "error",
            Outcome::GivenBack => "given_back",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    action: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ActionLabels {
    action: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

/// The metrics of one daemon.
pub struct Metrics {
    registry: Registry,
    jobs: Family<JobLabels, Counter>,
    steps: Family<ActionLabels, Histogram, fn() -> Histogram>,
    depth: Family<QueueLabels, Gauge>,
    claims: Gauge,
    /// The same figures for the JSON answer (the families cannot be listed).
    figures: Mutex<Figures>,
    /// Serialises encoding (the registry encodes under shared references already; this
    /// keeps one scrape's figures together).
    encoding: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn step_histogram() -> Histogram {
    // 10 ms … ~10 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 17))
}

fn queue_name(queue: Queue) -> &'static str {
    match queue {
        Queue::Create => "create",
        Queue::Work => "work",
    }
}

/// The figures of [`Metrics::snapshot`].
#[derive(Debug, Default)]
struct Figures {
    jobs: BTreeMap<&'static str, BTreeMap<&'static str, u64>>,
    depth: BTreeMap<&'static str, usize>,
    claims: usize,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric at zero.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("lochness");
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "jobs",
            "Job steps finished by this process, by the job's action and the outcome",
            jobs.clone(),
        );
        let steps = Family::<ActionLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            step_histogram,
        );
        registry.register(
            "step_duration_seconds",
            "How long a step of a job took in this process (claim to outcome), by action",
            steps.clone(),
        );
        let depth = Family::<QueueLabels, Gauge>::default();
        registry.register(
            "queue_depth",
            "Jobs waiting in each queue (claimed or not)",
            depth.clone(),
        );
        let claims = Gauge::default();
        registry.register(
            "claims_held",
            "Jobs this process holds a claim on",
            claims.clone(),
        );
        Metrics {
            registry,
            jobs,
            steps,
            depth,
            claims,
            figures: Mutex::new(Figures::default()),
            encoding: Mutex::new(()),
        }
    }

    /// Counts a step of a job of `action` that ended with `outcome` after `took`.
    pub fn record(&self, action: JobAction, outcome: Outcome, took: Duration) {
        self.jobs
            .get_or_create(&JobLabels {
                action: action.as_str().to_string(),
                outcome: outcome.as_str().to_string(),
            })
            .inc();
        self.steps
            .get_or_create(&ActionLabels {
                action: action.as_str().to_string(),
            })
            .observe(took.as_secs_f64());
        *self
            .figures()
            .jobs
            .entry(action.as_str())
            .or_default()
            .entry(outcome.as_str())
            .or_default() += 1;
    }

    fn figures(&self) -> std::sync::MutexGuard<'_, Figures> {
        self.figures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the depth of `queue`.
    pub fn set_depth(&self, queue: Queue, jobs: usize) {
        self.depth
            .get_or_create(&QueueLabels {
                queue: queue_name(queue).to_string(),
            })
            .set(i64::try_from(jobs).unwrap_or(i64::MAX));
        self.figures().depth.insert(queue_name(queue), jobs);
    }

    /// Sets the number of claims held.
    pub fn set_claims(&self, held: usize) {
        self.claims.set(i64::try_from(held).unwrap_or(i64::MAX));
        self.figures().claims = held;
    }

    /// The figures as one JSON object, for clients that do not ask for Prometheus text:
    /// `{"jobs":{"<action>":{"<outcome>":n}},"queue_depth":{"create":n,"work":n},
    /// "claims_held":n}`.
    pub fn snapshot(&self) -> serde_json::Value {
        let f = self.figures();
        serde_json::json!({
            "jobs": f.jobs,
            "queue_depth": f.depth,
            "claims_held": f.claims,
        })
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
        m.record(JobAction::Create, Outcome::Done, Duration::from_millis(30));
        m.record(JobAction::Create, Outcome::Done, Duration::from_millis(30));
        m.record(
            JobAction::SelectHypervisor,
            Outcome::Unplaceable,
            Duration::ZERO,
        );
        m.set_depth(Queue::Work, 3);
        m.set_claims(2);
        let text = m.encode();
        assert!(text.contains("# TYPE lochness_jobs counter"), "{text}");
        assert!(
            text.contains(r#"lochness_jobs_total{action="create",outcome="done"} 2"#),
            "{text}"
        );
        assert!(text.contains(
            r#"lochness_jobs_total{action="select-hypervisor",outcome="unplaceable"} 1"#
        ));
        assert!(text.contains(r#"lochness_step_duration_seconds_count{action="create"} 2"#));
        assert!(text.contains(r#"lochness_queue_depth{queue="work"} 3"#));
        assert!(text.contains("lochness_claims_held 2"));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(
            m.snapshot(),
            serde_json::json!({
                "jobs": {"create": {"done": 2}, "select-hypervisor": {"unplaceable": 1}},
                "queue_depth": {"work": 3},
                "claims_held": 2,
            })
        );
    }
}
