//! Paces a clip out as a live track: each frame at its wall-clock instant, RTP time running on across
//! loops, nothing sent while the track is muted, stopping when it is unpublished. In the scenario's
//! garbage windows each frame's bytes are replaced by random ones.

use crate::room::{OutFrame, Room, TrackState};
use fleet_pipelines::clip::Clip;
use std::sync::Arc;
use std::time::Duration;

/// When a participant sends random bytes instead of media: windows in seconds from the room's opening.
#[derive(Debug, Clone)]
pub struct Garbage {
    pub windows: Vec<[f64; 2]>,
    pub opened: tokio::time::Instant,
}

impl Garbage {
    fn now(&self) -> bool {
        crate::room::in_window(&self.windows, self.opened.elapsed().as_secs_f64())
    }
}

/// Paces `clip` out on `track_sid`; with `switch`, from that instant on the other clip (another codec)
/// on the same track, starting at its first (key) frame, RTP time running on.
pub async fn pace(room: Arc<Room>, track_sid: Arc<str>, clip: Arc<Clip>, garbage: Garbage, switch: Option<(tokio::time::Instant, Arc<Clip>)>) {
    let clock_rate: u64 = if clip.spec.codec.is_video() { 90_000 } else { 48_000 };
    // A random RTP start, as real senders use.
    let rtp_base: u64 = rand::random::<u32>() as u64;
    let started = tokio::time::Instant::now();
    // Each clip from the time (ns since `started`) it takes over, until the next one does.
    let mut parts = vec![(0u64, clip)];
    if let Some((at, later)) = switch {
        parts.push((at.saturating_duration_since(started).as_nanos() as u64, later));
    }
    for (part, (from_ns, clip)) in parts.iter().enumerate() {
        let until_ns = parts.get(part + 1).map_or(u64::MAX, |(at, _)| *at);
        'clip: for loop_index in 0u64.. {
            let loop_offset_ns = from_ns + loop_index * clip.duration_ns;
            for frame in &clip.frames {
                let at_ns = loop_offset_ns + frame.pts_ns;
                if at_ns >= until_ns {
                    break 'clip;
                }
                tokio::time::sleep_until(started + Duration::from_nanos(at_ns)).await;
                match room.track_state(&track_sid) {
                    TrackState::Gone => return,
                    TrackState::Muted => continue,
                    TrackState::Live => {}
                }
                if room.is_closed() {
                    return;
                }
                // Not wrapped: str0m keeps the extended time and writes its low 32 bits.
                let rtp_time = rtp_base + (at_ns as u128 * clock_rate as u128 / 1_000_000_000) as u64;
                room.send_frame(OutFrame {
                    track_sid: track_sid.clone(),
                    captured_at: (started + Duration::from_nanos(at_ns)).into_std(),
                    rtp_time,
                    keyframe: frame.keyframe,
                    data: if garbage.now() {
                        (0..frame.data.len()).map(|_| rand::random::<u8>()).collect::<Vec<u8>>().into()
                    } else {
                        frame.data.clone().into()
                    },
                    codec: clip.spec.codec,
                });
            }
        }
    }
}
