//! Chunked transcode of long recordings. The transcoder that takes the job splits the recording's
//! video into chunks of `chunk_seconds`, records the plan in the job record and queues one message per
//! chunk, so every free transcoder takes one. Each chunk is composited and encoded on its own, starting
//! on a keyframe; its ctx uploads it and marks it done in the record (compare-and-set). The ctx
//! whose mark completes the plan joins the chunks without re-encoding (each chunk carries its share of
//! the recording's AAC frames, see `fleet_pipelines::aac_frames`) and finishes the job as usual.

use crate::context::{Done, JobContext};
use crate::error::{Context, TranscodeError};
use crate::stages::publish::Produced;
use crate::stages::{encode, prepare, publish};
use fleet_pipelines::transcode::{self, Window};
use fleet_protocol::job::{ChunkPlan, TranscodeJob};
use fleet_protocol::transition::JOIN_STALE_MS;
use fleet_protocol::{JobRecord, JobState, Refusal, Transition, keys};
use futures::{StreamExt, TryStreamExt};
use std::sync::Arc;

/// Splits the job into chunks when it is long enough; true when the chunks were queued (the job's own
/// message is then done with).
pub async fn split(ctx: &JobContext, record: &JobRecord) -> Result<bool, TranscodeError> {
    let chunk_ns = ctx.config.chunk_seconds * 1_000_000_000;
    let duration_ns = record.recorded_span_ms().unwrap_or(0) * 1_000_000;
    // Known gap: a paused recording is transcoded in one piece (chunk windows would have to be cut too).
    let paused = !record.paused_spans_ns().is_empty();
    if chunk_ns == 0 || record.request.audio_only || duration_ns <= chunk_ns || paused {
        return Ok(false);
    }
    // A redelivered job keeps the plan it already has.
    let planned = Transition::PlanChunks(ChunkPlan::new(duration_ns, chunk_ns));
    let (record, _) = ctx.jobs.apply(&record.id, planned).await?;
    let subject = ctx.bus.transcode_subject_for(&record).to_string();
    let plan = record.chunks.expect("the plan was just stored");
    for index in (0..plan.count).filter(|i| !plan.done.contains(i)) {
        // Fixed message ids: queueing again after a crash does not duplicate a chunk.
        let message_id = format!("transcode-{}-chunk-{index}", record.id);
        let message = TranscodeJob { job_id: record.id.clone(), chunk: Some(index), catch_up: false };
        ctx.bus.enqueue(&subject, &message_id, &message).await?;
    }
    tracing::info!(chunks = plan.count, chunk_s = ctx.config.chunk_seconds, "recording split into chunks");
    Ok(true)
}

/// Transcodes chunk `index` (unless it is done already) and joins the recording if that completed it.
/// `progressive`: a chunk of the open plan of a recording still running (see [`crate::progressive`]).
pub async fn transcode_chunk(ctx: &Arc<JobContext>, record: JobRecord, index: u32, progressive: bool) -> Result<Done, TranscodeError> {
    // A chunk message that does not fit the record is foreign or stale: dropped, the job untouched.
    let fits = |plan: &ChunkPlan| if progressive { plan.open } else { !plan.open && index < plan.count };
    let Some(plan) = record.chunks.clone().filter(fits) else {
        tracing::warn!(index, plan = ?record.chunks, "chunk message that does not match the job's chunk plan; dropped");
        return Ok(Done::NothingToDo);
    };
    let wanted_now = if progressive { crate::progressive::applies_to(&record) } else { record.state == JobState::Transcoding };
    if !wanted_now {
        tracing::info!(state = record.state.as_str(), progressive, "chunk not wanted in this state; dropped");
        return Ok(Done::NothingToDo);
    }
    let mut record = record;
    if !plan.done.contains(&index) {
        // A running recording is transcoded up to a little past this chunk's end, where its media is final
        // (the chunk's audio reaches past its end).
        let duration_ns = if progressive {
            (index as u64 + 1) * plan.chunk_ns + crate::progressive::FINAL_PAST_CHUNK_NS
        } else {
            record.recorded_span_ms().unwrap_or(0) * 1_000_000
        };
        let (start_ns, end_ns) = plan.window(index, duration_ns);
        let scratch = prepare::scratch_dir(ctx, &record.id).await?;
        let upto_ms = progressive.then_some(duration_ns / 1_000_000);
        let prepared = prepare::prepare_chunk(ctx, &record, scratch.path(), upto_ms, Some(start_ns..end_ns)).await?;
        let path = scratch.path().join(format!("chunk-{index}.mp4"));
        let spec = transcode::TranscodeSpec { video_window: Some(Window { start_ns, end_ns }), output: path.clone(), ..prepared.spec.clone() };
        let (report, _encoder) =
            encode::run_with_fallback(ctx, &record.id, spec, start_ns as f64 / 1e9, || prepared.decryption.restart_counts()).await?;
        ctx.storage.put_file(&keys::chunk(&record.id, index), &path).await.context("chunk upload")?;
        tracing::info!(index, start_ms = start_ns / 1_000_000, end_ms = end_ns / 1_000_000, "chunk done");
        // Each chunk counts its own video frames: its warnings say which part of the recording they are.
        let window = format!("chunk {index} ({}-{} s)", start_ns / 1_000_000_000, end_ns.div_ceil(1_000_000_000));
        let decryption = prepared.decryption.report().into_iter().map(|w| format!("{window}: {w}"));
        let problems = report.problems.into_iter().chain(decryption).collect();
        let done = Transition::ChunkDone { index, problems };
        record = ctx.jobs.apply(&record.id, done).await?.0;
    }
    if !record.chunks.as_ref().is_some_and(ChunkPlan::is_complete) || record.state.is_terminal() {
        return Ok(Done::NothingToDo);
    }
    // Exactly one join at a time: claimed in the record and refreshed while it runs. This delivery of a
    // chunk came back because its holder stopped answering; if that holder's claim is still fresh, look
    // again once it would have gone stale.
    let node = ctx.node_id.to_string();
    match ctx.jobs.apply(&record.id, Transition::ClaimJoin { node }).await {
        Ok((record, _)) => join(ctx, &record).await,
        Err(fleet_runtime::bus::BusError::Refused(reason @ Refusal::JoinClaimed { .. })) => {
            tracing::info!(%reason, "not joining now; will look again");
            Ok(Done::Later(std::time::Duration::from_millis(JOIN_STALE_MS)))
        }
        Err(fleet_runtime::bus::BusError::Refused(reason)) => {
            tracing::info!(%reason, "not joining");
            Ok(Done::NothingToDo)
        }
        Err(err) => Err(err.into()),
    }
}

/// Chunks downloaded at once for the join.
const CHUNK_DOWNLOADS: usize = 8;

/// How often a running join refreshes its claim.
const JOIN_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// Joins every chunk and finishes the job.
async fn join(ctx: &Arc<JobContext>, record: &JobRecord) -> Result<Done, TranscodeError> {
    let plan = record.chunks.as_ref().expect("joined only with a complete plan");
    tracing::info!(chunks = plan.count, "joining the chunks");
    let refresher = {
        let (ctx, id) = (ctx.clone(), record.id.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(JOIN_REFRESH).await;
                let refresh = Transition::RefreshJoin { node: ctx.node_id.to_string() };
                let _ = ctx.jobs.apply(&id, refresh).await;
            }
        })
    };
    let result = join_chunks(ctx, record, plan).await;
    refresher.abort();
    result
}

async fn join_chunks(ctx: &Arc<JobContext>, record: &JobRecord, plan: &ChunkPlan) -> Result<Done, TranscodeError> {
    let scratch = prepare::scratch_dir(ctx, &record.id).await?;
    // The chunks carry the video and the mixed audio: only each participant's own audio (when asked
    // for) needs the segments again, so otherwise the join downloads just the last of each track's.
    let prepared = if record.request.audio_per_participant {
        prepare::prepare(ctx, record, scratch.path()).await?
    } else {
        let end_ns = record.recorded_span_ms().unwrap_or(0) * 1_000_000;
        prepare::prepare_chunk(ctx, record, scratch.path(), None, Some(end_ns..end_ns)).await?
    };
    // An hour is 360 chunks: fetched several at a time (one by one, an object store's round trips add up).
    let chunks: Vec<std::path::PathBuf> = futures::stream::iter(0..plan.count)
        .map(|index| {
            let path = scratch.path().join(format!("chunk-{index:05}.mp4"));
            async move {
                ctx.storage.get_to_file(&keys::chunk(&record.id, index), &path).await.context(format!("chunk {index}"))?;
                Ok::<_, TranscodeError>(path)
            }
        })
        .buffered(CHUNK_DOWNLOADS)
        .try_collect()
        .await?;
    // The chunks' problems (decryption included) are in the record already.
    let mut problems = prepared.look_warnings.clone();
    let participant_files = encode::participant_audio(&prepared, scratch.path(), &mut problems).await?;
    let output = scratch.path().join(format!("{}.mp4", record.id));
    let out = output.clone();
    tokio::task::spawn_blocking(move || fleet_pipelines::join::run(&chunks, &out)).await.context("join thread")?.context("join")?;
    // Chunks made by other encoders (a GPU node and a CPU node, or a GPU fallback) join too, each with
    // its own parameter sets; the record names this node's encoder.
    let encoder = prepared.spec.encoder.clone();
    publish::publish(ctx, record, &prepared, Produced { path: output, extension: "mp4", encoder, problems, participant_files }).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_cover_the_recording() {
        let plan = ChunkPlan::new(25_000_000_000, 10_000_000_000);
        assert_eq!(plan.count, 3);
        assert_eq!(plan.window(0, 25_000_000_000), (0, 10_000_000_000));
        assert_eq!(plan.window(2, 25_000_000_000), (20_000_000_000, 25_000_000_000));
        let mut plan = plan;
        plan.done = vec![2, 0];
        assert!(!plan.is_complete());
        plan.done.push(1);
        assert!(plan.is_complete());
        assert_eq!(ChunkPlan::new(20_000_000_000, 10_000_000_000).count, 2);
    }
}
