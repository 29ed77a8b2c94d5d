//! The job state machine: every change to a job record is a [`Transition`], applied by
//! [`JobRecord::apply`] with the time as an argument (no I/O), which either changes the record, leaves it
//! as it is, or refuses with a typed [`Refusal`]. `JobStore::apply` is the only way a record is written.

use crate::ids::SafeId;
pub use crate::job::Applied;
use crate::job::{CaptureSession, ChunkPlan, Desired, EndReason, JobRecord, JobState, OutputInfo, Progress, StateChange, is_zero};
use serde::{Deserialize, Serialize};

/// A join claim not refreshed for this long belongs to a joiner that died.
pub const JOIN_STALE_MS: u64 = 45_000;

/// How a capture session ended, as its recorder reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionEnd {
    pub ended_at_ms: u64,
    pub segments: u32,
    pub reason: EndReason,
    /// Why the capture failed, when it did.
    pub failure: Option<String>,
    /// The recording goes on in another session (handed back to the queue, or taken over by the session
    /// that now writes media): only this session is closed.
    pub continues_elsewhere: bool,
    /// The session was started by a hand-over request: while the draining session still records, the job
    /// is that session's to end.
    pub handover_taker: bool,
    /// Some media of the job (any session) reached storage: the job is finalized rather than failed.
    pub media_stored: bool,
}

/// Serialized because nodes send theirs to the controller, which applies them (see `job_requests`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "transition", rename_all = "snake_case")]
pub enum Transition {
    /// A recorder starts a capture session.
    OpenSession {
        node: String,
        /// Which simultaneous capture of a redundant job the session carries on.
        #[serde(default, skip_serializing_if = "is_zero")]
        replica: u8,
    },
    /// The session's first segment opened; `wall_zero_ms` is its media's time zero.
    MediaWriting {
        session: SafeId,
        wall_zero_ms: u64,
    },
    EndSession {
        session: SafeId,
        end: SessionEnd,
    },
    /// An API client asks the recording to stop.
    RequestStop,
    /// An API client pauses the recording: what follows is left out of the MP4 until it resumes.
    Pause,
    Resume,
    /// A stop found no capture running: what is stored is finalized, else the job is aborted.
    StopWithoutCapture {
        media_stored: bool,
        /// The capture the recorder was asked for: another one still running ends the job itself.
        #[serde(default, skip_serializing_if = "is_zero")]
        replica: u8,
    },
    /// A transcoder takes the captured job (`attempt`: the delivery count of its message).
    ClaimTranscode {
        node: String,
        attempt: u32,
    },
    Progress(Progress),
    /// A long recording is split into chunks (kept when a plan exists: a redelivery).
    PlanChunks(ChunkPlan),
    /// Progressive transcode: an open plan while the recording runs (none is made once it ended).
    OpenChunks {
        chunk_ns: u64,
    },
    ChunkDone {
        index: u32,
        problems: Vec<String>,
    },
    /// A transcoder claims joining the chunks; refused while another's claim is fresh.
    ClaimJoin {
        node: String,
    },
    /// The joiner's claim is kept fresh while it runs.
    RefreshJoin {
        node: String,
    },
    Complete {
        output: OutputInfo,
        warnings: Vec<String>,
    },
    Fail {
        error: String,
    },
    /// A transcode attempt failed and will be retried: the reason shows on the job meanwhile.
    NoteRetryError {
        error: String,
    },
    /// A problem that does not fail the job (added once).
    Warn {
        warning: String,
    },
    /// An API client adds a live stream output to a streaming job while it captures.
    AddStream {
        url: crate::streams::StreamUrl,
    },
    /// An API client stops one stream output (the others and the recording go on).
    RemoveStream {
        id: SafeId,
    },
    /// The recorder says how its stream outputs are doing, and what live files it has written.
    ReportStreams {
        reports: Vec<crate::streams::StreamReport>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hls: Option<crate::live_files::HlsProgress>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        images: Option<crate::live_files::ImagesProgress>,
    },
}

/// Why a transition was refused; the record is left as it was.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "refusal", rename_all = "snake_case")]
pub enum Refusal {
    #[error("the job was stopped or finished before capture began")]
    CaptureNotWanted,
    #[error("recording {id} is already {}", state.as_str())]
    AlreadyEnded { id: SafeId, state: JobState },
    #[error("job is {}", state.as_str())]
    NotCaptured { state: JobState },
    #[error("the chunk plan is gone")]
    NoChunkPlan,
    #[error("another transcoder ({node}) is joining")]
    JoinClaimed { node: String },
    #[error("the job has ended")]
    Ended,
    #[error("recording {id} is {}: only a recording still capturing is paused or resumed", state.as_str())]
    NotPausable { id: SafeId, state: JobState },
    #[error("recording {id} is {}: streams change only while it captures", state.as_str())]
    NotLive { id: SafeId, state: JobState },
    #[error("recording {id} was not started with live outputs (outputs.rtmp, hls or images)")]
    NotStreaming { id: SafeId },
    #[error("a job has at most {} stream outputs", crate::streams::MAX_STREAMS)]
    TooManyStreams,
    #[error("recording {id} has no stream {stream}")]
    UnknownStream { id: SafeId, stream: SafeId },
}

impl JobRecord {
    /// Whether a capture other than `replica` still runs (its newest session is open): a redundant job
    /// ends with its last capture. A capture whose recorder died is ended by the controller's failover.
    fn another_capture_runs(&self, replica: u8) -> bool {
        let mut newest: std::collections::BTreeMap<u8, &CaptureSession> = std::collections::BTreeMap::new();
        for session in &self.sessions {
            newest.insert(session.replica, session);
        }
        newest.iter().any(|(other, session)| *other != replica && session.ended_at_ms.is_none())
    }

    /// The capture is over: every stream still wanted has ended with it.
    fn end_streams(&mut self) {
        for stream in self.streams.iter_mut().filter(|s| s.state.is_wanted()) {
            stream.state = crate::streams::StreamState::Ended;
        }
    }

    /// Applies `transition` at `now_ms`. On `Err` and on [`Applied::Unchanged`] the record is untouched;
    /// otherwise its `updated_at_ms` is `now_ms`.
    /// A change of state is added to the record's `state_log`, by `node` when a node asked for it.
    pub fn apply(&mut self, transition: Transition, now_ms: u64, node: Option<&str>) -> Result<Applied, Refusal> {
        let before = self.state;
        let applied = self.change(transition, now_ms)?;
        if applied.changed() {
            self.updated_at_ms = now_ms;
        }
        if self.state != before {
            let seq = self.state_log.last().map_or(1, |last| last.seq) + 1;
            self.state_log.push(StateChange { seq, state: self.state, at_ms: now_ms, node: node.map(str::to_string) });
        }
        Ok(applied)
    }

    fn change(&mut self, transition: Transition, now_ms: u64) -> Result<Applied, Refusal> {
        use Transition as T;
        match transition {
            T::OpenSession { node, replica } => {
                if !self.state.is_capturing() || self.desired == Desired::Stop {
                    return Err(Refusal::CaptureNotWanted);
                }
                let id = SafeId::parse(format!("s{}", self.sessions.len() + 1)).expect("session ids are valid");
                self.sessions.push(CaptureSession {
                    id: id.clone(),
                    node,
                    started_at_ms: now_ms,
                    ended_at_ms: None,
                    segments: 0,
                    end_reason: None,
                    writing: false,
                    replica,
                });
                if self.state == JobState::Queued {
                    self.state = JobState::Starting;
                }
                self.record_attempts += 1;
                Ok(Applied::SessionOpened(id))
            }
            T::MediaWriting { session, wall_zero_ms } => {
                if self.state.is_terminal() {
                    return Ok(Applied::Unchanged);
                }
                if let Some(session) = self.sessions.iter_mut().find(|s| s.id == session) {
                    session.started_at_ms = wall_zero_ms;
                    session.writing = true;
                }
                if self.state.is_capturing() {
                    self.state = JobState::Recording;
                }
                Ok(Applied::Changed)
            }
            T::EndSession { session, end } => {
                if let Some(ended) = self.sessions.iter_mut().find(|s| s.id == session) {
                    ended.ended_at_ms = Some(end.ended_at_ms);
                    ended.segments = end.segments;
                    ended.end_reason = Some(end.reason);
                }
                // The job's state is not this session's to change when the job goes on in another session.
                let replica = self.sessions.iter().find(|s| s.id == session).map_or(0, |s| s.replica);
                let draining_one_records =
                    end.handover_taker && self.sessions.iter().any(|s| s.id != session && s.replica == replica && s.ended_at_ms.is_none());
                if end.continues_elsewhere || draining_one_records || self.another_capture_runs(replica) || !self.state.is_capturing() {
                    return Ok(Applied::Changed);
                }
                self.end_reason = Some(end.reason);
                self.end_streams();
                let failed = end.failure.is_some();
                if let Some(failure) = end.failure {
                    self.error = Some(failure);
                }
                if !self.request.records_file() {
                    // Nothing to transcode: the streams were the job.
                    self.state = if failed { JobState::Failed } else { JobState::Complete };
                    Ok(Applied::Changed)
                } else if end.media_stored {
                    self.state = JobState::Finalizing;
                    Ok(Applied::Finalized)
                } else {
                    self.state = JobState::Failed;
                    Ok(Applied::Changed)
                }
            }
            T::RequestStop => match self.state {
                // No recorder took it yet: nothing to finalize.
                JobState::Queued if self.sessions.is_empty() => {
                    self.desired = Desired::Stop;
                    self.state = JobState::Aborted;
                    self.end_reason = Some(EndReason::ApiStop);
                    Ok(Applied::Changed)
                }
                state if state.is_capturing() && self.desired == Desired::Stop => Ok(Applied::Unchanged),
                state if state.is_capturing() => {
                    self.desired = Desired::Stop;
                    Ok(Applied::Changed)
                }
                state => Err(Refusal::AlreadyEnded { id: self.id.clone(), state }),
            },
            T::Pause | T::Resume if !self.state.is_capturing() || self.desired == Desired::Stop => {
                Err(Refusal::NotPausable { id: self.id.clone(), state: self.state })
            }
            T::Pause if self.paused_since_ms().is_some() => Ok(Applied::Unchanged),
            T::Pause => {
                self.pauses.push(crate::job::Pause { from_ms: now_ms, until_ms: None });
                Ok(Applied::Changed)
            }
            T::Resume => match self.pauses.last_mut().filter(|p| p.until_ms.is_none()) {
                Some(open) => {
                    open.until_ms = Some(now_ms);
                    Ok(Applied::Changed)
                }
                None => Ok(Applied::Unchanged),
            },
            T::AddStream { .. } | T::RemoveStream { .. } if !self.state.is_capturing() || self.desired == Desired::Stop => {
                Err(Refusal::NotLive { id: self.id.clone(), state: self.state })
            }
            T::AddStream { .. } | T::RemoveStream { .. } if !self.composites_live() => Err(Refusal::NotStreaming { id: self.id.clone() }),
            T::AddStream { url } => {
                if self.streams.iter().any(|s| s.state.is_wanted() && s.url == url.expose()) {
                    return Ok(Applied::Unchanged);
                }
                if self.streams.len() >= crate::streams::MAX_STREAMS {
                    return Err(Refusal::TooManyStreams);
                }
                self.streams.push(crate::streams::StreamOutput::new(self.streams.len() + 1, &url, now_ms));
                Ok(Applied::Changed)
            }
            T::RemoveStream { id } => {
                let Some(stream) = self.streams.iter_mut().find(|s| s.id == id) else {
                    return Err(Refusal::UnknownStream { id: self.id.clone(), stream: id });
                };
                if !stream.state.is_wanted() {
                    return Ok(Applied::Unchanged);
                }
                stream.state = crate::streams::StreamState::Removed;
                Ok(Applied::Changed)
            }
            T::ReportStreams { reports, hls, images } => {
                let mut changed = false;
                if hls.is_some() && hls != self.hls {
                    self.hls = hls;
                    changed = true;
                }
                if images.is_some() && images != self.images {
                    self.images = images;
                    changed = true;
                }
                for report in reports {
                    // A stream removed (or ended) meanwhile stays so: the report is older than that.
                    let Some(stream) = self.streams.iter_mut().find(|s| s.id == report.id && s.state.is_wanted()) else { continue };
                    let before = (stream.state, stream.retries, stream.last_error.clone());
                    if report.state == crate::streams::StreamState::Live && stream.state != report.state {
                        stream.live_at_ms = Some(now_ms);
                    }
                    stream.state = report.state;
                    stream.retries = report.retries;
                    stream.last_error = report.last_error.or(stream.last_error.take());
                    changed |= before != (stream.state, stream.retries, stream.last_error.clone());
                }
                Ok(if changed { Applied::Changed } else { Applied::Unchanged })
            }
            T::StopWithoutCapture { media_stored, replica } => {
                if !self.state.is_capturing() || self.another_capture_runs(replica) {
                    return Ok(Applied::Unchanged);
                }
                self.end_reason = Some(EndReason::ApiStop);
                self.end_streams();
                if media_stored && self.request.records_file() {
                    self.state = JobState::Finalizing;
                    Ok(Applied::Finalized)
                } else {
                    self.state = JobState::Aborted;
                    Ok(Applied::Changed)
                }
            }
            T::ClaimTranscode { node, attempt } => {
                // Only a captured job is transcoded: a late duplicate must not reopen a finished one.
                if !matches!(self.state, JobState::Finalizing | JobState::Transcoding) {
                    return Err(Refusal::NotCaptured { state: self.state });
                }
                self.state = JobState::Transcoding;
                self.transcode_attempts = attempt.max(1);
                self.progress = Some(Progress { percent: 0.0, speed: 0.0, node });
                Ok(Applied::Changed)
            }
            T::Progress(progress) => {
                if self.state != JobState::Transcoding {
                    return Ok(Applied::Unchanged);
                }
                self.progress = Some(progress);
                Ok(Applied::Changed)
            }
            T::PlanChunks(plan) => match &self.chunks {
                // The recording's length is known now: the chunks done while it ran are kept.
                Some(open) if open.open => {
                    self.chunks = Some(open.closed_into(plan));
                    Ok(Applied::Changed)
                }
                // A redelivered job keeps the plan it has.
                Some(_) => Ok(Applied::Unchanged),
                None => {
                    self.chunks = Some(plan);
                    Ok(Applied::Changed)
                }
            },
            T::OpenChunks { chunk_ns } => {
                if !self.state.is_capturing() || self.chunks.is_some() {
                    return Ok(Applied::Unchanged);
                }
                self.chunks = Some(ChunkPlan::open(chunk_ns));
                Ok(Applied::Changed)
            }
            T::ChunkDone { index, problems } => {
                if self.state.is_terminal() {
                    return Ok(Applied::Unchanged);
                }
                let plan = self.chunks.as_mut().ok_or(Refusal::NoChunkPlan)?;
                if plan.done.contains(&index) {
                    return Ok(Applied::Unchanged); // a duplicate of this chunk got there first
                }
                plan.done.push(index);
                self.add_warnings(problems);
                Ok(Applied::Changed)
            }
            T::ClaimJoin { node } => {
                let terminal = self.state.is_terminal();
                let plan = self.chunks.as_mut().ok_or(Refusal::NoChunkPlan)?;
                match &plan.joining {
                    Some((holder, since)) if now_ms.saturating_sub(*since) < JOIN_STALE_MS => Err(Refusal::JoinClaimed { node: holder.clone() }),
                    _ if terminal => Err(Refusal::Ended),
                    _ => {
                        plan.joining = Some((node, now_ms));
                        Ok(Applied::Changed)
                    }
                }
            }
            T::RefreshJoin { node } => match self.chunks.as_mut().and_then(|p| p.joining.as_mut()) {
                Some((holder, since)) if *holder == node => {
                    *since = now_ms;
                    Ok(Applied::Changed)
                }
                _ => Ok(Applied::Unchanged),
            },
            T::Complete { output, warnings } => {
                if self.state.is_terminal() {
                    return Ok(Applied::Unchanged);
                }
                self.state = JobState::Complete;
                self.output = Some(output);
                self.progress = None;
                self.error = None;
                self.add_warnings(warnings);
                Ok(Applied::Changed)
            }
            T::Fail { error } => {
                if self.state.is_terminal() {
                    return Ok(Applied::Unchanged);
                }
                self.state = JobState::Failed;
                self.error = Some(error);
                self.progress = None;
                Ok(Applied::Changed)
            }
            T::NoteRetryError { error } => {
                if self.state.is_terminal() {
                    return Ok(Applied::Unchanged);
                }
                self.error = Some(error);
                Ok(Applied::Changed)
            }
            T::Warn { warning } => {
                if self.warnings.contains(&warning) {
                    return Ok(Applied::Unchanged);
                }
                self.warnings.push(warning);
                Ok(Applied::Changed)
            }
        }
    }

    /// Adds each warning not there yet, keeping those already on the record.
    fn add_warnings(&mut self, warnings: Vec<String>) {
        for warning in warnings {
            if !self.warnings.contains(&warning) {
                self.warnings.push(warning);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobRequest;
    use crate::job::fixtures::{output, session};

    const NOW: u64 = 1_000_000;

    fn record(state: JobState) -> JobRecord {
        let request: JobRequest = serde_json::from_str(r#"{"room":"r"}"#).unwrap();
        let mut record = JobRecord::new(SafeId::parse("rec_t").unwrap(), request, 0);
        record.state = state;
        record
    }

    fn with_session(state: JobState) -> JobRecord {
        let mut r = record(state);
        r.sessions.push(session("rec-1", 10));
        r
    }

    fn end(media_stored: bool) -> SessionEnd {
        SessionEnd {
            ended_at_ms: 500,
            segments: 3,
            reason: EndReason::RoomClosed,
            failure: None,
            continues_elsewhere: false,
            handover_taker: false,
            media_stored,
        }
    }

    fn s1() -> SafeId {
        SafeId::parse("s1").unwrap()
    }

    fn progress() -> Progress {
        Progress { percent: 5.0, speed: 2.0, node: "tx".into() }
    }

    fn plan() -> ChunkPlan {
        ChunkPlan::new(20_000_000_000, 10_000_000_000)
    }

    fn every_transition() -> Vec<Transition> {
        use Transition as T;
        vec![
            T::OpenSession { node: "rec-1".into(), replica: 0 },
            T::MediaWriting { session: s1(), wall_zero_ms: 20 },
            T::EndSession { session: s1(), end: end(true) },
            T::RequestStop,
            T::Pause,
            T::Resume,
            T::StopWithoutCapture { media_stored: true, replica: 0 },
            T::ClaimTranscode { node: "tx".into(), attempt: 1 },
            T::Progress(progress()),
            T::PlanChunks(plan()),
            T::OpenChunks { chunk_ns: 10_000_000_000 },
            T::ChunkDone { index: 0, problems: vec![] },
            T::ClaimJoin { node: "tx".into() },
            T::RefreshJoin { node: "tx".into() },
            T::Complete { output: output(), warnings: vec![] },
            T::Fail { error: "boom".into() },
            T::NoteRetryError { error: "retry".into() },
            T::Warn { warning: "w".into() },
        ]
    }

    #[test]
    fn chunks_done_while_recording_are_kept_when_the_plan_closes() {
        let mut r = with_session(JobState::Recording);
        let s = 10_000_000_000;
        assert_eq!(r.apply(Transition::OpenChunks { chunk_ns: s }, NOW, None), Ok(Applied::Changed));
        assert_eq!(r.apply(Transition::OpenChunks { chunk_ns: 5 }, NOW, None), Ok(Applied::Unchanged), "one plan");
        r.apply(Transition::ChunkDone { index: 0, problems: vec![] }, NOW, None).unwrap();
        r.apply(Transition::ChunkDone { index: 1, problems: vec![] }, NOW, None).unwrap();
        assert!(r.chunks.as_ref().unwrap().open && !r.chunks.as_ref().unwrap().is_complete(), "an open plan is never complete");
        // 25 s recorded: chunks 0 and 1 are whole, chunk 2 (20-25 s) is left to do.
        assert_eq!(r.apply(Transition::PlanChunks(ChunkPlan::new(25_000_000_000, s)), NOW, None), Ok(Applied::Changed));
        let closed = r.chunks.clone().unwrap();
        assert_eq!((closed.open, closed.count, closed.done.clone()), (false, 3, vec![0, 1]));
        // 20 s recorded: chunk 1 is the last one, done again (it could have been cut differently).
        let mut short = with_session(JobState::Recording);
        short.chunks = Some(ChunkPlan { done: vec![0, 1], ..ChunkPlan::open(s) });
        short.apply(Transition::PlanChunks(ChunkPlan::new(20_000_000_000, s)), NOW, None).unwrap();
        assert_eq!(short.chunks.unwrap().done, vec![0]);
        // Another chunk length: nothing done fits.
        let mut other = with_session(JobState::Recording);
        other.chunks = Some(ChunkPlan { done: vec![0], ..ChunkPlan::open(s) });
        other.apply(Transition::PlanChunks(ChunkPlan::new(25_000_000_000, 5_000_000_000)), NOW, None).unwrap();
        assert!(other.chunks.unwrap().done.is_empty());
    }

    #[test]
    fn pauses_open_and_close_and_lie_on_the_recordings_timeline() {
        let mut r = with_session(JobState::Recording);
        r.sessions[0].started_at_ms = 1_000;
        assert_eq!(r.apply(Transition::Resume, 2_000, None), Ok(Applied::Unchanged), "not paused");
        assert_eq!(r.apply(Transition::Pause, 3_000, None), Ok(Applied::Changed));
        assert_eq!(r.apply(Transition::Pause, 3_500, None), Ok(Applied::Unchanged), "paused already: the first start stays");
        assert_eq!(r.paused_since_ms(), Some(3_000));
        assert_eq!(r.apply(Transition::Resume, 5_000, None), Ok(Applied::Changed));
        assert_eq!(r.apply(Transition::Pause, 8_000, None), Ok(Applied::Changed));
        r.sessions[0].ended_at_ms = Some(10_000);
        // The open pause lasts to the end of the recording.
        assert_eq!(r.paused_spans_ns(), vec![(2_000_000_000, 4_000_000_000), (7_000_000_000, 9_000_000_000)]);
        let mut stopping = with_session(JobState::Recording);
        stopping.apply(Transition::RequestStop, 1, None).unwrap();
        assert!(matches!(stopping.apply(Transition::Pause, 2, None), Err(Refusal::NotPausable { .. })));
    }

    /// The state each transition leads to from each state (`None`: refused); a record with one open
    /// session and a chunk plan, so every transition has what it needs.
    #[test]
    fn a_record_remembers_the_last_requests_it_applied() {
        let mut r = record(JobState::Queued);
        for i in 0..20 {
            r.remember_request(&format!("r{i}"), Applied::SessionOpened(s1()));
        }
        assert_eq!(r.recent_requests.len(), 16);
        assert_eq!(r.applied_request("r3"), None, "the oldest are forgotten");
        assert_eq!(r.applied_request("r19"), Some(&Applied::SessionOpened(s1())));
    }

    #[test]
    fn every_transition_from_every_state() {
        use JobState::*;
        let name = |t: &Transition| format!("{t:?}").split([' ', '(']).next().unwrap().to_string();
        // Rows in the order of `every_transition`; columns in `JobState::ALL`'s order:
        //                    Queued      Starting    Recording   Finalizing  Transcoding Complete  Failed    Aborted
        let table: [[Option<JobState>; 8]; 18] = [
            /* OpenSession    */ [Some(Starting), Some(Starting), Some(Recording), None, None, None, None, None],
            /* MediaWriting   */
            [Some(Recording), Some(Recording), Some(Recording), Some(Finalizing), Some(Transcoding), Some(Complete), Some(Failed), Some(Aborted)],
            /* EndSession     */
            [Some(Finalizing), Some(Finalizing), Some(Finalizing), Some(Finalizing), Some(Transcoding), Some(Complete), Some(Failed), Some(Aborted)],
            /* RequestStop    */ [Some(Queued), Some(Starting), Some(Recording), None, None, None, None, None],
            /* Pause          */ [Some(Queued), Some(Starting), Some(Recording), None, None, None, None, None],
            /* Resume         */ [Some(Queued), Some(Starting), Some(Recording), None, None, None, None, None],
            /* StopWithout…   */
            [Some(Finalizing), Some(Finalizing), Some(Finalizing), Some(Finalizing), Some(Transcoding), Some(Complete), Some(Failed), Some(Aborted)],
            /* ClaimTranscode */ [None, None, None, Some(Transcoding), Some(Transcoding), None, None, None],
            /* Progress       */
            [Some(Queued), Some(Starting), Some(Recording), Some(Finalizing), Some(Transcoding), Some(Complete), Some(Failed), Some(Aborted)],
            /* PlanChunks     */
            [Some(Queued), Some(Starting), Some(Recording), Some(Finalizing), Some(Transcoding), Some(Complete), Some(Failed), Some(Aborted)],
            /* OpenChunks     */
            [Some(Queued), Some(Starting), Some(Recording), Some(Finalizing), Some(Transcoding), Some(Complete), Some(Failed), Some(Aborted)],
            /* ChunkDone      */
            [Some(Queued), Some(Starting), Some(Recording), Some(Finalizing), Some(Transcoding), Some(Complete), Some(Failed), Some(Aborted)],
            /* ClaimJoin      */ [Some(Queued), Some(Starting), Some(Recording), Some(Finalizing), Some(Transcoding), None, None, None],
            /* RefreshJoin    */
            [Some(Queued), Some(Starting), Some(Recording), Some(Finalizing), Some(Transcoding), Some(Complete), Some(Failed), Some(Aborted)],
            /* Complete       */
            [Some(Complete), Some(Complete), Some(Complete), Some(Complete), Some(Complete), Some(Complete), Some(Failed), Some(Aborted)],
            /* Fail           */
            [Some(Failed), Some(Failed), Some(Failed), Some(Failed), Some(Failed), Some(Complete), Some(Failed), Some(Aborted)],
            /* NoteRetryError */
            [Some(Queued), Some(Starting), Some(Recording), Some(Finalizing), Some(Transcoding), Some(Complete), Some(Failed), Some(Aborted)],
            /* Warn           */
            [Some(Queued), Some(Starting), Some(Recording), Some(Finalizing), Some(Transcoding), Some(Complete), Some(Failed), Some(Aborted)],
        ];
        for (transition, row) in every_transition().into_iter().zip(table) {
            for (from, expected) in JobState::ALL.into_iter().zip(row) {
                let mut r = with_session(from);
                r.chunks = Some(plan());
                let before = r.clone();
                let result = r.apply(transition.clone(), NOW, Some("node-x"));
                match expected {
                    None => {
                        assert!(result.is_err(), "{} from {from:?}: expected a refusal, got {result:?}", name(&transition));
                        assert_eq!(r, before, "a refusal leaves the record as it was");
                    }
                    Some(to) => {
                        let applied = result.unwrap_or_else(|e| panic!("{} from {from:?}: refused ({e})", name(&transition)));
                        assert_eq!(r.state, to, "{} from {from:?}", name(&transition));
                        // A change of state, and only that, is logged (for its event).
                        let expected_log = if to == from {
                            before.state_log.clone()
                        } else {
                            let mut log = before.state_log.clone();
                            log.push(StateChange { seq: 2, state: to, at_ms: NOW, node: Some("node-x".into()) });
                            log
                        };
                        assert_eq!(r.state_log, expected_log, "{} from {from:?}", name(&transition));
                        if applied.changed() {
                            assert_eq!(r.updated_at_ms, NOW);
                        } else {
                            assert_eq!(r, before, "{} from {from:?}: unchanged means untouched", name(&transition));
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_stop_before_any_recorder_took_the_job_aborts_it() {
        let mut r = record(JobState::Queued);
        assert_eq!(r.apply(Transition::RequestStop, NOW, None), Ok(Applied::Changed));
        assert_eq!((r.state, r.desired, r.end_reason), (JobState::Aborted, Desired::Stop, Some(EndReason::ApiStop)));
        let mut capturing = with_session(JobState::Recording);
        assert_eq!(capturing.apply(Transition::RequestStop, NOW, None), Ok(Applied::Changed));
        assert_eq!((capturing.state, capturing.desired), (JobState::Recording, Desired::Stop));
        assert_eq!(capturing.apply(Transition::RequestStop, NOW, None), Ok(Applied::Unchanged), "twice is once");
        assert_eq!(
            record(JobState::Complete).apply(Transition::RequestStop, NOW, None).unwrap_err().to_string(),
            "recording rec_t is already complete"
        );
    }

    #[test]
    fn a_redundant_job_ends_with_its_last_capture() {
        let mut r = record(JobState::Queued);
        let s2 = SafeId::parse("s2").unwrap();
        r.apply(Transition::OpenSession { node: "rec-1".into(), replica: 0 }, NOW, None).unwrap();
        r.apply(Transition::OpenSession { node: "rec-2".into(), replica: 1 }, NOW, None).unwrap();
        assert_eq!(r.sessions[1].replica, 1);
        r.apply(Transition::RequestStop, NOW, None).unwrap();
        // A late delivery of either capture finds the other still running: it does not end the job.
        let mut late = r.clone();
        assert_eq!(late.apply(Transition::StopWithoutCapture { media_stored: true, replica: 1 }, NOW, None), Ok(Applied::Unchanged));
        assert_eq!(r.apply(Transition::EndSession { session: s1(), end: end(true) }, NOW, None), Ok(Applied::Changed));
        assert!(r.state.is_capturing(), "the other capture is still uploading");
        assert_eq!(r.apply(Transition::EndSession { session: s2.clone(), end: end(true) }, NOW, None), Ok(Applied::Finalized));
        // A capture that failed (or was lost) leaves the job to the other.
        let mut failing = record(JobState::Recording);
        failing.apply(Transition::OpenSession { node: "rec-1".into(), replica: 0 }, NOW, None).unwrap();
        failing.apply(Transition::OpenSession { node: "rec-2".into(), replica: 1 }, NOW, None).unwrap();
        let failure = SessionEnd { failure: Some("could not join".into()), ..end(false) };
        assert_eq!(failing.apply(Transition::EndSession { session: s2, end: failure }, NOW, None), Ok(Applied::Changed));
        assert_eq!((failing.state, failing.error.as_deref()), (JobState::Recording, None));
    }

    #[test]
    fn sessions_open_and_end() {
        let mut r = record(JobState::Queued);
        assert_eq!(r.apply(Transition::OpenSession { node: "rec-1".into(), replica: 0 }, NOW, None), Ok(Applied::SessionOpened(s1())));
        assert_eq!((r.state, r.record_attempts, r.sessions[0].started_at_ms), (JobState::Starting, 1, NOW));
        r.apply(Transition::MediaWriting { session: s1(), wall_zero_ms: NOW + 50 }, NOW + 60, None).unwrap();
        assert!(r.sessions[0].writing && r.sessions[0].started_at_ms == NOW + 50);
        assert_eq!(r.state, JobState::Recording);
        // The next session of a failover is s2.
        let mut next = r.clone();
        assert_eq!(
            next.apply(Transition::OpenSession { node: "rec-2".into(), replica: 0 }, NOW, None).unwrap(),
            Applied::SessionOpened(SafeId::parse("s2").unwrap())
        );

        let mut failed = r.clone();
        let failure = SessionEnd { failure: Some("could not join".into()), ..end(false) };
        assert_eq!(failed.apply(Transition::EndSession { session: s1(), end: failure }, NOW, None), Ok(Applied::Changed));
        assert_eq!((failed.state, failed.error.as_deref()), (JobState::Failed, Some("could not join")));
        assert_eq!(failed.sessions[0].ended_at_ms, Some(500));

        let mut finalized = r.clone();
        assert_eq!(finalized.apply(Transition::EndSession { session: s1(), end: end(true) }, NOW, None), Ok(Applied::Finalized));
        assert_eq!((finalized.state, finalized.end_reason), (JobState::Finalizing, Some(EndReason::RoomClosed)));

        // Handed on: the session closes, the job goes on.
        let mut handed = r.clone();
        let handover = SessionEnd { continues_elsewhere: true, ..end(true) };
        assert_eq!(handed.apply(Transition::EndSession { session: s1(), end: handover }, NOW, None), Ok(Applied::Changed));
        assert_eq!((handed.state, handed.sessions[0].segments), (JobState::Recording, 3));

        let mut stopped = r.clone();
        stopped.apply(Transition::RequestStop, NOW, None).unwrap();
        assert_eq!(stopped.apply(Transition::OpenSession { node: "rec-2".into(), replica: 0 }, NOW, None), Err(Refusal::CaptureNotWanted));
    }

    #[test]
    fn a_hand_over_taker_does_not_end_the_job_while_the_draining_session_records() {
        let mut r = with_session(JobState::Recording);
        r.apply(Transition::OpenSession { node: "rec-2".into(), replica: 0 }, NOW, None).unwrap();
        let s2 = SafeId::parse("s2").unwrap();
        let taker_failed = SessionEnd { handover_taker: true, failure: Some("no media".into()), ..end(false) };
        r.apply(Transition::EndSession { session: s2, end: taker_failed }, NOW, None).unwrap();
        assert_eq!(r.state, JobState::Recording, "s1 still records");
        assert_eq!(r.error, None);
    }

    #[test]
    fn a_stop_without_capture_finalizes_what_is_stored() {
        let mut stored = with_session(JobState::Starting);
        assert_eq!(stored.apply(Transition::StopWithoutCapture { media_stored: true, replica: 0 }, NOW, None), Ok(Applied::Finalized));
        let mut nothing = with_session(JobState::Starting);
        assert_eq!(nothing.apply(Transition::StopWithoutCapture { media_stored: false, replica: 0 }, NOW, None), Ok(Applied::Changed));
        assert_eq!((nothing.state, nothing.end_reason), (JobState::Aborted, Some(EndReason::ApiStop)));
    }

    #[test]
    fn transcode_claims_progress_completion_and_failure() {
        let mut r = with_session(JobState::Finalizing);
        r.apply(Transition::ClaimTranscode { node: "tx".into(), attempt: 2 }, NOW, None).unwrap();
        assert_eq!((r.state, r.transcode_attempts, r.progress.as_ref().map(|p| p.percent)), (JobState::Transcoding, 2, Some(0.0)));
        r.apply(Transition::Progress(progress()), NOW, None).unwrap();
        r.apply(Transition::NoteRetryError { error: "e".into() }, NOW, None).unwrap();
        r.apply(Transition::Warn { warning: "early".into() }, NOW, None).unwrap();
        let mut done = r.clone();
        done.apply(Transition::Complete { output: output(), warnings: vec!["late".into(), "early".into()] }, NOW, None).unwrap();
        assert_eq!((done.state, done.progress.clone(), done.error.clone()), (JobState::Complete, None, None));
        assert_eq!(done.warnings, ["early", "late"], "warnings added meanwhile are kept, none twice");
        assert_eq!(done.apply(Transition::Fail { error: "late".into() }, NOW, None), Ok(Applied::Unchanged), "a complete job stays complete");
        r.apply(Transition::Fail { error: "transcode failed: x".into() }, NOW, None).unwrap();
        assert_eq!((r.state, r.progress.clone()), (JobState::Failed, None));
        assert_eq!(
            record(JobState::Recording).apply(Transition::ClaimTranscode { node: "tx".into(), attempt: 1 }, NOW, None),
            Err(Refusal::NotCaptured { state: JobState::Recording })
        );
    }

    #[test]
    fn chunks_are_planned_once_done_once_and_joined_by_one() {
        let mut r = with_session(JobState::Transcoding);
        assert_eq!(r.apply(Transition::ChunkDone { index: 0, problems: vec![] }, NOW, None), Err(Refusal::NoChunkPlan));
        r.apply(Transition::PlanChunks(plan()), NOW, None).unwrap();
        let mut other = plan();
        other.count = 99;
        assert_eq!(r.apply(Transition::PlanChunks(other), NOW, None), Ok(Applied::Unchanged), "a redelivery keeps the plan");
        assert_eq!(r.apply(Transition::OpenChunks { chunk_ns: 1 }, NOW, None), Ok(Applied::Unchanged), "not while transcoding");
        r.apply(Transition::ChunkDone { index: 1, problems: vec!["p".into()] }, NOW, None).unwrap();
        assert_eq!(r.apply(Transition::ChunkDone { index: 1, problems: vec![] }, NOW, None), Ok(Applied::Unchanged));
        assert_eq!(r.warnings, ["p"]);

        r.apply(Transition::ClaimJoin { node: "tx-a".into() }, NOW, None).unwrap();
        assert_eq!(r.apply(Transition::ClaimJoin { node: "tx-b".into() }, NOW + 1_000, None), Err(Refusal::JoinClaimed { node: "tx-a".into() }));
        assert_eq!(r.apply(Transition::RefreshJoin { node: "tx-b".into() }, NOW + 2_000, None), Ok(Applied::Unchanged), "only the holder refreshes");
        r.apply(Transition::RefreshJoin { node: "tx-a".into() }, NOW + 40_000, None).unwrap();
        assert!(r.apply(Transition::ClaimJoin { node: "tx-b".into() }, NOW + 60_000, None).is_err(), "refreshed: still fresh");
        r.apply(Transition::ClaimJoin { node: "tx-b".into() }, NOW + 40_000 + JOIN_STALE_MS, None).unwrap();
        assert_eq!(r.chunks.unwrap().joining, Some(("tx-b".into(), NOW + 40_000 + JOIN_STALE_MS)), "a stale claim is taken over");
    }

    fn streaming(file: bool) -> JobRecord {
        let json = format!(r#"{{"room":"r","outputs":{{"file":{file},"rtmp":["rtmp://h/live/k1"]}}}}"#);
        let mut r = JobRecord::new(SafeId::parse("rec_s").unwrap(), serde_json::from_str(&json).unwrap(), 0);
        r.sessions.push(session("rec-1", 10));
        r.state = JobState::Recording;
        r
    }

    #[test]
    fn streams_are_added_reported_removed_and_end_with_the_capture() {
        use crate::streams::{StreamReport, StreamState, StreamUrl};
        let mut r = streaming(true);
        assert_eq!(r.streams.len(), 1);
        assert_eq!(r.request.outputs.rtmp.len(), 0, "the URL left the request");
        assert!(!serde_json::to_string(&r.clone().for_clients()).unwrap().contains("k1"), "keys never shown");
        let url = |k: &str| StreamUrl::parse(&format!("rtmp://h/live/{k}")).unwrap();
        assert_eq!(r.apply(Transition::AddStream { url: url("k1") }, NOW, None), Ok(Applied::Unchanged), "already streamed there");
        assert_eq!(r.apply(Transition::AddStream { url: url("k2") }, NOW, None), Ok(Applied::Changed));
        let rtmp = |n: u32| SafeId::parse(format!("rtmp{n}")).unwrap();
        assert_eq!(r.streams[1].id, rtmp(2));
        let live = StreamReport { id: rtmp(1), state: StreamState::Live, retries: 0, last_error: None };
        assert_eq!(r.apply(Transition::ReportStreams { reports: vec![live.clone()], hls: None, images: None }, NOW + 5, None), Ok(Applied::Changed));
        assert_eq!(r.streams[0].live_at_ms, Some(NOW + 5));
        assert_eq!(r.apply(Transition::ReportStreams { reports: vec![live], hls: None, images: None }, NOW + 6, None), Ok(Applied::Unchanged));
        assert_eq!(r.apply(Transition::RemoveStream { id: rtmp(2) }, NOW, None), Ok(Applied::Changed));
        let late = StreamReport { id: rtmp(2), state: StreamState::Retrying, retries: 1, last_error: Some("refused".into()) };
        r.apply(Transition::ReportStreams { reports: vec![late], hls: None, images: None }, NOW, None).unwrap();
        assert_eq!(r.streams[1].state, StreamState::Removed, "a removed stream stays removed");
        assert!(matches!(r.apply(Transition::RemoveStream { id: rtmp(9) }, NOW, None), Err(Refusal::UnknownStream { .. })));
        assert_eq!(r.apply(Transition::EndSession { session: s1(), end: end(true) }, NOW, None), Ok(Applied::Finalized));
        assert_eq!(r.streams[0].state, StreamState::Ended);
        assert!(matches!(r.apply(Transition::AddStream { url: url("k3") }, NOW, None), Err(Refusal::NotLive { .. })));

        let mut only = streaming(false);
        assert_eq!(only.apply(Transition::EndSession { session: s1(), end: end(true) }, NOW, None), Ok(Applied::Changed));
        assert_eq!(only.state, JobState::Complete, "nothing to transcode");
        let mut plain = with_session(JobState::Recording);
        assert!(matches!(plain.apply(Transition::AddStream { url: url("k") }, NOW, None), Err(Refusal::NotStreaming { .. })));
    }

    #[test]
    fn live_files_are_reported_and_a_job_with_them_composites_live() {
        use crate::live_files::{HlsProgress, ImagesProgress};
        let json = r#"{"room":"r","outputs":{"file":false,"hls":{},"images":{"interval_s":5}}}"#;
        let request: JobRequest = serde_json::from_str(json).unwrap();
        request.validate().unwrap();
        assert_eq!(request.outputs.hls.unwrap().segment_s, 6);
        let mut r = JobRecord::new(SafeId::parse("rec_h").unwrap(), request, 0);
        r.sessions.push(session("rec-1", 10));
        r.state = JobState::Recording;
        assert!(r.composites_live() && !r.streams_live());
        let hls = HlsProgress {
            playlist: "rec_h/hls/playlist.m3u8".into(),
            live_playlist: "rec_h/hls/live.m3u8".into(),
            playlist_location: "s3://b/rec_h/hls/playlist.m3u8".into(),
            live_playlist_location: "s3://b/rec_h/hls/live.m3u8".into(),
            segments: 2,
            duration_ms: 12_000,
            bytes: 900_000,
            started_at_ms: Some(NOW),
            ended_at_ms: None,
        };
        let images = ImagesProgress {
            prefix: "rec_h/images/".into(),
            location: "s3://b/rec_h/images/".into(),
            count: 3,
            first_at_ms: Some(NOW),
            last_at_ms: Some(NOW + 10_000),
        };
        let report = Transition::ReportStreams { reports: vec![], hls: Some(hls.clone()), images: Some(images) };
        assert_eq!(r.apply(report.clone(), NOW, None), Ok(Applied::Changed));
        assert_eq!(r.apply(report, NOW, None), Ok(Applied::Unchanged));
        assert_eq!(r.apply(Transition::ReportStreams { reports: vec![], hls: None, images: None }, NOW, None), Ok(Applied::Unchanged));
        assert_eq!(r.hls, Some(hls), "a report without files leaves them as they were");
        // RTMP can join a job that composites for its files.
        let url = crate::streams::StreamUrl::parse("rtmp://h/live/k").unwrap();
        assert_eq!(r.apply(Transition::AddStream { url }, NOW, None), Ok(Applied::Changed));

        for bad in [
            r#"{"room":"r","outputs":{"hls":{"segment_s":0}}}"#,
            r#"{"room":"r","outputs":{"images":{"interval_s":5,"width":15}}}"#,
            r#"{"room":"r","audio_only":true,"outputs":{"hls":{}}}"#,
            r#"{"room":"r","source":{"type":"test"},"outputs":{"images":{}}}"#,
        ] {
            let request: JobRequest = serde_json::from_str(bad).unwrap();
            assert!(request.validate().is_err(), "{bad}");
        }
    }
}
