//! Encoding: the GStreamer transcode on its own thread with progress reported, the CPU fallback for a
//! failing GPU encoder, and each participant's own audio.

use super::prepare::Prepared;
use crate::context::JobContext;
use crate::error::{Context, TranscodeError};
use fleet_pipelines::{encoders, transcode};
use fleet_protocol::job::Progress;
use fleet_protocol::{SafeId, Transition};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Each participant's own audio (`audio_per_participant`), as files in `scratch`.
pub(crate) async fn participant_audio(
    prepared: &Prepared,
    scratch: &std::path::Path,
    problems: &mut Vec<String>,
) -> Result<Vec<(SafeId, std::path::PathBuf)>, TranscodeError> {
    let mut files = Vec::new();
    for (participant, tracks) in &prepared.own_audio {
        let Ok(participant) = SafeId::parse(participant) else { continue };
        let path = scratch.join(format!("participant-{participant}.m4a"));
        let own = transcode::TranscodeSpec {
            tracks: tracks.clone(),
            audio_only: true,
            schedule: None,
            video_window: None,
            output: path.clone(),
            ..prepared.spec.clone()
        };
        let report = tokio::task::spawn_blocking(move || transcode::run(&own, |_| {}))
            .await
            .context("transcode thread")?
            .context(format!("{participant}'s audio"))?;
        problems.extend(report.problems.into_iter().map(|p| format!("{participant}'s audio: {p}")));
        files.push((participant, path));
    }
    Ok(files)
}

/// Runs the blocking GStreamer transcode on its own thread, publishing progress about once a second.
/// Runs the transcode; when a GPU encoder fails, runs it again on the node's CPU encoder (a log line and
/// a warning on the job, never a failed job for it). Returns the report and the encoder that made it.
pub(crate) async fn run_with_fallback(
    ctx: &Arc<JobContext>,
    job_id: &SafeId,
    spec: transcode::TranscodeSpec,
    base_s: f64,
    before_fallback: impl FnOnce(),
) -> Result<(transcode::TranscodeReport, String), TranscodeError> {
    let encoder = spec.encoder.clone();
    let fallback = spec.clone();
    match run_pipeline(ctx, job_id, spec, base_s).await {
        Ok(report) => Ok((report, encoder)),
        Err(err) if encoders::is_hardware(&encoder) => {
            let Some(cpu) = ctx.encoders.iter().find(|e| !encoders::is_hardware(e)).cloned() else { return Err(err) };
            tracing::warn!(%encoder, %err, fallback = %cpu, "the GPU encoder failed; encoding on the CPU");
            ctx.metrics.fallback();
            before_fallback();
            let mut report = run_pipeline(ctx, job_id, transcode::TranscodeSpec { encoder: cpu.clone(), ..fallback }, base_s).await?;
            report.problems.push(format!("{encoder} failed ({err}); encoded with {cpu} instead"));
            Ok((report, cpu))
        }
        Err(err) => Err(err),
    }
}

/// `base_s`: where in the recording the transcode starts (a chunk's window), for the percentage.
pub(crate) async fn run_pipeline(
    ctx: &Arc<JobContext>,
    job_id: &SafeId,
    spec: transcode::TranscodeSpec,
    base_s: f64,
) -> Result<transcode::TranscodeReport, TranscodeError> {
    let duration_s = (spec.duration_ns as f64 / 1e9).max(0.001);
    let encoder = spec.encoder.clone();
    let media_s = spec.video_window.map_or(spec.output_duration_ns(), |w| w.end_ns - w.start_ns) as f64 / 1e9;
    let encoding_since = Instant::now();
    let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(0.0f64);
    let pipeline = tokio::task::spawn_blocking(move || {
        transcode::run(&spec, |done_s| {
            let _ = progress_tx.send(done_s);
        })
    });
    let publisher = {
        let ctx = ctx.clone();
        let job_id = job_id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            while progress_rx.changed().await.is_ok() {
                let done_s = *progress_rx.borrow_and_update();
                let progress = Progress {
                    percent: (100.0 * (base_s + done_s) / duration_s).min(100.0),
                    speed: done_s / started.elapsed().as_secs_f64().max(0.001),
                    node: ctx.node_id.clone(),
                };
                let _ = ctx.jobs.apply(&job_id, Transition::Progress(progress)).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let result = pipeline.await.context("transcode thread")?;
    publisher.abort();
    if result.is_ok() {
        ctx.metrics.encoded(&encoder, media_s, encoding_since.elapsed().as_secs_f64());
    }
    result.context("transcode")
}
