//! Helpers shared by the benchmark binaries: order statistics and a description of the machine.

use serde_json::{Value, json};
use std::process::Command;

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    values[values.len() / 2]
}

pub fn summary(values: &mut [f64]) -> Value {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pick = |q: f64| values[((values.len() as f64 - 1.0) * q).round() as usize];
    json!({ "count": values.len(), "p50": pick(0.5), "p99": pick(0.99), "max": values[values.len() - 1], "min": values[0] })
}

pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let memory = std::fs::read_to_string("/proc/meminfo").unwrap_or_default().lines().next().unwrap_or_default().to_string();
    let version = |cmd: &str, arg: &str| {
        Command::new(cmd).arg(arg).output().ok().map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or_default().to_string())
    };
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "build_profile": if cfg!(debug_assertions) { "dev (dependencies at opt-level 1)" } else { "release" },
        "memory": memory,
        "gstreamer": version("gst-launch-1.0", "--version").unwrap_or_default(),
        "ffmpeg": version("ffmpeg", "-version").unwrap_or_default(),
        "date_unix": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs(),
    })
}
