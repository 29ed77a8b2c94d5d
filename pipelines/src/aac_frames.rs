//! Which AAC frames a chunk of a chunked transcode encodes, so the join only has to put the chunks'
//! frames one after another. The recording's audio is one sequence of 1024-sample frames on a grid
//! from its start (as the one-piece transcode encodes it); chunk `i` keeps the frames that start in its
//! window. AAC frames overlap their neighbours (each decodes as half of itself plus half of the one
//! before), so every chunk encodes from a pre-roll before its first kept frame to a post-roll past its
//! last: at a seam the two frames that overlap were both made by encoders that had the same audio
//! around it, and they decode together without a click.

/// Samples per AAC-LC frame.
pub const FRAME_SAMPLES: u64 = 1024;
/// Frames encoded before a chunk's first kept frame: enough for the encoder's priming frame, its
/// look-ahead and its psychoacoustic history to settle on the audio there (about 340 ms).
pub const PRE_ROLL_FRAMES: u64 = 16;
/// Frames encoded past a chunk's last kept frame, so that frame is not an end-of-stream flush.
pub const POST_ROLL_FRAMES: u64 = 4;

/// A chunk's share of the recording's AAC frames. Frame `k` is presented at `k * 1024` samples from
/// the recording's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkFrames {
    /// The first frame kept.
    pub first: u64,
    /// The frame after the last one kept.
    pub end: u64,
    /// Whether this is the recording's last chunk (its encoder runs to the recording's end).
    pub last: bool,
}

impl ChunkFrames {
    /// The frames starting in `[start_ns, end_ns)` of a recording whose audio is `total_samples` long;
    /// `end_ns` `None` for the last chunk: all from `start_ns` on, as many as the one-piece transcode
    /// has. Adjacent windows get adjacent frames: none missed, none twice.
    pub fn for_window(start_ns: u64, end_ns: Option<u64>, total_samples: u64, rate: u64) -> Self {
        let whole = whole_frames(total_samples);
        let end = end_ns.map_or(whole, |end_ns| frame_starting_at_or_after(end_ns, rate).min(whole));
        ChunkFrames { first: frame_starting_at_or_after(start_ns, rate).min(end), end, last: end == whole }
    }

    /// The frame the chunk's encoder starts on (its priming frame, dropped).
    pub fn encode_from(&self) -> u64 {
        self.first.saturating_sub(PRE_ROLL_FRAMES)
    }

    /// Sample where the chunk's encoder input ends: past the post-roll (and one frame for the
    /// encoder's delay); the recording's end for the last chunk.
    pub fn encode_until_sample(&self, total_samples: u64) -> u64 {
        if self.last { total_samples } else { ((self.end + POST_ROLL_FRAMES + 1) * FRAME_SAMPLES).min(total_samples) }
    }

    /// Whether global frame `index` is one this chunk keeps.
    pub fn keeps(&self, index: u64) -> bool {
        (self.first..self.end).contains(&index)
    }
}

/// The frames an encoder makes of `samples`: its priming frame, then one per 1024 samples begun.
pub fn whole_frames(samples: u64) -> u64 {
    samples.div_ceil(FRAME_SAMPLES) + 1
}

/// The first frame that starts at or after `ns`.
fn frame_starting_at_or_after(ns: u64, rate: u64) -> u64 {
    (ns as u128 * rate as u128).div_ceil(1_000_000_000u128 * FRAME_SAMPLES as u128) as u64
}

/// Nanoseconds of `samples` at `rate`, rounded down (timestamps convert back to the same sample).
pub fn samples_to_ns(samples: u64, rate: u64) -> u64 {
    (samples as u128 * 1_000_000_000 / rate as u128) as u64
}

/// The frame whose start is nearest `ns` (an encoder's output timestamps are rounded to the ns).
pub fn nearest_frame(ns: u64, rate: u64) -> u64 {
    let samples = (ns as u128 * rate as u128 + 500_000_000) / 1_000_000_000;
    ((samples + FRAME_SAMPLES as u128 / 2) / FRAME_SAMPLES as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const RATE: u64 = 48_000;
    const S: u64 = 1_000_000_000;

    #[test]
    fn adjacent_windows_share_out_every_frame_once() {
        let total = 75 * RATE;
        let windows = [(0, Some(30 * S)), (30 * S, Some(60 * S)), (60 * S, None)];
        let chunks: Vec<ChunkFrames> = windows.iter().map(|&(a, b)| ChunkFrames::for_window(a, b, total, RATE)).collect();
        assert_eq!(chunks[0].first, 0);
        for pair in chunks.windows(2) {
            assert_eq!(pair[0].end, pair[1].first);
        }
        // 30 s is 1406.25 frames: frame 1407 is the first to start in the second window.
        assert_eq!(chunks[1].first, 1407);
        assert!(!chunks[1].last && chunks[2].last);
        // The last chunk ends where the one-piece transcode does: 3515.625 frames begun, and the priming one.
        assert_eq!(chunks[2].end, 3517);
        assert_eq!(whole_frames(total), 3517);
    }

    #[test]
    fn the_encoder_runs_from_a_pre_roll_to_a_post_roll() {
        let total = 75 * RATE;
        let chunk = ChunkFrames::for_window(30 * S, Some(60 * S), total, RATE);
        assert_eq!(chunk.encode_from(), 1407 - PRE_ROLL_FRAMES);
        assert_eq!(chunk.encode_until_sample(total), (2813 + POST_ROLL_FRAMES + 1) * FRAME_SAMPLES);
        assert_eq!(ChunkFrames::for_window(0, Some(30 * S), total, RATE).encode_from(), 0);
        assert_eq!(ChunkFrames::for_window(60 * S, None, total, RATE).encode_until_sample(total), total);
    }

    #[test]
    fn timestamps_map_back_to_their_frame() {
        for frame in [0u64, 1, 1406, 1407, 168_750, 10_000_000] {
            let ns = samples_to_ns(frame * FRAME_SAMPLES, RATE);
            assert_eq!(nearest_frame(ns, RATE), frame);
            assert_eq!(nearest_frame(ns + 3_000_000, RATE), frame, "a few ms off still names the frame");
        }
    }
}
