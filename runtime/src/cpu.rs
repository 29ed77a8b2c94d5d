//! Whole-machine CPU use from `/proc/stat`, for capacity decisions and the node registry.

use std::sync::Mutex;

#[derive(Default)]
pub struct CpuSampler {
    last: Mutex<Option<(u64, u64)>>,
}

impl CpuSampler {
    /// Fraction of CPU time busy (0..1) since the previous call; 0 on the first call or off Linux.
    pub fn sample(&self) -> f64 {
        let Some((busy, total)) = read_proc_stat() else { return 0.0 };
        let mut last = self.last.lock().expect("cpu sampler lock");
        let load = match *last {
            Some((busy0, total0)) if total > total0 => (busy - busy0.min(busy)) as f64 / (total - total0) as f64,
            _ => 0.0,
        };
        *last = Some((busy, total));
        load.clamp(0.0, 1.0)
    }
}

pub fn cores() -> u32 {
    std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1)
}

fn read_proc_stat() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line.split_whitespace().filter_map(|f| f.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    let total: u64 = fields.iter().take(8).sum();
    Some((total - idle, total))
}
