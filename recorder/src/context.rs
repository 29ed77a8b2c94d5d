//! What a recording session needs from its node, and nothing more: the bus, the node's job client,
//! storage and settings, which jobs record here, and the spool's state. The worker owns one; sessions
//! and spool recovery get it instead of the worker.

use crate::config::RecorderConfig;
use crate::metrics::RecorderMetrics;
use async_nats::jetstream;
use fleet_protocol::SafeId;
use fleet_runtime::bus::Bus;
use fleet_runtime::job_client::JobRequests;
use fleet_runtime::storage::Storage;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub(crate) struct NodeContext {
    pub bus: Bus,
    /// Job record changes, asked of the controller.
    pub jobs: JobRequests,
    pub storage: Storage,
    pub config: RecorderConfig,
    pub node_id: String,
    pub metrics: Arc<RecorderMetrics>,
    /// Jobs recording here, each with its newest delivery (keep-alives and the final ack go to it).
    /// Jobs capturing here: which of the job's captures, and its newest delivery.
    running: Mutex<BTreeMap<String, (u8, watch::Sender<jetstream::Message>)>>,
    /// Bytes in the spool, measured with each heartbeat.
    spool_bytes: AtomicU64,
    /// When a capture last handed its recording back for a full disk: the node holds for a while after,
    /// even though the spool it leaves behind frees space (else it would take the recording right back).
    disk_full_at: Mutex<Option<std::time::Instant>>,
}

impl NodeContext {
    pub fn new(bus: Bus, jobs: JobRequests, storage: Storage, config: RecorderConfig, node_id: String, metrics: Arc<RecorderMetrics>) -> Self {
        Self {
            bus,
            jobs,
            storage,
            config,
            node_id,
            metrics,
            running: Mutex::default(),
            spool_bytes: AtomicU64::new(0),
            disk_full_at: Mutex::new(None),
        }
    }

    pub fn running_jobs(&self) -> Vec<String> {
        self.running.lock().unwrap().keys().cloned().collect()
    }

    pub fn set_spool_bytes(&self, bytes: u64) {
        self.spool_bytes.store(bytes, Ordering::Relaxed);
        self.metrics.set_spool_bytes(bytes);
    }

    /// Why no new recording should start here: the spool's disk is (nearly) full, or the spool holds
    /// more than its limit.
    pub fn spool_over_limit(&self) -> Option<String> {
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
    pub fn spool_disk_full(&self) -> Option<String> {
        let free = crate::disk::free_bytes(&self.config.spool_dir)?;
        let minimum = self.config.min_free_spool_mb * (1u64 << 20) as f64;
        let recently = self.disk_full_at.lock().unwrap().is_some_and(|at| at.elapsed() < DISK_FULL_HOLD);
        ((free as f64) < minimum || recently).then(|| {
            format!("spool disk full: {} KiB free on {} (minimum {} MiB)", free >> 10, self.config.spool_dir.display(), self.config.min_free_spool_mb)
        })
    }

    /// A capture here handed its recording back for a full disk.
    pub fn note_disk_full(&self) {
        *self.disk_full_at.lock().unwrap() = Some(std::time::Instant::now());
    }

    /// True while this node records at least one room.
    pub fn is_recording(&self) -> bool {
        !self.running.lock().unwrap().is_empty()
    }

    /// Registers a delivery of capture `replica` of `job_id`. When that capture already records here
    /// (JetStream redelivered it, e.g. after a NATS outage longer than AckWait), the running capture
    /// adopts the newer delivery instead of a second one starting; the receiver always holds the newest.
    pub fn claim(&self, job_id: &SafeId, replica: u8, delivery: jetstream::Message) -> Claim {
        let mut running = self.running.lock().unwrap();
        match running.get(job_id.as_str()) {
            Some((running_replica, current)) if *running_replica == replica => {
                let _ = current.send(delivery);
                Claim::Adopted
            }
            Some(_) => Claim::OtherCaptureHere,
            None => {
                let (sender, receiver) = watch::channel(delivery);
                running.insert(job_id.to_string(), (replica, sender));
                Claim::New(receiver)
            }
        }
    }

    pub fn release(&self, job_id: &SafeId) {
        self.running.lock().unwrap().remove(job_id.as_str());
    }
}

/// What became of a recording delivery at [`NodeContext::claim`].
pub enum Claim {
    /// The capture starts here; the receiver follows its newest delivery.
    New(watch::Receiver<jetstream::Message>),
    /// This capture runs here already and took the delivery over.
    Adopted,
    /// Another capture of the same (redundant) job runs here: this one belongs on another node.
    OtherCaptureHere,
}

/// How long a node takes no recording after a capture of it ran out of disk.
const DISK_FULL_HOLD: Duration = Duration::from_secs(60);
