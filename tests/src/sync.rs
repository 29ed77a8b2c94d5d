//! A/V sync checker for recordings of synthetic participants: finds each participant's flashes (in its
//! grid tile) and beeps (by its tone) in an MP4 and reports how well they line up. Written from the
//! marker definition (a flash and a beep at every whole second, tone 440 + 110·i Hz), independently of
//! the code that makes or composites them.

use serde::Serialize;
use std::path::Path;
use std::process::Command;

const RATE: usize = 48_000;

#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// Whole seconds at which every participant should show a marker.
    pub expected_markers: usize,
    /// Markers found on both streams (per participant, summed).
    pub found_markers: usize,
    pub found_ratio: f64,
    /// Audio minus video onset, per paired marker, in ms.
    pub offsets_ms: Vec<f64>,
    /// Where in the file each of those markers' flash is, in s (same order), so an offset can be traced to its chunk.
    pub marker_video_s: Vec<f64>,
    pub p95_abs_offset_ms: f64,
    pub mean_offset_ms: f64,
    /// Largest deviation of the interval between consecutive markers from 1 s, on either stream, in ms.
    pub max_cadence_drift_ms: f64,
    /// Largest distance of a video marker from its whole second (where the recording says it belongs), in ms.
    pub max_video_position_error_ms: f64,
    /// Markers not found, as "participant@second: what was missing", so a failure says where to look.
    pub missing: Vec<String>,
}

/// `tiles[i]` is participant i's tile as an ffmpeg crop `w:h:x:y`; markers are searched in
/// whole seconds `first..=last`.
pub fn check(path: &Path, tiles: &[String], fps: f64, first: usize, last: usize) -> SyncReport {
    let audio = decode_audio(path);
    let mut markers = Vec::new();
    let (mut drift, mut position): (f64, f64) = (0.0, 0.0);
    let mut found = 0;
    let mut missing = Vec::new();
    for (index, tile) in tiles.iter().enumerate() {
        let flashes = flash_onsets(path, tile, fps);
        let tone = 440.0 + 110.0 * index as f64;
        let mut previous: Option<(usize, f64, f64)> = None;
        for second in first..=last {
            let video = flashes.iter().copied().find(|t| (*t - second as f64).abs() < 0.25);
            let beep = beep_onset(&audio, tone, second);
            let (Some(video), Some(audio)) = (video, beep) else {
                let what = match (video, beep) {
                    (None, None) => "flash and beep",
                    (None, _) => "flash",
                    _ => "beep",
                };
                missing.push(format!("{index}@{second}s: {what}"));
                continue;
            };
            found += 1;
            markers.push((video, (audio - video) * 1000.0));
            position = position.max((video - second as f64).abs() * 1000.0);
            if let Some((_, v, a)) = previous.filter(|(s, _, _)| *s + 1 == second) {
                drift = drift.max(((video - v) - 1.0).abs() * 1000.0).max(((audio - a) - 1.0).abs() * 1000.0);
            }
            previous = Some((second, video, audio));
        }
    }
    summarize(tiles.len() * (last + 1 - first), found, markers, drift, position, missing)
}

/// `markers`: (video onset in s, audio minus video in ms) of each paired marker.
fn summarize(expected: usize, found: usize, markers: Vec<(f64, f64)>, drift: f64, position: f64, missing: Vec<String>) -> SyncReport {
    let (times, offsets): (Vec<f64>, Vec<f64>) = markers.into_iter().unzip();
    let mut sorted: Vec<f64> = offsets.iter().map(|o| o.abs()).collect();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p95 = sorted.get(((sorted.len() as f64 * 0.95).ceil() as usize).saturating_sub(1)).copied().unwrap_or(f64::INFINITY);
    let mean = if offsets.is_empty() { f64::NAN } else { offsets.iter().sum::<f64>() / offsets.len() as f64 };
    SyncReport {
        expected_markers: expected,
        found_markers: found,
        found_ratio: found as f64 / expected.max(1) as f64,
        offsets_ms: offsets,
        marker_video_s: times,
        p95_abs_offset_ms: p95,
        mean_offset_ms: mean,
        max_cadence_drift_ms: drift,
        max_video_position_error_ms: position,
        missing,
    }
}

/// For participants whose markers keep their own phase (devroom's, which start when each participant
/// joins): every flash found in a tile between `from_s` and `to_s` is paired with the beep of that
/// participant's tone within 250 ms of it. Expected markers: one per second of that span and tile.
/// `max_video_position_error_ms` is not meaningful here and is reported as 0.
pub fn check_paired(path: &Path, tiles: &[String], fps: f64, from_s: f64, to_s: f64) -> SyncReport {
    let indexed: Vec<(String, usize)> = tiles.iter().cloned().zip(0..).collect();
    check_paired_indexed(path, &indexed, fps, from_s, to_s)
}

/// As [`check_paired`], with each tile's participant index (its tone) given: `(crop, index)`.
pub fn check_paired_indexed(path: &Path, tiles: &[(String, usize)], fps: f64, from_s: f64, to_s: f64) -> SyncReport {
    check_paired_against(path, &decode_audio(path), tiles, fps, from_s, to_s)
}

/// As [`check_paired_indexed`], with the beeps looked for in `audio` (e.g. a participant's own audio file of
/// the same recording, where no other participant's beep can overlap).
pub fn check_paired_against(path: &Path, audio: &[f32], tiles: &[(String, usize)], fps: f64, from_s: f64, to_s: f64) -> SyncReport {
    let mut markers = Vec::new();
    let mut drift: f64 = 0.0;
    let mut found = 0;
    let mut missing = Vec::new();
    for (tile, index) in tiles {
        let (tile, index) = (tile.as_str(), *index);
        let tone = 440.0 + 110.0 * index as f64;
        let mut previous: Option<(f64, f64)> = None;
        let flashes: Vec<f64> = flash_onsets(path, tile, fps).into_iter().filter(|t| (from_s..=to_s).contains(t)).collect();
        if flashes.is_empty() {
            missing.push(format!("{index}: no flash in tile {tile}"));
        }
        for video in flashes {
            let Some(audio) = beep_onset_near(audio, tone, video) else {
                missing.push(format!("{index}@{video:.2}s: beep"));
                continue;
            };
            found += 1;
            markers.push((video, (audio - video) * 1000.0));
            if let Some((v, a)) = previous.filter(|(v, _)| (video - v - 1.0).abs() < 0.5) {
                drift = drift.max(((video - v) - 1.0).abs() * 1000.0).max(((audio - a) - 1.0).abs() * 1000.0);
            }
            previous = Some((video, audio));
        }
    }
    summarize(tiles.len() * (to_s - from_s).floor() as usize, found, markers, drift, 0.0, missing)
}

/// Times of the first frame of each short white run in the tile (a stuck white tile is no flash). A
/// flash lasts a few frames, but an encoder short of bits (OpenH264's rate control skips up to 9 frames
/// after a costly one) freezes the picture on it: runs up to 0.6 s count.
pub fn flash_onsets(path: &Path, tile: &str, fps: f64) -> Vec<f64> {
    let luma = crate::media::tile_luma(path, tile);
    // A flash is white against the tile's usual picture: above 200, and above halfway from the usual
    // luma to full white (a yellow camera is brighter than 200 on its own).
    let mut sorted = luma.clone();
    sorted.sort_by(f64::total_cmp);
    let usual = sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let threshold = 200f64.max((usual + 255.0) / 2.0);
    let white: Vec<bool> = luma.into_iter().map(|luma| luma > threshold).collect();
    let longest = (0.6 * fps).round() as usize;
    (0..white.len())
        .filter(|&i| white[i] && (i == 0 || !white[i - 1]) && !white.get(i + longest).copied().unwrap_or(false))
        .map(|i| i as f64 / fps)
        .collect()
}

pub fn decode_audio(path: &Path) -> Vec<f32> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-ac", "1", "-ar", "48000", "-f", "s16le", "-"])
        .output()
        .expect("ffmpeg runs");
    out.stdout.chunks_exact(2).map(|s| i16::from_le_bytes([s[0], s[1]]) as f32 / 32768.0).collect()
}

/// Power of `freq` in `samples` (Goertzel).
pub fn tone_power(samples: &[f32], freq: f64) -> f64 {
    let coeff = 2.0 * (2.0 * std::f64::consts::PI * freq / RATE as f64).cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in samples {
        let s0 = x as f64 + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    (s1 * s1 + s2 * s2 - coeff * s1 * s2) / samples.len() as f64
}

/// The beep of the participant with `tone` near `second`: present if the tone dominates a 50 ms window
/// after the onset; the onset is where the signal first rises above a tenth of its peak in ±250 ms.
fn beep_onset(audio: &[f32], tone: f64, second: usize) -> Option<f64> {
    beep_onset_near(audio, tone, second as f64)
}

fn beep_onset_near(audio: &[f32], tone: f64, at_s: f64) -> Option<f64> {
    let center = (at_s * RATE as f64) as usize;
    let from = center.saturating_sub(RATE / 4);
    let to = (center + RATE / 4).min(audio.len());
    if to <= from + RATE / 10 {
        return None;
    }
    // This tone's own power in 20 ms blocks every 0.5 ms: other participants' beeps may sit in the same
    // half second, even at the same instant, and their onsets are not this one's. A block's power grows
    // with the square of how much of the beep it holds, so the first block at a quarter of the strongest
    // holds half a block of it: the onset is half a block after that block's start (to within a step).
    let (block, step) = (RATE / 50, RATE / 2000);
    let powers: Vec<(usize, f64)> = (from..to - block).step_by(step).map(|start| (start, tone_power(&audio[start..start + block], tone))).collect();
    let strongest = powers.iter().map(|(_, p)| *p).fold(0.0, f64::max);
    if strongest < 1e-6 {
        return None;
    }
    // Walk back from the strongest block to the gap before the beep, not forward from the window's
    // start: a louder beep of another tone earlier in the window leaks into this tone's power (a 20 ms
    // block resolves 50 Hz; tones are 110 Hz apart) and could pass the threshold there, but a quieter gap
    // lies between the two. A gap lasts 5 ms at least: inside a beep the tone's power dips below a
    // quarter for up to 3 ms where AAC frames and the other tones beat (every 8 s, when the 1 s markers and
    // the 1024-sample frames fall in the same phase), which put the onset 28-51 ms late at those seconds.
    let strongest_at = powers.iter().position(|(_, p)| *p == strongest)?;
    let gap_blocks = RATE / 200 / step;
    let first = first_after_gap(&powers[..=strongest_at].iter().map(|(_, p)| *p < strongest / 4.0).collect::<Vec<_>>(), gap_blocks);
    let rough = powers[first].0 + block / 2;
    // Codec noise moves that block estimate by several ms: the onset is the first sample from 15 ms before
    // to 5 ms after it above a tenth of the burst's peak (another participant's beep misleads this only
    // if it starts within those same 20 ms).
    let peak = audio[rough..(rough + RATE / 20).min(audio.len())].iter().fold(0.0f32, |m, &x| m.max(x.abs()));
    let near = rough.saturating_sub(3 * RATE / 200).max(from)..(rough + RATE / 200).min(audio.len());
    let onset = near.clone().find(|&i| audio[i].abs() > peak / 10.0).unwrap_or(rough);
    let burst = &audio[onset..(onset + RATE / 20).min(audio.len())];
    let own = tone_power(burst, tone);
    let off = tone_power(burst, tone + 55.0).max(tone_power(burst, tone - 55.0));
    (peak >= 0.01 && own > 4.0 * off && own > 1e-6).then(|| onset as f64 / RATE as f64)
}

/// Walking back from the end of `quiet` (one flag per block, the last one loud), the first block after
/// the first run of at least `gap` quiet blocks; a shorter run at the start counts as a gap too.
fn first_after_gap(quiet: &[bool], gap: usize) -> usize {
    let mut run = 0;
    for (index, &is_quiet) in quiet.iter().enumerate().rev() {
        run = if is_quiet { run + 1 } else { 0 };
        if run == gap {
            return index + gap;
        }
    }
    run
}

#[cfg(test)]
mod tests {
    use super::first_after_gap;

    #[test]
    fn a_short_dip_inside_a_beep_is_no_gap() {
        //            gap (3 quiet)   beep, dip of 2, beep
        let quiet = [true, true, true, false, false, true, true, false, false];
        assert_eq!(first_after_gap(&quiet, 3), 3);
        assert_eq!(first_after_gap(&quiet, 2), 7);
        // A window that starts inside the gap, or loud.
        assert_eq!(first_after_gap(&[true, false, false], 3), 1);
        assert_eq!(first_after_gap(&[false, false], 3), 0);
    }
}
