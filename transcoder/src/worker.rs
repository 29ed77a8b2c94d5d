//! The transcoder's job loop: fetch only while a slot is free and the CPU allows, heartbeat into the
//! node registry, and drain running jobs on shutdown.

use crate::config::TranscoderConfig;
use crate::context::{JobContext, Running};
use crate::delivery;
use crate::metrics::TranscoderMetrics;
use async_nats::jetstream::consumer::PullConsumer;
use fleet_pipelines::encoders;
use fleet_protocol::node::{NodeInfo, NodeRole};
use fleet_protocol::time::now_ms;
use fleet_runtime::bus::Bus;
use fleet_runtime::cpu::{CpuSampler, cores};
use fleet_runtime::job_client::JobRequests;
use fleet_runtime::queue::{self, Capacity, UrgentWork};
use fleet_runtime::storage::Storage;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct WorkerIdentity {
    pub node_id: String,
    /// `both` or `transcoder-only`, as advertised in the registry.
    pub mode: String,
}

pub struct Transcoder {
    /// All that the jobs it runs see of it.
    ctx: Arc<JobContext>,
    identity: WorkerIdentity,
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
    #[error("the E2EE private key ({0}): {1}")]
    E2eeKey(String, String),
}

/// The key pair that opens jobs' sealed keys, from the configured file or inline secret.
fn e2ee_key_pair(config: &TranscoderConfig) -> Result<Option<fleet_e2ee::TranscoderKeyPair>, SetupError> {
    let (text, origin) = match (&config.e2ee_private_key_file, &config.e2ee_private_key) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path).map_err(|e| SetupError::E2eeKey(path.display().to_string(), e.to_string()))?;
            (text, path.display().to_string())
        }
        (None, Some(inline)) => (inline.expose().to_string(), "e2ee_private_key".to_string()),
        (None, None) => return Ok(None),
    };
    fleet_e2ee::TranscoderKeyPair::from_base64(&text).map(Some).map_err(|e| SetupError::E2eeKey(origin, e.to_string()))
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
        metrics: Arc<TranscoderMetrics>,
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
        let e2ee = e2ee_key_pair(&config)?;
        tracing::info!(node_id = %identity.node_id, ?encoders, e2ee_public_key = ?e2ee.as_ref().map(|p| p.public().to_base64()), "transcoder ready");
        metrics.set_encoders(&encoders);
        let ctx = JobContext { bus, jobs, storage, config, node_id: identity.node_id.clone(), encoders, running: Running::default(), e2ee, metrics };
        Ok(Arc::new(Self { ctx: Arc::new(ctx), identity, started_at_ms: now_ms(), yield_to }))
    }

    pub fn encoders(&self) -> &[String] {
        &self.ctx.encoders
    }

    /// The transcode queues this node can serve: every node the plain one; nodes with a GPU encoder the
    /// GPU one; nodes with the shared recordings root the file jobs.
    fn queues(&self) -> Vec<&PullConsumer> {
        let bus = &self.ctx.bus;
        let mut queues = vec![bus.transcode_consumer()];
        if self.ctx.encoders.iter().any(|e| encoders::is_hardware(e)) {
            queues.push(bus.transcode_gpu_consumer());
        }
        if self.ctx.config.shared_files_root.is_some() {
            queues.push(bus.transcode_files_consumer());
        }
        queues
    }

    fn node_info(&self, cpu_load: f64, draining: bool) -> NodeInfo {
        NodeInfo {
            id: self.identity.node_id.clone(),
            role: NodeRole::Transcoder,
            mode: self.identity.mode.clone(),
            version: fleet_protocol::VERSION.into(),
            slots: self.ctx.config.slots,
            running_jobs: self.ctx.running.keys(),
            cpu_load,
            cores: cores(),
            encoders: self.ctx.encoders.clone(),
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
        let config = &self.ctx.config;
        let capacity = Capacity { slots: config.slots, max_cpu_load: config.max_cpu_load, cpu_limit_only_while: self.yield_to.clone(), hold: None };
        let ctx = self.ctx.clone();
        queue::serve(&self.queues(), capacity, shutdown, move |message| {
            let ctx = ctx.clone();
            async move { delivery::handle_delivery(&ctx, message).await }
        })
        .await;
        heartbeat.abort();
        self.ctx.bus.remove_node(&self.identity.node_id).await;
    }

    async fn heartbeat_loop(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let sampler = CpuSampler::default();
        loop {
            let info = self.node_info(sampler.sample(), *shutdown.borrow());
            if let Err(err) = self.ctx.bus.heartbeat(&info).await {
                tracing::warn!(%err, "heartbeat failed");
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
}
