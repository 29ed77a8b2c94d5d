//! Where each frame of a track sits on the capture session's running time (sans-IO: RTP time and
//! arrival time are arguments). RTP time is the authority between frames; the arrival of a track's first
//! frame places it, and arrivals are watched only to catch an RTP time that jumped.

/// A frame arriving more than this before its RTP time says restarts the track's timing: RTP time
/// jumped forward (str0m restarts its extended RTP time on an SSRC change).
const MAX_EARLY_NS: i128 = 2_000_000_000;
/// A frame arriving more than this after its RTP time says restarts the track's timing: RTP time jumped
/// back. Lateness is also what a busy capture loop shows (datagrams wait in the socket, their arrival is
/// when they are read), and a sender whose clock lags: neither moves a frame, so the bound is wide.
const MAX_LATE_NS: i128 = 10_000_000_000;
/// A frame's assumed duration is the last inter-frame interval, at most this (gaps are not frames).
const MAX_FRAME_DURATION_NS: u64 = 100_000_000;
/// Frames of a track are written at least this far apart: Matroska keeps milliseconds, and two frames
/// within one (a browser's canvas capture sends such) would share a timestamp, which demuxers refuse.
pub const MIN_FRAME_SPACING_NS: u64 = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct Anchor {
    rtp: u64,
    pts_ns: u64,
    /// The earliest arrival of the anchor frame that any later frame implies (its arrival minus its RTP
    /// distance from the anchor): network and loop delays only ever make frames later than this.
    baseline_ns: i128,
}

/// Why a frame starts (or restarts) the track's timing.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Restart {
    /// The first frame since the track (or its peer connection) began.
    First,
    /// RTP time moved this far from arrival time (positive: the frame claims to be later than it arrived).
    Jumped { by_ms: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// Where the frame is stored: its track's first arrival and RTP time since (a later lip sync from
    /// sender reports lines tracks up).
    pub pts_ns: u64,
    /// Where the live composite shows it: the earliest arrival RTP time allows (the track's lowest delay
    /// seen so far), so a first frame that arrived late does not keep its track late for good (tracks of
    /// one sender share a path, so their lowest delays line them up; seen: ±40 ms A/V under load).
    pub live_pts_ns: u64,
    /// Until the next frame, which has not arrived: the last interval.
    pub duration_ns: u64,
    pub restart: Option<Restart>,
}

#[derive(Debug)]
pub struct TrackTiming {
    clock_rate: u64,
    anchor: Option<Anchor>,
    last_pts_ns: Option<u64>,
    last_live_pts_ns: Option<u64>,
    frame_interval_ns: u64,
}

impl TrackTiming {
    pub fn new(clock_rate: u32, video: bool) -> TrackTiming {
        TrackTiming {
            clock_rate: clock_rate.max(1) as u64,
            anchor: None,
            last_pts_ns: None,
            last_live_pts_ns: None,
            frame_interval_ns: if video { 33_333_333 } else { 20_000_000 },
        }
    }

    /// A new peer connection restarts every track's RTP timing: the next frame anchors again (never before
    /// what was already written).
    pub fn restart(&mut self) {
        self.anchor = None;
    }

    /// Whether a frame has been placed since the last restart.
    pub fn is_anchored(&self) -> bool {
        self.anchor.is_some()
    }

    /// Whether a frame at `rtp` would sit at or before the last frame written, by less than 2 s (RTP time
    /// stepped back a little, e.g. filler frames an SFU sends as a track ends). Audio drops such a frame:
    /// two audio frames cannot share a place, and spacing them 1 ms apart makes decoders refuse the
    /// segment. Larger steps are jumps, for [`TrackTiming::place`].
    pub fn steps_back(&self, rtp: u64) -> bool {
        let (Some(anchor), Some(last)) = (self.anchor, self.last_pts_ns) else { return false };
        let pts = anchor.pts_ns as i128 + rtp_ns(rtp as i128 - anchor.rtp as i128, self.clock_rate);
        (0..MAX_EARLY_NS).contains(&(last as i128 - pts))
    }

    /// Places the frame with RTP time `rtp` (extended) that arrived at `arrival_ns` (running time).
    pub fn place(&mut self, rtp: u64, arrival_ns: u64) -> Placement {
        let arrival = arrival_ns as i128;
        let mut restart = None;
        if let Some(anchor) = &mut self.anchor {
            let implied_baseline = arrival - rtp_ns(rtp as i128 - anchor.rtp as i128, self.clock_rate);
            let late_by = implied_baseline - anchor.baseline_ns;
            if !(-MAX_EARLY_NS..=MAX_LATE_NS).contains(&late_by) {
                restart = Some(Restart::Jumped { by_ms: (-late_by / 1_000_000) as i64 });
                self.anchor = None;
            } else if late_by < 0 {
                anchor.baseline_ns = implied_baseline;
            }
        }
        let anchor = *self.anchor.get_or_insert_with(|| {
            restart = restart.or(Some(Restart::First));
            let pts_ns = self.last_pts_ns.map_or(arrival_ns, |last| arrival_ns.max(last + MIN_FRAME_SPACING_NS));
            Anchor { rtp, pts_ns, baseline_ns: arrival }
        });
        let mut pts = (anchor.pts_ns as i128 + rtp_ns(rtp as i128 - anchor.rtp as i128, self.clock_rate)).max(0) as u64;
        if let Some(last) = self.last_pts_ns {
            pts = pts.max(last + MIN_FRAME_SPACING_NS);
            self.frame_interval_ns = (pts - last).min(MAX_FRAME_DURATION_NS);
        }
        self.last_pts_ns = Some(pts);
        let mut live_pts = (anchor.baseline_ns + rtp_ns(rtp as i128 - anchor.rtp as i128, self.clock_rate)).max(0) as u64;
        if let Some(last) = self.last_live_pts_ns {
            live_pts = live_pts.max(last + MIN_FRAME_SPACING_NS);
        }
        self.last_live_pts_ns = Some(live_pts);
        Placement { pts_ns: pts, live_pts_ns: live_pts, duration_ns: self.frame_interval_ns, restart }
    }
}

fn rtp_ns(ticks: i128, clock_rate: u64) -> i128 {
    ticks * 1_000_000_000 / clock_rate as i128
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    /// An Opus track: 20 ms frames, 960 ticks each.
    fn audio() -> TrackTiming {
        TrackTiming::new(48_000, false)
    }

    #[test]
    fn the_first_frame_sits_at_its_arrival_and_rtp_time_places_the_rest() {
        let mut timing = audio();
        let first = timing.place(1_000, 500 * MS);
        assert_eq!((first.pts_ns, first.duration_ns, first.restart), (500 * MS, 20 * MS, Some(Restart::First)));
        // Jitter in arrival does not move frames.
        let second = timing.place(1_960, 527 * MS);
        assert_eq!((second.pts_ns, second.restart), (520 * MS, None));
        assert_eq!(timing.place(2_920, 539 * MS).pts_ns, 540 * MS);
    }

    #[test]
    fn live_frames_sit_at_the_lowest_delay_seen_stored_ones_at_the_first_arrival() {
        let mut timing = audio();
        // The first frame arrived 40 ms late; the next ones on time.
        let first = timing.place(0, 40 * MS);
        assert_eq!((first.pts_ns, first.live_pts_ns), (40 * MS, 40 * MS));
        // Live: at the lower delay at once, but never before a frame already shown.
        let second = timing.place(960, 20 * MS);
        assert_eq!((second.pts_ns, second.live_pts_ns), (60 * MS, 41 * MS));
        assert_eq!(timing.place(2 * 960, 43 * MS).live_pts_ns, 42 * MS);
        for k in 3..=50u64 {
            let placed = timing.place(k * 960, k * 20 * MS + 3 * MS);
            assert_eq!((placed.pts_ns, placed.live_pts_ns), (40 * MS + k * 20 * MS, k * 20 * MS), "frame {k}");
        }
        // A frame seen with even less delay moves live frames earlier, never back past one shown.
        let quick = timing.place(51 * 960, 51 * 20 * MS - 15 * MS);
        assert_eq!(quick.live_pts_ns, 51 * 20 * MS - 15 * MS);
        assert!(timing.place(52 * 960, 52 * 20 * MS).live_pts_ns > quick.live_pts_ns);
    }

    #[test]
    fn a_stalled_capture_loop_does_not_move_frames() {
        let mut timing = audio();
        timing.place(0, 0);
        // Four seconds of frames read at once after a stall, then on time again: RTP time still places them.
        for k in 1..=200u64 {
            let placed = timing.place(k * 960, 4_000 * MS + k * 10_000);
            assert_eq!((placed.pts_ns, placed.restart), (k * 20 * MS, None), "frame {k}");
        }
        for k in 201..=300u64 {
            let placed = timing.place(k * 960, k * 20 * MS + 3 * MS);
            assert_eq!((placed.pts_ns, placed.restart), (k * 20 * MS, None), "frame {k}");
        }
    }

    #[test]
    fn an_anchor_that_arrived_late_does_not_make_later_frames_look_early() {
        let mut timing = audio();
        // The first frame waited 1.5 s in the socket; the rest come on time.
        timing.place(0, 1_500 * MS);
        for k in 1..=500u64 {
            assert_eq!(timing.place(k * 960, k * 20 * MS + MS).restart, None, "frame {k}");
        }
    }

    #[test]
    fn rtp_jumps_restart_the_timing_once_and_never_go_back_in_time() {
        let mut timing = audio();
        timing.place(0, 0);
        timing.place(960, 20 * MS);
        // A new SSRC: RTP time 70 s ahead of what arrival says.
        let ahead = 960 + 70 * 48_000;
        let jumped = timing.place(ahead, 40 * MS);
        assert_eq!((jumped.pts_ns, jumped.restart), (40 * MS, Some(Restart::Jumped { by_ms: 69_980 })));
        let next = timing.place(ahead + 960, 60 * MS);
        assert_eq!((next.pts_ns, next.duration_ns, next.restart), (60 * MS, 20 * MS, None));
        // Back by those 70 s: restarts after the last frame written, and only once.
        let back = timing.place(960, 80 * MS);
        assert!(matches!(back.restart, Some(Restart::Jumped { by_ms }) if by_ms < -69_000), "{back:?}");
        assert_eq!(back.pts_ns, 80 * MS);
        for k in 1..=100u64 {
            assert_eq!(timing.place(960 + k * 960, 80 * MS + k * 20 * MS).restart, None, "frame {k}");
        }
    }

    #[test]
    fn a_restart_after_frames_written_ahead_of_arrival_settles_at_once() {
        // A sender whose clock runs 5 % fast: its frames are written ahead of their arrival. A restart
        // then anchors after the last frame written, ahead of arrival; that must not make every later
        // frame look early and restart the timing again, frame after frame.
        let mut timing = audio();
        for k in 0..=100u64 {
            timing.place(k * 960, k * 19 * MS);
        }
        timing.restart();
        let first = timing.place(5_000_000, 1_910 * MS);
        assert_eq!((first.pts_ns, first.restart), (2_000 * MS + MIN_FRAME_SPACING_NS, Some(Restart::First)));
        for k in 1..=300u64 {
            let placed = timing.place(5_000_000 + k * 960, 1_910 * MS + k * 20 * MS);
            assert_eq!((placed.pts_ns, placed.restart), (2_000 * MS + MIN_FRAME_SPACING_NS + k * 20 * MS, None), "frame {k}");
        }
    }

    #[test]
    fn a_small_step_back_is_seen_and_a_jump_is_not() {
        let mut timing = audio();
        assert!(!timing.steps_back(0), "nothing written yet");
        timing.place(480_000, 2_000 * MS);
        timing.place(480_960, 2_020 * MS);
        assert!(timing.steps_back(480_960) && timing.steps_back(480_000 - 960), "the same or an earlier place");
        assert!(!timing.steps_back(480_960 + 960), "the next frame");
        assert!(!timing.steps_back(480_000 - 48_000 * 5), "a 5 s jump back restarts instead");
    }

    #[test]
    fn frames_are_at_least_a_millisecond_apart_and_last_their_interval() {
        let mut timing = TrackTiming::new(90_000, true);
        timing.place(0, 0);
        let same = timing.place(0, MS);
        assert_eq!(same.pts_ns, MIN_FRAME_SPACING_NS);
        let gap = timing.place(90_000, 1_000 * MS);
        assert_eq!((gap.pts_ns, gap.duration_ns), (1_000 * MS, 100 * MS));
        assert_eq!(timing.place(93_000, 1_034 * MS).duration_ns, 33_333_333);
    }
}
