//! Where the live composite shows each frame, so that a participant's audio and video line up as they
//! were captured (sans-IO: times are arguments). Once a track's sender reports map its RTP time to the
//! sender's clock, a frame is shown at its capture time plus the lowest delay any track of that
//! participant has shown lately (tracks of one sender share its clock: its video, encoded after
//! capture, no longer trails its audio by the encode time). Before a track's first report, it is shown
//! where arrival and RTP time place it. The lowest delay is a windowed minimum, so a sender clock that
//! drifts from ours is followed rather than left behind.
//!
//! The stored recording is lined up the same way later, by the transcoder, from the timeline's reports.

use std::collections::HashMap;

/// The lowest delay is the minimum over the last one to two of these windows.
const WINDOW_NS: u64 = 10_000_000_000;

#[derive(Debug, Default)]
pub struct LiveSync {
    tracks: HashMap<String, TrackClock>,
    delays: HashMap<String, LowestDelay>,
}

#[derive(Debug)]
struct TrackClock {
    participant: String,
    clock_rate: u64,
    /// The last sender report: RTP time (extended, as frames carry it) and the sender's clock in ns.
    report: Option<(u64, i128)>,
    last_shown_ns: Option<u64>,
}

/// A minimum over a sliding window of two buckets.
#[derive(Debug)]
struct LowestDelay {
    current: i128,
    previous: i128,
    bucket_started_ns: u64,
}

impl LowestDelay {
    fn new(now_ns: u64) -> LowestDelay {
        LowestDelay { current: i128::MAX, previous: i128::MAX, bucket_started_ns: now_ns }
    }

    fn observe(&mut self, delay: i128, now_ns: u64) -> i128 {
        if now_ns.saturating_sub(self.bucket_started_ns) >= WINDOW_NS {
            self.previous = self.current;
            self.current = i128::MAX;
            self.bucket_started_ns = now_ns;
        }
        self.current = self.current.min(delay);
        self.current.min(self.previous)
    }
}

impl LiveSync {
    pub fn track(&mut self, track: &str, participant: &str, clock_rate: u32) {
        let clock = TrackClock { participant: participant.to_string(), clock_rate: clock_rate.max(1) as u64, report: None, last_shown_ns: None };
        self.tracks.insert(track.to_string(), clock);
    }

    pub fn forget(&mut self, track: &str) {
        self.tracks.remove(track);
    }

    /// A sender report of `track`: RTP time `rtp` was `sender_ns` on the sender's clock.
    pub fn on_sender_report(&mut self, track: &str, rtp: u64, sender_ns: i128) {
        if let Some(clock) = self.tracks.get_mut(track) {
            clock.report = Some((rtp, sender_ns));
        }
    }

    /// Where to show the frame of `track` at RTP time `rtp` that arrived at `arrival_ns` (session running
    /// time); `unsynced_ns`: where arrival and RTP time alone place it.
    pub fn place(&mut self, track: &str, rtp: u64, arrival_ns: u64, unsynced_ns: u64) -> u64 {
        let Some(clock) = self.tracks.get_mut(track) else { return unsynced_ns };
        let mut shown = match clock.report {
            Some((report_rtp, sender_ns)) => {
                let captured = sender_ns + (rtp as i128 - report_rtp as i128) * 1_000_000_000 / clock.clock_rate as i128;
                let delays = self.delays.entry(clock.participant.clone()).or_insert_with(|| LowestDelay::new(arrival_ns));
                let lowest = delays.observe(arrival_ns as i128 - captured, arrival_ns);
                (captured + lowest).max(0) as u64
            }
            None => unsynced_ns,
        };
        if let Some(last) = clock.last_shown_ns {
            shown = shown.max(last + super::track_timing::MIN_FRAME_SPACING_NS);
        }
        clock.last_shown_ns = Some(shown);
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_participants_video_is_shown_with_the_audio_captured_with_it() {
        let mut sync = LiveSync::default();
        sync.track("a", "alice", 48_000);
        sync.track("v", "alice", 90_000);
        // The sender's clock is 5 s ahead of our session clock; its video arrives 45 ms after capture
        // (encoding), its audio 5 ms after.
        let sender = |session_ms: u64| (session_ms as i128 + 5_000) * MS as i128;
        sync.on_sender_report("a", 0, sender(0));
        sync.on_sender_report("v", 0, sender(0));
        for k in 1..=100u64 {
            let at = k * 20;
            let audio = sync.place("a", k * 960, (at + 5) * MS, 0);
            assert_eq!(audio, (at + 5) * MS, "audio frame {k}");
        }
        // A video frame captured at 1000 ms is shown where the audio captured then is (1005 ms), not at its
        // arrival (1045 ms).
        let video = sync.place("v", 90_000, 1_045 * MS, 1_045 * MS);
        assert_eq!(video, 1_005 * MS);
    }

    #[test]
    fn before_a_report_frames_stay_where_arrival_puts_them_and_never_go_back() {
        let mut sync = LiveSync::default();
        sync.track("a", "bob", 48_000);
        assert_eq!(sync.place("a", 960, 100 * MS, 120 * MS), 120 * MS);
        sync.on_sender_report("a", 0, 0);
        // Capture time 40 ms, arrival 140 ms: the lowest delay so far is 100 ms, but the frame shown last sat
        // at 120 ms.
        assert_eq!(sync.place("a", 1_920, 140 * MS, 140 * MS), 140 * MS);
        assert_eq!(sync.place("a", 2_880, 165 * MS, 165 * MS), 160 * MS, "60 ms + the lowest delay, 100 ms");
        assert_eq!(sync.place("unknown", 0, 0, 7), 7);
    }

    #[test]
    fn a_drifting_sender_clock_is_followed() {
        let mut sync = LiveSync::default();
        sync.track("a", "carol", 48_000);
        sync.on_sender_report("a", 0, 0);
        // The sender's clock runs 1 % slow: frames arrive later and later against their capture times.
        let mut shown = 0;
        let mut arrival = 0;
        for k in 1..=3_000u64 {
            arrival = k * 20 * MS + k * 200_000;
            shown = sync.place("a", k * 960, arrival, arrival);
        }
        // After 60 s the delay grew by 600 ms; the window keeps what is shown within 0.4 s of arrival.
        assert!(arrival - shown < 400 * MS, "shown {} ms before arrival", (arrival - shown) / MS);
    }
}
