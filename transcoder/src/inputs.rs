//! Finds a job's raw segments in storage, downloads them, and places each capture session on the
//! recording's timeline (its offset from the first session's start).

use crate::coverage::{self, Candidate, Pick};
use crate::decryption::TimelineE2ee;
use crate::room_history::{self, RoomEvent, TimedEvent};
use fleet_pipelines::segment_reader::{SegmentFile, TrackInput};
use fleet_protocol::keys::{self, SegmentKey};
use fleet_protocol::timeline::{self, Entry};
use fleet_protocol::{JobRecord, SafeId};
use fleet_runtime::storage::Storage;
use std::collections::{BTreeMap, BTreeSet};
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
    Storage(#[from] fleet_runtime::storage::StorageError),
}

pub struct Inputs {
    pub tracks: Vec<TrackInput>,
    /// Segments a session's timeline says were written but that storage does not have.
    pub missing: Vec<String>,
    /// Every session's room events, in recording time.
    pub room_events: Vec<TimedEvent>,
    pub duration_ns: u64,
    /// Segments the recording is made of (downloaded or not: a chunk's inputs are some of them).
    pub segment_count: usize,
    /// The end-to-end encrypted tracks and the room's trailer, from the timelines.
    pub e2ee: TimelineE2ee,
}

/// `upto_ms`: the recording's length so far, for one still running (its record has no end yet).
/// `window`: only the segments with media in this part of the recording (a chunk's), and per track at
/// least one (a track's caps come from its files); `None`: all of them.
pub async fn download(
    storage: &Storage,
    record: &JobRecord,
    into: &Path,
    upto_ms: Option<u64>,
    window: Option<std::ops::Range<u64>>,
) -> Result<Inputs, InputError> {
    let first_start = record.first_started_at_ms().ok_or(InputError::NoSession)?;
    let duration_ms = upto_ms.or_else(|| record.recorded_span_ms()).ok_or(InputError::NoSession)?;
    let duration_ns = duration_ms * 1_000_000;
    let prefix = keys::raw_prefix(&record.id);
    let objects = storage.list(&prefix).await?;
    let stored: BTreeSet<String> = objects.iter().map(|o| o.key.clone()).collect();
    let mut missing = Vec::new();

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

    // Where each session lies on the recording's timeline; a hand-over overlaps two sessions of one
    // capture, and the room is the newer session's from its start.
    let windows: Vec<(u64, u64)> = record
        .sessions
        .iter()
        .enumerate()
        .map(|(index, session)| {
            let start_ns = session.started_at_ms.saturating_sub(first_start) * 1_000_000;
            let end_ns = session.ended_at_ms.map(|end| end.saturating_sub(first_start) * 1_000_000).unwrap_or(duration_ns);
            let next_start_ns = record.sessions[index + 1..]
                .iter()
                .find(|next| next.replica == session.replica)
                .map(|next| next.started_at_ms.saturating_sub(first_start) * 1_000_000);
            (start_ns, next_start_ns.map_or(end_ns, |next| end_ns.min(next.max(start_ns))).max(start_ns))
        })
        .collect();
    let event_windows = room_windows(record, &windows);

    // Per session, from its timeline (absent for an old recorder or a lost upload): the lip-sync
    // corrections, the room's events and where each segment's media lies.
    let mut corrections: BTreeMap<SafeId, crate::lipsync::Corrections> = BTreeMap::new();
    // Recording time of each session's first frame per track, for cutting an overlapped session.
    let mut first_frames: BTreeMap<SafeId, BTreeMap<(String, String), u64>> = BTreeMap::new();
    let mut spans: BTreeMap<SafeId, BTreeMap<(String, String, u32), Span>> = BTreeMap::new();
    let mut room_events = Vec::new();
    let mut e2ee = TimelineE2ee::default();
    for (index, session) in record.sessions.iter().enumerate() {
        let (start_ns, _) = windows[index];
        let text = match crate::stored_timeline::read(storage, &record.id, &session.id).await {
            Ok(Some(text)) => text,
            Ok(None) => {
                tracing::warn!(session = %session.id, "no timeline for this session; its tracks are laid out without room events");
                String::new()
            }
            Err(err) => {
                tracing::warn!(session = %session.id, %err, "timeline unreadable; this session's tracks are laid out without room events");
                String::new()
            }
        };
        e2ee.read(&text);
        let found = crate::lipsync::corrections(&text);
        if !found.is_empty() {
            tracing::info!(session = %session.id, ?found, "lip-sync corrections from sender reports (ns)");
        }
        corrections.insert(session.id.clone(), found);
        let session_spans = segment_spans(&text);
        first_frames.insert(session.id.clone(), first_segment_times(&session_spans).into_iter().map(|(track, ns)| (track, start_ns + ns)).collect());
        spans.insert(session.id.clone(), session_spans);
        missing.extend(closed_segment_keys(&text, &record.id, &session.id).into_iter().filter(|key| !stored.contains(key)));
        for &(from_ns, end_ns) in &event_windows[index] {
            room_events.extend(room_history::session_events_from(&text, start_ns, from_ns, end_ns));
        }
    }
    // Sessions do not overlap, but a clock step between nodes could make them: keep time order, and
    // a session's end before the next one's start at the same instant.
    room_events.sort_by_key(|e| (e.at_ns, !matches!(e.event, RoomEvent::SessionEnded)));

    let mut tracks = Vec::new();
    let mut segment_count = 0;
    for ((participant, track), mut segments) in by_track {
        segments.sort_by(|a, b| {
            let start = |s: &SegmentKey| record.sessions.iter().position(|x| x.id == s.session);
            start(&a.0).cmp(&start(&b.0)).then(a.0.seq.cmp(&b.0.seq))
        });
        let track_key = (participant.to_string(), track.to_string());
        let mut placed = Vec::new();
        for (segment, key) in segments {
            let index =
                record.sessions.iter().position(|s| s.id == segment.session).ok_or_else(|| InputError::UnknownSession(segment.session.clone()))?;
            let session = &record.sessions[index];
            // Where a later session of the same capture (a hand-over that overlapped this one) has this
            // track: this one ends there.
            let until_ns = record.sessions[index + 1..]
                .iter()
                .filter(|later| later.replica == session.replica)
                .filter_map(|later| first_frames.get(&later.id).and_then(|f| f.get(&track_key)).copied())
                .min();
            let lipsync_ns = corrections.get(&session.id).and_then(|c| c.get(&track_key)).copied().unwrap_or(0);
            let offset_ns = windows[index].0 + lipsync_ns;
            let span = spans.get(&session.id).and_then(|s| s.get(&(track_key.0.clone(), track_key.1.clone(), segment.seq))).copied();
            placed.push(Placed { key, session: index, offset_ns, until_ns, replica: session.replica, span, session_end_ns: windows[index].1 });
        }
        let mut picks = pick_segments(&placed);
        segment_count += picks.len();
        if let Some(window) = &window {
            picks = within(&placed, picks, window);
        }
        let mut files = Vec::new();
        for pick in picks {
            let chosen = &placed[pick.index];
            let path = into.join(&chosen.key);
            tokio::fs::create_dir_all(path.parent().expect("keys have parents")).await.map_err(storage_io)?;
            storage.get_to_file(&chosen.key, &path).await?;
            let until_ns = match (chosen.until_ns, pick.until_ns) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            files.push(SegmentFile { path, offset_ns: chosen.offset_ns, until_ns, from_ns: pick.from_ns });
        }
        tracks.push(TrackInput::new(format!("{participant}/{track}"), files));
    }
    Ok(Inputs { tracks, missing, room_events, duration_ns, segment_count, e2ee })
}

/// A stored segment of a track, placed on the recording's timeline.
struct Placed {
    key: String,
    /// Its session's index in the record.
    session: usize,
    offset_ns: u64,
    until_ns: Option<u64>,
    replica: u8,
    /// Its media's open and close in its session's running time, from the timeline.
    span: Option<Span>,
    session_end_ns: u64,
}

/// A segment's open and (once closed) close, in its session's running time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    open_ns: u64,
    close_ns: Option<u64>,
}

/// Which segments of a track play. One capture: all of them, in order. Several (a redundant job): the
/// first capture's, with the others filling its gaps (see [`crate::coverage`]); that needs every
/// segment's span, so without a timeline the first capture's segments are played alone.
fn pick_segments(placed: &[Placed]) -> Vec<Pick> {
    let whole = |index| Pick { index, from_ns: None, until_ns: None };
    let first_replica = placed.iter().map(|p| p.replica).min().unwrap_or(0);
    if placed.iter().all(|p| p.replica == first_replica) {
        return (0..placed.len()).map(whole).collect();
    }
    let mut candidates = Vec::with_capacity(placed.len());
    for (index, segment) in placed.iter().enumerate() {
        let Some((start_ns, end_ns)) = media_span(placed, index) else {
            tracing::warn!(key = segment.key, "a segment of a redundant recording without its timeline entry: only the first capture is used");
            return (0..placed.len()).filter(|&i| placed[i].replica == first_replica).map(whole).collect();
        };
        candidates.push(Candidate { replica: segment.replica, start_ns, end_ns });
    }
    coverage::plan(&candidates)
}

/// Where segment `index`'s media lies on the recording's timeline (cut where a later session of its
/// capture took over), from its timeline entries; `None` without them. A segment whose close was never
/// written (its recorder died) lasts until the next one of its session opens, or the session's end.
fn media_span(placed: &[Placed], index: usize) -> Option<(u64, u64)> {
    let segment = &placed[index];
    let span = segment.span?;
    let next_open = placed[index + 1..].iter().find(|p| p.session == segment.session).and_then(|p| p.span);
    let start_ns = segment.offset_ns + span.open_ns;
    let close_ns = span.close_ns.or(next_open.map(|n| n.open_ns)).map_or(segment.session_end_ns, |close| segment.offset_ns + close);
    let end_ns = segment.until_ns.map_or(close_ns, |until| until.min(close_ns)).max(start_ns);
    Some((start_ns, end_ns))
}

/// Slack around a window for the lip-sync shifts and timestamps a little off the timeline's.
const WINDOW_SLACK_NS: u64 = 1_000_000_000;

/// The picks with media in `window` (widened by the slack), or without a known span. A track with none
/// there keeps its nearest segment before the window (else its first): the transcode takes a track's
/// caps from its files, and a chunk must see the same tracks as the whole recording does.
fn within(placed: &[Placed], picks: Vec<Pick>, window: &std::ops::Range<u64>) -> Vec<Pick> {
    let (from, until) = (window.start.saturating_sub(WINDOW_SLACK_NS), window.end.saturating_add(WINDOW_SLACK_NS));
    let overlaps = |pick: &Pick| media_span(placed, pick.index).is_none_or(|(start, end)| start < until && end > from);
    let kept: Vec<Pick> = picks.iter().copied().filter(overlaps).collect();
    if !kept.is_empty() || picks.is_empty() {
        return kept;
    }
    let before = picks.iter().rev().find(|p| media_span(placed, p.index).is_some_and(|(start, _)| start < from));
    vec![*before.unwrap_or(&picks[0])]
}

/// Per session, the spans of the recording whose room events it gives: the first capture's sessions
/// their own windows; another capture's sessions only where no session of an earlier capture was open.
fn room_windows(record: &JobRecord, windows: &[(u64, u64)]) -> Vec<Vec<(u64, u64)>> {
    let mut covered: Vec<(u64, u64)> = Vec::new();
    let mut replicas: Vec<u8> = record.sessions.iter().map(|s| s.replica).collect();
    replicas.sort_unstable();
    replicas.dedup();
    let mut result = vec![Vec::new(); windows.len()];
    for replica in replicas {
        let own: Vec<usize> = (0..windows.len()).filter(|&i| record.sessions[i].replica == replica).collect();
        for &index in &own {
            let (start, end) = windows[index];
            result[index] = if covered.is_empty() { vec![(start, end)] } else { coverage::outside(&covered, start, end) };
        }
        covered.extend(own.iter().map(|&i| windows[i]));
        covered.sort_unstable();
    }
    result
}

/// Per (participant, track, seq): where the segment opened and closed, in session running time.
fn segment_spans(timeline: &str) -> BTreeMap<(String, String, u32), Span> {
    let mut spans: BTreeMap<(String, String, u32), Span> = BTreeMap::new();
    for line in timeline::parse(timeline) {
        match line.entry {
            Entry::SegmentOpened { participant, track, seq } => {
                spans.insert((participant, track, seq), Span { open_ns: line.running_ns, close_ns: None });
            }
            Entry::SegmentClosed { participant, track, seq } => {
                if let Some(span) = spans.get_mut(&(participant, track, seq)) {
                    span.close_ns = Some(line.running_ns);
                }
            }
            _ => {}
        }
    }
    spans
}

/// Per (participant, track): the session running time at which its first segment opened.
fn first_segment_times(spans: &BTreeMap<(String, String, u32), Span>) -> BTreeMap<(String, String), u64> {
    let mut first: BTreeMap<(String, String), u64> = BTreeMap::new();
    for ((participant, track, _), span) in spans {
        let earliest = first.entry((participant.clone(), track.clone())).or_insert(span.open_ns);
        *earliest = (*earliest).min(span.open_ns);
    }
    first
}

/// The storage keys of the segments a timeline records as closed (every closed segment is uploaded).
fn closed_segment_keys(timeline: &str, job: &SafeId, session: &SafeId) -> Vec<String> {
    timeline::parse(timeline)
        .filter_map(|line| match line.entry {
            Entry::SegmentClosed { participant, track, seq } => {
                Some(keys::raw_segment(job, session, &SafeId::parse(participant).ok()?, &SafeId::parse(track).ok()?, seq))
            }
            _ => None,
        })
        .collect()
}

fn storage_io(err: std::io::Error) -> InputError {
    InputError::Storage(err.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn segment(seq: u64) -> Placed {
        let span = Span { open_ns: seq * 2 * S, close_ns: Some((seq + 1) * 2 * S) };
        Placed { key: format!("{seq}"), session: 0, offset_ns: 0, until_ns: None, replica: 0, span: Some(span), session_end_ns: 6 * S }
    }

    #[test]
    fn a_chunk_downloads_only_the_segments_of_its_window() {
        let placed = [segment(0), segment(1), segment(2)];
        let all = pick_segments(&placed);
        let indices = |picks: Vec<Pick>| picks.into_iter().map(|p| p.index).collect::<Vec<_>>();
        assert_eq!(indices(within(&placed, all.clone(), &(4 * S + S / 2..5 * S + S / 2))), [1, 2], "its own and the one a second before");
        assert_eq!(indices(within(&placed, all.clone(), &(0..S))), [0]);
        assert_eq!(indices(within(&placed, all, &(10 * S..12 * S))), [2], "none in the window: the nearest before, for its caps");
        let unknown = Placed { span: None, ..segment(0) };
        assert_eq!(indices(within(&[unknown], vec![Pick { index: 0, from_ns: None, until_ns: None }], &(10 * S..12 * S))), [0], "no span: kept");
    }

    #[test]
    fn closed_segments_become_storage_keys() {
        let timeline = r#"{"wall_ms":1,"running_ns":5,"type":"segment_opened","participant":"alice","track":"TR_1","seq":0}
{"wall_ms":1,"running_ns":9,"type":"segment_closed","participant":"alice","track":"TR_1","seq":0}
{"wall_ms":1,"running_ns":9,"type":"segment_closed","participant":"../x","track":"TR_1","seq":1}
{"wall_ms":1,"running_ns":9,"type":"segment_clo"#;
        let job = SafeId::parse("rec_1").unwrap();
        let session = SafeId::parse("s1").unwrap();
        assert_eq!(closed_segment_keys(timeline, &job, &session), vec!["rec_1/raw/s1/alice/TR_1/00000.mkv".to_string()]);
    }
}
