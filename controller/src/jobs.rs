//! Creating and stopping recordings: the one path every front door (native API, Egress API, plugNmeet)
//! goes through, so validation, queueing and the stop rules never differ between them.

use crate::error::ApiError;
use fleet_protocol::job::{FileJob, Origin, RecordJob, TranscodeJob};
use fleet_protocol::time::now_ms;
use fleet_protocol::{JobRecord, JobRequest, JobState, SafeId, Transition};
use fleet_runtime::bus::Bus;

/// What a request that leaves it out gets, the same through every door.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub redundancy: u8,
}

impl Defaults {
    pub fn of(config: &crate::config::ControllerConfig) -> Defaults {
        Defaults { redundancy: config.default_redundancy }
    }

    fn apply(self, request: &mut JobRequest) {
        let live = !request.outputs.rtmp.is_empty() || request.outputs.live_files();
        if request.redundancy.is_none() && self.redundancy > 1 && !live {
            request.redundancy = Some(self.redundancy);
        }
    }
}

/// The id of the job an `Idempotency-Key` names, per API key: `rec_` and 32 hex digits of a hash.
/// A key is 1-255 visible ASCII characters.
pub fn idempotent_id(api_key_name: &str, idempotency_key: &[u8]) -> Result<SafeId, ApiError> {
    use sha2::Digest;
    if idempotency_key.is_empty() || idempotency_key.len() > 255 || !idempotency_key.iter().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request("Idempotency-Key must be 1-255 visible ASCII characters"));
    }
    let digest = sha2::Sha256::new().chain_update(api_key_name.as_bytes()).chain_update([0]).chain_update(idempotency_key).finalize();
    SafeId::parse(format!("rec_{}", &hex::encode(digest)[..32])).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// Validates `request`, stores the new job record and queues it for a recorder.
/// `id_prefix` makes ids readable per door (`rec`, `EG`).
pub async fn create(bus: &Bus, request: JobRequest, origin: Option<Origin>, id_prefix: &str, defaults: Defaults) -> Result<JobRecord, ApiError> {
    create_with_id(bus, SafeId::random(id_prefix), request, origin, defaults).await
}

/// As [`create`], under an id the caller derived (so a repeated request finds its job: a conflict).
pub async fn create_with_id(
    bus: &Bus,
    id: SafeId,
    mut request: JobRequest,
    origin: Option<Origin>,
    defaults: Defaults,
) -> Result<JobRecord, ApiError> {
    defaults.apply(&mut request);
    if request.e2ee.as_ref().is_some_and(|e| e.keys.is_some()) {
        // A door forgot `e2ee::seal_request`: storing would silently drop the keys (they never serialize).
        return Err(ApiError::invalid("e2ee: keys must be sealed before the recording is stored"));
    }
    let request = request.expand_filepath(now_ms()).map_err(|e| ApiError::invalid(e.to_string()))?;
    request.validate().map_err(|e| ApiError::invalid(e.to_string()))?;
    let mut record = JobRecord::new(id, request, now_ms());
    record.origin = origin;
    match bus.jobs().create(&record).await {
        Ok(_) => {}
        Err(fleet_runtime::bus::BusError::AlreadyExists(id)) => return Err(ApiError::conflict(format!("recording {id} exists already"))),
        Err(err) => return Err(err.into()),
    }
    // One message per simultaneous capture; each recorder takes at most one of a job's.
    for replica in 0..record.request.replicas() {
        let message = RecordJob { job_id: record.id.clone(), handover_from: None, replica };
        let message_id = if replica == 0 { record.id.to_string() } else { format!("{}-replica-{replica}", record.id) };
        if let Err(err) = bus.enqueue(&bus.names().record_subject, &message_id, &message).await {
            let reason = format!("could not queue the recording: {err}");
            let _ = bus.jobs().apply(&record.id, None, Transition::Fail { error: reason.clone() }).await;
            return Err(ApiError::unavailable(reason));
        }
    }
    tracing::info!(job_id = %record.id, room = %record.request.room, "recording requested");
    Ok(record)
}

/// A file job (whole files re-encoded, no capture): created in `transcoding` and queued for a
/// transcoder. The id is derived from `key`, so a redelivered request finds the job it already made.
pub async fn create_file_job(bus: &Bus, request: JobRequest, origin: Origin, files: FileJob, key: &str) -> Result<JobRecord, ApiError> {
    let request = request.expand_filepath(now_ms()).map_err(|e| ApiError::invalid(e.to_string()))?;
    request.validate().map_err(|e| ApiError::invalid(e.to_string()))?;
    let id = SafeId::parse(format!("file_{key}")).map_err(|e| ApiError::invalid(format!("file job id: {e}")))?;
    let mut record = JobRecord::new(id, request, now_ms());
    record.state = JobState::Transcoding;
    record.origin = Some(origin);
    record.files = Some(files);
    match bus.jobs().create(&record).await {
        Ok(_) => {}
        Err(fleet_runtime::bus::BusError::AlreadyExists(_)) => {
            tracing::info!(job_id = %record.id, "file job exists already (a redelivered request)");
        }
        Err(err) => return Err(err.into()),
    }
    let message = TranscodeJob { job_id: record.id.clone(), chunk: None, catch_up: false };
    bus.enqueue(bus.transcode_subject_for(&record), record.id.as_str(), &message)
        .await
        .map_err(|e| ApiError::unavailable(format!("could not queue the transcode: {e}")))?;
    tracing::info!(job_id = %record.id, inputs = record.files.as_ref().map_or(0, |f| f.inputs.len()), "file job queued");
    Ok(record)
}

/// Pauses or resumes a capturing recording (the record keeps the spans; the transcoder leaves them out).
pub async fn pause_or_resume(bus: &Bus, id: &SafeId, transition: Transition) -> Result<JobRecord, ApiError> {
    let what = if transition == Transition::Pause { "pause" } else { "resume" };
    let (record, _) = bus.jobs().apply(id, None, transition).await?;
    tracing::info!(job_id = %id, paused = record.paused_since_ms().is_some(), "{what} requested");
    Ok(record)
}

/// Adds or removes a live stream output (the recorder watching the record follows).
pub async fn change_streams(bus: &Bus, id: &SafeId, transition: Transition) -> Result<JobRecord, ApiError> {
    let (record, _) = bus.jobs().apply(id, None, transition).await.map_err(|err| match err {
        fleet_runtime::bus::BusError::Refused(refusal @ fleet_protocol::Refusal::UnknownStream { .. }) => ApiError::not_found(refusal.to_string()),
        other => other.into(),
    })?;
    tracing::info!(job_id = %id, streams = record.streams.iter().filter(|s| s.state.is_wanted()).count(), "streams changed");
    Ok(record)
}

/// Asks a recording to stop: a job no recorder took yet is aborted at once; a capturing one gets
/// `desired: stop`, which its recorder watches. A job past capture is refused with the reason.
pub async fn stop(bus: &Bus, id: &SafeId) -> Result<JobRecord, ApiError> {
    let (record, _) = bus.jobs().apply(id, None, Transition::RequestStop).await?;
    tracing::info!(job_id = %id, state = record.state.as_str(), "stop requested");
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idempotency_key_names_one_job_per_api_key() {
        let id = idempotent_id("ops", b"order-42").unwrap();
        assert!(id.as_str().starts_with("rec_") && id.as_str().len() == 36, "{id}");
        assert_eq!(idempotent_id("ops", b"order-42").unwrap(), id, "the same key, the same job");
        assert_ne!(idempotent_id("ops", b"order-43").unwrap(), id);
        assert_ne!(idempotent_id("plugnmeet", b"order-42").unwrap(), id, "another API key's namespace");
        for bad in [&b""[..], b"has space", &[b'k'; 256][..], "é".as_bytes()] {
            assert_eq!(idempotent_id("ops", bad).unwrap_err().status, axum::http::StatusCode::BAD_REQUEST);
        }
    }
}
