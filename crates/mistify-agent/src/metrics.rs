//! The agent's Prometheus metrics, kept by hand (a few counters and histograms) and
//! written in the text exposition format by `GET /metrics`. No per-guest series: queue
//! depths of guests are summarised in a histogram.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use mistify_http::metrics::escape_label as escape;
use mistify_types::JobStatus;

/// Upper bounds (seconds) of the sub-agent latency buckets.
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
/// Upper bounds of the per-guest queue depth buckets.
const DEPTH_BUCKETS: &[f64] = &[0.0, 1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0];

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, bounds: &[f64], value: f64) {
        if self.buckets.len() != bounds.len() {
            self.buckets = vec![0; bounds.len()];
        }
        for (i, b) in bounds.iter().enumerate() {
            if value <= *b {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum += value;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str, bounds: &[f64]) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in bounds.iter().enumerate() {
            let n = self.buckets.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count);
    }
}

#[derive(Default)]
struct Inner {
    jobs: BTreeMap<&'static str, u64>,
    /// service → method → latency: looked up by `&str`, allocating only the first time.
    rpc: BTreeMap<String, BTreeMap<String, Histogram>>,
    rpc_errors: BTreeMap<(String, String), u64>,
}

/// The metrics registry of one agent.
#[derive(Default)]
pub struct Metrics {
    requests: mistify_http::metrics::RequestCounts,
    inner: Mutex<Inner>,
}

impl Metrics {
    /// One HTTP request on `route` (the route template, never the raw path).
    pub fn request(&self, method: &str, route: &str, status: u16) {
        self.requests.record(method, route, status);
    }

    pub fn job_finished(&self, status: JobStatus) {
        if let Ok(mut m) = self.inner.lock() {
            *m.jobs.entry(status.as_str()).or_default() += 1;
        }
    }

    pub fn rpc_latency(&self, service: &str, method: &str, elapsed: Duration, ok: bool) {
        if let Ok(mut m) = self.inner.lock() {
            if !ok {
                *m.rpc_errors
                    .entry((service.to_string(), method.to_string()))
                    .or_default() += 1;
            }
            if !m.rpc.contains_key(service) {
                m.rpc.insert(service.to_string(), BTreeMap::new());
            }
            if let Some(methods) = m.rpc.get_mut(service) {
                if !methods.contains_key(method) {
                    methods.insert(method.to_string(), Histogram::default());
                }
                if let Some(h) = methods.get_mut(method) {
                    h.observe(LATENCY_BUCKETS, elapsed.as_secs_f64());
                }
            }
        }
    }

    /// The exposition text; `depths` are the queue depths of every runner.
    pub fn render(&self, depths: &[(String, usize)], guests: usize) -> String {
        let mut out = String::new();
        let Ok(m) = self.inner.lock() else {
            return out;
        };
        self.requests.write_prometheus(
            &mut out,
            "mistify_agent_http_requests_total",
            "HTTP requests by method, route and status.",
        );
        out.push_str("# HELP mistify_agent_jobs_finished_total Async jobs finished, by outcome.\n");
        out.push_str("# TYPE mistify_agent_jobs_finished_total counter\n");
        for status in ["Complete", "Error"] {
            let n = m.jobs.get(status).copied().unwrap_or(0);
            let _ = writeln!(
                out,
                "mistify_agent_jobs_finished_total{{status=\"{status}\"}} {n}"
            );
        }
        let total: usize = depths.iter().map(|(_, d)| d).sum();
        let agent = depths
            .iter()
            .find(|(id, _)| id == crate::runner::AGENT_RUNNER)
            .map(|(_, d)| *d)
            .unwrap_or(0);
        out.push_str("# HELP mistify_agent_queue_depth Async jobs waiting in all queues.\n");
        out.push_str("# TYPE mistify_agent_queue_depth gauge\n");
        let _ = writeln!(out, "mistify_agent_queue_depth {total}");
        out.push_str("# HELP mistify_agent_runner_queue_depth Async jobs waiting on the agent (image) runner.\n");
        out.push_str("# TYPE mistify_agent_runner_queue_depth gauge\n");
        let _ = writeln!(out, "mistify_agent_runner_queue_depth {agent}");
        let mut hist = Histogram::default();
        for (id, d) in depths {
            if id != crate::runner::AGENT_RUNNER {
                hist.observe(DEPTH_BUCKETS, *d as f64);
            }
        }
        out.push_str(
            "# HELP mistify_agent_guest_queue_depth Queue depths of the guests' runners.\n",
        );
        out.push_str("# TYPE mistify_agent_guest_queue_depth histogram\n");
        hist.write(
            &mut out,
            "mistify_agent_guest_queue_depth",
            "",
            DEPTH_BUCKETS,
        );
        out.push_str("# HELP mistify_agent_guests Guests stored on this hypervisor.\n");
        out.push_str("# TYPE mistify_agent_guests gauge\n");
        let _ = writeln!(out, "mistify_agent_guests {guests}");
        out.push_str("# HELP mistify_agent_subagent_call_seconds Sub-agent call latency by service and method.\n");
        out.push_str("# TYPE mistify_agent_subagent_call_seconds histogram\n");
        for (service, method, h) in m
            .rpc
            .iter()
            .flat_map(|(s, methods)| methods.iter().map(move |(m, h)| (s, m, h)))
        {
            let labels = format!(
                "service=\"{}\",method=\"{}\"",
                escape(service),
                escape(method)
            );
            h.write(
                &mut out,
                "mistify_agent_subagent_call_seconds",
                &labels,
                LATENCY_BUCKETS,
            );
        }
        out.push_str("# HELP mistify_agent_subagent_call_errors_total Failed sub-agent calls by service and method.\n");
        out.push_str("# TYPE mistify_agent_subagent_call_errors_total counter\n");
        for ((service, method), n) in &m.rpc_errors {
            let _ = writeln!(
                out,
                "mistify_agent_subagent_call_errors_total{{service=\"{}\",method=\"{}\"}} {n}",
                escape(service),
                escape(method)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Metrics;

    #[test]
    fn unknown_methods_share_one_series() {
        let metrics = Metrics::default();
        for i in 0..100 {
            metrics.request(&format!("X{i}"), "/guests", 405);
        }
        metrics.request("GET", "/guests", 200);
        let text = metrics.render(&[], 0);
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("mistify_agent_http_requests_total{"))
            .collect();
        assert_eq!(
            series,
            [
                "mistify_agent_http_requests_total{method=\"GET\",route=\"/guests\",status=\"200\"} 1",
                "mistify_agent_http_requests_total{method=\"OTHER\",route=\"/guests\",status=\"405\"} 100",
            ]
        );
    }
}
