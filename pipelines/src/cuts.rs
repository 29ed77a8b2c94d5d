//! Spans left out of the output (a recording's pauses): input time maps onto output time with every
//! cut before it removed; what falls inside a cut has no output time. Pure; the transcode applies it to
//! decoded frames and to the layout schedule.

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
