//! A whole recording in one run: prepare its inputs, encode the composite (and each participant's
//! audio when asked), publish the result.

use crate::context::{Done, JobContext};
use crate::error::TranscodeError;
use crate::stages::{encode, prepare, publish};
use fleet_pipelines::transcode;
use fleet_protocol::JobRecord;
use std::sync::Arc;

pub(crate) async fn transcode(ctx: &Arc<JobContext>, record: &JobRecord) -> Result<Done, TranscodeError> {
    let job_id = &record.id;
    let scratch = prepare::scratch_dir(ctx, job_id).await?;
    let prepared = prepare::prepare(ctx, record, scratch.path()).await?;
    let extension = record.request.recording_extension();
    let output_path = scratch.path().join(format!("{job_id}.{extension}"));
    let spec = transcode::TranscodeSpec { output: output_path.clone(), ..prepared.spec.clone() };
    let (report, encoder) = encode::run_with_fallback(ctx, job_id, spec, 0.0, || prepared.decryption.restart_counts()).await?;
    let mut problems = report.problems;
    // The composite read every track once: its counts are the report (own audio reads some again).
    problems.extend(prepared.decryption.report());
    problems.extend(prepared.look_warnings.iter().cloned());
    let participant_files = encode::participant_audio(&prepared, scratch.path(), &mut problems).await?;
    publish::publish(ctx, record, &prepared, publish::Produced { path: output_path, extension, encoder, problems, participant_files }).await
}
