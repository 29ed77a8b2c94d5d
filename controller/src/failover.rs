//! Finds a killed recorder well before AckWait: every capturing job's newest open session is probed on
//! its recorder's alive subject, and a session whose recorder stays unanswerable ("no responders": its
//! connection is gone) for `lost_after` gets its job queued again at once. A slow recorder (a probe that
//! times out) is never declared dead; it keeps AckWait's redelivery, as before. The recorder that takes
//! the job drops the old message's late redelivery by the same probe.

use crate::job_index::{Held, JobIndex};
use crate::metrics::Metrics;
use fleet_protocol::Transition;
use fleet_protocol::job::{EndReason, RecordJob};
use fleet_protocol::time::now_ms;
use fleet_protocol::transition::SessionEnd;
use fleet_runtime::bus::Bus;
use fleet_runtime::liveness::{self, Probe};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailoverConfig {
    /// How often each capturing job's recorder is probed.
    pub probe_interval_ms: u64,
    /// How long a recorder must stay unanswerable before its job is queued again: longer than a
    /// recorder's reconnect to another server of a NATS cluster (its subscriptions move with it).
    pub lost_after_ms: u64,
}

impl Default for FailoverConfig {
    fn default() -> Self {
        Self { probe_interval_ms: 250, lost_after_ms: 750 }
    }
}

/// The probing's memory, without I/O: since when each session has had no responders, and which were
/// declared lost already.
#[derive(Debug, Default)]
pub struct Suspects {
    silent_since_ms: HashMap<Held, u64>,
    declared: HashSet<Held>,
}

impl Suspects {
    /// Feeds one probe's result; true when `held` is lost now (once per session).
    pub fn observe(&mut self, held: &Held, probe: Probe, now_ms: u64, lost_after_ms: u64) -> bool {
        match probe {
            // Only an uninterrupted run of "no responders" counts: any answer, or none in time, starts over.
            Probe::Alive | Probe::Unknown => {
                self.silent_since_ms.remove(held);
                false
            }
            Probe::NoResponders => {
                let since = *self.silent_since_ms.entry(held.clone()).or_insert(now_ms);
                now_ms.saturating_sub(since) >= lost_after_ms && self.declared.insert(held.clone())
            }
        }
    }

    /// Forgets sessions no longer held (their job ended or moved on).
    pub fn keep_only(&mut self, held: &[Held]) {
        let current: HashSet<&Held> = held.iter().collect();
        self.silent_since_ms.retain(|h, _| current.contains(h));
        self.declared.retain(|h| current.contains(h));
    }
}

pub async fn run(bus: Bus, index: Arc<JobIndex>, config: FailoverConfig, metrics: Arc<Metrics>) {
    let mut suspects = Suspects::default();
    let interval = Duration::from_millis(config.probe_interval_ms.max(50));
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let Ok(held) = index.read(Duration::ZERO, |jobs| jobs.held()).await else { continue };
        suspects.keep_only(&held);
        let probes = held.iter().map(|h| liveness::probe(&bus, &h.node, h.job.as_str(), interval));
        let results = futures::future::join_all(probes).await;
        let now = now_ms();
        for (held, probe) in held.iter().zip(results) {
            if suspects.observe(held, probe, now, config.lost_after_ms) {
                requeue(&bus, held, &metrics).await;
            }
        }
    }
}

/// Queues the job again for any recorder, once per lost session (the message id de-duplicates what
/// several controllers send), after checking the record still shows that session holding it.
async fn requeue(bus: &Bus, lost: &Held, metrics: &Metrics) {
    let record = match bus.jobs().get(&lost.job).await {
        Ok(Some((record, _))) => record,
        _ => return,
    };
    let newest_of_its_capture = record.sessions.iter().rev().find(|s| s.replica == lost.replica);
    if !record.state.is_capturing() || !newest_of_its_capture.is_some_and(|s| s.id == lost.session && s.ended_at_ms.is_none()) {
        return;
    }
    tracing::warn!(job_id = %lost.job, session = %lost.session, node = lost.node, replica = lost.replica, "recorder gone (no responders): queueing the recording for another recorder");
    if record.request.replicas() > 1 {
        // A redundant job ends with its last running capture: a dead one must not keep it open.
        let end = SessionEnd {
            ended_at_ms: now_ms(),
            segments: record.sessions.iter().find(|s| s.id == lost.session).map_or(0, |s| s.segments),
            reason: EndReason::RecorderLost,
            failure: None,
            continues_elsewhere: true,
            handover_taker: false,
            media_stored: false,
        };
        if let Err(err) = bus.jobs().apply(&lost.job, None, Transition::EndSession { session: lost.session.clone(), end }).await {
            tracing::warn!(%err, job_id = %lost.job, "could not end the lost session");
        }
    }
    let message = RecordJob { job_id: lost.job.clone(), handover_from: None, replica: lost.replica };
    let message_id = format!("lost-{}-{}", lost.job, lost.session);
    match bus.enqueue(&bus.names().record_subject, &message_id, &message).await {
        Ok(()) => metrics.recorder_lost(),
        Err(err) => tracing::warn!(%err, job_id = %lost.job, "could not queue the recording again; AckWait's redelivery still will"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_protocol::SafeId;

    fn held() -> Held {
        Held { job: SafeId::parse("j1").unwrap(), session: SafeId::parse("s1").unwrap(), node: "rec-a".into(), replica: 0 }
    }

    #[test]
    fn lost_only_after_an_uninterrupted_silence() {
        let mut suspects = Suspects::default();
        let h = held();
        assert!(!suspects.observe(&h, Probe::NoResponders, 1000, 750));
        assert!(!suspects.observe(&h, Probe::NoResponders, 1500, 750));
        assert!(suspects.observe(&h, Probe::NoResponders, 1750, 750), "silent for 750 ms");
        assert!(!suspects.observe(&h, Probe::NoResponders, 2000, 750), "declared once");
    }

    #[test]
    fn a_slow_answer_or_a_reconnect_is_not_death() {
        let mut suspects = Suspects::default();
        let h = held();
        assert!(!suspects.observe(&h, Probe::NoResponders, 0, 750));
        // A recorder moving to another server of a cluster answers again: the silence starts over.
        assert!(!suspects.observe(&h, Probe::Alive, 500, 750));
        assert!(!suspects.observe(&h, Probe::NoResponders, 600, 750));
        assert!(!suspects.observe(&h, Probe::NoResponders, 1000, 750));
        // A CPU-starved recorder does not answer in time: never declared, however long.
        for t in (1100..60_000).step_by(250) {
            assert!(!suspects.observe(&h, Probe::Unknown, t, 750));
        }
    }

    #[test]
    fn a_session_that_moved_on_is_forgotten() {
        let mut suspects = Suspects::default();
        let h = held();
        suspects.observe(&h, Probe::NoResponders, 0, 750);
        assert!(suspects.observe(&h, Probe::NoResponders, 800, 750));
        suspects.keep_only(&[]);
        assert!(!suspects.observe(&h, Probe::NoResponders, 900, 750), "a fresh silence");
    }
}
