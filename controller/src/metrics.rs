//! Prometheus metrics in the text exposition format. Counters live here; gauges are read at scrape time.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    http: Mutex<BTreeMap<(String, u16), u64>>,
    counters: Mutex<BTreeMap<&'static str, u64>>,
    transitions: Mutex<BTreeMap<String, u64>>,
}

/// A gauge to render: name, help, and its values by label set.
pub type Gauge<'a> = (&'a str, &'a str, Vec<(String, f64)>);

impl Metrics {
    pub fn http_request(&self, route: &str, status: u16) {
        *self.http.lock().unwrap().entry((route.to_string(), status)).or_default() += 1;
    }

    pub fn inc(&self, name: &'static str) {
        *self.counters.lock().unwrap().entry(name).or_default() += 1;
    }

    pub fn state_transition(&self, state: &str) {
        *self.transitions.lock().unwrap().entry(state.to_string()).or_default() += 1;
    }

    /// Renders counters plus the given gauges.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        out.push_str("# HELP fleet_http_requests_total API requests by route and status.\n# TYPE fleet_http_requests_total counter\n");
        for ((route, status), n) in self.http.lock().unwrap().iter() {
            let _ = writeln!(out, "fleet_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}");
        }
        for (name, n) in self.counters.lock().unwrap().iter() {
            let _ = writeln!(out, "# TYPE {name} counter\n{name} {n}");
        }
        out.push_str("# HELP fleet_job_transitions_total Job state changes seen by this controller.\n# TYPE fleet_job_transitions_total counter\n");
        for (state, n) in self.transitions.lock().unwrap().iter() {
            let _ = writeln!(out, "fleet_job_transitions_total{{state=\"{state}\"}} {n}");
        }
        for (name, help, values) in gauges {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, value) in values {
                let _ = writeln!(out, "{name}{labels} {value}");
            }
        }
        out
    }
}
