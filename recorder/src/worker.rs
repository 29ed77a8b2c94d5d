//! The recorder's job loop: fetch a recording job only while a slot is free and the CPU allows,
//! heartbeat into the node registry, and on shutdown hand running recordings back to the queue.

use crate::config::RecorderConfig;
use crate::session;
use async_nats::jetstream;
use fleet_protocol::SafeId;
use fleet_protocol::node::{NodeInfo, NodeRole};
use fleet_protocol::time::now_ms;
use fleet_runtime::bus::Bus;
use fleet_runtime::cpu::{CpuSampler, cores};
use fleet_runtime::job_client::JobRequests;
use fleet_runtime::queue::{self, Capacity};
use fleet_runtime::storage::Storage;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub struct Recorder {
    pub(crate) bus: Bus,
    /// Job record changes, asked of the controller.
    pub(crate) jobs: JobRequests,
    pub(crate) storage: Storage,
    pub(crate) config: RecorderConfig,
    pub(crate) node_id: String,
    mode: String,
    /// Jobs recording here, each with its newest delivery (keep-alives and the final ack go to it).
    running: Mutex<BTreeMap<String, watch::Sender<jetstream::Message>>>,
    /// Bytes in the spool, measured with each heartbeat.
    spool_bytes: AtomicU64,
    /// When a capture last handed its recording back for a full disk: the node holds for a while after,
    /// even though the spool it leaves behind frees space (else it would take the recording right back).
    disk_full_at: Mutex<Option<std::time::Instant>>,
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
    ) -> Result<Arc<Self>, fleet_pipelines::PipelineError> {
        fleet_pipelines::init()?;
        std::fs::create_dir_all(&config.spool_dir)?;
        Ok(Arc::new(Self {
            bus,
            jobs,
            storage,
            config,
            node_id,
            mode,
            running: Mutex::new(BTreeMap::new()),
            spool_bytes: AtomicU64::new(0),
            disk_full_at: Mutex::new(None),
            started_at_ms: now_ms(),
        }))
    }

    /// Serves recording jobs until `shutdown` turns true; running recordings are then stopped, their
    /// segments uploaded, and the jobs handed back for another recorder to resume.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop(shutdown.clone()));
        tracing::info!(node_id = %self.node_id, slots = self.config.slots, mode = %self.mode, "recorder ready");
        // The orphans are listed before any job is taken; uploading them runs beside the job loop.
        let orphans = crate::recovery::orphans(&self.config.spool_dir);
        let recovering = self.clone();
        tokio::spawn(async move {
            let recovered = crate::recovery::recover(&recovering, orphans).await;
            if recovered > 0 {
                tracing::info!(node_id = %recovering.node_id, segments = recovered, "spool recovery finished");
            }
        });
        let spool_full = self.clone();
        let capacity = Capacity {
            slots: self.config.slots,
            max_cpu_load: self.config.max_cpu_load,
            cpu_limit_only_while: None,
            hold: Some(Arc::new(move || spool_full.spool_over_limit())),
        };
        let worker = self.clone();
        let stop = shutdown.clone();
        queue::serve(&[self.bus.record_consumer()], capacity, shutdown, move |message| {
            session::handle_delivery(worker.clone(), message, stop.clone())
        })
        .await;
        heartbeat.abort();
        self.bus.remove_node(&self.node_id).await;
    }

    async fn heartbeat_loop(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let sampler = CpuSampler::default();
        loop {
            let spool = self.config.spool_dir.clone();
            let spool_bytes = tokio::task::spawn_blocking(move || tree_size(&spool)).await.unwrap_or(0);
            self.spool_bytes.store(spool_bytes, Ordering::Relaxed);
            let info = NodeInfo {
                id: self.node_id.clone(),
                role: NodeRole::Recorder,
                mode: self.mode.clone(),
                version: fleet_protocol::VERSION.into(),
                slots: self.config.slots,
                running_jobs: self.running.lock().unwrap().keys().cloned().collect(),
                cpu_load: sampler.sample(),
                cores: cores(),
                encoders: Vec::new(),
                draining: *shutdown.borrow(),
                spool_bytes,
                holding: self.spool_over_limit(),
                started_at_ms: self.started_at_ms,
                updated_at_ms: now_ms(),
            };
            if let Err(err) = self.bus.heartbeat(&info).await {
                tracing::warn!(%err, "heartbeat failed");
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }

    /// Why no new recording should start here: the spool's disk is (nearly) full, or the spool holds
    /// more than its limit.
    fn spool_over_limit(&self) -> Option<String> {
        if let Some(reason) = self.spool_disk_full() {
            return Some(reason);
        }
        let limit = self.config.max_spool_mb * (1u64 << 20) as f64;
        let spooled = self.spool_bytes.load(Ordering::Relaxed) as f64;
        (limit > 0.0 && spooled > limit)
            .then(|| format!("spool holds {:.2} MiB awaiting upload (limit {} MiB)", spooled / (1u64 << 20) as f64, self.config.max_spool_mb))
    }

    /// The spool's filesystem has less free space than `min_free_spool_mb`: captures here must hand
    /// their recordings back (measured now, not with the heartbeat: a disk fills fast).
    pub(crate) fn spool_disk_full(&self) -> Option<String> {
        let free = crate::disk::free_bytes(&self.config.spool_dir)?;
        let minimum = self.config.min_free_spool_mb * (1u64 << 20) as f64;
        let recently = self.disk_full_at.lock().unwrap().is_some_and(|at| at.elapsed() < DISK_FULL_HOLD);
        ((free as f64) < minimum || recently).then(|| {
            format!("spool disk full: {} KiB free on {} (minimum {} MiB)", free >> 10, self.config.spool_dir.display(), self.config.min_free_spool_mb)
        })
    }

    /// A capture here handed its recording back for a full disk.
    pub(crate) fn note_disk_full(&self) {
        *self.disk_full_at.lock().unwrap() = Some(std::time::Instant::now());
    }

    /// True while this node records at least one room.
    pub fn is_recording(&self) -> bool {
        !self.running.lock().unwrap().is_empty()
    }

    /// Registers a delivery of `job_id`. `None` when the job already records here (JetStream redelivered it,
    /// e.g. after a NATS outage longer than AckWait): the running capture adopts the newer delivery instead
    /// of a second capture starting. Otherwise the receiver always holds the newest delivery.
    pub(crate) fn claim(&self, job_id: &SafeId, delivery: jetstream::Message) -> Option<watch::Receiver<jetstream::Message>> {
        let mut running = self.running.lock().unwrap();
        if let Some(current) = running.get(job_id.as_str()) {
            let _ = current.send(delivery);
            return None;
        }
        let (sender, receiver) = watch::channel(delivery);
        running.insert(job_id.to_string(), sender);
        Some(receiver)
    }

    pub(crate) fn release(&self, job_id: &SafeId) {
        self.running.lock().unwrap().remove(job_id.as_str());
    }
}

/// How long a node takes no recording after a capture of it ran out of disk.
const DISK_FULL_HOLD: Duration = Duration::from_secs(60);

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
