//! Progressive transcode: while a recording runs, the chunks of it whose media is all in storage are
//! transcoded (by any free transcoder), so after the stop only the last chunk and the join remain. A
//! recorder asks every `progressive_interval_s`; the transcoder that takes the ask works out how far
//! the media is final from the newest session's timeline and the objects in storage, and queues each
//! chunk that is whole before that point. Nothing here fails the job: what is not done now is done by
//! the transcode after the stop.

use crate::context::{Done, JobContext};
use crate::error::{Context, TranscodeError};
use fleet_protocol::job::{ChunkPlan, TranscodeJob};
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

/// Where progressive chunks may begin: after a failover, an older session that never ended (its
/// recorder was killed) may still get segments back from that recorder's spool, so the time before the
/// newest session is left to the transcode after the stop.
fn floor_ns(record: &JobRecord) -> u64 {
    let (Some(first), Some(newest)) = (record.sessions.first(), record.sessions.last()) else { return 0 };
    let older_open = record.sessions[..record.sessions.len() - 1].iter().any(|s| s.ended_at_ms.is_none());
    if older_open { newest.started_at_ms.saturating_sub(first.started_at_ms) * 1_000_000 } else { 0 }
}

/// Whether a recording is transcoded progressively at all: video recorded to a file, without pauses
/// (a paused recording is transcoded in one piece, as after the stop).
pub fn applies_to(record: &JobRecord) -> bool {
    record.state.is_capturing()
        && record.request.records_file()
        && !record.request.audio_only
        && record.request.replicas() == 1
        && record.pauses.is_empty()
        && record.files.is_none()
}

/// One ask of a recorder: queue every chunk that became final.
pub async fn catch_up(ctx: &JobContext, record: &JobRecord) -> Result<Done, TranscodeError> {
    let chunk_ns = ctx.config.chunk_seconds * 1_000_000_000;
    let (Some(first), Some(newest)) = (record.sessions.first(), record.sessions.last()) else { return Ok(Done::NothingToDo) };
    if chunk_ns == 0 || !applies_to(record) {
        return Ok(Done::NothingToDo);
    }
    let Ok(timeline) = ctx.storage.get_bytes(&keys::timeline(&record.id, &newest.id)).await else { return Ok(Done::NothingToDo) };
    let stored: BTreeSet<String> =
        ctx.storage.list(&keys::raw_prefix(&record.id)).await.context("listing segments")?.into_iter().map(|o| o.key).collect();
    let session_horizon = stored_horizon_ns(&String::from_utf8_lossy(&timeline), |key| stored.contains(key), &record.id, &newest.id);
    let horizon_ns = newest.started_at_ms.saturating_sub(first.started_at_ms) * 1_000_000 + session_horizon;
    let (record, _) = ctx.jobs.apply(&record.id, Transition::OpenChunks { chunk_ns }).await?;
    let Some(plan) = record.chunks.as_ref().filter(|plan| plan.open) else { return Ok(Done::NothingToDo) };
    let ready = ready_chunks(plan, floor_ns(&record), horizon_ns);
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

    #[test]
    fn after_a_crash_the_time_before_the_newest_session_waits_for_the_stop() {
        let request: fleet_protocol::JobRequest = serde_json::from_value(serde_json::json!({ "room": "r" })).unwrap();
        let mut record = JobRecord::new(id("rec_1"), request, 0);
        let session = |n: &str, start: u64, end: Option<u64>| fleet_protocol::job::CaptureSession {
            id: id(n),
            node: "rec".into(),
            started_at_ms: start,
            ended_at_ms: end,
            segments: 0,
            end_reason: None,
            writing: true,
            replica: 0,
        };
        record.sessions = vec![session("s1", 1_000, None)];
        assert_eq!(floor_ns(&record), 0);
        record.sessions.push(session("s2", 21_000, None));
        assert_eq!(floor_ns(&record), 20_000_000_000, "s1 was killed: its spool may still bring segments back");
        record.sessions[0].ended_at_ms = Some(21_500);
        assert_eq!(floor_ns(&record), 0, "a hand-over ended s1 properly");
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
