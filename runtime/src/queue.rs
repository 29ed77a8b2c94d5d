//! The pull loop both worker roles share: take one job at a time, only while a slot is free and the
//! machine's CPU allows, run each on its own task, and on shutdown stop taking jobs and wait for the
//! running ones.

use crate::cpu::CpuSampler;
use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

/// Tells whether more urgent work (live recordings) runs on this node.
pub type UrgentWork = std::sync::Arc<dyn Fn() -> bool + Send + Sync>;

/// Why this node should take no new job right now (e.g. its spool is over its limit), if it should not.
pub type Hold = std::sync::Arc<dyn Fn() -> Option<String> + Send + Sync>;

#[derive(Clone)]
pub struct Capacity {
    pub slots: u32,
    /// Take no job while whole-machine CPU use is above this (0..1)...
    pub max_cpu_load: f64,
    /// ...and, when set, only while this says urgent work runs here: a transcoder in mode `both` yields
    /// to live recordings, not to unrelated load that would otherwise starve it for good.
    pub cpu_limit_only_while: Option<UrgentWork>,
    pub hold: Option<Hold>,
}

impl Capacity {
    fn cpu_allows(&self, cpu_load: f64) -> bool {
        cpu_load <= self.max_cpu_load || self.cpu_limit_only_while.as_ref().is_some_and(|urgent| !urgent())
    }
}

/// `consumers`: the queues this worker takes from, asked in turn (a node serving several queues takes
/// from each as its slots allow).
pub async fn serve<F, Fut>(consumers: &[&PullConsumer], capacity: Capacity, mut shutdown: watch::Receiver<bool>, handle: F)
where
    F: Fn(jetstream::Message) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let cpu = CpuSampler::default();
    let mut cpu_load = cpu.sample();
    let mut jobs = tokio::task::JoinSet::new();
    let mut turn = 0usize;
    let mut held: Option<String> = None;
    // With several queues each is asked briefly, so no queue waits a whole second behind another.
    let expires = Duration::from_millis(1000 / consumers.len().max(1) as u64);
    while !*shutdown.borrow() {
        while jobs.try_join_next().is_some() {}
        let hold = capacity.hold.as_ref().and_then(|hold| hold());
        if hold != held {
            match &hold {
                Some(reason) => tracing::warn!(reason = %reason, "taking no new jobs"),
                None => tracing::info!("taking jobs again"),
            }
            held = hold;
        }
        if jobs.len() as u32 >= capacity.slots || !capacity.cpu_allows(cpu_load) || held.is_some() {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.changed() => {}
            }
            cpu_load = cpu.sample();
            continue;
        }
        // `batch` waits up to `expires` and returns as soon as a job arrives.
        let consumer = consumers[turn % consumers.len()];
        turn = turn.wrapping_add(1);
        let batch = consumer.batch().max_messages(1).expires(expires).messages().await;
        let mut batch = match batch {
            Ok(batch) => batch,
            Err(err) => {
                tracing::warn!(%err, "fetching jobs failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Some(message) = batch.next().await {
            match message {
                // A hold that began while the fetch waited: the job goes back for another node.
                Ok(message) if capacity.hold.as_ref().and_then(|hold| hold()).is_some() => {
                    tracing::info!(subject = %message.subject, "holding: job handed back to the queue");
                    if let Err(err) = message.ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1)))).await {
                        tracing::warn!(%err, "could not hand the job back; it returns after AckWait");
                    }
                }
                Ok(message) => {
                    jobs.spawn(handle(message));
                }
                Err(err) => tracing::warn!(%err, "job queue error"),
            }
        }
        // A just-started job moves the CPU reading: sample after taking, not before.
        cpu_load = cpu.sample();
    }
    tracing::info!(running = jobs.len(), "no longer taking jobs; waiting for running ones");
    while jobs.join_next().await.is_some() {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn cpu_limit_applies_only_while_urgent_work_runs() {
        let recording = Arc::new(AtomicBool::new(false));
        let flag = recording.clone();
        let capacity =
            Capacity { slots: 1, max_cpu_load: 0.8, cpu_limit_only_while: Some(Arc::new(move || flag.load(Ordering::SeqCst))), hold: None };
        assert!(capacity.cpu_allows(0.5));
        assert!(capacity.cpu_allows(0.99), "unrelated load must not starve the worker");
        recording.store(true, Ordering::SeqCst);
        assert!(!capacity.cpu_allows(0.99), "yield to live recordings");
        assert!(capacity.cpu_allows(0.5));
        let plain = Capacity { slots: 1, max_cpu_load: 0.8, cpu_limit_only_while: None, hold: None };
        assert!(!plain.cpu_allows(0.99));
    }
}
