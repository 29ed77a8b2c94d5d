//! Finds a job's raw segments in storage, downloads them, and places each capture session on the
//! recording's timeline (its offset from the first session's start).

use fleet_pipelines::segment_reader::{SegmentFile, TrackInput};
use fleet_protocol::keys::{self, SegmentKey};
use fleet_protocol::storage::Storage;
use fleet_protocol::{JobRecord, SafeId};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("the job has no finished capture session")]
    NoSession,
    #[error("no raw segments found under {0}")]
    NoSegments(String),
    #[error("segments of unknown session {0} (not in the job record)")]
    UnknownSession(SafeId),
    #[error("storage: {0}")]
    Storage(#[from] fleet_protocol::storage::StorageError),
}

pub struct Inputs {
    pub tracks: Vec<TrackInput>,
    pub duration_ns: u64,
    pub segment_count: usize,
}

pub async fn download(storage: &Storage, record: &JobRecord, into: &Path) -> Result<Inputs, InputError> {
    let first_start = record.sessions.first().ok_or(InputError::NoSession)?.started_at_ms;
    let duration_ms = record.recorded_span_ms().ok_or(InputError::NoSession)?;
    let prefix = keys::raw_prefix(&record.id);
    let objects = storage.list(&prefix).await?;

    // (participant, track) -> ordered segments across all sessions.
    let mut by_track: BTreeMap<(SafeId, SafeId), Vec<(SegmentKey, String)>> = BTreeMap::new();
    for object in objects {
        if let Some(segment) = keys::parse_segment_key(&record.id, &object.key) {
            by_track.entry((segment.participant.clone(), segment.track.clone())).or_default().push((segment, object.key));
        }
    }
    if by_track.is_empty() {
        return Err(InputError::NoSegments(storage.location(&prefix)));
    }

    let mut tracks = Vec::new();
    let mut segment_count = 0;
    for ((participant, track), mut segments) in by_track {
        segments.sort_by(|a, b| {
            let start = |s: &SegmentKey| record.sessions.iter().position(|x| x.id == s.session);
            start(&a.0).cmp(&start(&b.0)).then(a.0.seq.cmp(&b.0.seq))
        });
        let mut files = Vec::new();
        for (segment, key) in segments {
            let session = record
                .sessions
                .iter()
                .find(|s| s.id == segment.session)
                .ok_or_else(|| InputError::UnknownSession(segment.session.clone()))?;
            let path = into.join(&key);
            tokio::fs::create_dir_all(path.parent().expect("keys have parents")).await.map_err(storage_io)?;
            storage.get_to_file(&key, &path).await?;
            let offset_ns = session.started_at_ms.saturating_sub(first_start) * 1_000_000;
            files.push(SegmentFile { path, offset_ns });
            segment_count += 1;
        }
        tracks.push(TrackInput { name: format!("{participant}/{track}"), segments: files });
    }
    Ok(Inputs { tracks, duration_ns: duration_ms * 1_000_000, segment_count })
}

fn storage_io(err: std::io::Error) -> InputError {
    InputError::Storage(err.into())
}
