//! Request counters every daemon keeps for `GET /metrics`: requests by method, route
//! template and status, written in the Prometheus text format or listed for a JSON
//! answer. Label values are escaped; methods outside RFC 9110 (and PATCH) share one
//! `OTHER` series, so clients cannot grow the set of series without bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// A label value as the text format wants it (`\`, `"` and newlines escaped).
pub fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `method` as a label value: the methods of RFC 9110 and PATCH as they are, any other
/// `OTHER`.
pub fn method_label(method: &str) -> &str {
    match method {
        "GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "CONNECT" | "OPTIONS" | "TRACE" | "PATCH" => {
            method
        }
        _ => "OTHER",
    }
}

/// The counts of one route: (method, status, count).
type RouteCounts = Vec<(String, u16, u64)>;

/// Requests by route template, method and status.
#[derive(Debug, Default)]
pub struct RequestCounts {
    /// route → its counts: looked up without allocating on the hot path.
    counts: Mutex<BTreeMap<String, RouteCounts>>,
}

/// One series of [`RequestCounts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestCount {
    /// The route template (`/guests/{id}`), or what the daemon names unmatched paths.
    pub route: String,
    /// The method label ([`method_label`]).
    pub method: String,
    /// The status answered.
    pub status: u16,
    /// How many requests.
    pub count: u64,
}

impl RequestCounts {
    /// One request on `route` (the route template, never the raw path).
    pub fn record(&self, method: &str, route: &str, status: u16) {
        let method = method_label(method);
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if !m.contains_key(route) {
            m.insert(route.to_string(), Vec::new());
        }
        if let Some(counts) = m.get_mut(route) {
            match counts
                .iter_mut()
                .find(|(m, s, _)| m == method && *s == status)
            {
                Some((_, _, n)) => *n += 1,
                None => counts.push((method.to_string(), status, 1)),
            }
        }
    }

    /// Every series, by route, then method and status.
    pub fn snapshot(&self) -> Vec<RequestCount> {
        let m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for (route, counts) in m.iter() {
            let mut counts = counts.clone();
            counts.sort();
            out.extend(
                counts
                    .into_iter()
                    .map(|(method, status, count)| RequestCount {
                        route: route.clone(),
                        method,
                        status,
                        count,
                    }),
            );
        }
        out
    }

    /// The counter `name` (with its HELP and TYPE lines) in the text format, with the
    /// labels `method`, `route` and `status`.
    pub fn write_prometheus(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        for c in self.snapshot() {
            let _ = writeln!(
                out,
                "{name}{{method=\"{}\",route=\"{}\",status=\"{}\"}} {}",
                escape_label(&c.method),
                escape_label(&c.route),
                c.status,
                c.count
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_series() {
        let counts = RequestCounts::default();
        for i in 0..100 {
            counts.record(&format!("X{i}"), "/guests", 405);
        }
        counts.record("GET", "/guests", 200);
        let mut text = String::new();
        counts.write_prometheus(&mut text, "x_requests_total", "Requests.");
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("x_requests_total{"))
            .collect();
        assert_eq!(
            series,
            [
                "x_requests_total{method=\"GET\",route=\"/guests\",status=\"200\"} 1",
                "x_requests_total{method=\"OTHER\",route=\"/guests\",status=\"405\"} 100",
            ]
        );
        assert_eq!(counts.snapshot().len(), 2);
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
