//! Faults the fleet must survive, against real processes: a recorder killed mid-recording, poison
//! transcode jobs, malformed queue messages.

use async_nats::jetstream;
use fleet_protocol::job::{CaptureSession, JobRequest, Source};
use fleet_protocol::{JobRecord, JobState, SafeId};
use fleet_tests::Setup;
use fleet_tests::media::ffprobe;
use serde_json::Value;
use std::time::{Duration, Instant};

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

async fn wait_for(api: &fleet_tests::api::Api, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + timeout;
    loop {
        let record = api.get(id).await;
        if done(&record) {
            return record;
        }
        assert!(Instant::now() < deadline, "condition not met after {timeout:?}: {record}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_recorder_is_replaced_and_the_recording_covers_the_whole_span() {
    let setup = Setup::local();
    let api = &setup.api;
    let recorder_a = setup.fleet.recorder("rec-a", "recorder-only", 1);
    let _transcoder = setup.fleet.transcoder("tx");
    let id = api.start(r#"{"room":"r","source":{"type":"test","participants":2}}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    // The standby joins after the job is taken, so the job is certainly on rec-a.
    let _recorder_b = setup.fleet.recorder("rec-b", "recorder-only", 1);
    tokio::time::sleep(Duration::from_secs(6)).await;

    let killed_at = now_ms();
    drop(recorder_a); // SIGKILL: no goodbye, no ack, no final upload
    let record = wait_for(api, &id, Duration::from_secs(30), |r| r["sessions"].as_array().unwrap().len() == 2 && r["state"] == "recording").await;
    let resumed = &record["sessions"][1];
    assert_eq!(record["sessions"][0]["node"], "rec-a");
    assert_eq!(resumed["node"], "rec-b");
    let takeover_ms = resumed["started_at_ms"].as_u64().unwrap() - killed_at;
    eprintln!("takeover: capture resumed {takeover_ms} ms after the kill");
    // AckWait (5 s) + the next fetch + capture start-up.
    assert!(takeover_ms < 8000, "takeover took {takeover_ms} ms");

    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete"], Duration::from_secs(90)).await;
    let first_start = record["sessions"][0]["started_at_ms"].as_u64().unwrap();
    let last_end = record["sessions"][1]["ended_at_ms"].as_u64().unwrap();
    let (mp4, manifest) = setup.read_output(&record);
    let path = setup.dir.path().join("out.mp4");
    std::fs::write(&path, &mp4).unwrap();
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    let span = (last_end - first_start) as f64 / 1000.0;
    assert!((duration - span).abs() < 0.5, "MP4 {duration} s must cover the whole span {span} s, gap included");

    // Every segment rec-a uploaded before it died is in the recording.
    let raw = setup.root.join(format!("recordings/{id}/raw"));
    let count = |session: &str| walk(&raw.join(session)).iter().filter(|p| p.extension().is_some_and(|e| e == "mkv")).count();
    let (before, after) = (count("s1"), count("s2"));
    assert!(before >= 8, "rec-a uploaded only {before} segments in 6 s");
    assert_eq!(manifest["segments"].as_u64(), Some((before + after) as u64), "manifest: {manifest}");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_and_malformed_jobs_end_with_a_reason_and_workers_keep_serving() {
    let setup = Setup::local();
    let api = &setup.api;
    let _transcoder = setup.fleet.transcoder("tx");
    let _recorder = setup.fleet.recorder("rec-a", "recorder-only", 1);
    let client = async_nats::connect(setup.nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());

    // Garbage on both work queues.
    for subject in ["fleet.record", "fleet.transcode"] {
        js.publish(subject, "{not json".into()).await.unwrap().await.unwrap();
        js.publish(subject, r#"{"job_id":"../../etc"}"#.into()).await.unwrap().await.unwrap();
    }

    // A poison transcode job: its record says it was captured, but no segment exists.
    let poison = SafeId::random("rec");
    let request = JobRequest {
        room: "r".into(),
        source: Source::Test { participants: 1 },
        layout: Default::default(),
        video_preset: Default::default(),
        audio_only: false,
        max_duration_s: None,
        webhook_url: None,
        metadata: None,
    };
    let mut record = JobRecord::new(poison.clone(), request, now_ms());
    record.state = JobState::Finalizing;
    record.sessions.push(CaptureSession {
        id: SafeId::parse("s1").unwrap(),
        node: "gone".into(),
        started_at_ms: now_ms() - 5000,
        ended_at_ms: Some(now_ms()),
        segments: 3,
        end_reason: None,
    });
    let jobs = js.get_key_value("fleet-jobs").await.unwrap();
    jobs.put(poison.as_str(), serde_json::to_vec(&record).unwrap().into()).await.unwrap();
    js.publish("fleet.transcode", format!(r#"{{"job_id":"{poison}"}}"#).into()).await.unwrap().await.unwrap();

    let failed = api.wait_for_state(poison.as_str(), &["failed"], Duration::from_secs(60)).await;
    let reason = failed["error"].as_str().unwrap();
    assert!(reason.contains("no raw segments"), "reason: {reason}");
    assert_eq!(failed["transcode_attempts"], 3, "MaxDeliver attempts: {failed}");

    // The workers still serve: a real recording goes all the way through.
    let id = api.start(r#"{"room":"r","source":{"type":"test","participants":1}}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    api.stop(&id).await;
    api.wait_for_state(&id, &["complete"], Duration::from_secs(60)).await;

    // Nothing is left pending or unacknowledged in either queue: bad messages were terminated.
    for (stream, consumer) in [("FLEET_RECORD", "recorders"), ("FLEET_TRANSCODE", "transcoders")] {
        let mut consumer: jetstream::consumer::PullConsumer = js.get_stream(stream).await.unwrap().get_consumer(consumer).await.unwrap();
        let info = consumer.info().await.unwrap();
        assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{stream}: {info:?}");
    }
}
