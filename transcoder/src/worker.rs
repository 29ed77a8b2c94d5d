//! The transcoder's job loop: fetch only while a slot is free and the CPU allows, heartbeat into the
//! node registry, and drain running jobs on shutdown.

use crate::config::TranscoderConfig;
use crate::error::TranscodeError;
use crate::job;
use async_nats::jetstream::consumer::PullConsumer;
use fleet_pipelines::encoders;
use fleet_protocol::bus::Bus;
use fleet_protocol::cpu::{CpuSampler, cores};
use fleet_protocol::job::GpuPolicy;
use fleet_protocol::job_requests::JobRequests;
use fleet_protocol::node::{NodeInfo, NodeRole};
use fleet_protocol::queue::{self, Capacity, UrgentWork};
use fleet_protocol::storage::Storage;
use fleet_protocol::time::now_ms;
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct WorkerIdentity {
    pub node_id: String,
    /// `both` or `transcoder-only`, as advertised in the registry.
    pub mode: String,
}

pub struct Transcoder {
    pub(crate) bus: Bus,
    /// Job record changes, asked of the controller.
    pub(crate) jobs: JobRequests,
    pub(crate) storage: Storage,
    pub(crate) config: TranscoderConfig,
    pub(crate) identity: WorkerIdentity,
    /// Working encoders, best first; the first is used.
    pub(crate) encoders: Vec<String>,
    running: Mutex<BTreeSet<String>>,
    started_at_ms: u64,
    yield_to: Option<UrgentWork>,
}

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("no H.264 encoder works on this machine (tried {0:?})")]
    NoEncoder(Vec<&'static str>),
    #[error("configured encoder {0} does not work on this machine (working: {1:?})")]
    EncoderUnavailable(String, Vec<String>),
    #[error("pipelines: {0}")]
    Pipelines(#[from] fleet_pipelines::PipelineError),
}

impl Transcoder {
    /// `yield_to`: in mode `both`, tells whether live recordings run on this node (the CPU limit then applies).
    pub async fn new(
        bus: Bus,
        jobs: JobRequests,
        storage: Storage,
        config: TranscoderConfig,
        identity: WorkerIdentity,
        yield_to: Option<UrgentWork>,
    ) -> Result<Arc<Self>, SetupError> {
        fleet_pipelines::init()?;
        let working = tokio::task::spawn_blocking(encoders::probe).await.unwrap_or_default();
        let encoders = match config.encoder.as_str() {
            "auto" if working.is_empty() => return Err(SetupError::NoEncoder(encoders::PREFERENCE.to_vec())),
            "auto" => working,
            wanted if working.iter().any(|w| w == wanted) => {
                let mut ordered = vec![wanted.to_string()];
                ordered.extend(working.into_iter().filter(|w| w != wanted));
                ordered
            }
            wanted => return Err(SetupError::EncoderUnavailable(wanted.to_string(), working)),
        };
        tracing::info!(node_id = %identity.node_id, ?encoders, "transcoder ready");
        Ok(Arc::new(Self { bus, jobs, storage, config, identity, encoders, running: Mutex::new(BTreeSet::new()), started_at_ms: now_ms(), yield_to }))
    }

    pub fn encoders(&self) -> &[String] {
        &self.encoders
    }

    /// The encoder a job's GPU policy asks for, among this node's working ones (best first).
    pub(crate) fn encoder_for(&self, policy: GpuPolicy) -> Result<String, TranscodeError> {
        choose_encoder(&self.encoders, policy)
    }

    /// The transcode queues this node can serve: every node the plain one; nodes with a GPU encoder the
    /// GPU one; nodes with the shared recordings root the file jobs.
    fn queues(&self) -> Vec<&PullConsumer> {
        let mut queues = vec![&self.bus.transcode_consumer];
        if self.encoders.iter().any(|e| encoders::is_hardware(e)) {
            queues.push(&self.bus.transcode_gpu_consumer);
        }
        if self.config.shared_files_root.is_some() {
            queues.push(&self.bus.transcode_files_consumer);
        }
        queues
    }

    fn node_info(&self, cpu_load: f64, draining: bool) -> NodeInfo {
        NodeInfo {
            id: self.identity.node_id.clone(),
            role: NodeRole::Transcoder,
            mode: self.identity.mode.clone(),
            version: fleet_protocol::VERSION.into(),
            slots: self.config.slots,
            running_jobs: self.running.lock().unwrap().iter().cloned().collect(),
            cpu_load,
            cores: cores(),
            encoders: self.encoders.clone(),
            draining,
            spool_bytes: 0,
            holding: None,
            started_at_ms: self.started_at_ms,
            updated_at_ms: now_ms(),
        }
    }

    /// Serves transcode jobs until `shutdown` turns true, then lets running jobs finish.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop(shutdown.clone()));
        let capacity =
            Capacity { slots: self.config.slots, max_cpu_load: self.config.max_cpu_load, cpu_limit_only_while: self.yield_to.clone(), hold: None };
        let worker = self.clone();
        queue::serve(&self.queues(), capacity, shutdown, move |message| {
            let worker = worker.clone();
            async move { job::handle_delivery(&worker, message).await }
        })
        .await;
        heartbeat.abort();
        self.bus.remove_node(&self.identity.node_id).await;
    }

    async fn heartbeat_loop(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let sampler = CpuSampler::default();
        loop {
            let info = self.node_info(sampler.sample(), *shutdown.borrow());
            if let Err(err) = self.bus.heartbeat(&info).await {
                tracing::warn!(%err, "heartbeat failed");
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    pub(crate) fn claim(&self, job_id: &str) -> bool {
        self.running.lock().unwrap().insert(job_id.to_string())
    }

    pub(crate) fn release(&self, job_id: &str) {
        self.running.lock().unwrap().remove(job_id);
    }
}

pub(crate) fn choose_encoder(working: &[String], policy: GpuPolicy) -> Result<String, TranscodeError> {
    let pick = |hardware: bool| working.iter().find(|e| encoders::is_hardware(e) == hardware).cloned();
    let missing = match policy {
        GpuPolicy::Any => working.first().cloned().ok_or_else(|| "no working encoder".to_string()),
        GpuPolicy::Require => pick(true).ok_or_else(|| format!("the job requires a GPU encoder; this node has {working:?}")),
        GpuPolicy::Forbid => pick(false).ok_or_else(|| format!("the job forbids GPU encoders; this node has only {working:?}")),
    };
    missing.map_err(TranscodeError::NoEncoder)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_policy_picks_the_encoder() {
        let gpu_node: Vec<String> = ["nvh264enc", "x264enc"].map(String::from).to_vec();
        let cpu_node: Vec<String> = vec!["x264enc".into()];
        assert_eq!(choose_encoder(&gpu_node, GpuPolicy::Any).unwrap(), "nvh264enc");
        assert_eq!(choose_encoder(&gpu_node, GpuPolicy::Require).unwrap(), "nvh264enc");
        assert_eq!(choose_encoder(&gpu_node, GpuPolicy::Forbid).unwrap(), "x264enc");
        assert_eq!(choose_encoder(&cpu_node, GpuPolicy::Any).unwrap(), "x264enc");
        assert!(choose_encoder(&cpu_node, GpuPolicy::Require).unwrap_err().to_string().contains("requires a GPU"));
        assert!(choose_encoder(&["vah264enc".to_string()], GpuPolicy::Forbid).is_err());
    }
}
