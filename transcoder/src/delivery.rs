//! One transcode message: parse it, claim it on this node, keep it alive while it runs, route it (a
//! chunk, a file job, a long recording to split, or a whole recording), and answer JetStream from the
//! outcome: retry, give up (the job marked failed with the reason) or done.

use crate::context::{Done, JobContext};
use crate::error::{Disposition, TranscodeError};
use crate::metrics::{Outcome, Work};
use crate::{chunks, files, progressive, recording};
use async_nats::jetstream::{self, AckKind};
use fleet_protocol::job::TranscodeJob;
use fleet_protocol::{SafeId, Transition};
use fleet_runtime::bus::parse_message;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

pub async fn handle_delivery(ctx: &Arc<JobContext>, message: jetstream::Message) {
    let job: TranscodeJob = match parse_message(&message.payload) {
        Ok(job) => job,
        Err(reason) => {
            tracing::warn!(subject = %message.subject, %reason, "rejecting transcode message");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let span = tracing::info_span!("transcode", job_id = %job.job_id, chunk = ?job.chunk, node_id = %ctx.node_id);
    async {
        // Chunks of one job may run side by side on one node; each chunk only once.
        let claim_key = match (job.chunk, job.catch_up) {
            (Some(index), _) => format!("{}#{index}", job.job_id),
            (None, true) => format!("{}#catch-up", job.job_id),
            (None, false) => job.job_id.to_string(),
        };
        if !ctx.running.claim(&claim_key) {
            // Already running here (a redelivery while we work): let the running one finish.
            return;
        }
        ctx.metrics.set_running(ctx.running.keys().len());
        let work = match (job.chunk, job.catch_up) {
            (Some(_), _) => Work::Chunk,
            (None, true) => Work::CatchUp,
            (None, false) => Work::Recording,
        };
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let keepalive = tokio::spawn(keep_alive(message.clone()));
        let outcome = transcode_job(ctx, &job, delivered).await;
        keepalive.abort();
        ctx.running.release(&claim_key);
        ctx.metrics.set_running(ctx.running.keys().len());
        let max_deliver = ctx.bus.transcode_consumer().cached_info().config.max_deliver;
        match outcome {
            Ok(Done::Completed) | Ok(Done::NothingToDo) => {
                ctx.metrics.delivery(work, Outcome::Done);
                let _ = message.ack().await;
            }
            Ok(Done::Later(delay)) => {
                ctx.metrics.delivery(work, Outcome::Later);
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            }
            Err(err) => match err.disposition(delivered, max_deliver) {
                Disposition::GiveUp => {
                    tracing::error!(reason = %err, delivered, permanent = err.is_permanent(), "transcode failed for good");
                    ctx.metrics.delivery(work, Outcome::Failed);
                    mark_failed(ctx, &job.job_id, &err.to_string()).await;
                    let _ = message.ack_with(AckKind::Term).await;
                }
                Disposition::Retry => {
                    tracing::warn!(reason = %err, delivered, "transcode failed; will retry");
                    ctx.metrics.delivery(work, Outcome::Retried);
                    note_error(ctx, &job.job_id, &err.to_string()).await;
                    let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(2)))).await;
                }
            },
        }
    }
    .instrument(span)
    .await
}

/// Tells JetStream we are alive so the job is not handed to another transcoder.
async fn keep_alive(message: jetstream::Message) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = message.ack_with(AckKind::Progress).await;
    }
}

async fn transcode_job(ctx: &Arc<JobContext>, job: &TranscodeJob, delivered: i64) -> Result<Done, TranscodeError> {
    let job_id = &job.job_id;
    let node = ctx.node_id.as_str();
    let Some((record, _)) = ctx.bus.jobs().get(job_id).await? else {
        tracing::warn!("transcode job for an unknown job record; dropping");
        return Ok(Done::NothingToDo);
    };
    if record.state.is_terminal() {
        tracing::info!(state = record.state.as_str(), "job already ended; nothing to do");
        return Ok(Done::NothingToDo);
    }
    if job.catch_up {
        // Progressive work never fails the job: the transcode after the stop does what this did not.
        let done = match job.chunk {
            Some(index) => chunks::transcode_chunk(ctx, record, index, true).await,
            None => progressive::catch_up(ctx, &record).await,
        };
        return Ok(done.unwrap_or_else(|err| {
            tracing::warn!(reason = %err, "progressive transcode step failed; the transcode after the stop does it");
            Done::NothingToDo
        }));
    }
    if let Some(index) = job.chunk {
        return chunks::transcode_chunk(ctx, record, index, false).await;
    }
    let claim = Transition::ClaimTranscode { node: node.to_string(), attempt: delivered.try_into().unwrap_or(u32::MAX) };
    let record = match ctx.jobs.apply(job_id, claim).await {
        Ok((record, _)) => record,
        Err(fleet_runtime::bus::BusError::Refused(reason)) => {
            tracing::info!(%reason, "not transcoding");
            return Ok(Done::NothingToDo);
        }
        Err(err) => return Err(err.into()),
    };
    if let Some(files) = &record.files {
        return files::transcode_files(ctx, &record, files).await;
    }
    if chunks::split(ctx, &record).await? {
        return Ok(Done::NothingToDo);
    }
    recording::transcode(ctx, &record).await
}

async fn mark_failed(ctx: &JobContext, job_id: &SafeId, reason: &str) {
    let failed = Transition::Fail { error: format!("transcode failed: {reason}") };
    if let Err(err) = ctx.jobs.apply(job_id, failed).await {
        tracing::error!(%err, "could not mark job failed");
    }
}

async fn note_error(ctx: &JobContext, job_id: &SafeId, reason: &str) {
    let noted = Transition::NoteRetryError { error: format!("transcode attempt failed (will retry): {reason}") };
    let _ = ctx.jobs.apply(job_id, noted).await;
}
