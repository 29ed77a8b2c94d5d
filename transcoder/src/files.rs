//! File jobs: whole media files on the shared recordings root (`shared_files_root`, plugNmeet's
//! `main_path` mounted on the transcoder) re-encoded, one after another, into one MP4 written next to
//! them: plugNmeet's post-recording transcode and its merge of recordings.

use crate::context::{Done, JobContext};
use crate::error::{Context, TranscodeError};
use crate::manifest::{codec_name, sha256_file};
use fleet_pipelines::{file_transcode, mp4_info};
use fleet_protocol::job::{FileJob, OutputInfo};
use fleet_protocol::{JobRecord, Transition};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// `relative` under `root`, refusing anything that would leave it.
pub fn resolve(root: &Path, relative: &str) -> Result<PathBuf, TranscodeError> {
    let path = Path::new(relative);
    if relative.is_empty() || !path.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(TranscodeError::Files(format!("{relative:?} is not a plain path below the shared recordings root")));
    }
    Ok(root.join(path))
}

pub async fn transcode_files(ctx: &Arc<JobContext>, record: &JobRecord, files: &FileJob) -> Result<Done, TranscodeError> {
    let root = ctx
        .config
        .shared_files_root
        .clone()
        .ok_or_else(|| TranscodeError::Files("this transcoder has no shared_files_root: it cannot reach plugNmeet's recording files".into()))?;
    let inputs = files.inputs.iter().map(|i| resolve(&root, i)).collect::<Result<Vec<_>, _>>()?;
    let output = resolve(&root, &files.output)?;
    for input in &inputs {
        if !input.is_file() {
            return Err(TranscodeError::Files(format!("input {} does not exist", input.display())));
        }
    }
    let partial = output.with_extension("mp4.part");
    let (width, height, fps, video_kbps) = record.request.video_preset.params();
    let spec = file_transcode::FileTranscodeSpec {
        inputs,
        output: partial.clone(),
        encoder: ctx.encoder_for(record.request.gpu)?,
        speed_preset: ctx.config.x264_speed_preset,
        width,
        height,
        fps,
        video_kbps,
        audio_bps: ctx.config.audio_bitrate_bps,
        stall_timeout: std::time::Duration::from_secs(ctx.config.stall_timeout_s),
    };
    tracing::info!(inputs = spec.inputs.len(), output = %output.display(), "file transcode");
    tokio::task::spawn_blocking(move || file_transcode::run(&spec)).await.context("transcode thread")?.context("file transcode")?;
    tokio::fs::rename(&partial, &output).await.context(format!("renaming to {}", output.display()))?;

    let measured = output.clone();
    let (info, sha256) =
        tokio::task::spawn_blocking(move || (mp4_info::read(&measured), sha256_file(&measured))).await.context("measuring thread")?;
    let info = info.context("the output is not a valid MP4")?;
    let codec = |prefix: &str| info.sample_entries.iter().find(|e| e.starts_with(prefix)).map(|e| codec_name(e));
    let out = OutputInfo {
        key: files.output.clone(),
        location: output.to_string_lossy().to_string(),
        manifest_key: String::new(),
        size_bytes: tokio::fs::metadata(&output).await.context("measuring the output")?.len(),
        duration_s: info.duration_s,
        video_codec: codec("avc"),
        audio_codec: codec("mp4a"),
        sha256: sha256.context("hashing the output")?,
        participant_audio: Vec::new(),
        poster: None,
    };
    tracing::info!(location = %out.location, duration_s = out.duration_s, size_bytes = out.size_bytes, "file transcode done");
    let complete = Transition::Complete { output: out, warnings: Vec::new() };
    ctx.jobs.apply(&record.id, complete).await?;
    Ok(Done::Completed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_below_the_root() {
        let root = Path::new("/srv/rec");
        assert_eq!(resolve(root, "node_01/room/a.mp4").unwrap(), Path::new("/srv/rec/node_01/room/a.mp4"));
        for bad in ["", "../etc/passwd", "/etc/passwd", "a/../../b", "./a"] {
            assert!(resolve(root, bad).is_err(), "{bad}");
        }
    }
}
