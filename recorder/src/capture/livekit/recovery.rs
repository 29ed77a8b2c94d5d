//! What the capture does when the server asks it to leave or its signalling drops (sans-IO: the
//! message and the time are arguments). LiveKit keeps a participant whose signalling dropped and lets
//! it *resume* (`reconnect=1` with its sid, then an ICE restart) while its media keeps flowing; a
//! rejoin under the same identity evicts the old session and costs a keyframe wait per video track.
//! So the capture resumes first and rejoins only when the server refuses the resume or asks for it.

use fleet_protocol::job::EndReason;
use livekit_protocol as proto;
use proto::leave_request::Action;
use std::time::{Duration, Instant};

/// Resumes closer together than this mean the new signalling keeps failing: rejoin instead.
const MIN_RESUME_INTERVAL: Duration = Duration::from_secs(2);
/// How long resumes are tried while the server cannot be reached. livekit-server keeps a participant
/// whose signalling dropped while its media flows, and closes one whose media failed ~5 s after it says
/// so (`participant.go`, `disconnectCleanupDuration`); past this a rejoin is the surer way back.
const RESUME_WINDOW: Duration = Duration::from_secs(10);
const RESUME_RETRY_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The room is gone: the capture ends.
    End(EndReason),
    /// Keep the session: reopen signalling with `reconnect=1`, for this reason.
    Resume(proto::ReconnectReason),
    /// Join the room afresh, for this reason.
    Rejoin(String),
}

/// The answer to the server's `LeaveRequest`.
pub fn after_leave(leave: &proto::LeaveRequest) -> Recovery {
    match (leave.action(), leave.reason()) {
        (Action::Disconnect, proto::DisconnectReason::RoomDeleted | proto::DisconnectReason::RoomClosed) => Recovery::End(EndReason::RoomClosed),
        (Action::Disconnect, other) => Recovery::Rejoin(format!("removed from the room ({other:?})")),
        (Action::Resume, _) => Recovery::Resume(proto::ReconnectReason::RrSignalDisconnected),
        (Action::Reconnect, reason) => Recovery::Rejoin(format!("the server asked to reconnect ({reason:?})")),
    }
}

/// What a wanted resume becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Resume(proto::ReconnectReason),
    Rejoin(String),
}

/// After a resume attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retry {
    /// Try resuming again at this time (the server could not be reached; it keeps the session meanwhile).
    At(Instant),
    Rejoin(String),
}

/// Decides between resuming and rejoining, from when the connection was lost and how resumes went.
#[derive(Debug, Default)]
pub struct ResumePolicy {
    /// When the loss being recovered began.
    lost_since: Option<Instant>,
    last_resumed: Option<Instant>,
}

impl ResumePolicy {
    /// A new loss at `now` (signalling closed, the server's `Leave{RESUME}`, media lost): resume for
    /// `reason`, unless the last resume was only moments ago (the new signalling keeps failing).
    pub fn resume_or_rejoin(&mut self, now: Instant, reason: proto::ReconnectReason, why: &str) -> Attempt {
        if self.last_resumed.is_some_and(|at| now.saturating_duration_since(at) < MIN_RESUME_INTERVAL) {
            return Attempt::Rejoin(format!("{why}, again within {} s of resuming", MIN_RESUME_INTERVAL.as_secs()));
        }
        self.lost_since.get_or_insert(now);
        Attempt::Resume(reason)
    }

    pub fn resumed(&mut self, now: Instant) {
        self.lost_since = None;
        self.last_resumed = Some(now);
    }

    /// A resume failed at `now`. `refused`: the server answered and would not resume (it no longer knows
    /// the session): rejoin at once. Otherwise it could not be reached: try again while it keeps sessions.
    pub fn failed(&mut self, now: Instant, refused: bool, why: &str) -> Retry {
        let since = *self.lost_since.get_or_insert(now);
        if refused {
            self.lost_since = None;
            return Retry::Rejoin(why.to_string());
        }
        if now.saturating_duration_since(since) + RESUME_RETRY_INTERVAL > RESUME_WINDOW {
            self.lost_since = None;
            return Retry::Rejoin(format!("{why}; no resume within {} s", RESUME_WINDOW.as_secs()));
        }
        Retry::At(now + RESUME_RETRY_INTERVAL)
    }
}

/// How long a lost media connection waits for signalling to say why before the capture acts on it (the
/// server closes a room's peer connections and sends `Leave{ROOM_CLOSED}` at the same moment).
const MEDIA_LOSS_GRACE: Duration = Duration::from_millis(500);
/// How long the media connection may stay lost after a resume (and its ICE restart) before a rejoin.
const MEDIA_RECOVERY_TIMEOUT: Duration = Duration::from_secs(10);

/// What to do about a media connection that stayed lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaAction {
    /// Resume the session: its ICE restart can find the path again.
    Resume,
    Rejoin,
}

/// Watches the media connection: lost, given a grace for signalling to explain, then resumed once, then
/// rejoined if still lost.
#[derive(Debug, Default)]
pub struct MediaWatch {
    lost_at: Option<Instant>,
    resumed: bool,
}

impl MediaWatch {
    pub fn lost(&mut self, now: Instant) {
        self.lost_at.get_or_insert(now);
    }

    pub fn restored(&mut self) {
        *self = MediaWatch::default();
    }

    /// When to act, if the connection is lost.
    pub fn deadline(&self) -> Option<Instant> {
        self.lost_at.map(|at| at + if self.resumed { MEDIA_RECOVERY_TIMEOUT } else { MEDIA_LOSS_GRACE })
    }

    /// The deadline passed at `now`. `alive`: the connection can still be restarted (it did not end).
    pub fn act(&mut self, now: Instant, alive: bool) -> MediaAction {
        if !alive || self.resumed {
            return MediaAction::Rejoin;
        }
        self.resumed = true;
        self.lost_at = Some(now);
        MediaAction::Resume
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leave(action: Action, reason: proto::DisconnectReason) -> proto::LeaveRequest {
        proto::LeaveRequest { action: action as i32, reason: reason as i32, ..Default::default() }
    }

    #[test]
    fn a_closed_room_ends_the_capture() {
        for reason in [proto::DisconnectReason::RoomClosed, proto::DisconnectReason::RoomDeleted] {
            assert_eq!(after_leave(&leave(Action::Disconnect, reason)), Recovery::End(EndReason::RoomClosed));
        }
    }

    #[test]
    fn the_server_chooses_resume_or_rejoin() {
        assert_eq!(
            after_leave(&leave(Action::Resume, proto::DisconnectReason::Migration)),
            Recovery::Resume(proto::ReconnectReason::RrSignalDisconnected)
        );
        // What livekit-server answers a resume of a participant it no longer knows.
        assert!(
            matches!(after_leave(&leave(Action::Reconnect, proto::DisconnectReason::StateMismatch)), Recovery::Rejoin(r) if r.contains("StateMismatch"))
        );
        assert!(matches!(after_leave(&leave(Action::Disconnect, proto::DisconnectReason::ParticipantRemoved)), Recovery::Rejoin(_)));
    }

    #[test]
    fn signalling_that_keeps_dropping_is_rejoined() {
        let mut policy = ResumePolicy::default();
        let start = Instant::now();
        let reason = proto::ReconnectReason::RrSignalDisconnected;
        assert_eq!(policy.resume_or_rejoin(start, reason, "closed"), Attempt::Resume(reason));
        policy.resumed(start + Duration::from_millis(20));
        assert!(matches!(policy.resume_or_rejoin(start + Duration::from_millis(500), reason, "closed"), Attempt::Rejoin(_)));
        assert_eq!(policy.resume_or_rejoin(start + Duration::from_secs(10), reason, "closed"), Attempt::Resume(reason));
    }

    #[test]
    fn lost_media_is_resumed_once_then_rejoined_and_an_ended_connection_rejoined_at_once() {
        let start = Instant::now();
        let mut watch = MediaWatch::default();
        assert_eq!(watch.deadline(), None);
        watch.lost(start);
        watch.lost(start + Duration::from_millis(100));
        assert_eq!(watch.deadline(), Some(start + MEDIA_LOSS_GRACE));
        let acted = start + MEDIA_LOSS_GRACE;
        assert_eq!(watch.act(acted, true), MediaAction::Resume);
        assert_eq!(watch.deadline(), Some(acted + MEDIA_RECOVERY_TIMEOUT));
        assert_eq!(watch.act(acted + MEDIA_RECOVERY_TIMEOUT, true), MediaAction::Rejoin);
        watch.restored();
        assert_eq!(watch.deadline(), None);
        watch.lost(start);
        assert_eq!(watch.act(start + MEDIA_LOSS_GRACE, false), MediaAction::Rejoin);
    }

    #[test]
    fn an_unreachable_server_is_retried_within_the_window_and_a_refusal_is_not() {
        let mut policy = ResumePolicy::default();
        let start = Instant::now();
        let reason = proto::ReconnectReason::RrSignalDisconnected;
        assert_eq!(policy.resume_or_rejoin(start, reason, "closed"), Attempt::Resume(reason));
        let mut now = start;
        let mut retries = 0;
        loop {
            match policy.failed(now, false, "connection refused") {
                Retry::At(at) => {
                    assert_eq!(at - now, RESUME_RETRY_INTERVAL);
                    now = at;
                    retries += 1;
                }
                Retry::Rejoin(why) => {
                    assert!(why.contains("no resume within 10 s"), "{why}");
                    break;
                }
            }
        }
        assert_eq!(retries, 20, "retried every 0.5 s for 10 s");
        // A new loss starts a new window; a refusal ends it at once.
        assert_eq!(policy.resume_or_rejoin(now, reason, "closed"), Attempt::Resume(reason));
        assert_eq!(policy.failed(now, true, "state mismatch"), Retry::Rejoin("state mismatch".into()));
    }
}
