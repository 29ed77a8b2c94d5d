//! The node registry entry each recorder/transcoder heartbeats into the `fleet-nodes` bucket.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeRole {
    Recorder,
    Transcoder,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeInfo {
    pub id: String,
    pub role: NodeRole,
    /// `both`, `recorder-only` or `transcoder-only`.
    pub mode: String,
    pub version: String,
    /// Jobs this node runs at once.
    pub slots: u32,
    pub running_jobs: Vec<String>,
    /// Whole-machine CPU use, 0..1, over the last sampling interval.
    pub cpu_load: f64,
    pub cores: u32,
    /// H.264 encoders that work on this node, best first (transcoders).
    #[serde(default)]
    pub encoders: Vec<String>,
    #[serde(default)]
    pub draining: bool,
    /// Bytes waiting in the recorder's spool for their upload (recorders).
    #[serde(default)]
    pub spool_bytes: u64,
    /// Why the node takes no new job, when it does not (e.g. its spool is full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holding: Option<String>,
    pub started_at_ms: u64,
    pub updated_at_ms: u64,
}
