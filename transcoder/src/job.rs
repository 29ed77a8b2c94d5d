//! One transcode job: claim it in the job record, download the raw segments, composite and encode,
//! upload the recording and its manifest, mark the job complete. Failures are retried up to the
//! consumer's MaxDeliver, then the job is marked failed with the reason and the message terminated.

use crate::error::{Context, Disposition, TranscodeError};
use crate::manifest::{Manifest, codec_name, sha256_file};
use crate::worker::Transcoder;
use crate::{inputs, layout_plan};
use async_nats::jetstream::{self, AckKind};
use fleet_pipelines::{encoders, mp4_info, segment_reader, transcode};
use fleet_protocol::bus::parse_message;
use fleet_protocol::job::{OutputInfo, ParticipantAudio, Progress, TranscodeJob};
use fleet_protocol::{JobRecord, SafeId, Transition, keys};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

const MAX_WARNINGS: usize = 20;

pub async fn handle_delivery(worker: &Arc<Transcoder>, message: jetstream::Message) {
    let job: TranscodeJob = match parse_message(&message.payload) {
        Ok(job) => job,
        Err(reason) => {
            tracing::warn!(subject = %message.subject, %reason, "rejecting transcode message");
            let _ = message.ack_with(AckKind::Term).await;
            return;
        }
    };
    let span = tracing::info_span!("transcode", job_id = %job.job_id, chunk = ?job.chunk, node_id = %worker.identity.node_id);
    async {
        // Chunks of one job may run side by side on one node; each chunk only once.
        let claim_key = match job.chunk {
            Some(index) => format!("{}#{index}", job.job_id),
            None => job.job_id.to_string(),
        };
        if !worker.claim(&claim_key) {
            // Already running here (a redelivery while we work): let the running one finish.
            return;
        }
        let delivered = message.info().map(|i| i.delivered).unwrap_or(1);
        let keepalive = tokio::spawn(keep_alive(message.clone()));
        let outcome = transcode_job(worker, &job, delivered).await;
        keepalive.abort();
        worker.release(&claim_key);
        let max_deliver = worker.bus.transcode_consumer.cached_info().config.max_deliver;
        match outcome {
            Ok(Done::Completed) | Ok(Done::NothingToDo) => {
                let _ = message.ack().await;
            }
            Ok(Done::Later(delay)) => {
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
            }
            Err(err) => match err.disposition(delivered, max_deliver) {
                Disposition::GiveUp => {
                    tracing::error!(reason = %err, delivered, permanent = err.is_permanent(), "transcode failed for good");
                    mark_failed(worker, &job.job_id, &err.to_string()).await;
                    let _ = message.ack_with(AckKind::Term).await;
                }
                Disposition::Retry => {
                    tracing::warn!(reason = %err, delivered, "transcode failed; will retry");
                    note_error(worker, &job.job_id, &err.to_string()).await;
                    let _ = message.ack_with(AckKind::Nak(Some(Duration::from_secs(2)))).await;
                }
            },
        }
    }
    .instrument(span)
    .await
}

pub(crate) enum Done {
    Completed,
    NothingToDo,
    /// Not now: deliver the message again after this long (not a failure).
    Later(Duration),
}

/// Tells JetStream we are alive so the job is not handed to another transcoder.
async fn keep_alive(message: jetstream::Message) {
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let _ = message.ack_with(AckKind::Progress).await;
    }
}

async fn transcode_job(worker: &Arc<Transcoder>, job: &TranscodeJob, delivered: i64) -> Result<Done, TranscodeError> {
    let job_id = &job.job_id;
    let node = worker.identity.node_id.as_str();
    let Some((record, _)) = worker.bus.jobs.get(job_id).await? else {
        tracing::warn!("transcode job for an unknown job record; dropping");
        return Ok(Done::NothingToDo);
    };
    if record.state.is_terminal() {
        tracing::info!(state = record.state.as_str(), "job already ended; nothing to do");
        return Ok(Done::NothingToDo);
    }
    if let Some(index) = job.chunk {
        return crate::chunks::transcode_chunk(worker, record, index).await;
    }
    let claim = Transition::ClaimTranscode { node: node.to_string(), attempt: delivered.try_into().unwrap_or(u32::MAX) };
    let record = match worker.jobs.apply(job_id, claim).await {
        Ok((record, _)) => record,
        Err(fleet_protocol::bus::BusError::Refused(reason)) => {
            tracing::info!(%reason, "not transcoding");
            return Ok(Done::NothingToDo);
        }
        Err(err) => return Err(err.into()),
    };
    if let Some(files) = &record.files {
        return crate::files::transcode_files(worker, &record, files).await;
    }
    if crate::chunks::split(worker, &record).await? {
        return Ok(Done::NothingToDo);
    }

    let scratch = scratch_dir(worker, job_id).await?;
    let prepared = prepare(worker, &record, scratch.path()).await?;
    let extension = record.request.recording_extension();
    let output_path = scratch.path().join(format!("{job_id}.{extension}"));
    let spec = transcode::TranscodeSpec { output: output_path.clone(), ..prepared.spec.clone() };
    let (report, encoder) = run_with_fallback(worker, job_id, spec, 0.0).await?;
    let mut problems = report.problems;
    let participant_files = participant_audio(&prepared, scratch.path(), &mut problems).await?;
    finish(worker, &record, &prepared, Produced { path: output_path, extension, encoder, problems, participant_files }).await
}

pub(crate) async fn scratch_dir(worker: &Transcoder, job_id: &SafeId) -> Result<tempfile::TempDir, TranscodeError> {
    tokio::fs::create_dir_all(&worker.config.scratch_dir).await.context("scratch dir")?;
    tempfile::Builder::new().prefix(&format!("{job_id}-")).tempdir_in(&worker.config.scratch_dir).context("scratch dir")
}

/// A job's inputs on local disk and the transcode they call for (the whole recording).
pub(crate) struct Prepared {
    pub spec: transcode::TranscodeSpec,
    pub missing: Vec<String>,
    pub segment_count: usize,
    /// participant → their audio tracks, for `audio_per_participant`.
    pub own_audio: BTreeMap<String, Vec<segment_reader::TrackInput>>,
}

/// Downloads the raw segments and timelines and plans the composite.
pub(crate) async fn prepare(worker: &Transcoder, record: &JobRecord, scratch: &std::path::Path) -> Result<Prepared, TranscodeError> {
    let inputs = inputs::download(&worker.storage, record, scratch).await?;
    tracing::info!(segments = inputs.segment_count, tracks = inputs.tracks.len(), duration_ms = inputs.duration_ns / 1_000_000, "inputs downloaded");
    let audio_only = record.request.audio_only;
    let (width, height, fps, video_kbps) = record.request.video_preset.params();
    let is_kind = |t: &segment_reader::TrackInput, kind: &str| {
        segment_reader::probe_caps(t).is_some_and(|c| c.structure(0).is_some_and(|s| s.name().starts_with(kind)))
    };
    let mut own_audio: BTreeMap<String, Vec<segment_reader::TrackInput>> = BTreeMap::new();
    if record.request.audio_per_participant {
        for track in inputs.tracks.iter().filter(|t| is_kind(t, "audio/")) {
            let participant = track.name.split('/').next().unwrap_or_default().to_string();
            own_audio.entry(participant).or_default().push(track.clone());
        }
    }
    let schedule = (!audio_only).then(|| {
        let video_tracks: Vec<String> = inputs.tracks.iter().filter(|t| is_kind(t, "video/")).map(|t| t.name.clone()).collect();
        let request = layout_plan::PlanRequest {
            layout: record.request.layout,
            participant: record.request.participant.as_deref(),
            video_tracks: &video_tracks,
            width,
            height,
        };
        let schedule = layout_plan::plan(&inputs.room_events, &request);
        tracing::info!(layout = ?record.request.layout, scenes = schedule.scenes().len(), video_tracks = video_tracks.len(), "layout planned");
        schedule
    });
    let spec = transcode::TranscodeSpec {
        tracks: inputs.tracks,
        duration_ns: inputs.duration_ns,
        width,
        height,
        fps,
        video_kbps,
        audio_bps: worker.config.audio_bitrate_bps,
        audio_only,
        schedule,
        video_window: None,
        encoder: worker.encoder_for(record.request.gpu)?,
        speed_preset: worker.config.x264_speed_preset,
        output: scratch.join("output"),
        stall_timeout: Duration::from_secs(worker.config.stall_timeout_s),
    };
    Ok(Prepared { spec, missing: inputs.missing, segment_count: inputs.segment_count, own_audio })
}

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

/// The finished recording on local disk, before upload.
pub(crate) struct Produced {
    pub path: std::path::PathBuf,
    pub extension: &'static str,
    /// The H.264 encoder that made it.
    pub encoder: String,
    pub problems: Vec<String>,
    pub participant_files: Vec<(SafeId, std::path::PathBuf)>,
}

/// Measures the recording, uploads it (and the participants' audio) and its manifest, and marks the
/// job complete.
pub(crate) async fn finish(worker: &Transcoder, record: &JobRecord, prepared: &Prepared, produced: Produced) -> Result<Done, TranscodeError> {
    let job_id = &record.id;
    let output_path = &produced.path;
    let info = mp4_info::read(output_path).context("output is not a valid MP4")?;
    let size_bytes = std::fs::metadata(output_path).context("measuring the output")?.len();
    let path = output_path.clone();
    let sha256 = tokio::task::spawn_blocking(move || sha256_file(&path)).await.context("hashing thread")?.context("hashing the output")?;
    // Where the request asked (expanded and checked when it was made), or the job's own folder.
    let key = record.request.filepath.clone().unwrap_or_else(|| keys::recording(job_id, produced.extension));
    let manifest_key = keys::manifest(job_id);
    let mut output = OutputInfo {
        location: worker.storage.location(&key),
        key,
        manifest_key: manifest_key.clone(),
        size_bytes,
        duration_s: info.duration_s,
        video_codec: info.sample_entries.iter().find(|e| e.starts_with("avc")).map(|e| codec_name(e)),
        audio_codec: info.sample_entries.iter().find(|e| *e == "mp4a").map(|e| codec_name(e)),
        sha256,
        participant_audio: Vec::new(),
    };
    for (participant, path) in &produced.participant_files {
        let key = keys::participant_audio(job_id, participant);
        let size_bytes = std::fs::metadata(path).context("measuring a participant's audio")?.len();
        output.participant_audio.push(ParticipantAudio {
            participant: participant.to_string(),
            location: worker.storage.location(&key),
            key,
            size_bytes,
        });
    }
    if !prepared.missing.is_empty() {
        tracing::warn!(missing = ?prepared.missing, "segments the timeline lists are not in storage; the recording has holes there");
    }
    let mut warnings: Vec<String> = prepared.missing.iter().map(|key| format!("segment missing from storage: {key}")).collect();
    // A chunked transcode's chunks noted their problems in the record as they went.
    for problem in record.warnings.iter().chain(&produced.problems) {
        if !warnings.contains(problem) {
            warnings.push(problem.clone());
        }
    }
    warnings.truncate(MAX_WARNINGS);
    let manifest = Manifest {
        job_id: job_id.as_str(),
        room: &record.request.room,
        output: &output,
        faststart: info.faststart,
        encoder: &produced.encoder,
        sessions: &record.sessions,
        segments: prepared.segment_count,
        chunks: record.chunks.as_ref().map(|c| c.count),
        warnings: &warnings,
        metadata: record.request.metadata.as_ref(),
        created_at_ms: fleet_protocol::time::now_ms(),
    };
    // The recording first, then the manifest that vouches for it; every key is fixed, so a retry
    // after a crash overwrites rather than duplicates.
    worker.storage.put_file(&output.key, output_path).await.context("upload")?;
    for ((_, path), audio) in produced.participant_files.iter().zip(&output.participant_audio) {
        worker.storage.put_file(&audio.key, path).await.context(format!("upload of {}", audio.key))?;
    }
    worker.storage.put_bytes(&manifest_key, manifest.to_json()).await.context("manifest upload")?;
    tracing::info!(location = %output.location, duration_s = output.duration_s, size_bytes, "recording uploaded");
    // A recorder killed mid-upload leaves its half-written file behind on shared local storage.
    match worker.storage.remove_abandoned_uploads(job_id.as_str(), abandoned_before(record)).await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "removed abandoned partial uploads"),
        Err(err) => tracing::warn!(%err, "could not sweep abandoned partial uploads"),
    }

    worker.jobs.apply(job_id, Transition::Complete { output, warnings }).await?;
    Ok(Done::Completed)
}

/// Partial uploads last written before this have lost their writer. Every capture session has ended, so
/// a live upload now (a restarted recorder recovering its spool) writes after the last session's end;
/// a margin covers clocks a little apart (a shared mount's server stamps the files). Whatever is an
/// hour old is dead in any case.
fn abandoned_before(record: &JobRecord) -> std::time::SystemTime {
    const CLOCK_MARGIN: Duration = Duration::from_secs(10);
    let now = std::time::SystemTime::now();
    let last_end = record.sessions.iter().filter_map(|s| s.ended_at_ms).max();
    let after_sessions = last_end.map(|ms| std::time::UNIX_EPOCH + Duration::from_millis(ms) - CLOCK_MARGIN);
    after_sessions.into_iter().chain([now - Duration::from_secs(3600)]).max().expect("one at least").min(now)
}

/// Runs the blocking GStreamer transcode on its own thread, publishing progress about once a second.
/// Runs the transcode; when a GPU encoder fails, runs it again on the node's CPU encoder (a log line and
/// a warning on the job, never a failed job for it). Returns the report and the encoder that made it.
pub(crate) async fn run_with_fallback(
    worker: &Arc<Transcoder>,
    job_id: &SafeId,
    spec: transcode::TranscodeSpec,
    base_s: f64,
) -> Result<(transcode::TranscodeReport, String), TranscodeError> {
    let encoder = spec.encoder.clone();
    let fallback = spec.clone();
    match run_pipeline(worker, job_id, spec, base_s).await {
        Ok(report) => Ok((report, encoder)),
        Err(err) if encoders::is_hardware(&encoder) => {
            let Some(cpu) = worker.encoders.iter().find(|e| !encoders::is_hardware(e)).cloned() else { return Err(err) };
            tracing::warn!(%encoder, %err, fallback = %cpu, "the GPU encoder failed; encoding on the CPU");
            let mut report = run_pipeline(worker, job_id, transcode::TranscodeSpec { encoder: cpu.clone(), ..fallback }, base_s).await?;
            report.problems.push(format!("{encoder} failed ({err}); encoded with {cpu} instead"));
            Ok((report, cpu))
        }
        Err(err) => Err(err),
    }
}

/// `base_s`: where in the recording the transcode starts (a chunk's window), for the percentage.
pub(crate) async fn run_pipeline(
    worker: &Arc<Transcoder>,
    job_id: &SafeId,
    spec: transcode::TranscodeSpec,
    base_s: f64,
) -> Result<transcode::TranscodeReport, TranscodeError> {
    let duration_s = (spec.duration_ns as f64 / 1e9).max(0.001);
    let (progress_tx, mut progress_rx) = tokio::sync::watch::channel(0.0f64);
    let pipeline = tokio::task::spawn_blocking(move || {
        transcode::run(&spec, |done_s| {
            let _ = progress_tx.send(done_s);
        })
    });
    let publisher = {
        let worker = worker.clone();
        let job_id = job_id.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            while progress_rx.changed().await.is_ok() {
                let done_s = *progress_rx.borrow_and_update();
                let progress = Progress {
                    percent: (100.0 * (base_s + done_s) / duration_s).min(100.0),
                    speed: done_s / started.elapsed().as_secs_f64().max(0.001),
                    node: worker.identity.node_id.clone(),
                };
                worker.bus.publish_progress(&job_id, &worker.identity.node_id, progress.clone()).await;
                let _ = worker.jobs.apply(&job_id, Transition::Progress(progress)).await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    };
    let result = pipeline.await.context("transcode thread")?;
    publisher.abort();
    result.context("transcode")
}

async fn mark_failed(worker: &Transcoder, job_id: &SafeId, reason: &str) {
    let failed = Transition::Fail { error: format!("transcode failed: {reason}") };
    if let Err(err) = worker.jobs.apply(job_id, failed).await {
        tracing::error!(%err, "could not mark job failed");
    }
}

async fn note_error(worker: &Transcoder, job_id: &SafeId, reason: &str) {
    let noted = Transition::NoteRetryError { error: format!("transcode attempt failed (will retry): {reason}") };
    let _ = worker.jobs.apply(job_id, noted).await;
}
