//! Spool recovery: segments that a previous recorder process on this machine wrote but never uploaded
//! (it was killed, or storage was down) are uploaded when the recorder starts again, then removed.
//! A killed writer's Matroska file is readable up to its last written frame, so the media up to the
//! crash reaches the recording instead of being lost with the process.

use crate::context::NodeContext;
use fleet_pipelines::segment_writer::segment_seq;
use fleet_protocol::{SafeId, keys};
use fleet_runtime::storage::StorageError;
use std::path::{Path, PathBuf};

/// A session directory left in the spool by an earlier process.
pub struct Orphan {
    job: SafeId,
    session: SafeId,
    dir: PathBuf,
}

/// Lists the spooled sessions. Call before taking jobs, so sessions this process starts are never included.
pub fn orphans(spool: &Path) -> Vec<Orphan> {
    id_dirs(spool)
        .into_iter()
        .flat_map(|(job, job_dir)| id_dirs(&job_dir).into_iter().map(move |(session, dir)| Orphan { job: job.clone(), session, dir }))
        .collect()
}

/// Uploads and removes the given orphaned sessions. Returns how many segment files were recovered.
pub async fn recover(recorder: &NodeContext, orphans: Vec<Orphan>) -> usize {
    let mut recovered = 0;
    for Orphan { job, session, dir } in orphans {
        match recover_session(recorder, &job, &session, &dir).await {
            Ok(count) => {
                recovered += count;
                tracing::info!(job_id = %job, session = %session, segments = count, "recovered spooled session");
                if let Err(err) = tokio::fs::remove_dir_all(&dir).await {
                    tracing::warn!(%err, "could not remove recovered spool directory");
                }
                if let Some(job_dir) = dir.parent() {
                    let _ = tokio::fs::remove_dir(job_dir).await;
                }
            }
            Err(err) => tracing::warn!(job_id = %job, session = %session, %err, "spool recovery failed; will retry at next start"),
        }
    }
    recovered
}

async fn recover_session(recorder: &NodeContext, job: &SafeId, session: &SafeId, dir: &Path) -> Result<usize, StorageError> {
    let mut count = 0;
    for (participant, participant_dir) in id_dirs(&dir.join("media")) {
        for (track, track_dir) in id_dirs(&participant_dir) {
            for file in files(&track_dir) {
                let Some(seq) = segment_seq(&file) else { continue };
                if std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) == 0 {
                    continue;
                }
                let key = keys::raw_segment(job, session, &participant, &track, seq);
                recorder.storage.put_file(&key, &file).await?;
                count += 1;
            }
        }
    }
    let timeline = dir.join("timeline.jsonl");
    if timeline.exists() {
        recorder.storage.put_file(&keys::timeline(job, session), &timeline).await?;
    }
    Ok(count)
}

/// Sub-directories whose names are valid ids (anything else in the spool is left alone).
fn id_dirs(dir: &Path) -> Vec<(SafeId, PathBuf)> {
    let mut found: Vec<(SafeId, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.path().is_dir())
        .filter_map(|entry| Some((SafeId::parse(entry.file_name().to_str()?).ok()?, entry.path())))
        .collect();
    found.sort();
    found
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| p.is_file()).collect();
    found.sort();
    found
}
