//! Files a job writes while live, from the live composite: HLS (MPEG-TS segments and playlists uploaded
//! as they are cut) and JPEG snapshots every few seconds. What a request asks for, and what the record
//! says was written.

use serde::{Deserialize, Serialize};

/// `outputs.hls`: live HLS in storage under `<job>/hls/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HlsRequest {
    /// Target segment length (segments are cut at the next keyframe after it; keyframes come every 2 s).
    #[serde(default = "default_segment_s")]
    #[schema(minimum = 1, maximum = 60)]
    pub segment_s: u32,
    /// Segments listed in the live (sliding-window) playlist `live.m3u8`; `playlist.m3u8` lists all.
    #[serde(default = "default_live_window")]
    #[schema(minimum = 1, maximum = 100)]
    pub live_window: u32,
}

impl Default for HlsRequest {
    fn default() -> Self {
        HlsRequest { segment_s: default_segment_s(), live_window: default_live_window() }
    }
}

fn default_segment_s() -> u32 {
    6
}

fn default_live_window() -> u32 {
    6
}

/// `outputs.images`: a JPEG of the composite every `interval_s`, under `<job>/images/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ImagesRequest {
    #[serde(default = "default_interval_s")]
    #[schema(minimum = 1, maximum = 3600)]
    pub interval_s: u32,
    /// The images' size; default the composite's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 16, maximum = 3840, multiple_of = 2)]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 16, maximum = 3840, multiple_of = 2)]
    pub height: Option<u32>,
}

fn default_interval_s() -> u32 {
    10
}

impl HlsRequest {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=60).contains(&self.segment_s) {
            return Err("outputs.hls.segment_s must be 1 to 60".into());
        }
        if !(1..=100).contains(&self.live_window) {
            return Err("outputs.hls.live_window must be 1 to 100".into());
        }
        Ok(())
    }
}

impl ImagesRequest {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=3600).contains(&self.interval_s) {
            return Err("outputs.images.interval_s must be 1 to 3600".into());
        }
        let side_ok = |side: Option<u32>| side.is_none_or(|s| (16..=3840).contains(&s) && s % 2 == 0);
        if !side_ok(self.width) || !side_ok(self.height) {
            return Err("outputs.images width and height must be even, 16 to 3840".into());
        }
        Ok(())
    }
}

/// What a job's live HLS holds so far (uploaded in order: a segment before the playlists naming it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct HlsProgress {
    /// Storage keys: every segment (`playlist`), the last few (`live_playlist`).
    pub playlist: String,
    pub live_playlist: String,
    /// Where they are, for people (a path or an `s3://` URL).
    pub playlist_location: String,
    pub live_playlist_location: String,
    pub segments: u32,
    pub duration_ms: u64,
    pub bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<u64>,
    /// Set when the playlist was closed (`#EXT-X-ENDLIST`) at the capture's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at_ms: Option<u64>,
}

/// The snapshots taken so far: `<prefix>00001.jpg` and on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImagesProgress {
    pub prefix: String,
    /// Where they are, for people (a path or an `s3://` URL).
    pub location: String,
    pub count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_at_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_at_ms: Option<u64>,
}
