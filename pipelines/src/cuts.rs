//! Spans left out of the output (a recording's pauses): input time maps onto output time with every
//! cut before it removed; what falls inside a cut has no output time. Pure; the transcode applies it to
//! decoded frames and to the layout schedule.

use std::ops::Range;

use crate::layout::{Scene, Schedule};

/// Sorted, non-overlapping spans of input time, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cuts {
    spans: Vec<(u64, u64)>,
}

impl Cuts {
    /// Sorts and merges `spans`; empty spans are dropped.
    pub fn new(mut spans: Vec<(u64, u64)>) -> Cuts {
        spans.retain(|(from, until)| until > from);
        spans.sort();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
        for (from, until) in spans {
            match merged.last_mut() {
                Some(last) if from <= last.1 => last.1 = last.1.max(until),
                _ => merged.push((from, until)),
            }
        }
        Cuts { spans: merged }
    }

    /// Each cut lengthened or shortened (by at most half a frame) to a whole number of `frame_ns` frames.
    /// The output's frames fall on a fixed grid: a cut of any other length would put the input's frames
    /// after it between grid lines, and each would show up to half a frame early or late against its
    /// sound, which is cut to the sample.
    pub fn in_whole_frames(&self, frame_ns: u64) -> Cuts {
        if frame_ns == 0 {
            return self.clone();
        }
        let spans = self
            .spans
            .iter()
            .map(|&(from, until)| {
                let frames = (until - from + frame_ns / 2) / frame_ns;
                (from, from + frames * frame_ns)
            })
            .collect();
        Cuts::new(spans)
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    pub fn spans(&self) -> &[(u64, u64)] {
        &self.spans
    }

    /// Input time `t_ns` on the output's timeline, `None` inside a cut.
    pub fn map(&self, t_ns: u64) -> Option<u64> {
        let mut removed = 0;
        for &(from, until) in &self.spans {
            if t_ns < from {
                break;
            }
            if t_ns < until {
                return None;
            }
            removed += until - from;
        }
        Some(t_ns - removed)
    }

    /// The samples of an audio buffer (`count` of them from `start_ns`, at `rate` Hz) that lie outside
    /// the cuts, as index ranges, with the output time of the first kept one; `None` when all are cut.
    /// Buffers are cut to the sample because a whole buffer kept or dropped at a cut's edge would shift
    /// every sound after it by up to a buffer's length (the mixer counts samples, not timestamps).
    pub fn kept_samples(&self, start_ns: u64, count: usize, rate: u32) -> Option<(u64, Vec<Range<usize>>)> {
        let sample_at = |t_ns: u64| -> usize {
            let offset = t_ns.saturating_sub(start_ns) as u128 * rate as u128;
            (offset.div_ceil(1_000_000_000) as usize).min(count)
        };
        let mut kept = Vec::new();
        let mut next = 0;
        for &(from, until) in &self.spans {
            let (cut_from, cut_until) = (sample_at(from), sample_at(until));
            if cut_until <= next {
                continue;
            }
            if cut_from > next {
                kept.push(next..cut_from);
            }
            next = next.max(cut_until);
            if next >= count {
                break;
            }
        }
        if next < count {
            kept.push(next..count);
        }
        let first = kept.first()?.start;
        let first_ns = start_ns + (first as u128 * 1_000_000_000 / rate as u128) as u64;
        Some((self.map_clamped(first_ns), kept))
    }

    /// Where `t_ns` lands on the output, a time inside a cut at the cut's end.
    fn map_clamped(&self, t_ns: u64) -> u64 {
        let inside = self.spans.iter().find(|(from, until)| (*from..*until).contains(&t_ns));
        self.map(inside.map_or(t_ns, |(_, until)| *until)).expect("a cut's end is outside it")
    }

    /// The output's length for an input of `duration_ns`.
    pub fn output_duration(&self, duration_ns: u64) -> u64 {
        let removed: u64 = self.spans.iter().map(|(from, until)| until.min(&duration_ns).saturating_sub(*from)).sum();
        duration_ns - removed.min(duration_ns)
    }

    /// The schedule on the output's timeline: a scene that begins inside a cut begins where the cut ends
    /// (so the picture after a cut is the one the input showed then).
    pub fn schedule(&self, schedule: &Schedule) -> Schedule {
        if self.is_empty() {
            return schedule.clone();
        }
        let scenes = schedule.scenes().iter().map(|scene| Scene { start_ns: self.map_clamped(scene.start_ns), ..scene.clone() }).collect();
        Schedule::new(scenes).with_names(schedule.names().clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{Layer, grid};

    const S: u64 = 1_000_000_000;

    #[test]
    fn times_map_around_the_cuts() {
        let cuts = Cuts::new(vec![(6 * S, 8 * S), (2 * S, 4 * S), (3 * S, 5 * S), (9 * S, 9 * S)]);
        assert_eq!(cuts.spans(), &[(2 * S, 5 * S), (6 * S, 8 * S)], "merged, sorted, the empty one gone");
        assert_eq!(cuts.map(S), Some(S));
        assert_eq!(cuts.map(2 * S), None);
        assert_eq!(cuts.map(5 * S), Some(2 * S));
        assert_eq!(cuts.map(7 * S), None);
        assert_eq!(cuts.map(10 * S), Some(5 * S));
        assert_eq!(cuts.output_duration(10 * S), 5 * S);
        assert_eq!(cuts.output_duration(7 * S), 3 * S, "a cut past the end counts up to the end");
    }

    #[test]
    fn cuts_can_span_whole_frames() {
        const MS: u64 = 1_000_000;
        let frame = 40 * MS;
        let cuts = Cuts::new(vec![(100 * MS, 219 * MS), (1000 * MS, 1021 * MS), (2000 * MS, 2010 * MS)]).in_whole_frames(frame);
        assert_eq!(cuts.spans(), &[(100 * MS, 220 * MS), (1000 * MS, 1040 * MS)], "3 frames, 1 frame, none");
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // a list of sample ranges that holds one
    fn audio_is_cut_to_the_sample() {
        const MS: u64 = 1_000_000;
        let cuts = Cuts::new(vec![(100 * MS, 200 * MS)]);
        // 20 ms of 48 kHz audio: 960 samples, 48 per millisecond.
        assert_eq!(cuts.kept_samples(50 * MS, 960, 48_000), Some((50 * MS, vec![0..960])), "before the cut: whole");
        assert_eq!(cuts.kept_samples(90 * MS, 960, 48_000), Some((90 * MS, vec![0..480])), "straddling its start: the head");
        assert_eq!(cuts.kept_samples(150 * MS, 960, 48_000), None, "inside: nothing");
        assert_eq!(cuts.kept_samples(190 * MS, 960, 48_000), Some((100 * MS, vec![480..960])), "straddling its end: the tail, at the cut");
        assert_eq!(cuts.kept_samples(210 * MS, 960, 48_000), Some((110 * MS, vec![0..960])), "after: whole, moved back");
        let short = Cuts::new(vec![(5 * MS, 10 * MS)]);
        assert_eq!(short.kept_samples(0, 960, 48_000), Some((0, vec![0..240, 480..960])), "a cut inside a buffer: both sides");
        // Kept samples are contiguous on the output: the head ends where the tail begins.
        let (tail_ns, _) = cuts.kept_samples(190 * MS, 960, 48_000).unwrap();
        assert_eq!(tail_ns, 90 * MS + 480 * 1_000_000_000 / 48_000);
    }

    #[test]
    fn scenes_inside_a_cut_begin_where_it_ends() {
        let (a, b) = (Layer::Track("a/cam".into()), Layer::Track("b/cam".into()));
        let tile = grid(1, 1280, 720)[0];
        let schedule = Schedule::new(vec![
            Scene { start_ns: 0, layers: vec![(a.clone(), tile)], highlight: None },
            Scene { start_ns: 3 * S, layers: vec![(b.clone(), tile)], highlight: None },
            Scene { start_ns: 6 * S, layers: vec![(a.clone(), tile)], highlight: None },
        ]);
        let cut = Cuts::new(vec![(2 * S, 4 * S)]).schedule(&schedule);
        let starts: Vec<u64> = cut.scenes().iter().map(|s| s.start_ns).collect();
        assert_eq!(starts, vec![0, 2 * S, 4 * S]);
        assert_eq!(cut.tile_at(&b, 2 * S), Some(tile), "b, shown when the pause ended, right after the cut");
    }
}
