//! The capture loop's decisions, without I/O (str0m's rule: inputs and time are arguments, actions come
//! out): when the capture stops and why, draining by hand-over, handing the job back, and how the
//! session ends. `session::capture` feeds it the source's events, the job record as seen, shutdown and
//! the clock, and carries its actions out.

use fleet_protocol::job::{Desired, EndReason};
use fleet_protocol::{JobRecord, SafeId};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// What is left of the job's maximum duration for this session.
    pub max_duration: Duration,
    /// How long this session records on once a successor writes media.
    pub handover_overlap: Duration,
    /// How long the source may take to close its last segments after a stop.
    pub finish_timeout: Duration,
}

#[derive(Debug)]
pub enum Input {
    /// A segment opened (the first one means media is being written).
    SegmentOpened,
    /// A segment with media closed and went to the uploader.
    SegmentClosed,
    /// The room ended the recording (closed, or empty too long).
    RoomEnded(EndReason),
    /// Every track's last segment is closed, or the source went away.
    SourceFinished,
    SourceFailed(String),
    /// A segment could not be written: the spool disk is full.
    SpoolFull(String),
    /// The periodic check found the spool disk (nearly) full.
    DiskFull(String),
    /// The job record as last read, and the wall clock then (ms since the epoch).
    Record(Box<JobRecord>, u64),
    /// The node is shutting down: it drains.
    Shutdown,
    /// Whether the hand-over request asked for after `Shutdown` was queued.
    HandoverRequested(bool),
    /// Time passed: deadlines are checked.
    Tick,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Mark the job as writing media (once).
    MarkRecording,
    /// Stop the source; the session ends at the source's running time now.
    StopSource(EndReason),
    /// Ask another recorder to take the recording over, and report back with `HandoverRequested`.
    RequestHandover,
    /// Add this warning (prefixed with the node) to the job.
    Warn(String),
    /// Leave the loop: the session is over.
    Exit,
}

/// How the session ended, for the timeline and the job record.
#[derive(Debug, Clone, PartialEq)]
pub struct Ending {
    pub reason: EndReason,
    /// The timeline's word for it (`handback` when the job goes back to the queue).
    pub reason_text: &'static str,
    pub failure: Option<String>,
    pub segments: u32,
    /// The job goes back to the queue for another recorder.
    pub handing_back: bool,
    /// A later session writes media: the job goes on there.
    pub superseded: bool,
}

pub struct CaptureControl {
    session: SafeId,
    limits: Limits,
    started: Instant,
    recording: bool,
    segments: u32,
    stop: Option<EndReason>,
    handing_back: bool,
    handover_requested: bool,
    superseded: bool,
    overlap_end: Option<Instant>,
    finish_by: Option<Instant>,
    failure: Option<String>,
    /// While the recording is paused: when the pause outlasts the request's `max_pause_s`.
    pause_ends: Option<Instant>,
}

impl CaptureControl {
    pub fn new(session: SafeId, limits: Limits, now: Instant) -> Self {
        Self {
            session,
            limits,
            started: now,
            recording: false,
            segments: 0,
            stop: None,
            handing_back: false,
            handover_requested: false,
            superseded: false,
            overlap_end: None,
            finish_by: None,
            failure: None,
            pause_ends: None,
        }
    }

    /// Whether the record, the disk check and shutdown still matter (not once the capture is stopping).
    pub fn running(&self) -> bool {
        self.stop.is_none()
    }

    /// Whether a shutdown would start a drain (none has been asked for yet).
    pub fn may_drain(&self) -> bool {
        self.running() && !self.handover_requested
    }

    /// The next moment a `Tick` can change something.
    pub fn next_deadline(&self) -> Instant {
        if self.stop.is_some() {
            return self.finish_by.expect("set with the stop");
        }
        let max = self.started + self.limits.max_duration;
        [self.overlap_end, self.pause_ends].into_iter().flatten().fold(max, Instant::min)
    }

    pub fn handle(&mut self, input: Input, now: Instant) -> Vec<Action> {
        match input {
            Input::SegmentOpened if !self.recording => {
                self.recording = true;
                vec![Action::MarkRecording]
            }
            Input::SegmentOpened => vec![],
            Input::SegmentClosed => {
                self.segments += 1;
                vec![]
            }
            Input::RoomEnded(reason) => self.stop_with(reason, now),
            Input::SourceFinished => vec![Action::Exit],
            Input::SourceFailed(reason) => {
                self.failure = Some(reason);
                vec![Action::Exit]
            }
            // The capture cannot go on here: what was written is uploaded, another recorder resumes.
            Input::SpoolFull(reason) => {
                let warning = format!("spool disk full: {reason}; the recording was handed to another recorder");
                self.handing_back = true;
                self.failure = Some(reason);
                vec![Action::Warn(warning), Action::Exit]
            }
            // Hand over while what was written can still be closed and uploaded.
            Input::DiskFull(reason) if self.running() => {
                self.handing_back = true;
                let mut actions = vec![Action::Warn(format!("{reason}; the recording was handed to another recorder"))];
                actions.extend(self.stop_with(EndReason::Error, now));
                actions
            }
            Input::DiskFull(_) => vec![],
            Input::Record(record, wall_ms) if self.running() => {
                if record.desired == Desired::Stop {
                    return self.stop_with(EndReason::ApiStop, now);
                }
                if let Some(failure) = streams_over(&record) {
                    self.failure = failure;
                    return self.stop_with(EndReason::StreamsEnded, now);
                }
                self.pause_ends = record.paused_since_ms().map(|since| {
                    let limit_ms = record.request.max_pause_s() as u64 * 1000;
                    now + Duration::from_millis((since + limit_ms).saturating_sub(wall_ms))
                });
                if !self.superseded && successor_writing(&record, &self.session) {
                    // This session records on a little longer: the successor's other tracks may begin later.
                    self.superseded = true;
                    self.overlap_end = Some(now + self.limits.handover_overlap);
                }
                vec![]
            }
            Input::Record(..) => vec![],
            Input::Shutdown if self.may_drain() => vec![Action::RequestHandover],
            Input::Shutdown => vec![],
            Input::HandoverRequested(true) => {
                self.handover_requested = true;
                vec![]
            }
            Input::HandoverRequested(false) => {
                self.handing_back = true;
                self.stop_with(EndReason::Error, now)
            }
            Input::Tick => self.tick(now),
        }
    }

    fn tick(&mut self, now: Instant) -> Vec<Action> {
        if let Some(finish_by) = self.finish_by {
            if now >= finish_by {
                self.failure = Some(format!("capture did not finish within {} s of the stop", self.limits.finish_timeout.as_secs()));
                return vec![Action::Exit];
            }
            return vec![];
        }
        if now >= self.started + self.limits.max_duration {
            return self.stop_with(EndReason::MaxDuration, now);
        }
        if self.overlap_end.is_some_and(|end| now >= end) {
            return self.stop_with(EndReason::Handover, now);
        }
        if self.pause_ends.is_some_and(|end| now >= end) {
            return self.stop_with(EndReason::PauseLimit, now);
        }
        vec![]
    }

    fn stop_with(&mut self, reason: EndReason, now: Instant) -> Vec<Action> {
        if self.stop.is_some() {
            return vec![];
        }
        self.stop = Some(reason);
        self.finish_by = Some(now + self.limits.finish_timeout);
        vec![Action::StopSource(reason)]
    }

    pub fn ending(&self) -> Ending {
        let reason = match (&self.failure, self.stop) {
            (None, Some(reason)) => reason,
            _ => EndReason::Error,
        };
        Ending {
            reason,
            reason_text: if self.handing_back { "handback" } else { end_reason_name(reason) },
            failure: self.failure.clone(),
            segments: self.segments,
            handing_back: self.handing_back,
            superseded: self.superseded,
        }
    }
}

/// A stream-only job (no file, no live HLS or snapshots) none of whose streams is wanted any more has nothing left to do: `Some(None)` when
/// they were removed, `Some(Some(why))` when one failed.
fn streams_over(record: &JobRecord) -> Option<Option<String>> {
    let files_live = record.request.outputs.live_files();
    if record.request.records_file() || files_live || !record.streams_live() || record.streams.iter().any(|s| s.state.is_wanted()) {
        return None;
    }
    let mut failed = record.streams.iter().filter(|s| s.state == fleet_protocol::streams::StreamState::Failed);
    Some(failed.next_back().map(|s| format!("every stream output failed; {}: {}", s.id, s.last_error.as_deref().unwrap_or("no reason given"))))
}

/// True when a session of the same capture that began after `session_id` is writing media: this one
/// ends, after an overlap. (A redundant job's other capture runs beside this one, never instead.)
fn successor_writing(record: &JobRecord, session_id: &SafeId) -> bool {
    let Some(own) = record.sessions.iter().position(|s| &s.id == session_id) else { return false };
    let replica = record.sessions[own].replica;
    record.sessions[own + 1..].iter().any(|s| s.replica == replica && s.writing && s.ended_at_ms.is_none())
}

fn end_reason_name(reason: EndReason) -> &'static str {
    match reason {
        EndReason::ApiStop => "api_stop",
        EndReason::MaxDuration => "max_duration",
        EndReason::RoomClosed => "room_closed",
        EndReason::RoomEmpty => "room_empty",
        EndReason::Error => "error",
        EndReason::Handover => "handover",
        EndReason::PauseLimit => "pause_limit",
        EndReason::StreamsEnded => "streams_ended",
        EndReason::RecorderLost => "recorder_lost",
    }
}

/// The pause and resume marks the timeline lacks, given the record's pauses and those already marked
/// (`marked`, updated): `(wall_ms, entry)` in order.
pub fn pause_marks(
    marked: &mut Vec<fleet_protocol::job::Pause>,
    pauses: &[fleet_protocol::job::Pause],
) -> Vec<(u64, fleet_protocol::timeline::Entry)> {
    use fleet_protocol::timeline::Entry;
    let mut marks = Vec::new();
    for (index, pause) in pauses.iter().enumerate() {
        let known = marked.get(index).copied();
        if known.is_none() {
            marks.push((pause.from_ms, Entry::RecordingPaused));
        }
        if let Some(until) = pause.until_ms
            && known.is_none_or(|k| k.until_ms.is_none())
        {
            marks.push((until, Entry::RecordingResumed));
        }
    }
    *marked = pauses.to_vec();
    marks
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_protocol::job::CaptureSession;

    const LIMITS: Limits =
        Limits { max_duration: Duration::from_secs(600), handover_overlap: Duration::from_secs(3), finish_timeout: Duration::from_secs(20) };

    fn control(t0: Instant) -> CaptureControl {
        CaptureControl::new(SafeId::parse("s1").unwrap(), LIMITS, t0)
    }

    fn record(desired: Desired, sessions: &[(&str, bool, bool)]) -> Box<JobRecord> {
        let request = serde_json::from_value(serde_json::json!({"room": "r"})).unwrap();
        let mut record = JobRecord::new(SafeId::parse("rec_t").unwrap(), request, 0);
        record.desired = desired;
        record.sessions = sessions
            .iter()
            .map(|(id, writing, ended)| CaptureSession {
                id: SafeId::parse(*id).unwrap(),
                node: "n".into(),
                started_at_ms: 0,
                ended_at_ms: ended.then_some(1),
                segments: 0,
                end_reason: None,
                writing: *writing,
                replica: 0,
            })
            .collect();
        Box::new(record)
    }

    #[test]
    fn the_first_segment_marks_the_job_recording_once_and_closed_segments_are_counted() {
        let t0 = Instant::now();
        let mut c = control(t0);
        assert_eq!(c.handle(Input::SegmentOpened, t0), [Action::MarkRecording]);
        assert!(c.handle(Input::SegmentOpened, t0).is_empty());
        c.handle(Input::SegmentClosed, t0);
        c.handle(Input::SegmentClosed, t0);
        assert_eq!(c.handle(Input::SourceFinished, t0), [Action::Exit]);
        assert_eq!(c.ending().segments, 2);
    }

    #[test]
    fn an_api_stop_stops_once_then_the_source_has_until_the_finish_timeout() {
        let t0 = Instant::now();
        let mut c = control(t0);
        assert!(c.handle(Input::Record(record(Desired::Run, &[("s1", true, false)]), 0), t0).is_empty());
        assert_eq!(c.handle(Input::Record(record(Desired::Stop, &[]), 0), t0), [Action::StopSource(EndReason::ApiStop)]);
        assert!(!c.running());
        assert!(c.handle(Input::RoomEnded(EndReason::RoomClosed), t0).is_empty(), "the first reason stands");
        assert_eq!(c.next_deadline(), t0 + LIMITS.finish_timeout);
        assert!(c.handle(Input::Tick, t0 + Duration::from_secs(19)).is_empty());
        assert_eq!(c.handle(Input::SourceFinished, t0 + Duration::from_secs(19)), [Action::Exit]);
        let ending = c.ending();
        assert_eq!((ending.reason, ending.reason_text, ending.failure), (EndReason::ApiStop, "api_stop", None));
    }

    #[test]
    fn a_pause_longer_than_max_pause_ends_the_recording_and_a_resume_cancels_it() {
        let t0 = Instant::now();
        let mut c = control(t0);
        let mut paused = record(Desired::Run, &[("s1", true, false)]);
        paused.request.max_pause_s = Some(60);
        paused.pauses.push(fleet_protocol::job::Pause { from_ms: 10_000, until_ms: None });
        // Read 20 s into the pause: 40 s are left.
        assert!(c.handle(Input::Record(paused.clone(), 30_000), t0).is_empty());
        assert_eq!(c.next_deadline(), t0 + Duration::from_secs(40));
        let mut resumed = paused.clone();
        resumed.pauses[0].until_ms = Some(35_000);
        assert!(c.handle(Input::Record(resumed, 35_000), t0 + Duration::from_secs(5)).is_empty());
        assert!(c.handle(Input::Tick, t0 + Duration::from_secs(41)).is_empty(), "resumed in time");
        assert!(c.handle(Input::Record(paused, 30_000), t0).is_empty());
        assert_eq!(c.handle(Input::Tick, t0 + Duration::from_secs(40)), [Action::StopSource(EndReason::PauseLimit)]);
        assert_eq!(c.ending().reason_text, "pause_limit");
    }

    #[test]
    fn a_source_that_does_not_finish_in_time_fails_the_session() {
        let t0 = Instant::now();
        let mut c = control(t0);
        c.handle(Input::RoomEnded(EndReason::RoomEmpty), t0);
        assert_eq!(c.handle(Input::Tick, t0 + LIMITS.finish_timeout), [Action::Exit]);
        let ending = c.ending();
        assert_eq!(ending.reason, EndReason::Error);
        assert_eq!(ending.failure.as_deref(), Some("capture did not finish within 20 s of the stop"));
    }

    #[test]
    fn max_duration_is_a_deadline() {
        let t0 = Instant::now();
        let mut c = control(t0);
        assert_eq!(c.next_deadline(), t0 + LIMITS.max_duration);
        assert!(c.handle(Input::Tick, t0 + Duration::from_secs(599)).is_empty());
        assert_eq!(c.handle(Input::Tick, t0 + LIMITS.max_duration), [Action::StopSource(EndReason::MaxDuration)]);
    }

    #[test]
    fn a_writing_successor_ends_this_session_after_the_overlap() {
        let t0 = Instant::now();
        let mut c = control(t0);
        let later = t0 + Duration::from_secs(10);
        assert!(c.handle(Input::Record(record(Desired::Run, &[("s1", true, false), ("s2", false, false)]), 0), later).is_empty());
        assert_eq!(c.next_deadline(), t0 + LIMITS.max_duration, "a successor not yet writing changes nothing");
        c.handle(Input::Record(record(Desired::Run, &[("s1", true, false), ("s2", true, false)]), 0), later);
        assert_eq!(c.next_deadline(), later + LIMITS.handover_overlap);
        c.handle(Input::Record(record(Desired::Run, &[("s1", true, false), ("s2", true, false)]), 0), later + Duration::from_secs(2));
        assert_eq!(c.next_deadline(), later + LIMITS.handover_overlap, "the overlap is not pushed back");
        assert_eq!(c.handle(Input::Tick, later + LIMITS.handover_overlap), [Action::StopSource(EndReason::Handover)]);
        c.handle(Input::SourceFinished, later + Duration::from_secs(4));
        let ending = c.ending();
        assert!(ending.superseded && !ending.handing_back);
        assert_eq!(ending.reason_text, "handover");
    }

    #[test]
    fn the_other_capture_of_a_redundant_job_is_no_successor() {
        let t0 = Instant::now();
        let mut c = control(t0);
        let mut both = record(Desired::Run, &[("s1", true, false), ("s2", true, false)]);
        both.sessions[1].replica = 1;
        assert!(c.handle(Input::Record(both, 0), t0 + Duration::from_secs(10)).is_empty());
        assert_eq!(c.next_deadline(), t0 + LIMITS.max_duration, "both captures record on");
    }

    #[test]
    fn shutdown_drains_by_hand_over_or_hands_the_job_back() {
        let t0 = Instant::now();
        let mut draining = control(t0);
        assert_eq!(draining.handle(Input::Shutdown, t0), [Action::RequestHandover]);
        assert!(draining.handle(Input::HandoverRequested(true), t0).is_empty());
        assert!(!draining.may_drain() && draining.running(), "records on until the successor writes");
        assert!(draining.handle(Input::Shutdown, t0).is_empty());

        let mut refused = control(t0);
        refused.handle(Input::Shutdown, t0);
        assert_eq!(refused.handle(Input::HandoverRequested(false), t0), [Action::StopSource(EndReason::Error)]);
        refused.handle(Input::SourceFinished, t0);
        let ending = refused.ending();
        assert!(ending.handing_back);
        assert_eq!((ending.reason, ending.reason_text), (EndReason::Error, "handback"));
    }

    #[test]
    fn a_full_disk_hands_the_job_back_with_a_warning() {
        let t0 = Instant::now();
        let mut checked = control(t0);
        let actions = checked.handle(Input::DiskFull("spool disk 97 % full".into()), t0);
        assert_eq!(
            actions,
            [Action::Warn("spool disk 97 % full; the recording was handed to another recorder".into()), Action::StopSource(EndReason::Error)]
        );
        let mut failed_write = control(t0);
        let actions = failed_write.handle(Input::SpoolFull("no space".into()), t0);
        assert_eq!(actions, [Action::Warn("spool disk full: no space; the recording was handed to another recorder".into()), Action::Exit]);
        let ending = failed_write.ending();
        assert!(ending.handing_back);
        assert_eq!(ending.failure.as_deref(), Some("no space"));
    }

    #[test]
    fn pauses_are_marked_once_each_in_order() {
        use fleet_protocol::job::Pause;
        use fleet_protocol::timeline::Entry;
        let mut marked = Vec::new();
        assert!(pause_marks(&mut marked, &[]).is_empty());
        let open = [Pause { from_ms: 100, until_ms: None }];
        assert_eq!(pause_marks(&mut marked, &open), vec![(100, Entry::RecordingPaused)]);
        assert!(pause_marks(&mut marked, &open).is_empty(), "marked once");
        let closed = [Pause { from_ms: 100, until_ms: Some(200) }, Pause { from_ms: 300, until_ms: Some(400) }];
        assert_eq!(
            pause_marks(&mut marked, &closed),
            vec![(200, Entry::RecordingResumed), (300, Entry::RecordingPaused), (400, Entry::RecordingResumed)]
        );
        assert!(pause_marks(&mut marked, &closed).is_empty());
    }
}
