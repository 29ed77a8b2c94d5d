//! Which stored segments make up a track of a redundant recording (two captures of the room at once):
//! the first capture's wherever it has media, the other's in its gaps (its recorder died, or joined
//! late), cut to the frame. Pure: spans in, picks out.

/// One stored segment of the track, on the recording's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Which simultaneous capture it comes from.
    pub replica: u8,
    /// Where its media begins and ends (its end already cut where a later session of the same capture
    /// took over).
    pub start_ns: u64,
    pub end_ns: u64,
}

/// A candidate to play, by its index, and the part of it that is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub index: usize,
    /// Shown from here (it fills a gap that began inside it).
    pub from_ns: Option<u64>,
    /// Shown until here (the gap it fills ends inside it).
    pub until_ns: Option<u64>,
}

/// Gaps shorter than this between one capture's segments are its bookkeeping, not lost media.
pub const GAP_TOLERANCE_NS: u64 = 100_000_000;

/// The segments to play, in time order. Captures are taken in replica order: each one only fills what
/// the ones before it left uncovered.
pub fn plan(candidates: &[Candidate]) -> Vec<Pick> {
    let mut replicas: Vec<u8> = candidates.iter().map(|c| c.replica).collect();
    replicas.sort_unstable();
    replicas.dedup();
    let mut picks: Vec<(u64, Pick)> = Vec::new();
    let mut covered: Vec<(u64, u64)> = Vec::new();
    for replica in replicas {
        let mut own: Vec<(usize, &Candidate)> = candidates.iter().enumerate().filter(|(_, c)| c.replica == replica).collect();
        own.sort_by_key(|(_, c)| c.start_ns);
        let first = covered.is_empty();
        for (index, candidate) in own {
            if first {
                picks.push((candidate.start_ns, Pick { index, from_ns: None, until_ns: None }));
                continue;
            }
            for (from, until) in uncovered(&covered, candidate.start_ns, candidate.end_ns) {
                let pick =
                    Pick { index, from_ns: (from > candidate.start_ns).then_some(from), until_ns: (until < candidate.end_ns).then_some(until) };
                picks.push((from, pick));
            }
        }
        let this_one = candidates.iter().filter(|c| c.replica == replica).map(|c| (c.start_ns, c.end_ns));
        covered = merge(covered.into_iter().chain(this_one).collect());
    }
    picks.sort_by_key(|(at, _)| *at);
    picks.into_iter().map(|(_, pick)| pick).collect()
}

/// Sorted, merged spans; neighbours closer than the tolerance are one.
fn merge(mut spans: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    spans.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(spans.len());
    for (start, end) in spans {
        match merged.last_mut() {
            Some(last) if start <= last.1 + GAP_TOLERANCE_NS => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The parts of `start..end` outside `covered` (sorted, merged), each longer than the tolerance.
fn uncovered(covered: &[(u64, u64)], start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut parts = outside(covered, start, end);
    parts.retain(|(from, until)| until - from > GAP_TOLERANCE_NS);
    parts
}

/// The parts of `start..end` outside every span of `covered` (sorted by start; they may overlap).
pub(crate) fn outside(covered: &[(u64, u64)], start: u64, end: u64) -> Vec<(u64, u64)> {
    let mut parts = Vec::new();
    let mut at = start;
    for &(from, until) in covered {
        if until <= at {
            continue;
        }
        if from >= end {
            break;
        }
        if from > at {
            parts.push((at, from));
        }
        at = at.max(until);
    }
    if at < end {
        parts.push((at, end));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn segment(replica: u8, start_s: f64, end_s: f64) -> Candidate {
        Candidate { replica, start_ns: (start_s * S as f64) as u64, end_ns: (end_s * S as f64) as u64 }
    }

    fn pick(index: usize, from_s: Option<f64>, until_s: Option<f64>) -> Pick {
        let ns = |s: f64| (s * S as f64) as u64;
        Pick { index, from_ns: from_s.map(ns), until_ns: until_s.map(ns) }
    }

    #[test]
    fn one_capture_plays_whole() {
        let candidates = [segment(0, 0.0, 2.0), segment(0, 2.0, 4.0)];
        assert_eq!(plan(&candidates), [pick(0, None, None), pick(1, None, None)]);
    }

    #[test]
    fn the_second_capture_fills_where_the_first_died() {
        // Capture 0 stored 0-4 s then died; capture 1 (joined 0.3 s later) runs to 9 s.
        let candidates =
            [segment(0, 0.0, 2.0), segment(0, 2.0, 4.0), segment(1, 0.3, 2.3), segment(1, 2.3, 4.3), segment(1, 4.3, 6.3), segment(1, 6.3, 9.0)];
        assert_eq!(plan(&candidates), [pick(0, None, None), pick(1, None, None), pick(3, Some(4.0), None), pick(4, None, None), pick(5, None, None)]);
    }

    #[test]
    fn a_gap_is_filled_to_the_frame_and_the_first_capture_resumes() {
        // Capture 0 lost 4-7 s (its recorder died; a new session took over at 7 s).
        let candidates = [segment(0, 0.0, 4.0), segment(0, 7.0, 10.0), segment(1, 3.0, 5.0), segment(1, 5.0, 8.0), segment(1, 8.0, 10.0)];
        assert_eq!(plan(&candidates), [pick(0, None, None), pick(2, Some(4.0), None), pick(3, None, Some(7.0)), pick(1, None, None)]);
    }

    #[test]
    fn a_late_first_capture_is_led_in_by_the_other_and_tiny_gaps_are_not_filled() {
        let candidates = [segment(0, 0.5, 2.0), segment(0, 2.05, 4.0), segment(1, 0.0, 4.0)];
        assert_eq!(plan(&candidates), [pick(2, None, Some(0.5)), pick(0, None, None), pick(1, None, None)]);
    }
}
