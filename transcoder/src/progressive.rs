//! Progressive transcode: while a recording runs, the chunks of it whose media is all in storage are
//! transcoded (by any free transcoder), so after the stop only the last chunk and the join remain. A
//! recorder asks every `progressive_interval_s`; the transcoder that takes the ask works out how far
//! the media is final from the timeline of each capture's newest session and the objects in storage,
//! and queues each chunk that is whole before that point. Nothing here fails the job: what is not done
//! now is done by the transcode after the stop.

use crate::context::{Done, JobContext};
use crate::error::{Context, TranscodeError};
use fleet_protocol::job::{CaptureSession, ChunkPlan, EndReason, TranscodeJob};
use fleet_protocol::timeline::{self, Entry};
use fleet_protocol::{JobRecord, SafeId, Transition, keys};
use std::collections::{BTreeMap, BTreeSet};

/// How far into a session (its running time, ns) its media is all in storage: not past the timeline's
/// last line, the start of any segment still open, or the start of a closed segment not yet uploaded.
pub fn stored_horizon_ns(timeline: &str, is_stored: impl Fn(&str) -> bool, job: &SafeId, session: &SafeId) -> u64 {
    let mut last_line = 0u64;
    let mut limit = u64::MAX;
    let mut open: BTreeMap<(String, String), u64> = BTreeMap::new();
    for line in timeline::parse(timeline) {
        last_line = last_line.max(line.running_ns);
        match line.entry {
            Entry::SegmentOpened { participant, track, .. } => {
                open.insert((participant, track), line.running_ns);
            }
            Entry::SegmentClosed { participant, track, seq } => {
                let opened = open.remove(&(participant.clone(), track.clone())).unwrap_or(line.running_ns);
                let key = match (SafeId::parse(participant), SafeId::parse(track)) {
                    (Ok(participant), Ok(track)) => Some(keys::raw_segment(job, session, &participant, &track, seq)),
                    _ => None,
                };
                if key.is_none_or(|key| !is_stored(&key)) {
                    limit = limit.min(opened);
                }
            }
            _ => {}
        }
    }
    open.values().fold(last_line.min(limit), |horizon, &opened| horizon.min(opened))
}

/// How far past its end a chunk's media must be final: a chunk encodes its audio a little past its end
/// (the AAC post-roll of `fleet_pipelines::aac_frames`), so that the next chunk's first frame joins on.
pub const FINAL_PAST_CHUNK_NS: u64 = 500_000_000;

/// The chunks of an open plan that lie between `floor_ns` and `horizon_ns` (with
/// [`FINAL_PAST_CHUNK_NS`] to spare) and are not done yet.
pub fn ready_chunks(plan: &ChunkPlan, floor_ns: u64, horizon_ns: u64) -> Vec<u32> {
    (0u32..)
        .take_while(|&index| (index as u64 + 1) * plan.chunk_ns + FINAL_PAST_CHUNK_NS <= horizon_ns)
        .filter(|&index| index as u64 * plan.chunk_ns >= floor_ns && !plan.done.contains(&index))
        .collect()
}

/// The newest session of each capture (each replica of a redundant job), in replica order.
fn newest_sessions(record: &JobRecord) -> Vec<&CaptureSession> {
    let mut newest: BTreeMap<u8, &CaptureSession> = BTreeMap::new();
    for session in &record.sessions {
        newest.insert(session.replica, session);
    }
    newest.into_values().collect()
}

/// The part of a running recording whose media is all in storage, as (floor, horizon) in recording
/// time (ns): every capture's, so that a redundant job's chunk has whatever the second capture holds
/// in the first one's gaps. `stored_horizon`: how far into a session its media is stored (`None`:
/// nothing of it yet).
///
/// Floor: after a failover, an older session of a capture whose recorder died may still get segments
/// back from that recorder's spool, so the time before the newest session of that capture is left to
/// the transcode after the stop. A capture lost without a successor holds the horizon where its
/// stored media ends: the rest is transcoded after the stop.
pub fn final_span(record: &JobRecord, stored_horizon: impl Fn(&CaptureSession) -> Option<u64>) -> Option<(u64, u64)> {
    let first_ms = record.first_started_at_ms()?;
    let offset_ns = |session: &CaptureSession| session.started_at_ms.saturating_sub(first_ms) * 1_000_000;
    let (mut floor, mut horizon) = (0u64, u64::MAX);
    for newest in newest_sessions(record) {
        let older_unsettled = record.sessions.iter().take_while(|s| s.id != newest.id).any(|s| s.replica == newest.replica && may_still_upload(s));
        if older_unsettled {
            floor = floor.max(offset_ns(newest));
        }
        horizon = horizon.min(offset_ns(newest) + stored_horizon(newest).unwrap_or(0));
    }
    (horizon != u64::MAX).then_some((floor, horizon))
}

/// A session whose recorder died (never ended, or ended by the controller for a redundant job) may
/// still get segments back from that recorder's spool.
fn may_still_upload(session: &CaptureSession) -> bool {
    session.ended_at_ms.is_none() || session.end_reason == Some(EndReason::RecorderLost)
}

/// Whether a recording is transcoded progressively at all: video recorded to a file, without pauses
/// (a paused recording is transcoded in one piece, as after the stop).
pub fn applies_to(record: &JobRecord) -> bool {
    record.state.is_capturing() && record.request.records_file() && !record.request.audio_only && record.pauses.is_empty() && record.files.is_none()
}

/// One ask of a recorder: queue every chunk that became final.
pub async fn catch_up(ctx: &JobContext, record: &JobRecord) -> Result<Done, TranscodeError> {
    let chunk_ns = ctx.config.chunk_seconds * 1_000_000_000;
    if chunk_ns == 0 || !applies_to(record) || record.sessions.is_empty() {
        return Ok(Done::NothingToDo);
    }
    let stored: BTreeSet<String> =
        ctx.storage.list(&keys::raw_prefix(&record.id)).await.context("listing segments")?.into_iter().map(|o| o.key).collect();
    let mut timelines = BTreeMap::new();
    for session in newest_sessions(record) {
        if let Ok(Some(timeline)) = crate::stored_timeline::read(&ctx.storage, &record.id, &session.id).await {
            let horizon = stored_horizon_ns(&timeline, |key| stored.contains(key), &record.id, &session.id);
            timelines.insert(session.id.clone(), horizon);
        }
    }
    let Some((floor_ns, horizon_ns)) = final_span(record, |session| timelines.get(&session.id).copied()) else { return Ok(Done::NothingToDo) };
    let (record, _) = ctx.jobs.apply(&record.id, Transition::OpenChunks { chunk_ns }).await?;
    let Some(plan) = record.chunks.as_ref().filter(|plan| plan.open) else { return Ok(Done::NothingToDo) };
    let ready = ready_chunks(plan, floor_ns, horizon_ns);
    let subject = ctx.bus.transcode_subject_for(&record).to_string();
    for &index in &ready {
        // De-duplicated while one is queued or running (the stream's window): later asks do not pile up.
        let message_id = format!("progressive-{}-chunk-{index}", record.id);
        let message = TranscodeJob { job_id: record.id.clone(), chunk: Some(index), catch_up: true };
        ctx.bus.enqueue(&subject, &message_id, &message).await?;
    }
    if !ready.is_empty() {
        tracing::info!(?ready, final_s = horizon_ns / 1_000_000_000, "progressive transcode: chunks queued");
    }
    Ok(Done::NothingToDo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> SafeId {
        SafeId::parse(s).unwrap()
    }

    fn line(running_s: u64, entry: &str) -> String {
        format!("{{\"wall_ms\":1,\"running_ns\":{},{entry}}}\n", running_s * 1_000_000_000)
    }

    fn opened(track: &str, seq: u32) -> String {
        format!("\"type\":\"segment_opened\",\"participant\":\"alice\",\"track\":\"{track}\",\"seq\":{seq}")
    }

    fn closed(track: &str, seq: u32) -> String {
        format!("\"type\":\"segment_closed\",\"participant\":\"alice\",\"track\":\"{track}\",\"seq\":{seq}")
    }

    #[test]
    fn the_horizon_stops_at_open_and_missing_segments() {
        let (job, session) = (id("rec_1"), id("s1"));
        let timeline = [
            line(0, &opened("TR_v", 0)),
            line(0, &opened("TR_a", 0)),
            line(4, &closed("TR_v", 0)),
            line(4, &opened("TR_v", 1)),
            line(4, &closed("TR_a", 0)),
            line(4, &opened("TR_a", 1)),
            line(8, &closed("TR_v", 1)),
            line(8, &opened("TR_v", 2)),
            line(8, &closed("TR_a", 1)),
        ]
        .concat();
        let all = |_: &str| true;
        // TR_a ended at 8 s (unpublished); TR_v's segment 2 is open from 8 s.
        assert_eq!(stored_horizon_ns(&timeline, all, &job, &session), 8_000_000_000);
        // Segment 1 of TR_v is closed but not uploaded yet: only what came before it counts.
        let without = |key: &str| !key.ends_with("TR_v/00001.mkv");
        assert_eq!(stored_horizon_ns(&timeline, without, &job, &session), 4_000_000_000);
        assert_eq!(stored_horizon_ns("", all, &job, &session), 0);
    }

    fn session(name: &str, replica: u8, start_ms: u64, end_ms: Option<u64>) -> CaptureSession {
        CaptureSession {
            id: id(name),
            node: "rec".into(),
            started_at_ms: start_ms,
            ended_at_ms: end_ms,
            segments: 0,
            end_reason: None,
            writing: true,
            replica,
        }
    }

    fn record(redundancy: u8) -> JobRecord {
        let request = serde_json::from_value(serde_json::json!({ "room": "r", "redundancy": redundancy })).unwrap();
        JobRecord::new(id("rec_1"), request, 0)
    }

    const S: u64 = 1_000_000_000;

    #[test]
    fn after_a_crash_the_time_before_the_newest_session_waits_for_the_stop() {
        let mut record = record(1);
        let stored_60s = |_: &CaptureSession| Some(60 * S);
        assert_eq!(final_span(&record, stored_60s), None, "no session yet");
        record.sessions = vec![session("s1", 0, 1_000, None)];
        assert_eq!(final_span(&record, stored_60s), Some((0, 60 * S)));
        record.sessions.push(session("s2", 0, 21_000, None));
        assert_eq!(final_span(&record, stored_60s), Some((20 * S, 80 * S)), "s1 was killed: its spool may still bring segments back");
        assert_eq!(final_span(&record, |_| None), Some((20 * S, 20 * S)), "nothing of s2 stored yet");
        record.sessions[0].ended_at_ms = Some(21_500);
        assert_eq!(final_span(&record, stored_60s), Some((0, 80 * S)), "a hand-over ended s1 properly");
    }

    #[test]
    fn a_redundant_recording_is_final_where_every_capture_is() {
        let mut record = record(2);
        // The second capture started 0.4 s after the first and has stored less of its media.
        record.sessions = vec![session("a1", 0, 1_000, None), session("b1", 1, 1_400, None)];
        let stored = |s: &CaptureSession| Some(if s.replica == 0 { 30 * S } else { 20 * S });
        assert_eq!(final_span(&record, stored), Some((0, 20 * S + 400_000_000)));
        // Nothing of the second capture stored yet: only what lies before its start.
        let first_only = |s: &CaptureSession| (s.replica == 0).then_some(30 * S);
        assert_eq!(final_span(&record, first_only), Some((0, 400_000_000)));
        // The first capture's recorder was killed and a new session of it began at 41 s: before that
        // waits for the stop; the second capture's open session is not an older session of the first.
        record.sessions.push(session("a2", 0, 42_000, None));
        let all = |s: &CaptureSession| Some(if s.id == id("a2") { 5 * S } else { 60 * S });
        assert_eq!(final_span(&record, all), Some((41 * S, 46 * S)));
        record.sessions[0].ended_at_ms = Some(42_000);
        record.sessions[0].end_reason = Some(EndReason::RecorderLost);
        assert_eq!(final_span(&record, all), Some((41 * S, 46 * S)), "ended by the controller: its spool may still upload");
        record.sessions[0].end_reason = Some(EndReason::Handover);
        assert_eq!(final_span(&record, all), Some((0, 46 * S)));
        record.state = fleet_protocol::JobState::Recording;
        assert!(applies_to(&record), "redundant recordings are transcoded progressively");
    }

    #[test]
    fn only_whole_chunks_before_the_horizon_are_ready() {
        let mut plan = ChunkPlan::open(10_000_000_000);
        assert!(ready_chunks(&plan, 0, 10_000_000_000).is_empty(), "the audio past the chunk's end is not final yet");
        assert_eq!(ready_chunks(&plan, 0, 10_500_000_000), [0]);
        assert_eq!(ready_chunks(&plan, 0, 30_500_000_000), [0, 1, 2]);
        assert_eq!(ready_chunks(&plan, 12_000_000_000, 40_500_000_000), [2, 3], "none before a failover's session");
        plan.done = vec![0, 2];
        assert_eq!(ready_chunks(&plan, 0, 35_000_000_000), [1]);
    }
}
