//! Job events, published by the controller alone: a state event on `fleet.events.<job id>` for every state
//! a record entered (derived from the jobs bucket's history), and progress events on
//! `fleet.events.<job id>.progress` while transcoding. A stream keeps them, so the controller turns every
//! one into a webhook even if it was down.

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
    /// The job entered `state`, its `seq`th state (its `state_log` entry); `record` is the record as read
    /// when the event was derived, at KV `revision` (the write that entered the state, or a later one when
    /// the controller caught up).
    State {
        state: JobState,
        #[serde(default)]
        seq: u32,
        revision: u64,
        record: Box<JobRecord>,
    },
    Progress {
        progress: Progress,
    },
}
