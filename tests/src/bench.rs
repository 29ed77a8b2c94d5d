//! Helpers shared by the benchmark binaries: order statistics and a description of the machine.

use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// The value of a bench's one option (`--<flag> VALUE`), or `default` without arguments; any other
/// argument is a usage error.
pub fn single_option<T: std::str::FromStr>(flag: &str, default: T) -> T {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => default,
        [given, value] if given.as_str() == format!("--{flag}") => value.parse().unwrap_or_else(|_| panic!("--{flag}: not a valid value: {value}")),
        _ => panic!("usage: [--{flag} VALUE]"),
    }
}

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

/// A `kB` field of `/proc/<pid>/status` (e.g. `VmRSS:`, `VmHWM:`); 0 once the process is gone.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix(field)).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

/// Runs a command to its end; returns its wall time in seconds and its peak RSS in MB (the kernel's
/// high-water mark, read every 50 ms while it runs). Panics when the command fails.
pub fn run_measured(command: &mut Command) -> (f64, f64) {
    let started = Instant::now();
    let mut child = command.spawn().expect("command starts");
    let pid = child.id();
    let mut peak_kb = 0;
    loop {
        peak_kb = peak_kb.max(status_kb(pid, "VmHWM:"));
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{command:?} failed: {status}");
            return (started.elapsed().as_secs_f64(), peak_kb as f64 / 1024.0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Bytes in the files under `dir`.
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .filter_map(Result::ok)
        .map(|e| {
            let path = e.path();
            if path.is_dir() { dir_size(&path) } else { e.metadata().map(|m| m.len()).unwrap_or(0) }
        })
        .sum()
}
