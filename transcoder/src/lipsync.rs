//! Lip sync from RTCP sender reports. A recorder timestamps each track from its first frame's arrival,
//! so network and scheduling jitter at that moment shifts a whole track by a few milliseconds. The
//! timeline keeps, per track, the RTP time of that first frame (`track_started`) and the sender's
//! NTP ↔ RTP mapping (`sender_report`). Tracks of one participant share the sender's clock: their
//! first frames' NTP times say how far apart they really were, and the correction moves the tracks so
//! the recording agrees.

use fleet_protocol::timeline::{self, Entry};
use std::collections::BTreeMap;

/// Corrections larger than this are not believed (see `corrections`). A track is anchored at its first
/// frame's arrival; a video track's first frame is a keyframe the sender paces out over a few hundred ms
/// (LiveKit's SFU with a Python SDK H.264 publisher: its video anchored 364 ms late against its audio).
const MAX_CORRECTION_NS: i64 = 1_000_000_000;

/// (participant, track) → nanoseconds to add to that track's timestamps (never negative).
pub type Corrections = BTreeMap<(String, String), u64>;

struct Anchor {
    rtp_time: u64,
    clock_rate: u32,
    running_ns: u64,
    sender_report: Option<(f64, u64)>,
    /// The track started again in this session; no more reports are matched to the first start.
    closed: bool,
}

/// Corrections for one capture session's tracks, from its `timeline.jsonl`. Tracks without a sender
/// report, and participants with a single track, are left alone. Only a track's first start in the
/// session is used (after a rejoin, tracks keep the first connection's alignment).
pub fn corrections(timeline: &str) -> Corrections {
    let mut anchors: BTreeMap<(String, String), Anchor> = BTreeMap::new();
    for line in timeline::parse(timeline) {
        let running_ns = line.running_ns;
        match line.entry {
            Entry::TrackStarted { participant, track, rtp_time, clock_rate } => {
                // A second start (a rejoin) begins another RTP timeline: later reports no longer
                // describe the first one.
                anchors.entry((participant, track)).and_modify(|a| a.closed = true).or_insert(Anchor {
                    rtp_time,
                    clock_rate,
                    running_ns,
                    sender_report: None,
                    closed: false,
                });
            }
            Entry::SenderReport { participant, track, ntp_unix_ms, rtp_time } => {
                if let Some(anchor) = anchors.get_mut(&(participant, track)).filter(|a| !a.closed) {
                    anchor.sender_report.get_or_insert((ntp_unix_ms, rtp_time));
                }
            }
            _ => {}
        }
    }
    // Per participant: (track, error) where error = where the track sits minus where the sender's clock
    // puts it, in ns, relative to an arbitrary common origin.
    let mut by_participant: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for ((participant, track), anchor) in &anchors {
        let Some((ntp_ms, sr_rtp)) = anchor.sender_report else { continue };
        if anchor.clock_rate == 0 {
            continue;
        }
        // RTP times are 32-bit on the wire: take the difference modulo 2^32, signed.
        let ticks = (anchor.rtp_time.wrapping_sub(sr_rtp) as u32) as i32 as i64;
        let first_frame_ntp_ns = (ntp_ms * 1e6) as i64 + ticks * 1_000_000_000 / anchor.clock_rate as i64;
        let error = anchor.running_ns as i64 - first_frame_ntp_ns;
        by_participant.entry(participant.clone()).or_default().push((track.clone(), error));
    }
    let mut corrections = Corrections::new();
    for (participant, tracks) in by_participant {
        if tracks.len() < 2 {
            continue;
        }
        // The track placed latest relative to the sender's clock stays; the others move forward to it,
        // so no shift is negative.
        let latest = tracks.iter().map(|(_, e)| *e).max().expect("two tracks");
        let earliest = tracks.iter().map(|(_, e)| *e).min().expect("two tracks");
        if latest - earliest > MAX_CORRECTION_NS {
            // Arrival jitter and keyframe pacing are well under a second; a larger gap means the reports
            // do not describe these first frames (e.g. a mapping from another stream): trust arrival
            // times instead.
            tracing::warn!(%participant, gap_ms = (latest - earliest) / 1_000_000, "sender reports disagree with arrival by too much; no lip-sync correction");
            continue;
        }
        for (track, error) in tracks {
            corrections.insert((participant.clone(), track), (latest - error) as u64);
        }
    }
    corrections
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_the_early_track_to_its_sender_clock_place() {
        // Audio and video captured together (same NTP at their first frames), but the video's first
        // frame arrived 12 ms later than the audio's: the audio moves 12 ms forward.
        let timeline = r#"{"type":"track_started","participant":"p","track":"a","rtp_time":48000,"clock_rate":48000,"running_ns":100000000,"wall_ms":1}
{"type":"track_started","participant":"p","track":"v","rtp_time":90000,"clock_rate":90000,"running_ns":112000000,"wall_ms":1}
{"type":"sender_report","participant":"p","track":"a","ntp_unix_ms":5000.0,"rtp_time":96000,"running_ns":1,"wall_ms":1}
{"type":"sender_report","participant":"p","track":"v","ntp_unix_ms":5000.0,"rtp_time":180000,"running_ns":1,"wall_ms":1}
{"type":"segment_opened","participant":"p","track":"v","seq":0,"running_ns":1,"wall_ms":1}"#;
        let c = corrections(timeline);
        assert_eq!(c[&("p".into(), "a".into())], 12_000_000);
        assert_eq!(c[&("p".into(), "v".into())], 0);
    }

    #[test]
    fn rtp_wraparound_and_lone_tracks() {
        // The SR's RTP time wrapped past 2^32 relative to the first frame's extended time.
        let timeline = r#"{"type":"track_started","participant":"p","track":"a","rtp_time":4294967000,"clock_rate":48000,"running_ns":0,"wall_ms":1}
{"type":"sender_report","participant":"p","track":"a","ntp_unix_ms":1000.0,"rtp_time":47704,"running_ns":1,"wall_ms":1}
{"type":"track_started","participant":"p","track":"v","rtp_time":0,"clock_rate":90000,"running_ns":5000000,"wall_ms":1}
{"type":"sender_report","participant":"p","track":"v","ntp_unix_ms":1000.0,"rtp_time":90000,"running_ns":1,"wall_ms":1}
{"type":"track_started","participant":"q","track":"a","rtp_time":0,"clock_rate":48000,"running_ns":0,"wall_ms":1}"#;
        let c = corrections(timeline);
        // Both first frames were 1 s before their reports: in sync at the sender; video arrived 5 ms late.
        assert_eq!(c[&("p".into(), "a".into())], 5_000_000);
        assert!(!c.contains_key(&("q".into(), "a".into())));
    }

    #[test]
    fn a_keyframe_paced_out_late_is_corrected() {
        // The video's first frame (a keyframe) completed 364 ms after its capture instant, the audio's
        // at once: the audio moves 364 ms later, to where the sender's clock puts it against the video.
        let timeline = r#"{"type":"track_started","participant":"p","track":"a","rtp_time":0,"clock_rate":48000,"running_ns":0,"wall_ms":1}
{"type":"sender_report","participant":"p","track":"a","ntp_unix_ms":1000.0,"rtp_time":0,"running_ns":1,"wall_ms":1}
{"type":"track_started","participant":"p","track":"v","rtp_time":0,"clock_rate":90000,"running_ns":364000000,"wall_ms":1}
{"type":"sender_report","participant":"p","track":"v","ntp_unix_ms":1000.0,"rtp_time":0,"running_ns":1,"wall_ms":1}"#;
        let corrections = corrections(timeline);
        assert_eq!(corrections[&("p".to_string(), "a".to_string())], 364_000_000);
        assert_eq!(corrections[&("p".to_string(), "v".to_string())], 0);
    }

    #[test]
    fn implausible_reports_are_ignored() {
        let timeline = r#"{"type":"track_started","participant":"p","track":"a","rtp_time":0,"clock_rate":48000,"running_ns":0,"wall_ms":1}
{"type":"sender_report","participant":"p","track":"a","ntp_unix_ms":1000.0,"rtp_time":48000,"running_ns":1,"wall_ms":1}
{"type":"track_started","participant":"p","track":"v","rtp_time":0,"clock_rate":90000,"running_ns":0,"wall_ms":1}
{"type":"sender_report","participant":"p","track":"v","ntp_unix_ms":9000.0,"rtp_time":90000,"running_ns":1,"wall_ms":1}"#;
        assert!(corrections(timeline).is_empty());
    }
}
