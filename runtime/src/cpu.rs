//! CPU use for capacity decisions and the node registry: the container's, against its limit, where the
//! process runs in a cgroup v2 with a CPU quota (`cpu.max`, usage from `cpu.stat`), else the whole
//! machine's from `/proc/stat`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Where CPU use is read from, chosen once.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// The whole machine (`/proc/stat`).
    Machine,
    /// A cgroup v2 directory whose `cpu.max` sets a quota of this many cores.
    Cgroup { dir: PathBuf, cores: f64 },
}

/// One reading: busy and total time in the same unit (jiffies for the machine; for a cgroup its usage
/// and the wall time times its quota, in microseconds).
type Reading = (u64, u64);

pub struct CpuSampler {
    source: Source,
    started: Instant,
    last: Mutex<Option<Reading>>,
}

impl Default for CpuSampler {
    fn default() -> Self {
        let source = detect(Path::new("/proc/self/cgroup"), Path::new("/sys/fs/cgroup"));
        if let Source::Cgroup { dir, cores } = &source {
            tracing::info!(cgroup = %dir.display(), cores, "CPU use measured against the container's limit");
        }
        CpuSampler { source, started: Instant::now(), last: Mutex::new(None) }
    }
}

impl CpuSampler {
    /// Fraction of the CPU available here that was busy (0..1) since the previous call; 0 on the first
    /// call or off Linux.
    pub fn sample(&self) -> f64 {
        let reading = match &self.source {
            Source::Machine => read_proc_stat(),
            Source::Cgroup { dir, cores } => {
                let usage_us = std::fs::read_to_string(dir.join("cpu.stat")).ok().and_then(|text| usage_usec(&text));
                usage_us.map(|usage| (usage, (self.started.elapsed().as_micros() as f64 * cores) as u64))
            }
        };
        let Some(reading) = reading else { return 0.0 };
        let mut last = self.last.lock().expect("cpu sampler lock");
        let load = last.map_or(0.0, |previous| busy_fraction(previous, reading));
        *last = Some(reading);
        load
    }
}

pub fn cores() -> u32 {
    // The standard library counts a cgroup's CPU quota in.
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

/// The busy fraction between two readings.
fn busy_fraction((busy0, total0): Reading, (busy, total): Reading) -> f64 {
    if total <= total0 {
        return 0.0;
    }
    ((busy.saturating_sub(busy0)) as f64 / (total - total0) as f64).clamp(0.0, 1.0)
}

/// The cgroup v2 with a CPU quota this process runs in, else the machine. `proc_cgroup`: the
/// process's `/proc/self/cgroup`; `root`: where the cgroup v2 hierarchy is mounted.
fn detect(proc_cgroup: &Path, root: &Path) -> Source {
    let Some(relative) = std::fs::read_to_string(proc_cgroup).ok().and_then(|text| unified_path(&text)) else { return Source::Machine };
    // In a container the process's own cgroup is usually mounted as the root; on a host it lies below it.
    for dir in [root.join(relative.trim_start_matches('/')), root.to_path_buf()] {
        let quota = std::fs::read_to_string(dir.join("cpu.max")).ok().and_then(|text| quota_cores(&text));
        if let Some(cores) = quota
            && dir.join("cpu.stat").exists()
        {
            return Source::Cgroup { dir, cores };
        }
    }
    Source::Machine
}

/// The path of the unified (v2) hierarchy's entry (`0::/path`) in `/proc/self/cgroup`.
fn unified_path(proc_cgroup: &str) -> Option<String> {
    proc_cgroup.lines().find_map(|line| line.strip_prefix("0::")).map(str::to_string)
}

/// Cores a `cpu.max` allows (`"150000 100000"`: 1.5); `None` without a quota (`"max 100000"`).
fn quota_cores(cpu_max: &str) -> Option<f64> {
    let mut fields = cpu_max.split_whitespace();
    let quota: f64 = fields.next()?.parse().ok()?;
    let period: f64 = fields.next().unwrap_or("100000").parse().ok()?;
    (quota > 0.0 && period > 0.0).then_some(quota / period)
}

/// `usage_usec` from a cgroup's `cpu.stat`.
fn usage_usec(cpu_stat: &str) -> Option<u64> {
    cpu_stat.lines().find_map(|line| line.strip_prefix("usage_usec ")).and_then(|v| v.trim().parse().ok())
}

fn read_proc_stat() -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    let total: u64 = fields.iter().take(8).sum();
    Some((total - idle, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_files_are_read() {
        assert_eq!(quota_cores("150000 100000\n"), Some(1.5));
        assert_eq!(quota_cores("max 100000\n"), None);
        assert_eq!(quota_cores(""), None);
        assert_eq!(usage_usec("usage_usec 123456\nuser_usec 100\n"), Some(123456));
        assert_eq!(unified_path("0::/kubepods/burstable/pod1/abc\n"), Some("/kubepods/burstable/pod1/abc".into()));
        assert_eq!(unified_path("12:cpu,cpuacct:/docker/abc\n"), None, "cgroup v1 only: the machine is measured");
    }

    #[test]
    fn a_container_with_a_quota_is_measured_against_it() {
        let dir = tempfile::tempdir().unwrap();
        let proc_cgroup = dir.path().join("cgroup");
        std::fs::write(&proc_cgroup, "0::/\n").unwrap();
        let root = dir.path().join("fs");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("cpu.stat"), "usage_usec 5\n").unwrap();
        std::fs::write(root.join("cpu.max"), "max 100000\n").unwrap();
        assert_eq!(detect(&proc_cgroup, &root), Source::Machine, "no quota: the machine's load is what counts");
        std::fs::write(root.join("cpu.max"), "200000 100000\n").unwrap();
        assert_eq!(detect(&proc_cgroup, &root), Source::Cgroup { dir: root.clone(), cores: 2.0 });
        assert_eq!(detect(&dir.path().join("missing"), &root), Source::Machine);
    }

    #[test]
    fn the_busy_fraction_is_between_readings() {
        // 1.5 s of CPU in 1 s of wall time on a 2-core quota: 75 %.
        assert_eq!(busy_fraction((0, 0), (1_500_000, 2_000_000)), 0.75);
        assert_eq!(busy_fraction((10, 100), (10, 100)), 0.0, "no time passed");
        assert_eq!(busy_fraction((0, 0), (3_000_000, 2_000_000)), 1.0, "bursts over the quota count as full");
    }
}
