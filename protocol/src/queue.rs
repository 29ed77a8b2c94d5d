//! The pull loop both worker roles share: take one job at a time, only while a slot is free and the
//! machine's CPU allows, run each on its own task, and on shutdown stop taking jobs and wait for the
//! running ones.

use crate::cpu::CpuSampler;
use async_nats::jetstream::{self, consumer::PullConsumer};
use futures::StreamExt;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    pub slots: u32,
    /// Take no job while whole-machine CPU use is above this (0..1).
    pub max_cpu_load: f64,
}

pub async fn serve<F, Fut>(consumer: &PullConsumer, capacity: Capacity, mut shutdown: watch::Receiver<bool>, handle: F)
where
    F: Fn(jetstream::Message) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let cpu = CpuSampler::default();
    let mut cpu_load = cpu.sample();
    let mut jobs = tokio::task::JoinSet::new();
    while !*shutdown.borrow() {
        while jobs.try_join_next().is_some() {}
        if jobs.len() as u32 >= capacity.slots || cpu_load > capacity.max_cpu_load {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = shutdown.changed() => {}
            }
            cpu_load = cpu.sample();
            continue;
        }
        // `batch` waits up to `expires` and returns as soon as a job arrives.
        let batch = consumer.batch().max_messages(1).expires(Duration::from_secs(1)).messages().await;
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
