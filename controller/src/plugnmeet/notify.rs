//! Reports to plugnmeet-server: each job state change of a plugNmeet-started job becomes the
//! `RecorderToPlugNmeet` messages plugNmeet's own recorder would send, in its order (START_RECORDING when
//! media is being written, END_RECORDING when capture ends, RECORDING_PROCEEDED with the file, then
//! RECORDING_TRANSCODING_FINISHED; START_RTMP and END_RTMP for a stream), POSTed as protobuf with
//! plugNmeet's HMAC signature.

use super::proto::{PlugNmeetToRecorder, RecorderToPlugNmeet, RecordingTasks};
use crate::http_post::{self, PostFailed};
use backon::Retryable;
use fleet_protocol::job::Origin;
use fleet_protocol::{JobRecord, JobState};
use fleet_runtime::retry;
use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;
use std::time::Duration;

/// One report, before the file details of RECORDING_PROCEEDED are known.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    Started,
    Ended {
        ok: bool,
        msg: String,
    },
    /// The recording is ready: place it and report where.
    Proceeded,
    TranscodeFinished {
        ok: bool,
        msg: String,
    },
    /// A START_RTMP job's stream is going out (its capture writes media).
    RtmpStarted,
    RtmpEnded {
        ok: bool,
        msg: String,
    },
}

/// The reports a job entering `state` owes plugNmeet.
pub fn notices(state: JobState, record: &JobRecord) -> Vec<Notice> {
    let error = || record.error.clone().unwrap_or_else(|| "failed".into());
    if !record.request.records_file() {
        return match state {
            JobState::Recording => vec![Notice::RtmpStarted],
            JobState::Complete => vec![Notice::RtmpEnded { ok: true, msg: "success".into() }],
            JobState::Failed | JobState::Aborted => vec![Notice::RtmpEnded { ok: false, msg: error() }],
            _ => vec![],
        };
    }
    match state {
        JobState::Recording => vec![Notice::Started],
        JobState::Finalizing => vec![Notice::Ended { ok: true, msg: "success".into() }],
        JobState::Complete => vec![Notice::Proceeded, Notice::TranscodeFinished { ok: true, msg: "success".into() }],
        // A transcode that was tried and failed: the capture had ended (and was reported) before.
        // A transcode that was tried and failed (or a file job, which has no capture): the capture had
        // ended (and was reported) before.
        JobState::Failed if record.transcode_attempts > 0 || record.files.is_some() => vec![Notice::TranscodeFinished { ok: false, msg: error() }],
        JobState::Failed => vec![Notice::Ended { ok: false, msg: error() }],
        JobState::Aborted => vec![Notice::Ended { ok: false, msg: "the recording ended before any media was recorded".into() }],
        JobState::Queued | JobState::Starting | JobState::Transcoding => vec![],
    }
}

/// The message for `notice`; `file` is (path as plugNmeet stores it, size in MB) for RECORDING_PROCEEDED.
pub fn message(notice: &Notice, record: &JobRecord, file: Option<(String, f32)>) -> Option<RecorderToPlugNmeet> {
    let Some(Origin::Plugnmeet { recording_id, room_sid, room_table_id, recorder_id }) = &record.origin else { return None };
    let (task, status, msg) = match notice {
        Notice::Started => (RecordingTasks::StartRecording, true, "success".to_string()),
        Notice::Ended { ok, msg } => (RecordingTasks::EndRecording, *ok, msg.clone()),
        Notice::Proceeded => (RecordingTasks::RecordingProceeded, true, "success".to_string()),
        Notice::TranscodeFinished { ok, msg } => (RecordingTasks::RecordingTranscodingFinished, *ok, msg.clone()),
        Notice::RtmpStarted => (RecordingTasks::StartRtmp, true, "success".to_string()),
        Notice::RtmpEnded { ok, msg } => (RecordingTasks::EndRtmp, *ok, msg.clone()),
    };
    let (file_path, file_size) = file.unwrap_or_default();
    Some(RecorderToPlugNmeet {
        from: "recorder".into(),
        task: task as i32,
        status,
        msg,
        recording_id: recording_id.clone(),
        room_id: record.request.room.clone(),
        room_sid: room_sid.clone(),
        recorder_id: recorder_id.clone(),
        file_path,
        file_size,
        room_table_id: *room_table_id,
        recording_variant: None,
    })
}

/// END_RTMP with the reason a START_RTMP was refused: plugNmeet passes a recorder's reply text to no one,
/// but a report reaches its webhooks (`recorder_msg`) and the room's "ended with error" notice.
pub fn rtmp_refused(request: &PlugNmeetToRecorder, recorder_id: &str, msg: &str) -> RecorderToPlugNmeet {
    RecorderToPlugNmeet {
        from: "recorder".into(),
        task: RecordingTasks::EndRtmp as i32,
        status: false,
        msg: msg.into(),
        recording_id: request.recording_id.clone(),
        room_id: request.room_id.clone(),
        room_sid: request.room_sid.clone(),
        recorder_id: recorder_id.into(),
        file_path: String::new(),
        file_size: 0.0,
        room_table_id: request.room_table_id,
        recording_variant: None,
    }
}

/// `HASH-SIGNATURE`: lowercase hex HMAC-SHA256 of the raw body with plugNmeet's API secret.
pub fn signature(api_secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(api_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// POSTs one report; retries transport errors and 5xx with backoff, gives up after `attempts`.
pub async fn send(http: &reqwest::Client, server_url: &str, api_key: &str, api_secret: &str, attempts: u32, report: &RecorderToPlugNmeet) -> bool {
    let url = format!("{}/auth/recorder/notify", server_url.trim_end_matches('/'));
    let body = report.encode_to_vec();
    let task = RecordingTasks::try_from(report.task).map(|t| t.as_str_name()).unwrap_or("?");
    let post = || async {
        let request = http
            .post(&url)
            .header("content-type", "application/protobuf")
            .header("API-KEY", api_key)
            .header("HASH-SIGNATURE", signature(api_secret, &body))
            .body(body.clone());
        http_post::send(request).await
    };
    let schedule = retry::attempts(attempts.max(1) as usize, Duration::from_millis(500), Duration::from_secs(10));
    let result = post
        .retry(schedule)
        // A 4xx is plugNmeet's answer about this report: sending it again cannot change it.
        .when(|failed| !matches!(failed, PostFailed::Status(status) if status.is_client_error()))
        .notify(|failed, _| tracing::warn!(recording_id = %report.recording_id, task, %failed, "plugNmeet notify failed; retrying"))
        .await;
    match result {
        Ok(()) => {
            tracing::info!(recording_id = %report.recording_id, task, "plugNmeet notified");
            true
        }
        Err(failed) => {
            tracing::error!(recording_id = %report.recording_id, task, %failed, "plugNmeet report given up");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_protocol::SafeId;

    fn record(state: JobState, transcode_attempts: u32) -> JobRecord {
        let request = serde_json::from_str(r#"{"room":"room01"}"#).unwrap();
        let mut record = JobRecord::new(SafeId::parse("rec_1").unwrap(), request, 0);
        record.state = state;
        record.transcode_attempts = transcode_attempts;
        record.origin =
            Some(Origin::Plugnmeet { recording_id: "RM_x-1".into(), room_sid: "RM_x".into(), room_table_id: 7, recorder_id: "fleet".into() });
        record
    }

    #[test]
    fn states_map_to_plugnmeets_sequence() {
        assert_eq!(notices(JobState::Recording, &record(JobState::Recording, 0)), vec![Notice::Started]);
        assert!(matches!(notices(JobState::Finalizing, &record(JobState::Finalizing, 0))[..], [Notice::Ended { ok: true, .. }]));
        assert!(matches!(
            notices(JobState::Complete, &record(JobState::Complete, 1))[..],
            [Notice::Proceeded, Notice::TranscodeFinished { ok: true, .. }]
        ));
        let mut failed = record(JobState::Failed, 0);
        failed.error = Some("could not join room".into());
        assert_eq!(notices(JobState::Failed, &failed), vec![Notice::Ended { ok: false, msg: "could not join room".into() }]);
        assert!(matches!(notices(JobState::Failed, &record(JobState::Failed, 3))[..], [Notice::TranscodeFinished { ok: false, .. }]));
        assert!(notices(JobState::Transcoding, &record(JobState::Transcoding, 1)).is_empty());
    }

    #[test]
    fn messages_carry_plugnmeets_ids_and_the_file() {
        let r = record(JobState::Complete, 1);
        let m = message(&Notice::Proceeded, &r, Some(("fleet/room01/RM_x-1.mp4".into(), 1.5))).unwrap();
        assert_eq!((m.from.as_str(), m.task), ("recorder", RecordingTasks::RecordingProceeded as i32));
        assert_eq!((m.room_table_id, m.recording_id.as_str(), m.file_path.as_str(), m.file_size), (7, "RM_x-1", "fleet/room01/RM_x-1.mp4", 1.5));
        let mut native = r.clone();
        native.origin = None;
        assert!(message(&Notice::Started, &native, None).is_none());
        assert_eq!(signature("secret", b"body").len(), 64);
    }
}
