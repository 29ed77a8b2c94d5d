//! Publishing a finished recording: measured, uploaded with its manifest (fixed keys, so a retry
//! overwrites), abandoned partial uploads swept, and the job marked complete.

use super::prepare::Prepared;
use crate::context::{Done, JobContext};
use crate::error::{Context, TranscodeError};
use crate::manifest::{Manifest, codec_name, sha256_file};
use fleet_pipelines::{mp4_info, poster};
use fleet_protocol::job::{OutputInfo, ParticipantAudio, Poster};
use fleet_protocol::{JobRecord, SafeId, Transition, keys};
use std::time::Duration;

const MAX_WARNINGS: usize = 20;

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
pub(crate) async fn publish(ctx: &JobContext, record: &JobRecord, prepared: &Prepared, mut produced: Produced) -> Result<Done, TranscodeError> {
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
        location: ctx.storage.location(&key),
        key,
        manifest_key: manifest_key.clone(),
        size_bytes,
        duration_s: info.duration_s,
        video_codec: info.sample_entries.iter().find(|e| e.starts_with("avc")).map(|e| codec_name(e)),
        audio_codec: info.sample_entries.iter().find(|e| *e == "mp4a").map(|e| codec_name(e)),
        sha256,
        participant_audio: Vec::new(),
        poster: None,
    };
    let poster_path = output_path.with_extension("jpg");
    if output.video_codec.is_some() {
        let (mp4, jpeg) = (output_path.clone(), poster_path.clone());
        let at_ns = poster::poster_instant_ns((info.duration_s * 1e9) as u64);
        let written = tokio::task::spawn_blocking(move || poster::write(&mp4, at_ns, &jpeg)).await.context("poster thread")?;
        match written {
            Ok(size_bytes) => {
                let key = keys::poster(job_id);
                output.poster = Some(Poster { location: ctx.storage.location(&key), key, size_bytes, at_s: at_ns as f64 / 1e9 });
            }
            // A poster is a convenience: the recording is published without one, with a warning.
            Err(err) => produced.problems.push(format!("no poster image: {err}")),
        }
    }
    for (participant, path) in &produced.participant_files {
        let key = keys::participant_audio(job_id, participant);
        let size_bytes = std::fs::metadata(path).context("measuring a participant's audio")?.len();
        output.participant_audio.push(ParticipantAudio {
            participant: participant.to_string(),
            location: ctx.storage.location(&key),
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
        pauses: &record.pauses,
        warnings: &warnings,
        metadata: record.request.metadata.as_ref(),
        created_at_ms: fleet_protocol::time::now_ms(),
    };
    // The recording first, then the manifest that vouches for it; every key is fixed, so a retry
    // after a crash overwrites rather than duplicates.
    ctx.storage.put_file(&output.key, output_path).await.context("upload")?;
    for ((_, path), audio) in produced.participant_files.iter().zip(&output.participant_audio) {
        ctx.storage.put_file(&audio.key, path).await.context(format!("upload of {}", audio.key))?;
    }
    if let Some(poster) = &output.poster {
        ctx.storage.put_file(&poster.key, &poster_path).await.context("poster upload")?;
    }
    ctx.storage.put_bytes(&manifest_key, manifest.to_json()).await.context("manifest upload")?;
    tracing::info!(location = %output.location, duration_s = output.duration_s, size_bytes, "recording uploaded");
    // A recorder killed mid-upload leaves its half-written file behind on shared local storage.
    match ctx.storage.remove_abandoned_uploads(job_id.as_str(), abandoned_before(record)).await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "removed abandoned partial uploads"),
        Err(err) => tracing::warn!(%err, "could not sweep abandoned partial uploads"),
    }

    ctx.jobs.apply(job_id, Transition::Complete { output, warnings }).await?;
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
