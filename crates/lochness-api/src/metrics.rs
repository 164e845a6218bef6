//! `GET /metrics`: requests by route and status, jobs queued by action (cguestd), and
//! the depth of each job queue (its entries in etcd, counted with a count-only read) —
//! in Prometheus' text format when the client asks for it (`Accept: text/plain` or
//! OpenMetrics, what scrapers send), else as one JSON object (what the originals
//! answered: a JSON snapshot).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

use lochness::{Context, JobAction, Queue};
use mistify_http::metrics::{escape_label, RequestCounts};
use serde_json::{json, Map, Value};

/// The counters of one daemon.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: RequestCounts,
    jobs: Mutex<BTreeMap<&'static str, u64>>,
}

/// The queues, by the names the metrics use.
const QUEUES: [(&str, Queue); 2] = [("create", Queue::Create), ("work", Queue::Work)];

impl Metrics {
    /// One request on `route` (its template).
    pub fn request(&self, method: &str, route: &str, status: u16) {
        self.requests.record(method, route, status);
    }

    /// One job queued.
    pub fn job_queued(&self, action: JobAction) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        *jobs.entry(action.as_str()).or_default() += 1;
    }

    fn jobs(&self) -> BTreeMap<&'static str, u64> {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The queue depths, or why they could not be read.
    async fn depths(ctx: &Context) -> Result<Vec<(&'static str, u64)>, lochness::Error> {
        let mut out = Vec::new();
        for (name, queue) in QUEUES {
            out.push((name, ctx.count_keys(queue.prefix()).await?));
        }
        Ok(out)
    }

    /// The text exposition format (version 0.0.4).
    pub async fn prometheus(&self, ctx: &Context) -> String {
        let mut out = String::new();
        self.requests.write_prometheus(
            &mut out,
            "lochness_api_http_requests_total",
            "HTTP requests by method, route and status.",
        );
        out.push_str("# HELP lochness_api_jobs_queued_total Jobs this daemon queued, by action.\n");
        out.push_str("# TYPE lochness_api_jobs_queued_total counter\n");
        for (action, n) in self.jobs() {
            let _ = writeln!(
                out,
                "lochness_api_jobs_queued_total{{action=\"{}\"}} {n}",
                escape_label(action)
            );
        }
        match Metrics::depths(ctx).await {
            Ok(depths) => {
                out.push_str(
                    "# HELP lochness_queue_depth Jobs waiting in each queue of the cluster.\n",
                );
                out.push_str("# TYPE lochness_queue_depth gauge\n");
                for (queue, n) in depths {
                    let _ = writeln!(out, "lochness_queue_depth{{queue=\"{queue}\"}} {n}");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot count the queues for /metrics"),
        }
        out
    }

    /// The JSON object: `{"requests": {"GET /guests": {"200": 3}}, "jobs_queued":
    /// {"reboot": 1}, "queue_depth": {"create": 0, "work": 1}}` (`queue_depth` is `null`
    /// when etcd cannot be read).
    pub async fn json(&self, ctx: &Context) -> Value {
        let mut requests = Map::new();
        for c in self.requests.snapshot() {
            let entry = requests
                .entry(format!("{} {}", c.method, c.route))
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Object(by_status) = entry {
                by_status.insert(c.status.to_string(), c.count.into());
            }
        }
        let jobs: Map<String, Value> = self
            .jobs()
            .into_iter()
            .map(|(a, n)| (a.to_string(), n.into()))
            .collect();
        let depth = match Metrics::depths(ctx).await {
            Ok(depths) => Value::Object(
                depths
                    .into_iter()
                    .map(|(q, n)| (q.to_string(), n.into()))
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the queues for /metrics");
                Value::Null
            }
        };
        json!({ "requests": requests, "jobs_queued": jobs, "queue_depth": depth })
    }
}
