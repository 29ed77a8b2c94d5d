//! Names of the NATS streams, subjects, consumers and buckets (DESIGN.md section 4). All configurable.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetNames {
    pub record_stream: String,
    pub record_subject: String,
    /// Hand-over requests of draining recorders, on the record stream (recorders may publish these,
    /// never new jobs).
    pub record_handover_subject: String,
    pub recorder_consumer: String,
    pub transcode_stream: String,
    pub transcode_subject: String,
    pub transcoder_consumer: String,
    /// Transcodes that must run on a GPU encoder, taken only by nodes that have one.
    pub transcode_gpu_subject: String,
    pub transcoder_gpu_consumer: String,
    /// File jobs (plugNmeet's tasks), taken only by nodes with the shared recordings root mounted.
    pub transcode_files_subject: String,
    pub transcoder_files_consumer: String,
    pub jobs_bucket: String,
    pub nodes_bucket: String,
    /// Events go to `<events_prefix>.<job id>`; a stream keeps them so a controller that was down catches up.
    pub events_prefix: String,
    pub events_stream: String,
    /// Nodes ask the controller to change job records on `<job_requests_prefix>.<role>.<node id>`.
    pub job_requests_prefix: String,
    /// A recorder answers `<alive_prefix>.<node id>.<job id>` while it captures that job: the controller's
    /// probe finds a killed recorder by the server's "no responders", long before AckWait.
    pub alive_prefix: String,
}

impl Default for FleetNames {
    fn default() -> Self {
        Self {
            record_stream: "FLEET_RECORD".into(),
            record_subject: "fleet.record".into(),
            record_handover_subject: "fleet.record.handover".into(),
            recorder_consumer: "recorders".into(),
            transcode_stream: "FLEET_TRANSCODE".into(),
            transcode_subject: "fleet.transcode".into(),
            transcode_gpu_subject: "fleet.transcode.gpu".into(),
            transcoder_gpu_consumer: "transcoders-gpu".into(),
            transcode_files_subject: "fleet.transcode.files".into(),
            transcoder_files_consumer: "transcoders-files".into(),
            transcoder_consumer: "transcoders".into(),
            jobs_bucket: "fleet-jobs".into(),
            nodes_bucket: "fleet-nodes".into(),
            events_prefix: "fleet.events".into(),
            events_stream: "FLEET_EVENTS".into(),
            job_requests_prefix: "fleet.jobs.apply".into(),
            alive_prefix: "fleet.alive".into(),
        }
    }
}

impl FleetNames {
    pub fn event_subject(&self, job_id: &str) -> String {
        format!("{}.{}", self.events_prefix, job_id)
    }

    /// Where a node of `role` (`recorder`, `transcoder`, `both`) named `node` asks for job record changes.
    pub fn job_request_subject(&self, role: &str, node: &str) -> String {
        format!("{}.{role}.{node}", self.job_requests_prefix)
    }

    pub fn progress_event_subject(&self, job_id: &str) -> String {
        format!("{}.{}.progress", self.events_prefix, job_id)
    }

    /// Where `node` answers while it captures `job_id`.
    pub fn alive_subject(&self, node: &str, job_id: &str) -> String {
        format!("{}.{node}.{job_id}", self.alive_prefix)
    }

    pub fn events_wildcard(&self) -> String {
        format!("{}.>", self.events_prefix)
    }
}
