//! The storage key layout (DESIGN.md section 6), relative to the storage prefix. Built only from
//! [`SafeId`]s, and checked again by [`validate_key`] before any storage backend touches it.

use crate::ids::SafeId;

pub fn job_prefix(job: &SafeId) -> String {
    format!("{job}/")
}

pub fn raw_prefix(job: &SafeId) -> String {
    format!("{job}/raw/")
}

pub fn session_prefix(job: &SafeId, session: &SafeId) -> String {
    format!("{job}/raw/{session}/")
}

pub fn raw_segment(job: &SafeId, session: &SafeId, participant: &SafeId, track: &SafeId, seq: u32) -> String {
    format!("{job}/raw/{session}/{participant}/{track}/{seq:05}.mkv")
}

pub fn timeline(job: &SafeId, session: &SafeId) -> String {
    format!("{job}/raw/{session}/timeline.jsonl")
}

/// Part `index` of a session's timeline, as uploaded while the session runs (the whole
/// [`timeline`] replaces them at its end).
pub fn timeline_part(job: &SafeId, session: &SafeId, index: usize) -> String {
    format!("{}{index:05}.jsonl", timeline_parts_prefix(job, session))
}

pub fn timeline_parts_prefix(job: &SafeId, session: &SafeId) -> String {
    format!("{job}/raw/{session}/timeline-parts/")
}

pub fn recording(job: &SafeId, extension: &str) -> String {
    format!("{job}/{job}.{extension}")
}

/// One participant's own audio (`audio_per_participant`).
pub fn participant_audio(job: &SafeId, participant: &SafeId) -> String {
    format!("{job}/participants/{participant}.m4a")
}

/// The video of one chunk of a chunked transcode (an intermediate).
pub fn chunk(job: &SafeId, index: u32) -> String {
    format!("{job}/chunks/{index:05}.mp4")
}

/// The recording's poster frame (JPEG).
pub fn poster(job: &SafeId) -> String {
    format!("{job}/poster.jpg")
}

/// Live HLS: the playlist of every segment.
pub fn hls_playlist(job: &SafeId) -> String {
    format!("{job}/hls/playlist.m3u8")
}

/// Live HLS: the sliding-window playlist players follow live.
pub fn hls_live_playlist(job: &SafeId) -> String {
    format!("{job}/hls/live.m3u8")
}

/// Live HLS segment `index` (from 1), named relative to the playlists as `NNNNN.ts`.
pub fn hls_segment(job: &SafeId, index: u32) -> String {
    format!("{job}/hls/{}", hls_segment_name(index))
}

pub fn hls_segment_name(index: u32) -> String {
    format!("{index:05}.ts")
}

/// Where snapshots go: `<prefix>NNNNN.jpg`.
pub fn images_prefix(job: &SafeId) -> String {
    format!("{job}/images/")
}

pub fn image(job: &SafeId, index: u32) -> String {
    format!("{}{index:05}.jpg", images_prefix(job))
}

pub fn manifest(job: &SafeId) -> String {
    format!("{job}/manifest.json")
}

/// A parsed raw-segment key: which session, participant and track it belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SegmentKey {
    pub session: SafeId,
    pub participant: SafeId,
    pub track: SafeId,
    pub seq: u32,
}

/// Parses `<job>/raw/<session>/<participant>/<track>/<seq>.mkv`; anything else is `None`.
pub fn parse_segment_key(job: &SafeId, key: &str) -> Option<SegmentKey> {
    let rest = key.strip_prefix(&raw_prefix(job))?;
    let parts: Vec<&str> = rest.split('/').collect();
    let [session, participant, track, file] = parts.as_slice() else { return None };
    let seq = file.strip_suffix(".mkv")?.parse().ok()?;
    Some(SegmentKey {
        session: SafeId::parse(*session).ok()?,
        participant: SafeId::parse(*participant).ok()?,
        track: SafeId::parse(*track).ok()?,
        seq,
    })
}

#[derive(Debug, thiserror::Error)]
#[error("invalid storage key {0:?}")]
pub struct InvalidKey(pub String);

/// Keys are `/`-separated parts of `[A-Za-z0-9._-]`, none empty, `.` or `..`, no leading `/`.
pub fn validate_key(key: &str) -> Result<(), InvalidKey> {
    let part_ok = |p: &str| !p.is_empty() && p != "." && p != ".." && p.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if key.len() <= 1024 && key.split('/').all(part_ok) { Ok(()) } else { Err(InvalidKey(key.to_string())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SafeId {
        SafeId::parse(s).unwrap()
    }

    #[test]
    fn segment_keys_round_trip() {
        let key = raw_segment(&id("j1"), &id("s1"), &id("p1"), &id("video"), 7);
        assert_eq!(key, "j1/raw/s1/p1/video/00007.mkv");
        validate_key(&key).unwrap();
        let parsed = parse_segment_key(&id("j1"), &key).unwrap();
        assert_eq!(parsed.seq, 7);
        assert_eq!(parsed.track, id("video"));
        assert!(parse_segment_key(&id("j1"), "j1/raw/s1/timeline.jsonl").is_none());
        assert!(parse_segment_key(&id("j1"), &timeline_part(&id("j1"), &id("s1"), 3)).is_none());
        assert!(parse_segment_key(&id("j2"), &key).is_none());
    }

    #[test]
    fn traversal_keys_are_invalid() {
        for bad in ["../x", "a/../b", "/abs", "a//b", "a/./b", "a/b\n", ""] {
            assert!(validate_key(bad).is_err(), "{bad:?} should be invalid");
        }
    }
}
