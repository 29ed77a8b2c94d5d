//! What a job's stages need from the node, and nothing more: no stage holds the worker or calls back
//! into it.

use crate::config::TranscoderConfig;
use crate::error::TranscodeError;
use fleet_pipelines::encoders;
use fleet_protocol::job::GpuPolicy;
use fleet_runtime::bus::Bus;
use fleet_runtime::job_client::JobRequests;
use fleet_runtime::storage::Storage;
use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

pub(crate) struct JobContext {
    pub bus: Bus,
    /// Job record changes, asked of the controller.
    pub jobs: JobRequests,
    pub storage: Storage,
    pub config: TranscoderConfig,
    /// The name this transcoder claims and reports jobs under.
    pub node_id: String,
    /// Working encoders, best first; the first is used.
    pub encoders: Vec<String>,
    /// Jobs (and chunks, `<job>#<index>`) running here.
    pub running: Running,
    /// Opens the end-to-end encryption keys jobs carry sealed; none configured: such jobs fail here.
    pub e2ee: Option<fleet_e2ee::TranscoderKeyPair>,
    pub metrics: std::sync::Arc<crate::metrics::TranscoderMetrics>,
}

impl JobContext {
    /// The encoder a job's GPU policy asks for, among this node's working ones (best first).
    pub fn encoder_for(&self, policy: GpuPolicy) -> Result<String, TranscodeError> {
        choose_encoder(&self.encoders, policy)
    }
}

#[derive(Default)]
pub(crate) struct Running(Mutex<BTreeSet<String>>);

impl Running {
    /// False when `key` runs here already.
    pub fn claim(&self, key: &str) -> bool {
        self.0.lock().expect("not poisoned").insert(key.to_string())
    }

    pub fn release(&self, key: &str) {
        self.0.lock().expect("not poisoned").remove(key);
    }

    pub fn keys(&self) -> Vec<String> {
        self.0.lock().expect("not poisoned").iter().cloned().collect()
    }
}

/// How a job run ended, for its delivery to answer JetStream.
pub(crate) enum Done {
    Completed,
    NothingToDo,
    /// Not now: deliver the message again after this long (not a failure).
    Later(Duration),
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
