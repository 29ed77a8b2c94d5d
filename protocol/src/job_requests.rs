//! Nodes never write job records themselves: they send each [`Transition`] to the controller, which
//! checks that the node holds the job ([`authorize`]) and applies it through `JobStore::apply`. A node's
//! NATS login may publish only on its own request subject (`<prefix>.<role>.<node id>`), so the role and
//! node the controller reads from the subject are the ones the server authenticated; a recorder's login
//! therefore cannot complete, fail or rewrite a job it does not hold.

use crate::ids::SafeId;
use crate::job::{Desired, JobRecord, JobState};
use crate::nats_access::Role;
use crate::transition::{Applied, Refusal, Transition};
use serde::{Deserialize, Serialize};

/// One transition a node asks for. `request_id` is the same on every retry, so a retry whose first try
/// was applied (its reply lost) gets that first answer back instead of applying twice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApplyRequest {
    pub request_id: String,
    pub job_id: SafeId,
    pub transition: Transition,
}

/// The controller's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum ApplyReply {
    Applied {
        record: Box<JobRecord>,
        applied: Applied,
    },
    Refused {
        refusal: Refusal,
    },
    Forbidden {
        reason: Forbidden,
    },
    NotFound,
    /// The request could not be read, or the store failed; the node may retry.
    Failed {
        error: String,
    },
}

/// Why a node may not apply a transition to a job.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "forbidden", rename_all = "snake_case")]
pub enum Forbidden {
    #[error("a {role} node may not {transition}")]
    WrongRole { role: String, transition: String },
    #[error("node {node} does not hold {what} of this job")]
    NotHolder { node: String, what: String },
    #[error("node {node} may not act as {claimed}")]
    NotItself { node: String, claimed: String },
}

/// The login's identity as its request subject names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requester {
    pub role: Role,
    pub node: String,
}

impl Requester {
    /// A `both` node's embedded transcoder works under its own name (see [`embedded_transcoder_id`]).
    fn is(&self, name: &str) -> bool {
        name == self.node || (self.role == Role::Both && name == embedded_transcoder_id(&self.node))
    }
}

/// The name under which a `both` node's embedded transcoder claims and reports transcodes.
pub fn embedded_transcoder_id(node_id: &str) -> String {
    format!("{node_id}-transcoder")
}

/// Reads the requester from a request's subject (`<prefix>.<role>.<node>`).
pub fn requester_from_subject(prefix: &str, subject: &str) -> Option<Requester> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let (role, node) = rest.split_once('.')?;
    let role = Role::parse(role).filter(|r| *r != Role::Controller)?;
    (!node.is_empty() && !node.contains('.')).then(|| Requester { role, node: node.to_string() })
}

/// Whether `requester` may apply `transition` to `record`. Recorders act on the sessions they opened,
/// transcoders on the transcode (or join) they claimed; stopping a recording is the controller's alone.
/// During a chunked transcode the queue hands chunks to any transcoder and the record does not say who
/// has which, so there any transcoder may report chunk work.
pub fn authorize(record: &JobRecord, requester: &Requester, transition: &Transition) -> Result<(), Forbidden> {
    use Transition as T;
    let role = requester.role;
    let wrong_role = || Forbidden::WrongRole { role: role.as_str().to_string(), transition: transition_name(transition) };
    let not_holder = |what: &str| Forbidden::NotHolder { node: requester.node.clone(), what: what.to_string() };
    let itself = |claimed: &str| {
        if requester.is(claimed) { Ok(()) } else { Err(Forbidden::NotItself { node: requester.node.clone(), claimed: claimed.to_string() }) }
    };
    let records = matches!(role, Role::Recorder | Role::Both);
    let transcodes = matches!(role, Role::Transcoder | Role::Both);
    let holds_session = |session: &SafeId| record.sessions.iter().any(|s| s.id == *session && requester.is(&s.node));
    let holds_transcode = record.progress.as_ref().is_some_and(|p| requester.is(&p.node));
    let holds_join = record.chunks.as_ref().and_then(|c| c.joining.as_ref()).is_some_and(|(node, _)| requester.is(node));
    let chunked = record.chunks.is_some();
    let require = |allowed: bool, what: &str| if allowed { Ok(()) } else { Err(not_holder(what)) };
    let recorder_only = || if records { Ok(()) } else { Err(wrong_role()) };
    let transcoder_only = || if transcodes { Ok(()) } else { Err(wrong_role()) };
    match transition {
        // API clients' transitions (applied by the controller itself), never a node's.
        T::RequestStop | T::Pause | T::Resume | T::AddStream { .. } | T::RemoveStream { .. } => Err(wrong_role()),
        // Streams are pushed by the recorder capturing the room.
        T::ReportStreams { .. } => {
            recorder_only()?;
            require(record.sessions.iter().any(|s| s.ended_at_ms.is_none() && requester.is(&s.node)), "an open session")
        }
        T::OpenSession { node, .. } => recorder_only().and_then(|_| itself(node)),
        T::MediaWriting { session, .. } | T::EndSession { session, .. } => {
            recorder_only()?;
            require(holds_session(session), &format!("session {session}"))
        }
        // A recorder handed a job that is to stop (or no longer capturing) closes it without capturing; a
        // crashed recorder's session stays open in the record, so who holds it cannot be the test.
        T::StopWithoutCapture { .. } => {
            recorder_only()?;
            require(record.desired == Desired::Stop || !record.state.is_capturing(), "a job to stop")
        }
        T::ClaimTranscode { node, .. } | T::ClaimJoin { node } | T::RefreshJoin { node } => transcoder_only().and_then(|_| itself(node)),
        T::Progress(progress) => {
            transcoder_only()?;
            itself(&progress.node)?;
            require(holds_transcode || chunked, "the transcode")
        }
        T::PlanChunks(_) => transcoder_only().and_then(|_| require(holds_transcode, "the transcode")),
        T::ChunkDone { .. } => transcoder_only().and_then(|_| require(chunked, "a chunk")),
        // Any transcoder may start the progressive transcode of a running recording.
        T::OpenChunks { .. } => transcoder_only(),
        T::Complete { .. } => transcoder_only().and_then(|_| require(holds_transcode || holds_join, "the transcode")),
        T::Fail { .. } | T::NoteRetryError { .. } => {
            transcoder_only().and_then(|_| require(holds_transcode || holds_join || chunked, "the transcode"))
        }
        // A recorder that queues a captured job's transcode may say why it will wait (no GPU transcoder).
        T::Warn { .. } => {
            let holds_any_session = record.sessions.iter().any(|s| requester.is(&s.node));
            let queues_transcode = record.state == JobState::Finalizing;
            require((records && (holds_any_session || queues_transcode)) || (transcodes && (holds_transcode || holds_join || chunked)), "any part")
        }
    }
}

fn transition_name(transition: &Transition) -> String {
    serde_json::to_value(transition).ok().and_then(|v| v.get("transition").and_then(|t| t.as_str()).map(str::to_string)).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::fixtures::{output, session};
    use crate::job::{CaptureSession, ChunkPlan, JobRequest, Progress};
    use crate::transition::SessionEnd;

    fn record() -> JobRecord {
        let request: JobRequest = serde_json::from_str(r#"{"room":"r"}"#).unwrap();
        let mut record = JobRecord::new(SafeId::parse("rec_t").unwrap(), request, 0);
        record.state = JobState::Recording;
        record.sessions.push(CaptureSession { writing: true, ..session("rec-a", 1) });
        record
    }

    fn transcoding(holder: &str) -> JobRecord {
        let mut r = record();
        r.sessions[0].ended_at_ms = Some(2);
        r.state = JobState::Transcoding;
        r.progress = Some(Progress { percent: 0.0, speed: 0.0, node: holder.into() });
        r
    }

    fn who(role: Role, node: &str) -> Requester {
        Requester { role, node: node.into() }
    }

    fn end() -> Transition {
        Transition::EndSession {
            session: SafeId::parse("s1").unwrap(),
            end: SessionEnd {
                ended_at_ms: 5,
                segments: 1,
                reason: crate::job::EndReason::RoomClosed,
                failure: None,
                continues_elsewhere: false,
                handover_taker: false,
                media_stored: true,
            },
        }
    }

    #[test]
    fn recorders_act_only_on_their_own_sessions() {
        let r = record();
        assert_eq!(authorize(&r, &who(Role::Recorder, "rec-a"), &end()), Ok(()));
        assert!(matches!(authorize(&r, &who(Role::Recorder, "rec-b"), &end()), Err(Forbidden::NotHolder { .. })));
        assert!(matches!(authorize(&r, &who(Role::Transcoder, "rec-a"), &end()), Err(Forbidden::WrongRole { .. })));
        let open = Transition::OpenSession { node: "rec-a".into(), replica: 0 };
        assert_eq!(authorize(&r, &who(Role::Recorder, "rec-a"), &open), Ok(()));
        assert!(matches!(authorize(&r, &who(Role::Recorder, "rec-b"), &open), Err(Forbidden::NotItself { .. })));
        let stop = Transition::StopWithoutCapture { media_stored: false, replica: 0 };
        assert!(authorize(&r, &who(Role::Recorder, "rec-b"), &stop).is_err(), "a job nobody asked to stop");
        let mut to_stop = r.clone();
        to_stop.desired = Desired::Stop;
        // rec-a's session may be a crashed recorder's: any recorder handed the job closes it.
        assert_eq!(authorize(&to_stop, &who(Role::Recorder, "rec-b"), &stop), Ok(()));
        assert!(authorize(&to_stop, &who(Role::Transcoder, "tx"), &stop).is_err());
        assert!(authorize(&r, &who(Role::Recorder, "rec-a"), &Transition::RequestStop).is_err(), "stops are the controller's");
    }

    #[test]
    fn a_recorder_cannot_fail_or_complete_a_job_and_transcoders_only_what_they_claimed() {
        let r = transcoding("tx-a");
        let fail = Transition::Fail { error: "x".into() };
        let complete = Transition::Complete { output: output(), warnings: vec![] };
        for t in [&fail, &complete] {
            assert!(matches!(authorize(&r, &who(Role::Recorder, "rec-a"), t), Err(Forbidden::WrongRole { .. })));
            assert!(matches!(authorize(&r, &who(Role::Transcoder, "tx-b"), t), Err(Forbidden::NotHolder { .. })));
            assert_eq!(authorize(&r, &who(Role::Transcoder, "tx-a"), t), Ok(()));
        }
        // A `both` node's embedded transcoder is the same login.
        let both = transcoding("node-1-transcoder");
        assert_eq!(authorize(&both, &who(Role::Both, "node-1"), &complete), Ok(()));
        assert!(authorize(&both, &who(Role::Transcoder, "node-1"), &complete).is_err());
        let claim = Transition::ClaimTranscode { node: "tx-b".into(), attempt: 2 };
        assert_eq!(authorize(&r, &who(Role::Transcoder, "tx-b"), &claim), Ok(()));
        assert!(authorize(&r, &who(Role::Transcoder, "tx-c"), &claim).is_err(), "a claim in another's name");
        let progress = Transition::Progress(Progress { percent: 1.0, speed: 1.0, node: "tx-b".into() });
        assert!(authorize(&r, &who(Role::Transcoder, "tx-b"), &progress).is_err(), "progress on a transcode it does not hold");
    }

    #[test]
    fn chunk_work_is_open_to_every_transcoder_and_the_joiner_completes() {
        let mut r = transcoding("tx-a");
        let chunk = Transition::ChunkDone { index: 0, problems: vec![] };
        assert!(authorize(&r, &who(Role::Transcoder, "tx-b"), &chunk).is_err(), "no plan: no chunks");
        let mut plan = ChunkPlan::new(20, 10);
        plan.joining = Some(("tx-c".into(), 1));
        r.chunks = Some(plan);
        assert_eq!(authorize(&r, &who(Role::Transcoder, "tx-b"), &chunk), Ok(()));
        assert!(authorize(&r, &who(Role::Recorder, "rec-a"), &chunk).is_err());
        let complete = Transition::Complete { output: output(), warnings: vec![] };
        assert_eq!(authorize(&r, &who(Role::Transcoder, "tx-c"), &complete), Ok(()));
        assert!(authorize(&r, &who(Role::Transcoder, "tx-b"), &complete).is_err());
    }

    #[test]
    fn the_subject_names_the_requester() {
        let s = crate::names::FleetNames::default().job_request_subject("recorder", "rec-a");
        assert_eq!(s, "fleet.jobs.apply.recorder.rec-a");
        assert_eq!(requester_from_subject("fleet.jobs.apply", &s), Some(who(Role::Recorder, "rec-a")));
        assert_eq!(requester_from_subject("fleet.jobs.apply", "fleet.jobs.apply.controller.c"), None);
        assert_eq!(requester_from_subject("fleet.jobs.apply", "fleet.jobs.apply.recorder"), None);
        assert_eq!(requester_from_subject("fleet.jobs.apply", "fleet.jobs.apply.recorder.a.b"), None);
        assert_eq!(requester_from_subject("fleet.jobs.apply", "other.recorder.a"), None);
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let request = ApplyRequest { request_id: "r1".into(), job_id: SafeId::parse("rec_t").unwrap(), transition: end() };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(serde_json::from_str::<ApplyRequest>(&json).unwrap(), request);
        for reply in [
            ApplyReply::Applied { record: Box::new(record()), applied: Applied::SessionOpened(SafeId::parse("s2").unwrap()) },
            ApplyReply::Refused { refusal: Refusal::JoinClaimed { node: "tx".into() } },
            ApplyReply::Forbidden { reason: Forbidden::NotHolder { node: "n".into(), what: "w".into() } },
            ApplyReply::NotFound,
        ] {
            let json = serde_json::to_string(&reply).unwrap();
            assert_eq!(serde_json::from_str::<ApplyReply>(&json).unwrap(), reply, "{json}");
        }
    }
}
