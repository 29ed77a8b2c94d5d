//! Old job records go: a record that ended (complete, failed, aborted) and has not changed for
//! `keep_ended_days` is purged from the job bucket, history and all. The media in storage is not
//! touched (its lifetime is the object store's lifecycle rules). Every controller sweeps; a purge is
//! conditional on the revision the index saw, so a record changed meanwhile stays.

use crate::job_index::JobIndex;
use fleet_protocol::time::now_ms;
use fleet_runtime::bus::Bus;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days an ended job's record is kept after its last change; 0 keeps records for ever.
    pub keep_ended_days: f64,
    /// How often the sweep runs.
    pub sweep_interval_s: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { keep_ended_days: 90.0, sweep_interval_s: 3600 }
    }
}

impl RetentionConfig {
    /// Records that ended and stayed unchanged before this are due (none when retention is off).
    pub fn cutoff_ms(&self, now_ms: u64) -> Option<u64> {
        (self.keep_ended_days > 0.0).then(|| now_ms.saturating_sub((self.keep_ended_days * 86_400_000.0) as u64))
    }
}

pub async fn run(bus: Bus, index: Arc<JobIndex>, config: RetentionConfig) {
    let mut ticks = tokio::time::interval(Duration::from_secs(config.sweep_interval_s.max(1)));
    loop {
        ticks.tick().await;
        let Some(cutoff) = config.cutoff_ms(now_ms()) else { return };
        let Ok(due) = index.read(Duration::from_secs(60), |jobs| jobs.ended_before(cutoff)).await else { continue };
        let mut purged = 0usize;
        for (id, revision) in due {
            match bus.jobs().purge_if_unchanged(&id, revision).await {
                Ok(()) => purged += 1,
                Err(err) => tracing::debug!(%err, job_id = %id, "record not purged (changed meanwhile, or NATS trouble)"),
            }
        }
        if purged > 0 {
            tracing::info!(purged, keep_ended_days = config.keep_ended_days, "old job records purged");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cutoff_is_the_kept_days_back_and_zero_keeps_all() {
        let day = 86_400_000;
        assert_eq!(RetentionConfig { keep_ended_days: 2.0, sweep_interval_s: 1 }.cutoff_ms(10 * day), Some(8 * day));
        assert_eq!(RetentionConfig { keep_ended_days: 0.0, sweep_interval_s: 1 }.cutoff_ms(10 * day), None);
    }
}
