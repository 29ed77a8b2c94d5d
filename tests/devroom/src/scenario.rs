//! The scenario file: which rooms exist and what their synthetic participants do, in seconds from the
//! moment the room opens (its first client joins).

use serde::Deserialize;
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Rooms not listed here are created empty on first join when true; refused (404) when false.
    #[serde(default)]
    pub auto_create: bool,
    #[serde(default)]
    pub rooms: Vec<RoomScript>,
    /// Every camera sends a noisy picture at the full clip bitrate (1.5 Mb/s at 720p30), as a real
    /// camera does, instead of flat colours (about 0.2 Mb/s).
    #[serde(default)]
    pub camera_like: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoomScript {
    pub name: String,
    /// The room is deleted (clients get `Leave{ROOM_DELETED}`) this long after it opened.
    pub close_after_s: Option<f64>,
    /// Share of outgoing RTP/RTCP datagrams dropped on the way to each subscriber, in percent.
    #[serde(default)]
    pub loss_percent: f64,
    #[serde(default)]
    pub participants: Vec<ParticipantScript>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParticipantScript {
    pub identity: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub video_codec: VideoCodec,
    #[serde(default)]
    pub join_at_s: f64,
    pub leave_at_s: Option<f64>,
    #[serde(default = "yes")]
    pub camera: bool,
    #[serde(default = "yes")]
    pub microphone: bool,
    /// Windows `[from, to]` in which the camera is muted (nothing is sent, the track says muted).
    #[serde(default)]
    pub mute_camera: Vec<[f64; 2]>,
    #[serde(default)]
    pub mute_microphone: Vec<[f64; 2]>,
    /// Windows in which the participant is an active speaker (`SpeakersChanged`).
    #[serde(default)]
    pub speaking: Vec<[f64; 2]>,
    /// Windows in which a screen share track is published.
    #[serde(default)]
    pub screen_share: Vec<[f64; 2]>,
    /// The camera switches to the other video codec (VP8 ↔ H.264) at this time, on the same track (same
    /// SSRC, another payload type), as LiveKit's SFU does when a publisher falls back to its backup codec.
    #[serde(default)]
    pub switch_codec_at_s: Option<f64>,
    /// Windows in which every frame this participant sends (camera, microphone, share) is random bytes
    /// of the frame's size, still in well-formed RTP: a broken or hostile client.
    #[serde(default)]
    pub garbage: Vec<[f64; 2]>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    #[default]
    Vp8,
    H264,
}

impl VideoCodec {
    pub fn other(self) -> VideoCodec {
        match self {
            VideoCodec::Vp8 => VideoCodec::H264,
            VideoCodec::H264 => VideoCodec::Vp8,
        }
    }
}

fn yes() -> bool {
    true
}

impl Scenario {
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let scenario: Scenario = toml::from_str(text)?;
        for room in &scenario.rooms {
            if !(0.0..=100.0).contains(&room.loss_percent) {
                anyhow::bail!("{}: loss_percent must be within 0..100", room.name);
            }
            for p in &room.participants {
                if p.leave_at_s.is_some_and(|leave| leave <= p.join_at_s) {
                    anyhow::bail!("{}: leave_at_s must come after join_at_s", p.identity);
                }
            }
        }
        Ok(scenario)
    }

    /// One room with `count` participants present from the start: the demo's default.
    pub fn simple(room: &str, count: usize) -> Scenario {
        let participants = (0..count)
            .map(|i| ParticipantScript {
                identity: format!("participant-{}", i + 1),
                name: None,
                video_codec: VideoCodec::Vp8,
                join_at_s: 0.0,
                leave_at_s: None,
                camera: true,
                microphone: true,
                mute_camera: vec![],
                mute_microphone: vec![],
                screen_share: vec![],
                speaking: vec![],
                garbage: vec![],
                switch_codec_at_s: None,
            })
            .collect();
        Scenario {
            auto_create: false,
            camera_like: false,
            rooms: vec![RoomScript { name: room.into(), close_after_s: None, loss_percent: 0.0, participants }],
        }
    }
}
