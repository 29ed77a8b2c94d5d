//! Requests from plugnmeet-server on the recorder channel (core NATS request/reply, binary protobuf).
//! Starts are answered only when addressed to our recorder id; stops reach every recorder and only the
//! one holding the room's recording answers, as plugNmeet's own recorders do.

use super::proto::{CommonResponse, PlugNmeetToRecorder, RecordingTasks, StatusCode};
use crate::error::ApiError;
use fleet_protocol::SafeId;
use fleet_protocol::streams::StreamUrl;

/// What a request asks of us, decided without touching NATS or the job store.
#[derive(Debug, PartialEq)]
pub enum Action {
    /// Not for us, or not understood: plugNmeet's recorders stay silent then.
    Ignore(&'static str),
    Refuse(CommonResponse),
    Start {
        room_id: String,
        room_sid: String,
        recording_id: String,
        room_table_id: i64,
    },
    /// STOP_RECORDING or STOP for the room with this table id.
    Stop {
        room_table_id: i64,
    },
    /// START_RTMP: stream the room live to `url`.
    StartRtmp {
        room_id: String,
        room_sid: String,
        recording_id: String,
        room_table_id: i64,
        url: StreamUrl,
    },
    StopRtmp {
        room_table_id: i64,
    },
}

pub fn decide(request: &PlugNmeetToRecorder, recorder_id: &str, path_placement: bool) -> Action {
    if request.from != "plugnmeet" {
        return Action::Ignore("not from plugnmeet");
    }
    let task = RecordingTasks::try_from(request.task).ok();
    match task {
        Some(RecordingTasks::StartRecording | RecordingTasks::StartRtmp) if request.recorder_id != recorder_id => {
            Action::Ignore("start addressed to another recorder")
        }
        Some(RecordingTasks::StartRtmp) => {
            if let Some(refused) = check_room_id(request) {
                return refused;
            }
            let Some(url) = request.rtmp_url.as_deref().filter(|u| !u.is_empty()) else {
                return Action::Refuse(refusal(StatusCode::InvalidParameters, "START_RTMP needs rtmp_url"));
            };
            match StreamUrl::parse(url) {
                Ok(url) => Action::StartRtmp {
                    room_id: request.room_id.clone(),
                    room_sid: request.room_sid.clone(),
                    recording_id: request.recording_id.clone(),
                    room_table_id: request.room_table_id,
                    url,
                },
                Err(err) => Action::Refuse(refusal(StatusCode::InvalidParameters, format!("rtmp_url: RTMP {err}"))),
            }
        }
        Some(RecordingTasks::StartRecording) => {
            if let Some(refused) = check_room_id(request) {
                return refused;
            }
            // Both become a file name under plugNmeet's recordings root.
            if SafeId::parse(request.recording_id.as_str()).is_err() || (path_placement && SafeId::parse(request.room_id.as_str()).is_err()) {
                return Action::Refuse(refusal(
                    StatusCode::InvalidParameters,
                    "recording_id (and room_id, as they become paths) may contain only letters, digits, '_' and '-'",
                ));
            }
            Action::Start {
                room_id: request.room_id.clone(),
                room_sid: request.room_sid.clone(),
                recording_id: request.recording_id.clone(),
                room_table_id: request.room_table_id,
            }
        }
        Some(RecordingTasks::StopRecording | RecordingTasks::Stop) => Action::Stop { room_table_id: request.room_table_id },
        Some(RecordingTasks::StopRtmp) => Action::StopRtmp { room_table_id: request.room_table_id },
        _ => Action::Ignore("not a request task"),
    }
}

fn check_room_id(request: &PlugNmeetToRecorder) -> Option<Action> {
    let room_id = &request.room_id;
    let bad = room_id.is_empty() || room_id.chars().any(char::is_control) || room_id.chars().count() > 128;
    bad.then(|| Action::Refuse(refusal(StatusCode::InvalidParameters, "room_id must be 1-128 characters without control characters")))
}

pub fn success() -> CommonResponse {
    CommonResponse { status: true, msg: "success".into(), status_code: StatusCode::Success as i32 }
}

pub fn refusal(code: StatusCode, msg: impl Into<String>) -> CommonResponse {
    CommonResponse { status: false, msg: msg.into(), status_code: code as i32 }
}

/// A failed job creation as plugNmeet reads it.
pub fn from_api_error(err: ApiError) -> CommonResponse {
    let code = if err.status.is_client_error() { StatusCode::InvalidParameters } else { StatusCode::InternalServerError };
    refusal(code, err.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(task: RecordingTasks, recorder: &str) -> PlugNmeetToRecorder {
        PlugNmeetToRecorder {
            from: "plugnmeet".into(),
            task: task as i32,
            room_table_id: 7,
            room_id: "room01".into(),
            room_sid: "RM_x".into(),
            recording_id: "RM_x-1700000000000".into(),
            recorder_id: recorder.into(),
            access_token: "web-client-token".into(),
            rtmp_url: None,
        }
    }

    #[test]
    fn starts_only_for_our_id_and_stops_for_anyone() {
        assert!(matches!(decide(&request(RecordingTasks::StartRecording, "fleet"), "fleet", true), Action::Start { room_table_id: 7, .. }));
        assert!(matches!(decide(&request(RecordingTasks::StartRecording, "other"), "fleet", true), Action::Ignore(_)));
        assert_eq!(decide(&request(RecordingTasks::Stop, "other"), "fleet", true), Action::Stop { room_table_id: 7 });
        assert_eq!(decide(&request(RecordingTasks::StopRecording, ""), "fleet", true), Action::Stop { room_table_id: 7 });
        assert_eq!(decide(&request(RecordingTasks::StopRtmp, ""), "fleet", true), Action::StopRtmp { room_table_id: 7 });
        // An unset task is START_RECORDING (proto3 default).
        let mut unset = request(RecordingTasks::StartRecording, "fleet");
        unset.task = 0;
        assert!(matches!(decide(&unset, "fleet", true), Action::Start { .. }));
    }

    #[test]
    fn rtmp_without_a_good_url_and_unsafe_ids_are_refused_with_a_reason() {
        let Action::Refuse(reply) = decide(&request(RecordingTasks::StartRtmp, "fleet"), "fleet", true) else { panic!() };
        assert!(!reply.status && reply.msg.contains("RTMP"));
        let mut rtmp = request(RecordingTasks::StartRtmp, "fleet");
        rtmp.rtmp_url = Some("http://example.com/live".into());
        let Action::Refuse(reply) = decide(&rtmp, "fleet", true) else { panic!() };
        assert!(reply.msg.contains("rtmp://"), "{reply:?}");
        rtmp.rtmp_url = Some("rtmp://a.rtmp.youtube.com/live2/key".into());
        assert!(matches!(decide(&rtmp, "fleet", true), Action::StartRtmp { room_table_id: 7, .. }));
        let mut traversal = request(RecordingTasks::StartRecording, "fleet");
        traversal.room_id = "../../etc".into();
        assert!(matches!(decide(&traversal, "fleet", true), Action::Refuse(_)));
        // Without path placement a room name only has to be a LiveKit room name.
        assert!(matches!(decide(&traversal, "fleet", false), Action::Start { .. }));
        let mut foreign = request(RecordingTasks::StartRecording, "fleet");
        foreign.from = "someone".into();
        assert!(matches!(decide(&foreign, "fleet", true), Action::Ignore(_)));
    }
}
