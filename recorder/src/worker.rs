//! The recorder's job loop: fetch a recording job only while a slot is free and the CPU allows,
//! heartbeat into the node registry, and on shutdown hand running recordings back to the queue.

use crate::config::RecorderConfig;
use crate::context::NodeContext;
use crate::metrics::RecorderMetrics;
use crate::session;
use fleet_protocol::node::{NodeInfo, NodeRole};
use fleet_protocol::time::now_ms;
use fleet_runtime::bus::Bus;
use fleet_runtime::cpu::{CpuSampler, cores};
use fleet_runtime::job_client::JobRequests;
use fleet_runtime::queue::{self, Capacity};
use fleet_runtime::storage::Storage;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub struct Recorder {
    /// All that its sessions see of it.
    ctx: Arc<NodeContext>,
    mode: String,
    started_at_ms: u64,
}

impl Recorder {
    pub fn new(
        bus: Bus,
        jobs: JobRequests,
        storage: Storage,
        config: RecorderConfig,
        node_id: String,
        mode: String,
        metrics: Arc<RecorderMetrics>,
    ) -> Result<Arc<Self>, fleet_pipelines::PipelineError> {
        fleet_pipelines::init()?;
        std::fs::create_dir_all(&config.spool_dir)?;
        let ctx = Arc::new(NodeContext::new(bus, jobs, storage, config, node_id, metrics));
        Ok(Arc::new(Self { ctx, mode, started_at_ms: now_ms() }))
    }

    /// Serves recording jobs until `shutdown` turns true; running recordings are then stopped, their
    /// segments uploaded, and the jobs handed back for another recorder to resume.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop(shutdown.clone()));
        let ctx = &self.ctx;
        tracing::info!(node_id = %ctx.node_id, slots = ctx.config.slots, mode = %self.mode, "recorder ready");
        // The orphans are listed before any job is taken; uploading them runs beside the job loop.
        let orphans = crate::recovery::orphans(&ctx.config.spool_dir);
        let recovering = ctx.clone();
        tokio::spawn(async move {
            let recovered = crate::recovery::recover(&recovering, orphans).await;
            if recovered > 0 {
                tracing::info!(node_id = %recovering.node_id, segments = recovered, "spool recovery finished");
            }
        });
        let spool_full = ctx.clone();
        let capacity = Capacity {
            slots: ctx.config.slots,
            max_cpu_load: ctx.config.max_cpu_load,
            cpu_limit_only_while: None,
            hold: Some(Arc::new(move || spool_full.spool_over_limit())),
        };
        let sessions = ctx.clone();
        let stop = shutdown.clone();
        queue::serve(&[ctx.bus.record_consumer()], capacity, shutdown, move |message| {
            session::handle_delivery(sessions.clone(), message, stop.clone())
        })
        .await;
        heartbeat.abort();
        ctx.bus.remove_node(&ctx.node_id).await;
    }

    async fn heartbeat_loop(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let sampler = CpuSampler::default();
        let ctx = &self.ctx;
        loop {
            let spool = ctx.config.spool_dir.clone();
            let spool_bytes = tokio::task::spawn_blocking(move || tree_size(&spool)).await.unwrap_or(0);
            ctx.set_spool_bytes(spool_bytes);
            let running_jobs = ctx.running_jobs();
            ctx.metrics.set_captures(running_jobs.len());
            ctx.metrics.refresh_upload_lag(std::time::Instant::now());
            let info = NodeInfo {
                id: ctx.node_id.clone(),
                role: NodeRole::Recorder,
                mode: self.mode.clone(),
                version: fleet_protocol::VERSION.into(),
                slots: ctx.config.slots,
                running_jobs,
                cpu_load: sampler.sample(),
                cores: cores(),
                encoders: Vec::new(),
                draining: *shutdown.borrow(),
                spool_bytes,
                holding: ctx.spool_over_limit(),
                started_at_ms: self.started_at_ms,
                updated_at_ms: now_ms(),
            };
            if let Err(err) = ctx.bus.heartbeat(&info).await {
                tracing::warn!(%err, "heartbeat failed");
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// True while this node records at least one room.
    pub fn is_recording(&self) -> bool {
        self.ctx.is_recording()
    }
}

/// Bytes in the files under `dir` (0 for what cannot be read).
fn tree_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => tree_size(&entry.path()),
            Ok(_) => entry.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}
