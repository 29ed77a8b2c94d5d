//! Creating and stopping recordings: the one path every front door (native API, Egress API, plugNmeet)
//! goes through, so validation, queueing and the stop rules never differ between them.

use crate::error::ApiError;
use fleet_protocol::bus::{Bus, Change};
use fleet_protocol::job::{Desired, EndReason, Origin, RecordJob};
use fleet_protocol::time::now_ms;
use fleet_protocol::{JobRecord, JobRequest, JobState, SafeId};

/// Validates `request`, stores the new job record and queues it for a recorder.
/// `id_prefix` makes ids readable per door (`rec`, `EG`).
pub async fn create(bus: &Bus, request: JobRequest, origin: Option<Origin>, id_prefix: &str) -> Result<JobRecord, ApiError> {
    request.validate().map_err(ApiError::invalid)?;
    let mut record = JobRecord::new(SafeId::random(id_prefix), request, now_ms());
    record.origin = origin;
    bus.jobs.create(&record).await?;
    let message = RecordJob { job_id: record.id.clone() };
    if let Err(err) = bus.enqueue(&bus.names.record_subject, record.id.as_str(), &message).await {
        let reason = format!("could not queue the recording: {err}");
        let _ = bus
            .jobs
            .update(&record.id, None, |r| {
                r.state = JobState::Failed;
                r.error = Some(reason.clone());
                Ok(Change::Write)
            })
            .await;
        return Err(ApiError::unavailable(reason));
    }
    tracing::info!(job_id = %record.id, room = %record.request.room, "recording requested");
    Ok(record)
}

/// Asks a recording to stop: a job no recorder took yet is aborted at once; a capturing one gets
/// `desired: stop`, which its recorder watches. A job past capture is refused with the reason.
pub async fn stop(bus: &Bus, id: &SafeId) -> Result<JobRecord, ApiError> {
    let record = bus
        .jobs
        .update(id, None, |r| match r.state {
            JobState::Queued if r.sessions.is_empty() => {
                r.desired = Desired::Stop;
                r.state = JobState::Aborted;
                r.end_reason = Some(EndReason::ApiStop);
                Ok(Change::Write)
            }
            _ if r.desired == Desired::Stop && r.state.is_capturing() => Ok(Change::Keep),
            state if state.is_capturing() => {
                r.desired = Desired::Stop;
                Ok(Change::Write)
            }
            state => Err(format!("recording {} is already {}", r.id, state.as_str())),
        })
        .await?;
    tracing::info!(job_id = %id, state = record.state.as_str(), "stop requested");
    Ok(record)
}
