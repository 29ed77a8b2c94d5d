//! Events published on `fleet.events.<job id>` after every state change and while transcoding.
//! A stream keeps them, so the controller turns every one into a webhook even if it was down.

use crate::ids::SafeId;
use crate::job::{JobRecord, JobState, Progress};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobEvent {
    pub job_id: SafeId,
    pub at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(flatten)]
    pub kind: EventKind,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// The job entered `state`; `record` is the job record as written, with the KV revision that wrote it.
    State {
        state: JobState,
        revision: u64,
        record: Box<JobRecord>,
    },
    Progress {
        progress: Progress,
    },
}
