//! Recording jobs: the request an API client makes, the record kept in the `fleet-jobs` bucket, and the
//! small messages that travel through the work queues.

use crate::ids::SafeId;
use serde::{Deserialize, Serialize};

/// Longest recording the API accepts (24 h); longer requests are almost certainly mistakes.
pub const MAX_DURATION_LIMIT_S: u32 = 24 * 3600;
/// Default cap when a request names none.
pub const DEFAULT_MAX_DURATION_S: u32 = 6 * 3600;
/// A pause longer than this (unless the request says otherwise) ends the recording.
pub const DEFAULT_MAX_PAUSE_S: u32 = 3600;
pub const MAX_ROOM_NAME_LEN: usize = 128;
pub const MAX_METADATA_BYTES: usize = 4096;
pub const MAX_TEST_PARTICIPANTS: u8 = 9;
/// Most recorders a job may ask to capture its room at once.
pub const MAX_REDUNDANCY: u8 = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Starting,
    Recording,
    Finalizing,
    Transcoding,
    Complete,
    Failed,
    Aborted,
}

impl JobState {
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Starting,
        JobState::Recording,
        JobState::Finalizing,
        JobState::Transcoding,
        JobState::Complete,
        JobState::Failed,
        JobState::Aborted,
    ];

    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Complete | JobState::Failed | JobState::Aborted)
    }

    /// True while the capture side still owns the job (a stop request still matters).
    pub fn is_capturing(self) -> bool {
        matches!(self, JobState::Queued | JobState::Starting | JobState::Recording)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Starting => "starting",
            JobState::Recording => "recording",
            JobState::Finalizing => "finalizing",
            JobState::Transcoding => "transcoding",
            JobState::Complete => "complete",
            JobState::Failed => "failed",
            JobState::Aborted => "aborted",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Desired {
    Run,
    Stop,
}

/// Where the media comes from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// Join the LiveKit room named in the request as a hidden subscriber.
    #[default]
    Livekit,
    /// A synthetic room made with GStreamer test sources: the fleet's smoke test.
    Test {
        #[serde(default = "default_test_participants")]
        #[schema(minimum = 1, maximum = 9)]
        participants: u8,
    },
}

fn default_test_participants() -> u8 {
    2
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    #[default]
    Grid,
    Speaker,
    ScreenShare,
    Single,
}

/// The output's picture: `"720p30"` (default), `"1080p30"`, or custom
/// `{"width": .., "height": .., "fps": .., "video_kbps": ..}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PresetWire", into = "PresetWire")]
pub enum VideoPreset {
    #[default]
    Hd720p30,
    Hd1080p30,
    Custom(CustomPreset),
}

/// Documented as it is written: a name or the custom fields.
impl utoipa::PartialSchema for VideoPreset {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::{ObjectBuilder, OneOfBuilder, Ref, Type};
        let names = ObjectBuilder::new().schema_type(Type::String).enum_values(Some(["720p30", "1080p30"]));
        OneOfBuilder::new()
            .item(names)
            .item(Ref::from_schema_name("CustomPreset"))
            .description(Some("The output's picture: `720p30` (default), `1080p30`, or custom"))
            .into()
    }
}

impl utoipa::ToSchema for VideoPreset {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        use utoipa::PartialSchema;
        schemas.push((<CustomPreset as utoipa::ToSchema>::name().into(), CustomPreset::schema()));
        <CustomPreset as utoipa::ToSchema>::schemas(schemas);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomPreset {
    #[schema(minimum = 160, maximum = 3840, multiple_of = 2)]
    pub width: u32,
    #[schema(minimum = 90, maximum = 2160, multiple_of = 2)]
    pub height: u32,
    #[schema(minimum = 1, maximum = 60)]
    pub fps: u32,
    #[schema(minimum = 100, maximum = 50000)]
    pub video_kbps: u32,
}

/// How a preset is written in JSON: a name or the custom fields.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PresetWire {
    Name(String),
    Custom(CustomPreset),
}

impl TryFrom<PresetWire> for VideoPreset {
    type Error = InvalidRequest;

    fn try_from(wire: PresetWire) -> Result<Self, InvalidRequest> {
        match wire {
            PresetWire::Name(name) if name == "720p30" => Ok(VideoPreset::Hd720p30),
            PresetWire::Name(name) if name == "1080p30" => Ok(VideoPreset::Hd1080p30),
            PresetWire::Name(name) => {
                Err(InvalidRequest(format!("unknown video_preset {name:?}: use 720p30, 1080p30 or {{width, height, fps, video_kbps}}")))
            }
            PresetWire::Custom(custom) => {
                let CustomPreset { width, height, fps, video_kbps } = custom;
                if !(160..=3840).contains(&width) || !(90..=2160).contains(&height) || width % 2 == 1 || height % 2 == 1 {
                    return Err("video_preset width and height must be even, 160-3840 by 90-2160".into());
                }
                if !(1..=60).contains(&fps) {
                    return Err("video_preset fps must be 1-60".into());
                }
                if !(100..=50_000).contains(&video_kbps) {
                    return Err("video_preset video_kbps must be 100-50000".into());
                }
                Ok(VideoPreset::Custom(custom))
            }
        }
    }
}

impl From<VideoPreset> for PresetWire {
    fn from(preset: VideoPreset) -> Self {
        match preset {
            VideoPreset::Hd720p30 => PresetWire::Name("720p30".into()),
            VideoPreset::Hd1080p30 => PresetWire::Name("1080p30".into()),
            VideoPreset::Custom(custom) => PresetWire::Custom(custom),
        }
    }
}

impl VideoPreset {
    /// (width, height, fps, video kbps)
    pub fn params(self) -> (u32, u32, u32, u32) {
        match self {
            VideoPreset::Hd720p30 => (1280, 720, 30, 3000),
            VideoPreset::Hd1080p30 => (1920, 1080, 30, 4500),
            VideoPreset::Custom(CustomPreset { width, height, fps, video_kbps }) => (width, height, fps, video_kbps),
        }
    }
}

/// Whether the transcode may, must or must not use a GPU encoder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GpuPolicy {
    /// The node's best encoder, GPU first.
    #[default]
    Any,
    /// Only a node with a working GPU encoder takes the job (it waits in the queue until one does).
    Require,
    /// A CPU encoder, on any node.
    Forbid,
}

impl GpuPolicy {
    fn is_any(&self) -> bool {
        *self == GpuPolicy::Any
    }
}

/// What an API client asks for. Unknown fields are refused so typos never pass silently.
/// Longest a job may ask a recorder to wait for its LiveKit room to appear.
pub const MAX_ROOM_WAIT_S: u32 = 3600;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    #[schema(min_length = 1, max_length = 128)]
    pub room: String,
    #[serde(default)]
    pub source: Source,
    #[serde(default)]
    pub layout: Layout,
    /// Layout `single`: the participant (identity) to show; the first one present when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 128)]
    pub participant: Option<String>,
    #[serde(default)]
    pub video_preset: VideoPreset,
    #[serde(default)]
    pub audio_only: bool,
    /// `any` (default), `require` or `forbid` a GPU encoder for the transcode.
    #[serde(default, skip_serializing_if = "GpuPolicy::is_any")]
    pub gpu: GpuPolicy,
    /// Also one audio file per participant (for transcription), each the recording's full length.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub audio_per_participant: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub max_duration_s: Option<u32>,
    /// A pause longer than this ends the recording (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 86400)]
    pub max_pause_s: Option<u32>,
    /// `livekit` source: wait up to this long for the room to exist instead of failing at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 3600)]
    pub wait_for_room_s: Option<u32>,
    /// Where this job's state changes are posted, signed with the controller's webhook secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(format = "uri", max_length = 2048)]
    pub webhook_url: Option<String>,
    /// Returned in the record, webhooks and manifest; at most 4096 bytes of JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<serde_json::Value>,
    /// Where the recording is stored: a key under the storage prefix (default `<job>/<job>.mp4`). LiveKit
    /// Egress template fields `{room_name}`, `{time}`, `{utc}`, `{publisher_identity}` are filled in when
    /// the job is created; the extension is the recording's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 512)]
    pub filepath: Option<String>,
    /// An end-to-end encrypted room: the keys the transcoder decrypts with (stored sealed only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e2ee: Option<crate::e2ee::E2eeRequest>,
    /// Title, colours, names, logo (what it leaves out comes from the transcoder's configuration).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branding: Option<crate::branding::Branding>,
    /// An MP4 file (default) and/or live streams.
    #[serde(default, skip_serializing_if = "Outputs::is_default")]
    pub outputs: Outputs,
    /// How many recorders capture the room at once (1 or 2; default 1). With 2, each on its own node,
    /// the transcode takes every instant from whichever capture has it: a recorder dying loses nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 2)]
    pub redundancy: Option<u8>,
}

/// What a job produces: the recording's file, live streams, or both from the same capture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// The MP4 (default true). A stream-only job ends when its capture does.
    #[serde(default = "yes")]
    pub file: bool,
    /// RTMP URLs the room is streamed to live. Moved into the record's `streams` when the job is
    /// created (the request as stored never holds them: their stream keys are credentials).
    #[serde(default, skip_serializing_if = "crate::never_serialized")]
    #[schema(write_only, max_items = 8)]
    pub rtmp: Vec<crate::streams::StreamUrl>,
    /// Live HLS written to storage while the room is captured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls: Option<crate::live_files::HlsRequest>,
    /// JPEG snapshots of the composite every few seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<crate::live_files::ImagesRequest>,
}

fn yes() -> bool {
    true
}

impl Default for Outputs {
    fn default() -> Self {
        Outputs { file: true, rtmp: Vec::new(), hls: None, images: None }
    }
}

impl Outputs {
    fn is_default(&self) -> bool {
        self.file && self.rtmp.is_empty() && !self.live_files()
    }

    /// HLS or snapshots: files written from the live composite.
    pub fn live_files(&self) -> bool {
        self.hls.is_some() || self.images.is_some()
    }
}

/// Why a recording request is not valid; the message is shown to the API client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidRequest(pub String);

impl From<&str> for InvalidRequest {
    fn from(message: &str) -> Self {
        InvalidRequest(message.to_string())
    }
}

impl JobRequest {
    /// Checks what serde cannot: lengths, ranges, URL shape. The message is shown to the API client.
    pub fn validate(&self) -> Result<(), InvalidRequest> {
        if self.room.is_empty() {
            return Err("room must not be empty".into());
        }
        if self.room.chars().count() > MAX_ROOM_NAME_LEN {
            return Err(InvalidRequest(format!("room must be at most {MAX_ROOM_NAME_LEN} characters")));
        }
        if self.room.chars().any(char::is_control) {
            return Err("room must not contain control characters".into());
        }
        if let Some(participant) = &self.participant {
            if self.layout != Layout::Single {
                return Err("participant applies to layout single only".into());
            }
            if participant.is_empty() || participant.chars().count() > MAX_ROOM_NAME_LEN || participant.chars().any(char::is_control) {
                return Err(InvalidRequest(format!("participant must be 1-{MAX_ROOM_NAME_LEN} characters without control characters")));
            }
        }
        if self.wait_for_room_s.is_some_and(|w| w > MAX_ROOM_WAIT_S) {
            return Err(InvalidRequest(format!("wait_for_room_s must be at most {MAX_ROOM_WAIT_S}")));
        }
        if self.max_pause_s.is_some_and(|max| max == 0 || max > MAX_DURATION_LIMIT_S) {
            return Err(InvalidRequest(format!("max_pause_s must be between 1 and {MAX_DURATION_LIMIT_S}")));
        }
        if let Some(max) = self.max_duration_s
            && (max == 0 || max > MAX_DURATION_LIMIT_S)
        {
            return Err(InvalidRequest(format!("max_duration_s must be between 1 and {MAX_DURATION_LIMIT_S}")));
        }
        if let Source::Test { participants } = self.source
            && (participants == 0 || participants > MAX_TEST_PARTICIPANTS)
        {
            return Err(InvalidRequest(format!("source.participants must be between 1 and {MAX_TEST_PARTICIPANTS}")));
        }
        if let Some(url) = &self.webhook_url {
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok || url.len() > 2048 || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err("webhook_url must be an http:// or https:// URL".into());
            }
        }
        if let Some(metadata) = &self.metadata {
            if !metadata.is_object() {
                return Err("metadata must be a JSON object".into());
            }
            if metadata.to_string().len() > MAX_METADATA_BYTES {
                return Err(InvalidRequest(format!("metadata must be at most {MAX_METADATA_BYTES} bytes of JSON")));
            }
        }
        if let Some(branding) = &self.branding {
            branding.validate().map_err(|e| InvalidRequest(e.to_string()))?;
        }
        if let Some(e2ee) = &self.e2ee {
            e2ee.validate().map_err(|e| InvalidRequest(e.to_string()))?;
        }
        self.validate_outputs()?;
        if let Some(redundancy) = self.redundancy {
            if !(1..=MAX_REDUNDANCY).contains(&redundancy) {
                return Err(InvalidRequest(format!("redundancy must be between 1 and {MAX_REDUNDANCY}")));
            }
            if redundancy > 1 && (!self.outputs.rtmp.is_empty() || self.outputs.live_files()) {
                return Err("redundancy: live streams, HLS and snapshots come from one capture; ask for redundancy 1 with them".into());
            }
        }
        // A template (as requested) or its expansion (as stored): either expands to a storage key.
        self.clone().expand_filepath(0).map_err(|e| InvalidRequest(e.to_string()))?;
        Ok(())
    }

    fn validate_outputs(&self) -> Result<(), InvalidRequest> {
        let streams = &self.outputs.rtmp;
        if !self.outputs.file && streams.is_empty() && !self.outputs.live_files() {
            return Err("outputs: a job without its file must stream (outputs.rtmp) or write live files (outputs.hls, outputs.images)".into());
        }
        if let Some(hls) = &self.outputs.hls {
            hls.validate().map_err(InvalidRequest)?;
        }
        if let Some(images) = &self.outputs.images {
            images.validate().map_err(InvalidRequest)?;
        }
        if streams.is_empty() && !self.outputs.live_files() {
            return Ok(());
        }
        if streams.len() > crate::streams::MAX_STREAMS {
            return Err(InvalidRequest(format!("outputs.rtmp: at most {} URLs", crate::streams::MAX_STREAMS)));
        }
        if self.source != Source::Livekit {
            return Err("outputs: live streams, HLS and snapshots need the livekit source".into());
        }
        if self.audio_only {
            return Err("outputs: live streams, HLS and snapshots carry video; audio_only applies to files only".into());
        }
        if self.e2ee.is_some() {
            return Err("outputs: an end-to-end encrypted room cannot be composited live (recorders hold no keys)".into());
        }
        Ok(())
    }

    /// Whether the job ends in a file (a transcode), not only in live streams.
    pub fn records_file(&self) -> bool {
        self.outputs.file
    }

    /// Captures running at once (see `redundancy`).
    pub fn replicas(&self) -> u8 {
        self.redundancy.unwrap_or(1).clamp(1, MAX_REDUNDANCY)
    }

    pub fn max_duration_s(&self) -> u32 {
        self.max_duration_s.unwrap_or(DEFAULT_MAX_DURATION_S)
    }

    pub fn max_pause_s(&self) -> u32 {
        self.max_pause_s.unwrap_or(DEFAULT_MAX_PAUSE_S)
    }

    /// The request with its `filepath` template filled in as of `now_ms` (see [`crate::filepath::expand`]):
    /// every door does this when it creates the job, so the key is fixed from then on.
    pub fn expand_filepath(mut self, now_ms: u64) -> Result<JobRequest, crate::filepath::FilepathError> {
        if let Some(template) = &self.filepath {
            let context =
                crate::filepath::FilepathContext { room_name: &self.room, publisher_identity: self.participant.as_deref(), requested_at_ms: now_ms };
            self.filepath = Some(crate::filepath::expand(template, &context, self.recording_extension())?);
        }
        Ok(self)
    }

    /// The recording's file extension: AAC in MP4 is `.m4a` when there is no picture.
    pub fn recording_extension(&self) -> &'static str {
        if self.audio_only { "m4a" } else { "mp4" }
    }
}

/// Why a capture session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    ApiStop,
    MaxDuration,
    RoomClosed,
    RoomEmpty,
    Error,
    /// A draining recorder's session, ended once its successor was writing media.
    Handover,
    /// Paused longer than the request's `max_pause_s`.
    PauseLimit,
    /// A stream-only job's last stream output was removed or failed.
    StreamsEnded,
    /// The recorder stopped answering (killed, or cut off): the controller's failover ended the session.
    RecorderLost,
}

/// One continuous capture by one recorder. A job that fails over gets a second session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CaptureSession {
    pub id: SafeId,
    pub node: String,
    pub started_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
    #[serde(default)]
    pub segments: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    /// Media is being written (the first segment opened).
    #[serde(default)]
    pub writing: bool,
    /// Which of the job's simultaneous captures this session carries on (0 unless `redundancy` > 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replica: u8,
}

pub(crate) fn is_zero(value: &u8) -> bool {
    *value == 0
}

/// The finished recording as measured from the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OutputInfo {
    pub key: String,
    pub location: String,
    pub manifest_key: String,
    pub size_bytes: u64,
    pub duration_s: f64,
    pub video_codec: Option<String>,
    pub audio_codec: Option<String>,
    pub sha256: String,
    /// With `audio_per_participant`: each participant's own audio.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub participant_audio: Vec<ParticipantAudio>,
    /// A frame of the recording as a JPEG (none for audio only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poster: Option<Poster>,
}

/// The recording's poster image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Poster {
    pub key: String,
    pub location: String,
    pub size_bytes: u64,
    /// The instant of the recording it shows.
    pub at_s: f64,
}

/// One participant's audio alone, as long as the recording (silence where they were not heard).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ParticipantAudio {
    pub participant: String,
    pub key: String,
    pub location: String,
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    pub percent: f64,
    /// Media seconds processed per wall second.
    pub speed: f64,
    pub node: String,
}

/// The job record stored (as JSON) under the job id in the `fleet-jobs` bucket. Small on purpose:
/// anything that grows with the recording's length lives in storage next to the media.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobRecord {
    pub id: SafeId,
    pub request: JobRequest,
    pub desired: Desired,
    pub state: JobState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<EndReason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub sessions: Vec<CaptureSession>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<OutputInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Problems that did not fail the job (e.g. a segment readable only in part).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Deliveries of the recording job that started a capture session.
    #[serde(default)]
    pub record_attempts: u32,
    #[serde(default)]
    pub transcode_attempts: u32,
    /// A chunked transcode's plan and progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<ChunkPlan>,
    /// The front door that created the job, when not the native API (it answers its caller from this).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// A transcode of whole files instead of a capture (plugNmeet's post-recording and merge tasks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<FileJob>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    /// Every state the job entered, in order: the controller publishes a state event for each entry it
    /// has not published yet, from the bucket's change stream (so no writer publishes, and none is lost).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state_log: Vec<StateChange>,
    /// The last node requests that changed this record (internal: a node's retry gets the first answer).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recent_requests: Vec<AppliedRequest>,
    /// Spans the recording was paused (left out of the MP4), in order; the last may still be open.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pauses: Vec<Pause>,
    /// Live stream outputs (a streaming job), removed and failed ones included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<crate::streams::StreamOutput>,
    /// The live HLS written so far (`outputs.hls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls: Option<crate::live_files::HlsProgress>,
    /// The snapshots taken so far (`outputs.images`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<crate::live_files::ImagesProgress>,
}

/// A paused span of a recording, wall clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Pause {
    pub from_ms: u64,
    /// None while paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
}

/// What applying a transition did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "applied", content = "session", rename_all = "snake_case")]
pub enum Applied {
    /// Nothing to write: the record already says it (a duplicate, or a job that moved on).
    Unchanged,
    Changed,
    /// A capture session was opened: its id.
    SessionOpened(SafeId),
    /// The job entered `finalizing` here: the caller queues its transcode.
    Finalized,
}

impl Applied {
    pub fn changed(&self) -> bool {
        !matches!(self, Applied::Unchanged)
    }
}

/// A node request applied to a record: a retry of it gets this answer instead of being applied again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AppliedRequest {
    pub id: String,
    pub applied: Applied,
}

/// How many applied requests a record remembers (a node retries within seconds).
const REMEMBERED_REQUESTS: usize = 16;

/// One entry of a record's `state_log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StateChange {
    /// 1 for the state the job was created in, then one more for each change.
    pub seq: u32,
    pub state: JobState,
    pub at_ms: u64,
    /// The node whose request made the change (none: the controller's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl JobRecord {
    /// A new job; the request's stream URLs become its `streams`.
    pub fn new(id: SafeId, mut request: JobRequest, now_ms: u64) -> Self {
        let streams = std::mem::take(&mut request.outputs.rtmp);
        let streams = streams.iter().enumerate().map(|(i, url)| crate::streams::StreamOutput::new(i + 1, url, now_ms)).collect();
        Self {
            id,
            request,
            desired: Desired::Run,
            state: JobState::Queued,
            end_reason: None,
            error: None,
            sessions: Vec::new(),
            output: None,
            progress: None,
            warnings: Vec::new(),
            record_attempts: 0,
            transcode_attempts: 0,
            chunks: None,
            origin: None,
            files: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            state_log: vec![StateChange { seq: 1, state: JobState::Queued, at_ms: now_ms, node: None }],
            recent_requests: Vec::new(),
            pauses: Vec::new(),
            streams,
            hls: None,
            images: None,
        }
    }

    /// The record as API clients, webhooks and events see it: stream keys hidden.
    pub fn for_clients(mut self) -> JobRecord {
        for stream in &mut self.streams {
            stream.url = stream.stream_url().map(|url| url.redacted()).unwrap_or_default();
        }
        self
    }

    /// A job that streams live (it was created with stream outputs).
    pub fn streams_live(&self) -> bool {
        !self.streams.is_empty()
    }

    /// A job whose recorder runs the live composite: it streams, writes live HLS or takes snapshots.
    pub fn composites_live(&self) -> bool {
        self.streams_live() || self.request.outputs.live_files()
    }

    /// What request `id` did, when this record applied it.
    pub fn applied_request(&self, id: &str) -> Option<&Applied> {
        self.recent_requests.iter().find(|r| r.id == id).map(|r| &r.applied)
    }

    /// Remembers that request `id` did `applied` (the oldest is forgotten past a few).
    pub fn remember_request(&mut self, id: &str, applied: Applied) {
        self.recent_requests.push(AppliedRequest { id: id.to_string(), applied });
        let excess = self.recent_requests.len().saturating_sub(REMEMBERED_REQUESTS);
        self.recent_requests.drain(..excess);
    }

    /// Total media time captured, from the first session's start to the last session's end.
    /// When the recording's timeline begins: its earliest session's start (a redundant job's second
    /// capture may begin before the first).
    pub fn first_started_at_ms(&self) -> Option<u64> {
        let writing = self.sessions.iter().filter(|s| s.writing).map(|s| s.started_at_ms).min();
        writing.or_else(|| self.sessions.first().map(|s| s.started_at_ms))
    }

    pub fn recorded_span_ms(&self) -> Option<u64> {
        let first = self.first_started_at_ms()?;
        let last = self.sessions.iter().filter_map(|s| s.ended_at_ms).max()?;
        Some(last.saturating_sub(first))
    }

    /// The open pause's start, while paused.
    pub fn paused_since_ms(&self) -> Option<u64> {
        self.pauses.last().filter(|p| p.until_ms.is_none()).map(|p| p.from_ms)
    }

    /// The paused spans on the recording's timeline (nanoseconds from the first session's start), within
    /// the recorded span; a pause still open at the end lasts to the end.
    pub fn paused_spans_ns(&self) -> Vec<(u64, u64)> {
        let (Some(first), Some(span_ms)) = (self.first_started_at_ms(), self.recorded_span_ms()) else {
            return Vec::new();
        };
        let on_timeline = |ms: u64| ms.saturating_sub(first).min(span_ms) * 1_000_000;
        self.pauses
            .iter()
            .map(|p| (on_timeline(p.from_ms), p.until_ms.map_or(span_ms * 1_000_000, on_timeline)))
            .filter(|(from, until)| until > from)
            .collect()
    }
}

/// Which front door created a job, with what that door needs to answer the server that asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "door", rename_all = "snake_case")]
pub enum Origin {
    /// plugnmeet-server's recorder protocol (START_RECORDING on the recorder channel).
    Plugnmeet { recording_id: String, room_sid: String, room_table_id: i64, recorder_id: String },
    /// LiveKit's Egress API; `request` is the start request as LiveKit's JSON (for `EgressInfo.request`).
    Egress { request: serde_json::Value },
    /// An auto-record rule, on livekit-server's `room_started` webhook for this room session.
    AutoRecord { room_sid: String },
}

/// Whole media files re-encoded, one after another, into one MP4. Paths are relative to the transcoders'
/// shared recordings root (`transcoder.shared_files_root`) and were checked to stay below it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileJob {
    pub inputs: Vec<String>,
    pub output: String,
}

/// Message on the record queue: "record this job". The job record holds the details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordJob {
    pub job_id: SafeId,
    /// Set when a draining recorder asks for its capture session to be taken over: the taker joins
    /// while that session still records, which ends once the taker writes media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover_from: Option<SafeId>,
    /// Which simultaneous capture of a `redundancy` > 1 job this message asks for (0: the first).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub replica: u8,
}

/// Message on the transcode queue: "turn this job's raw segments into the final recording".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscodeJob {
    pub job_id: SafeId,
    /// One chunk of a chunked transcode (the job record's `chunks` says which part); absent: the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk: Option<u32>,
    /// Progressive transcode while the recording runs: without `chunk`, "queue what is final now"; with
    /// it, that chunk of the open plan. Never fails the job (the transcode after the stop redoes it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub catch_up: bool,
}

/// A long recording's video transcoded in parts by several transcoders, then joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChunkPlan {
    /// Length of each chunk but the last (a whole number of output frames).
    pub chunk_ns: u64,
    pub count: u32,
    /// Chunks whose video is in storage.
    #[serde(default)]
    pub done: Vec<u32>,
    /// The transcoder joining the chunks, and since when (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = joining_schema)]
    pub joining: Option<(String, u64)>,
    /// The recording still runs: chunks are done as their part becomes final, `count` is not known yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub open: bool,
}

/// `[node, since_ms]`.
fn joining_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{ArrayBuilder, ArrayItems, ObjectBuilder, Schema, Type};
    let node = Schema::from(ObjectBuilder::new().schema_type(Type::String));
    let since_ms = Schema::from(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)));
    ArrayBuilder::new()
        .items(ArrayItems::False)
        .prefix_items([node, since_ms])
        .min_items(Some(2))
        .description(Some("the transcoder joining the chunks, and since when (ms)"))
        .into()
}

impl ChunkPlan {
    /// Chunks of `chunk_ns` covering `duration_ns`.
    pub fn new(duration_ns: u64, chunk_ns: u64) -> ChunkPlan {
        ChunkPlan { chunk_ns, count: duration_ns.div_ceil(chunk_ns.max(1)) as u32, done: Vec::new(), joining: None, open: false }
    }

    /// The plan of a recording still running: chunks of `chunk_ns`, done as they become final.
    pub fn open(chunk_ns: u64) -> ChunkPlan {
        ChunkPlan { chunk_ns, count: 0, done: Vec::new(), joining: None, open: true }
    }

    /// This open plan closed by `closed` (the plan for the final length): the chunks done while recording
    /// are kept where their part is whole in it (all but its last chunk, which may be shorter).
    pub fn closed_into(&self, mut closed: ChunkPlan) -> ChunkPlan {
        if self.chunk_ns == closed.chunk_ns {
            closed.done = self.done.iter().copied().filter(|&index| index + 1 < closed.count).collect();
        }
        closed
    }

    /// The part of the recording chunk `index` covers.
    pub fn window(&self, index: u32, duration_ns: u64) -> (u64, u64) {
        let start = index as u64 * self.chunk_ns;
        (start.min(duration_ns), (start + self.chunk_ns).min(duration_ns))
    }

    /// Every chunk done, once the recording's length is known.
    pub fn is_complete(&self) -> bool {
        !self.open && (0..self.count).all(|i| self.done.contains(&i))
    }
}

/// Records and outputs for the unit tests of the modules that change records.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::{CaptureSession, OutputInfo};
    use crate::ids::SafeId;

    /// Session `s1` of `node`, open and not yet writing.
    pub fn session(node: &str, started_at_ms: u64) -> CaptureSession {
        CaptureSession {
            id: SafeId::parse("s1").unwrap(),
            node: node.into(),
            started_at_ms,
            ended_at_ms: None,
            segments: 0,
            end_reason: None,
            writing: false,
            replica: 0,
        }
    }

    pub fn output() -> OutputInfo {
        OutputInfo {
            key: "k".into(),
            location: "l".into(),
            manifest_key: "m".into(),
            size_bytes: 1,
            duration_s: 1.0,
            video_codec: None,
            audio_codec: None,
            sha256: "h".into(),
            participant_audio: vec![],
            poster: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> Result<JobRequest, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn minimal_request_gets_defaults() {
        let r = request(r#"{"room":"r1"}"#).unwrap();
        assert_eq!(r.source, Source::Livekit);
        assert_eq!(r.layout, Layout::Grid);
        assert_eq!(r.video_preset, VideoPreset::Hd720p30);
        assert!(r.validate().is_ok());
    }

    #[test]
    fn test_source_and_presets_parse() {
        let r = request(r#"{"room":"r1","source":{"type":"test","participants":3},"video_preset":"1080p30"}"#).unwrap();
        assert_eq!(r.source, Source::Test { participants: 3 });
        assert_eq!(r.video_preset.params(), (1920, 1080, 30, 4500));
        let custom = r#"{"room":"r","video_preset":{"width":640,"height":360,"fps":25,"video_kbps":800}}"#;
        let r = request(custom).unwrap();
        assert_eq!(r.video_preset.params(), (640, 360, 25, 800));
        // It goes back out as it came in.
        assert_eq!(serde_json::to_value(r.video_preset).unwrap(), serde_json::json!({"width":640,"height":360,"fps":25,"video_kbps":800}));
        assert_eq!(serde_json::to_value(VideoPreset::Hd720p30).unwrap(), "720p30");
        for bad in [
            r#"{"room":"r","video_preset":"4k"}"#,
            r#"{"room":"r","video_preset":{"width":641,"height":360,"fps":25,"video_kbps":800}}"#,
            r#"{"room":"r","video_preset":{"width":640,"height":360,"fps":0,"video_kbps":800}}"#,
            r#"{"room":"r","video_preset":{"width":640,"height":360,"fps":25,"video_kbps":800,"x":1}}"#,
        ] {
            assert!(request(bad).is_err(), "{bad}");
        }
        let error = request(r#"{"room":"r","video_preset":"4k"}"#).unwrap_err().to_string();
        assert!(error.contains("unknown video_preset"), "{error}");
    }

    #[test]
    fn gpu_policy_parses_and_defaults_to_any() {
        assert_eq!(request(r#"{"room":"r"}"#).unwrap().gpu, GpuPolicy::Any);
        assert_eq!(request(r#"{"room":"r","gpu":"require"}"#).unwrap().gpu, GpuPolicy::Require);
        assert_eq!(request(r#"{"room":"r","gpu":"forbid"}"#).unwrap().gpu, GpuPolicy::Forbid);
        assert!(request(r#"{"room":"r","gpu":"yes"}"#).is_err());
        // The default is not written back out: records of older jobs read the same.
        assert!(!serde_json::to_string(&request(r#"{"room":"r"}"#).unwrap()).unwrap().contains("gpu"));
    }

    #[test]
    fn unknown_fields_are_refused() {
        assert!(request(r#"{"room":"r1","rooom":"x"}"#).is_err());
        assert!(request(r#"{"room":"r1","source":{"type":"test","participantz":3}}"#).is_err());
    }

    #[test]
    fn validation_catches_bad_values() {
        let mut r = request(r#"{"room":"r1"}"#).unwrap();
        r.max_duration_s = Some(0);
        assert!(r.validate().is_err());
        r.max_duration_s = Some(MAX_DURATION_LIMIT_S + 1);
        assert!(r.validate().is_err());
        r.max_duration_s = None;
        r.room = "a\u{0}b".into();
        assert!(r.validate().is_err());
        r.room = "ok".into();
        r.webhook_url = Some("ftp://x".into());
        assert!(r.validate().is_err());
        r.webhook_url = None;
        r.metadata = Some(serde_json::json!([1]));
        assert!(r.validate().is_err());
        r.metadata = None;
        for (redundancy, valid) in [(0, false), (1, true), (2, true), (3, false)] {
            r.redundancy = Some(redundancy);
            assert_eq!(r.validate().is_ok(), valid, "redundancy {redundancy}");
        }
        let streamed = request(r#"{"room":"r1","redundancy":2,"outputs":{"rtmp":["rtmp://127.0.0.1/live/k"]}}"#).unwrap();
        assert!(streamed.validate().unwrap_err().to_string().contains("redundancy"));
    }

    #[test]
    fn state_names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
    }
}
