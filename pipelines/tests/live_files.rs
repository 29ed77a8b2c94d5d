//! The live composite's file outputs: HLS segments cut near their target length that decode as
//! H.264 + AAC, closed when the composite stops, and JPEG snapshots on the interval asked for.

use fleet_pipelines::live::{LiveComposite, LiveEvent, LiveSpec, OutputTarget, SnapshotSpec};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const S: u64 = 1_000_000_000;

#[test]
fn hls_segments_and_snapshots_come_from_the_running_composite() {
    let dir = tempfile::tempdir().unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let spec =
        LiveSpec { width: 640, height: 360, snapshots: Some(SnapshotSpec { interval_ns: S, width: 320, height: 180 }), ..LiveSpec::hd720("x264enc") };
    let sink = events.clone();
    let live = LiveComposite::start(spec, 0, move |event| sink.lock().unwrap().push(event)).unwrap();
    let target = OutputTarget::Hls { dir: dir.path().join("hls"), segment_ns: 2 * S, first_index: 7 };
    live.add_output("hls", &target).unwrap();
    std::thread::sleep(Duration::from_millis(5_500));
    live.stop();

    let events = std::mem::take(&mut *events.lock().unwrap());
    let segments: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            LiveEvent::SegmentClosed { id, path, duration_ns } => Some((id.clone(), path.clone(), *duration_ns)),
            _ => None,
        })
        .collect();
    let snapshots: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            LiveEvent::Snapshot { pts_ns, jpeg } => Some((*pts_ns, jpeg.clone())),
            _ => None,
        })
        .collect();
    let failures: Vec<_> = events.iter().filter(|e| matches!(e, LiveEvent::OutputFailed { .. } | LiveEvent::Failed(_))).collect();
    assert!(failures.is_empty(), "{failures:?}");

    // About 5 s of media in 2 s segments: two whole ones and the rest closed at the stop.
    assert!((2..=4).contains(&segments.len()), "{segments:?}");
    let names: Vec<String> = segments.iter().map(|(_, p, _)| p.file_name().unwrap().to_string_lossy().into()).collect();
    assert_eq!(names[0], "00007.ts", "numbered from the first index");
    for (id, path, duration_ns) in &segments[..segments.len() - 1] {
        assert_eq!(id, "hls");
        assert!((1_900_000_000..=2_600_000_000).contains(duration_ns), "{path:?}: {duration_ns} ns");
    }
    let total: u64 = segments.iter().map(|s| s.2).sum();
    assert!((4 * S..=6 * S).contains(&total), "{total} ns in all");
    for (_, path, _) in &segments {
        let probe = std::process::Command::new("ffprobe")
            .args(["-v", "error", "-show_entries", "stream=codec_name", "-of", "csv=p=0"])
            .arg(path)
            .output()
            .unwrap();
        let codecs = String::from_utf8_lossy(&probe.stdout);
        assert!(probe.status.success() && codecs.contains("h264") && codecs.contains("aac"), "{path:?}: {codecs}");
    }

    // One a second from the first frame on.
    assert!((4..=7).contains(&snapshots.len()), "{} snapshots", snapshots.len());
    for pair in snapshots.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!((S - 50_000_000..=S + 50_000_000).contains(&gap), "snapshots {gap} ns apart");
    }
    assert!(snapshots.iter().all(|(_, jpeg)| jpeg.starts_with(&[0xff, 0xd8]) && jpeg.len() > 500));
}
