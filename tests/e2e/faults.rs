//! Faults the fleet must survive, against real processes: a recorder killed mid-recording, poison
//! transcode jobs, malformed queue messages.

use async_nats::jetstream;
use fleet_protocol::job::{CaptureSession, JobRequest};
use fleet_protocol::time::now_ms;
use fleet_protocol::{JobRecord, JobState, SafeId};
use fleet_tests::Setup;
use fleet_tests::media::ffprobe;
use serde_json::Value;
use std::time::{Duration, Instant};

async fn wait_for(api: &fleet_tests::api::Api, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
    fleet_tests::wait::until(&format!("job {id}"), timeout, || async {
        let record = api.get(id).await;
        if done(&record) { Ok(record) } else { Err(record.to_string()) }
    })
    .await
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
    // The controller finds rec-a gone ("no responders" for 750 ms, probed every 250 ms) and queues the
    // job at once; AckWait (5 s) no longer decides. Plus rec-b's fetch and capture start-up.
    assert!(takeover_ms < 2500, "takeover took {takeover_ms} ms");

    // The killed node comes back (as systemd would restart it) and uploads what it had spooled.
    let raw = setup.root.join(format!("recordings/{id}/raw"));
    // Segments in storage; a killed upload may leave its temporary file (`.fleet-tmp-…`), which storage
    // listings skip, so the count does too.
    let is_segment = |p: &std::path::PathBuf| {
        p.extension().is_some_and(|e| e == "mkv") && !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(".fleet-tmp-"))
    };
    let count = |session: &str| walk(&raw.join(session)).iter().filter(|p| is_segment(p)).count();
    let uploaded_before_kill = count("s1");
    let _recorder_a_again = setup.fleet.recorder("rec-a", "recorder-only", 1);
    let spool = setup.dir.path().join("spool-rec-a").join(&id);
    fleet_tests::wait::until("the killed recorder's spool recovered", Duration::from_secs(15), || async {
        if spool.exists() { Err(spool.display().to_string()) } else { Ok(()) }
    })
    .await;
    let recovered = count("s1") - uploaded_before_kill;
    eprintln!("spool recovery: {recovered} segments uploaded after the restart ({uploaded_before_kill} before the kill)");
    assert!(recovered >= 4, "the open segment of each of the 4 tracks must be recovered, got {recovered}");

    // An upload cut short by a kill leaves its partial file (a kill rarely lands in one, so one is put
    // there, written two hours ago): it is swept once the recording is complete.
    let abandoned = raw.join("s1").join(".fleet-tmp-1-abandoned.mkv");
    std::fs::write(&abandoned, b"half a segment").unwrap();
    std::fs::File::options().write(true).open(&abandoned).unwrap().set_modified(std::time::SystemTime::now() - Duration::from_secs(7200)).unwrap();

    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete"], Duration::from_secs(90)).await;
    assert!(!abandoned.exists(), "the abandoned partial upload is still there");
    let first_start = record["sessions"][0]["started_at_ms"].as_u64().unwrap();
    let last_end = record["sessions"][1]["ended_at_ms"].as_u64().unwrap();
    let (mp4, manifest) = setup.read_output(&record);
    let path = setup.dir.path().join("out.mp4");
    std::fs::write(&path, &mp4).unwrap();
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    let span = (last_end - first_start) as f64 / 1000.0;
    assert!((duration - span).abs() < 0.5, "MP4 {duration} s must cover the whole span {span} s, gap included");

    // Every segment of both sessions, recovered ones included, is in the recording.
    let (before, after) = (count("s1"), count("s2"));

    assert!(uploaded_before_kill >= 8, "rec-a uploaded only {uploaded_before_kill} segments in 6 s");
    assert_eq!(manifest["segments"].as_u64(), Some((before + after) as u64), "manifest: {manifest}");

    // Media lost: whole seconds at which participant 1's tile shows no flash.
    let seconds = duration.floor() as usize;
    let flashes = flash_seconds(&path, "640:360:0:180", seconds);
    let lost: Vec<usize> = (1..seconds).filter(|s| !flashes.contains(s)).collect();
    eprintln!("media lost around the failover: {} s (seconds without a flash: {lost:?}); takeover {takeover_ms} ms", lost.len());
    assert!(lost.len() as u64 <= takeover_ms.div_ceil(1000) + 1, "lost {lost:?} with a takeover of {takeover_ms} ms");
    // The gap itself is black, not a frozen frame.
    let mid_gap = (killed_at - first_start + takeover_ms / 2) as f64 / 1000.0;
    let brightness = tile_brightness(&path, "640:360:0:180", mid_gap);
    assert!(brightness < 30.0, "tile brightness {brightness} at {mid_gap} s, inside the failover gap");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_recorder_is_slow_not_dead_and_keeps_its_recording() {
    let setup = Setup::local();
    let api = &setup.api;
    let recorder_a = setup.fleet.recorder("rec-a", "recorder-only", 1);
    let _transcoder = setup.fleet.transcoder("tx");
    let id = api.start(r#"{"room":"r","source":{"type":"test","participants":1}}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    let _recorder_b = setup.fleet.recorder("rec-b", "recorder-only", 1);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Frozen for 4 s: its connection stays up, so probes time out instead of finding no responders; the
    // controller must not call that dead (AckWait, 5 s, has not passed either).
    recorder_a.freeze();
    tokio::time::sleep(Duration::from_secs(4)).await;
    recorder_a.thaw();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let record = api.get(&id).await;
    let nodes: Vec<&str> = record["sessions"].as_array().unwrap().iter().map(|s| s["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["rec-a"], "a slow recorder was replaced: {record}");
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete"], Duration::from_secs(90)).await;
    assert_eq!(record["sessions"].as_array().unwrap().len(), 1, "{record}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nats_cluster_loses_a_server_mid_recording_without_loss_or_duplicates() {
    let mut setup = Setup::local_on_nats_cluster();
    let hooks = fleet_tests::webhook::Receiver::start(fleet_tests::WEBHOOK_SECRET).await;
    let _recorder_a = setup.fleet.recorder("rec-a", "recorder-only", 1);
    let _transcoder = setup.fleet.transcoder("tx");
    let body = format!(r#"{{"room":"r","source":{{"type":"test","participants":2}},"webhook_url":"{}"}}"#, hooks.url());
    let id = setup.api.start(&body).await;
    setup.api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    // A standby: a redelivery during the outage would reach it, and it must not record twice.
    let _recorder_b = setup.fleet.recorder("rec-b", "recorder-only", 1);
    tokio::time::sleep(Duration::from_secs(4)).await;

    // The server leading the job bucket goes: the harshest one to lose (its replicas elect a new leader).
    let client = async_nats::connect(setup.fleet.nats_url.split(',').collect::<Vec<_>>()).await.unwrap();
    let mut bucket = jetstream::new(client).get_stream("KV_fleet-jobs").await.unwrap();
    assert_eq!(bucket.info().await.unwrap().config.num_replicas, 3, "the job bucket has a copy on every server");
    let killed = fleet_tests::Nats::leader_of(std::iter::once(&mut setup.nats).chain(setup.nats_peers.iter_mut()), "KV_fleet-jobs").await;
    killed.kill();
    tokio::time::sleep(Duration::from_secs(6)).await;
    killed.restart();
    tokio::time::sleep(Duration::from_secs(4)).await;

    let api = &setup.api;
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete"], Duration::from_secs(120)).await;
    let nodes: Vec<&str> = record["sessions"].as_array().unwrap().iter().map(|s| s["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["rec-a"], "the recorder kept its recording through the server's loss: {record}");
    let (mp4, _) = setup.read_output(&record);
    let path = setup.dir.path().join("out.mp4");
    std::fs::write(&path, &mp4).unwrap();
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    let span = (record["sessions"][0]["ended_at_ms"].as_u64().unwrap() - record["sessions"][0]["started_at_ms"].as_u64().unwrap()) as f64 / 1000.0;
    assert!((duration - span).abs() < 0.5, "MP4 {duration} s against {span} s recorded");
    let seconds = duration.floor() as usize;
    let flashes = flash_seconds(&path, "640:360:0:180", seconds);
    let lost: Vec<usize> = (1..seconds).filter(|s| !flashes.contains(s)).collect();
    assert!(lost.is_empty(), "seconds without a flash: {lost:?}");
    // Let a late duplicate show, then one webhook per state.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let states: Vec<String> = hooks.events_for(&id).iter().map(|d| d.body["state"].as_str().unwrap_or("").to_string()).collect();
    let distinct: std::collections::BTreeSet<&String> = states.iter().collect();
    assert_eq!(states.len(), distinct.len(), "duplicate webhooks: {states:?}");
    assert!(distinct.contains(&"complete".to_string()), "{states:?}");
}

fn tile_brightness(path: &std::path::Path, crop: &str, at_s: f64) -> f64 {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-ss", &format!("{at_s:.3}"), "-i"])
        .arg(path)
        .args(["-frames:v", "1", "-vf", &format!("crop={crop},scale=4:4,format=gray"), "-f", "rawvideo", "-"])
        .output()
        .unwrap();
    out.stdout.iter().map(|&v| v as f64).sum::<f64>() / out.stdout.len().max(1) as f64
}

/// Whole seconds at which the tile `crop` (ffmpeg crop=w:h:x:y) flashes white.
fn flash_seconds(path: &std::path::Path, crop: &str, seconds: usize) -> Vec<usize> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-vf", &format!("crop={crop},scale=4:4,format=gray"), "-f", "rawvideo", "-"])
        .output()
        .unwrap();
    let frames: Vec<f64> = out.stdout.chunks_exact(16).map(|f| f.iter().map(|&v| v as f64).sum::<f64>() / 16.0).collect();
    // A flash turns white and is gone 200 ms later (a tile stuck on a white frame does not count). Each
    // capture session flashes on its own clock, so after a failover the flashes fall anywhere in the
    // second: a second counts as covered when a flash begins in it.
    let white = |i: usize| frames.get(i).is_some_and(|&v| v > 200.0);
    let onsets: std::collections::BTreeSet<usize> =
        (0..frames.len()).filter(|&i| white(i) && (i == 0 || !white(i - 1)) && !white(i + 6)).map(|i| i / 30).collect();
    (0..=seconds).filter(|s| onsets.contains(s)).collect()
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
    let recorder = setup.fleet.recorder("rec-a", "recorder-only", 1);
    let client = async_nats::connect(setup.nats.url()).await.unwrap();
    let js = jetstream::new(client.clone());

    // Garbage on the work queues, the hand-over requests and the events the controller consumes.
    for subject in ["fleet.record", "fleet.record.handover", "fleet.transcode", "fleet.events.rec_x"] {
        js.publish(subject, "{not json".into()).await.unwrap().await.unwrap();
        js.publish(subject, r#"{"job_id":"../../etc"}"#.into()).await.unwrap().await.unwrap();
    }
    // A hand-over request for a job that does not exist.
    js.publish("fleet.record.handover", r#"{"job_id":"rec_unknown0000000000","handover_from":"s1"}"#.into()).await.unwrap().await.unwrap();

    // A poison transcode job: its record says it was captured, but no segment exists.
    let poison = SafeId::random("rec");
    let request: JobRequest = serde_json::from_str(r#"{"room":"r","source":{"type":"test","participants":1}}"#).unwrap();
    let mut record = JobRecord::new(poison.clone(), request, now_ms());
    record.state = JobState::Finalizing;
    record.sessions.push(CaptureSession {
        id: SafeId::parse("s1").unwrap(),
        node: "gone".into(),
        started_at_ms: now_ms() - 5000,
        ended_at_ms: Some(now_ms()),
        segments: 3,
        end_reason: None,
        writing: true,
        replica: 0,
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

    // Each bad message was refused with a log line saying where it came from.
    let recorder_log = fleet_tests::procs::without_colours(&recorder.log_text());
    for subject in ["subject=fleet.record reason=malformed", "subject=fleet.record.handover reason=malformed"] {
        assert_eq!(recorder_log.matches(subject).count(), 2, "{subject}");
    }
    assert!(recorder_log.contains("recording message for an unknown job"));
    let controller_log = fleet_tests::procs::without_colours(&setup.controller.as_ref().unwrap().log_text());
    assert_eq!(controller_log.matches("ignoring malformed event").count(), 2, "malformed events on fleet.events.>");

    // Nothing is left pending or unacknowledged in either queue: bad messages were terminated.
    for (stream, consumer) in [("FLEET_RECORD", "recorders"), ("FLEET_TRANSCODE", "transcoders")] {
        let mut consumer: jetstream::consumer::PullConsumer = js.get_stream(stream).await.unwrap().get_consumer(consumer).await.unwrap();
        let info = consumer.info().await.unwrap();
        assert_eq!((info.num_pending, info.num_ack_pending), (0, 0), "{stream}: {info:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn nats_restart_mid_recording_neither_loses_nor_duplicates_the_capture() {
    let mut setup = Setup::local();
    let recorder = setup.fleet.recorder("rec-a", "both", 2);
    let id = setup.api.start(r#"{"room":"r","source":{"type":"test","participants":1}}"#).await;
    setup.api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Down for longer than AckWait (5 s): JetStream redelivers the job once it is back.
    setup.nats.kill();
    tokio::time::sleep(Duration::from_secs(8)).await;
    setup.nats.restart();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let record = setup.api.get(&id).await;
    assert_eq!(record["state"], "recording", "{record}");
    assert_eq!(record["sessions"].as_array().unwrap().len(), 1, "the recorder must not start a second capture of its own job: {record}");
    // Whether JetStream redelivers depends on a race after the restart: the server's AckWait against the
    // recorder's reconnect and next AckProgress. Both outcomes must leave one capture; say which one ran.
    let adopted = recorder.log_text().contains("adopts the new delivery");
    eprintln!("redelivery to the recording node during the outage: {}", if adopted { "yes, adopted" } else { "no" });

    assert_eq!(setup.api.stop(&id).await.status, 202);
    let record = setup.api.wait_for_state(&id, &["complete"], Duration::from_secs(90)).await;
    let session = &record["sessions"][0];
    let span = (session["ended_at_ms"].as_u64().unwrap() - session["started_at_ms"].as_u64().unwrap()) as f64 / 1000.0;
    assert!(span > 18.0, "the capture went on through the outage (3 + 8 + 8 s): {span} s");
    let (mp4, _) = setup.read_output(&record);
    let path = setup.dir.path().join("out.mp4");
    std::fs::write(&path, &mp4).unwrap();
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - span).abs() < 0.5, "MP4 {duration} s vs captured {span} s");
    // Nothing was lost across the outage: a flash at every whole second.
    let seconds = duration.floor() as usize;
    let flashes = flash_seconds(&path, "1280:720:0:0", seconds);
    let lost: Vec<usize> = (1..seconds).filter(|s| !flashes.contains(s)).collect();
    assert!(lost.is_empty(), "seconds without a flash: {lost:?}");
}

/// A segment lost from storage and a segment cut short: the job still gives the whole recording, and
/// its record and manifest say what was missing or damaged instead of reporting a clean success.
#[tokio::test(flavor = "multi_thread")]
async fn missing_and_damaged_segments_are_reported_not_hidden() {
    let setup = Setup::local();
    let _recorder = setup.fleet.recorder("rec-a", "recorder-only", 1);
    let id = setup.api.start(r#"{"room":"r","source":{"type":"test","participants":1}}"#).await;
    setup.api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    setup.api.stop(&id).await;
    // No transcoder yet: damage the stored segments first.
    let record = setup.api.wait_for_state(&id, &["finalizing"], Duration::from_secs(30)).await;
    let session = record["sessions"][0]["id"].as_str().unwrap();
    let raw = setup.root.join(format!("recordings/{id}/raw/{session}/participant-1"));
    let lost = raw.join("camera/00001.mkv");
    std::fs::remove_file(&lost).unwrap();
    let cut = raw.join("microphone/00001.mkv");
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 3]).unwrap();

    let _transcoder = setup.fleet.transcoder("tx");
    let record = setup.api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(60)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    let warnings: Vec<&str> = record["warnings"].as_array().unwrap().iter().map(|w| w.as_str().unwrap()).collect();
    println!("warnings: {warnings:#?}");
    assert!(warnings.iter().any(|w| w.contains("segment missing from storage") && w.ends_with("participant-1/camera/00001.mkv")), "{warnings:?}");
    assert!(warnings.iter().any(|w| w.contains("microphone: 00001.mkv is truncated")), "{warnings:?}");
    let (mp4, manifest) = setup.read_output(&record);
    assert_eq!(manifest["warnings"].as_array().unwrap().len(), warnings.len(), "{manifest:#}");
    let path = setup.dir.path().join("out.mp4");
    std::fs::write(&path, &mp4).unwrap();
    let session = &record["sessions"][0];
    let span = (session["ended_at_ms"].as_u64().unwrap() - session["started_at_ms"].as_u64().unwrap()) as f64 / 1000.0;
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - span).abs() < 0.3, "the hole does not shorten the recording: MP4 {duration} s vs captured {span} s");
}

/// The object store is down for a while: the recording goes on, its segments wait in the spool and are
/// uploaded when the store returns; meanwhile the recorder, its spool over `max_spool_mb`, takes no new
/// recording. Nothing recorded is lost.
#[tokio::test(flavor = "multi_thread")]
async fn object_store_outage_spools_holds_new_jobs_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut s3 = fleet_tests::S3::start(dir.path());
    let mut setup = Setup::with_storage(dir, fleet_tests::StorageSetup::S3 { endpoint: s3.endpoint(), ca_file: None }, Default::default());
    setup.fleet.recorder_settings = "max_spool_mb = 0.25\n".into();
    let _recorder = setup.fleet.recorder("rec-a", "recorder-only", 2);
    let _transcoder = setup.fleet.transcoder("tx");
    let api = &setup.api;
    let room = r#"{"room":"r","source":{"type":"test","participants":2}}"#;
    let first = api.start(room).await;
    api.wait_for_state(&first, &["recording"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    s3.kill();
    let down_at = Instant::now();
    let holding = fleet_tests::wait::until("the spool past its limit", Duration::from_secs(60), || async {
        let nodes = api.send("GET", "/v1/nodes", Some(fleet_tests::API_KEY), None).await.body;
        let node = nodes["nodes"].as_array().and_then(|n| n.iter().find(|n| n["id"] == "rec-a").cloned()).unwrap_or_default();
        node["holding"].as_str().map(str::to_string).ok_or_else(|| node.to_string())
    })
    .await;
    eprintln!("{:.1} s into the outage the recorder holds: {holding}", down_at.elapsed().as_secs_f64());
    let second = api.start(room).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(api.get(&second).await["state"], "queued", "a recorder with a full spool took a new recording");

    s3.restart();
    let outage_s = down_at.elapsed().as_secs_f64();
    let taken = api.wait_for_state(&second, &["recording"], Duration::from_secs(60)).await;
    eprintln!("outage {outage_s:.1} s; the held job was taken {:.1} s after the store returned", down_at.elapsed().as_secs_f64() - outage_s);
    assert_eq!(taken["sessions"][0]["node"], "rec-a");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(api.stop(&first).await.status, 202);
    assert_eq!(api.stop(&second).await.status, 202);
    let record = api.wait_for_state(&first, &["complete"], Duration::from_secs(120)).await;
    api.wait_for_state(&second, &["complete"], Duration::from_secs(120)).await;

    // One session, every second of it in the MP4: the outage cost no media.
    assert_eq!(record["sessions"].as_array().unwrap().len(), 1, "{record}");
    let session = &record["sessions"][0];
    let span = (session["ended_at_ms"].as_u64().unwrap() - session["started_at_ms"].as_u64().unwrap()) as f64 / 1000.0;
    let mp4 = s3.get(&format!("recordings/{first}/{first}.mp4")).await;
    let path = setup.dir.path().join("out.mp4");
    std::fs::write(&path, &mp4).unwrap();
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - span).abs() < 0.5, "MP4 {duration} s, session {span} s");
    assert!(span > outage_s, "the recording ({span} s) spans the outage ({outage_s:.1} s)");
    assert_eq!(fleet_tests::media::decode_errors(&path), "");
    let seconds = duration.floor() as usize;
    let flashes = flash_seconds(&path, "640:360:0:180", seconds);
    let lost: Vec<usize> = (1..seconds).filter(|s| !flashes.contains(s)).collect();
    eprintln!("seconds without a flash: {lost:?} of {seconds}");
    assert!(lost.is_empty(), "media lost: seconds {lost:?}");
    let spool = setup.dir.path().join("spool-rec-a");
    assert!(walk(&spool).is_empty(), "the spool is empty once everything is uploaded: {:?}", walk(&spool));
}

/// A transcoder killed mid-transcode: the job is delivered again after AckWait and completes on another
/// transcoder, with exactly one MP4 and one manifest in storage and one webhook per state.
#[tokio::test(flavor = "multi_thread")]
async fn killed_transcoder_is_replaced_with_one_output_and_one_webhook_per_state() {
    let mut setup = Setup::local();
    // A short AckWait, so the test need not wait the default 30 s (the restarted controller updates it).
    setup.controller = None;
    setup.fleet.controller_extra = "[queues]\ntranscode_ack_wait_s = 4\n".into();
    setup.controller = Some(setup.fleet.controller(setup.port));
    // The one-piece transcode's hand-over (its claim counts attempts); a 12 s recording would otherwise
    // go in 10 s chunks, whose messages are handed over one by one.
    setup.fleet.transcoder_extra = "chunk_seconds = 0\n".into();
    let hooks = fleet_tests::webhook::Receiver::start(fleet_tests::WEBHOOK_SECRET).await;
    let _recorder = setup.fleet.recorder("rec-a", "recorder-only", 1);
    let transcoder_a = setup.fleet.transcoder("tx-a");
    let api = &setup.api;
    let id = api.start(&format!(r#"{{"room":"r","source":{{"type":"test","participants":2}},"webhook_url":"{}"}}"#, hooks.url())).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(api.stop(&id).await.status, 202);
    wait_for(api, &id, Duration::from_secs(60), |r| r["state"] == "transcoding" && r["progress"]["node"] == "tx-a").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let record = api.get(&id).await;
    assert_eq!(record["state"], "transcoding", "tx-a finished before it could be killed: {record}");
    drop(transcoder_a); // SIGKILL mid-transcode
    let killed_at = Instant::now();
    let _transcoder_b = setup.fleet.transcoder("tx-b");
    let record = api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(120)).await;
    assert_eq!(record["state"], "complete", "{record}");
    eprintln!("completed on another transcoder {:.1} s after the kill; attempts {}", killed_at.elapsed().as_secs_f64(), record["transcode_attempts"]);
    assert_eq!(record["transcode_attempts"], 2, "{record}");

    // Exactly one recording, its poster and one manifest next to the raw media, no temporary leftovers.
    let job_dir = setup.root.join(format!("recordings/{id}"));
    let mut outputs: Vec<String> = walk(&job_dir)
        .into_iter()
        .filter(|p| !p.starts_with(job_dir.join("raw")))
        .map(|p| p.strip_prefix(&job_dir).unwrap().to_string_lossy().to_string())
        .collect();
    outputs.sort();
    assert_eq!(outputs, ["manifest.json".to_string(), "poster.jpg".to_string(), format!("{id}.mp4")]);
    let (mp4, manifest) = setup.read_output(&record);
    let path = setup.dir.path().join("out.mp4");
    std::fs::write(&path, &mp4).unwrap();
    assert_eq!(fleet_tests::media::decode_errors(&path), "");
    assert_eq!(manifest["output"]["size_bytes"].as_u64(), Some(mp4.len() as u64));

    // One webhook per state, in order, though two transcoders worked on the job.
    let states = || hooks.events_for(&id).iter().map(|d| d.body["state"].as_str().unwrap_or("").to_string()).collect::<Vec<String>>();
    fleet_tests::wait::until("the complete webhook", Duration::from_secs(20), || async {
        let states = states();
        if states.last().is_some_and(|s| s == "complete") { Ok(()) } else { Err(format!("{states:?}")) }
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await; // a late duplicate would show by now
    assert_eq!(states(), ["queued", "starting", "recording", "finalizing", "transcoding", "complete"]);
}

/// Graceful drain (SIGTERM): with no other recorder the draining one records on; once another joins,
/// it takes the recording over, and the draining one leaves only when the new one writes media. The
/// two sessions overlap, so no second is lost.
#[tokio::test(flavor = "multi_thread")]
async fn drained_recorder_hands_over_without_a_gap() {
    let setup = Setup::local();
    let api = &setup.api;
    let mut recorder_a = setup.fleet.recorder("rec-a", "recorder-only", 1);
    let _transcoder = setup.fleet.transcoder("tx");
    let id = api.start(r#"{"room":"r","source":{"type":"test","participants":2}}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    recorder_a.signal_term();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let record = api.get(&id).await;
    assert_eq!(record["sessions"].as_array().unwrap().len(), 1, "{record}");
    assert!(record["sessions"][0]["ended_at_ms"].is_null() && !recorder_a.exited(), "with nobody to take over, the drain records on: {record}");

    let joined_at = now_ms();
    let _recorder_b = setup.fleet.recorder("rec-b", "recorder-only", 1);
    let record = wait_for(api, &id, Duration::from_secs(30), |r| r["sessions"][0]["ended_at_ms"].is_u64()).await;
    let (old, new) = (&record["sessions"][0], &record["sessions"][1]);
    assert_eq!((old["node"].as_str(), new["node"].as_str()), (Some("rec-a"), Some("rec-b")), "{record}");
    assert_eq!(old["end_reason"], "handover");
    let overlap_ms = old["ended_at_ms"].as_i64().unwrap() - new["started_at_ms"].as_i64().unwrap();
    eprintln!(
        "hand-over: rec-b's session began {} ms after rec-b was started; the sessions overlap by {overlap_ms} ms",
        new["started_at_ms"].as_u64().unwrap().saturating_sub(joined_at)
    );
    assert!(overlap_ms >= 2000, "the old session records on 2 s (handover_overlap_s) after the new one writes: {record}");
    fleet_tests::wait::until("the drained recorder's exit after its hand-over", Duration::from_secs(20), || {
        let exited = recorder_a.exited();
        async move { if exited { Ok(()) } else { Err("running".to_string()) } }
    })
    .await;
    assert_eq!(api.get(&id).await["state"], "recording");

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete"], Duration::from_secs(90)).await;
    let first_start = record["sessions"][0]["started_at_ms"].as_u64().unwrap();
    let last_end = record["sessions"][1]["ended_at_ms"].as_u64().unwrap();
    let (mp4, _) = setup.read_output(&record);
    let path = setup.dir.path().join("out.mp4");
    std::fs::write(&path, &mp4).unwrap();
    assert_eq!(fleet_tests::media::decode_errors(&path), "");
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    let span = (last_end - first_start) as f64 / 1000.0;
    assert!((duration - span).abs() < 0.5, "MP4 {duration} s, recording span {span} s");
    // A lost stretch shows black in the participant's tile (as a failover gap does). Each session's test
    // source flashes once a second of its own clock, so only away from the switch must flashes keep a
    // one-second beat; at the switch the phase changes (an interval under two seconds).
    let switch_s = (record["sessions"][1]["started_at_ms"].as_u64().unwrap() - first_start) as f64 / 1000.0;
    for (participant, tile) in [(1, "640:360:0:180"), (2, "640:360:640:180")] {
        let black = fleet_tests::media::black_seconds(&path, tile, 30.0);
        let flashes = fleet_tests::sync::flash_onsets(&path, tile, 30.0);
        let off_beat: Vec<f64> =
            flashes.windows(2).filter(|w| w[1] - w[0] > 1.0 + 1.5 / 30.0 && (w[1] < switch_s - 0.1 || w[0] > switch_s + 1.1)).map(|w| w[1]).collect();
        let worst = flashes.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
        eprintln!(
            "participant {participant}: {black:.2} s black, {} flashes, longest interval {worst:.3} s (switch at {switch_s:.2} s)",
            flashes.len()
        );
        assert_eq!(black, 0.0, "participant {participant}: black frames (media lost) around the hand-over");
        assert!(off_beat.is_empty() && worst < 2.0 - 1.5 / 30.0, "participant {participant}: flashes {flashes:?}");
    }
}

/// A size-limited tmpfs mounted at `path` for as long as it lives (needs root, as CI has).
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(path: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path).status().unwrap();
        assert!(status.success(), "mounting a {size} tmpfs at {} (this test needs root)", path.display());
        Self(path.to_path_buf())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Disk full on a recorder: before its writes fail, the recorder hands the recording back with the
/// reason on the job, another recorder resumes it, and the full one takes no new recording.
#[tokio::test(flavor = "multi_thread")]
async fn full_disk_on_a_recorder_hands_the_recording_over_with_the_reason() {
    let warning = hand_back_on_a_full_disk("min_free_spool_mb = 0.1\n", false).await;
    assert!(warning.starts_with("rec-a: spool disk full"), "{warning}");
}

/// A disk that fills between two free-space checks (here: no minimum, and a file written until the
/// disk is full): the failed write itself hands the recording over, with the system's reason.
#[tokio::test(flavor = "multi_thread")]
async fn a_write_failing_on_a_full_disk_hands_the_recording_over_with_the_reason() {
    let warning = hand_back_on_a_full_disk("min_free_spool_mb = 0.0\n", true).await;
    assert!(warning.starts_with("rec-a: spool disk full: the disk is full"), "{warning}");
}

/// Records on rec-a, whose spool is a 128 KiB disk, until it hands the recording to rec-b; checks the
/// hand-over, the registry's hold and the final MP4. Returns the job's disk-full warning.
async fn hand_back_on_a_full_disk(recorder_a_settings: &str, fill_the_disk: bool) -> String {
    let mut setup = Setup::local();
    let spool_a = setup.dir.path().join("spool-rec-a");
    let _disk = SmallDisk::mount(&spool_a, "128k");
    setup.fleet.recorder_settings = recorder_a_settings.into();
    let _recorder_a = setup.fleet.recorder("rec-a", "recorder-only", 1);
    setup.fleet.recorder_settings = String::new();
    let _transcoder = setup.fleet.transcoder("tx");
    let api = &setup.api;
    let id = api.start(r#"{"room":"r","source":{"type":"test","participants":2}}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    let _recorder_b = setup.fleet.recorder("rec-b", "recorder-only", 1);
    if fill_the_disk {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut filler = std::fs::File::create(spool_a.join("filler")).unwrap();
        while std::io::Write::write_all(&mut filler, &[0u8; 4096]).is_ok() {}
    }
    let record =
        wait_for(api, &id, Duration::from_secs(60), |r| r["sessions"].as_array().is_some_and(|s| s.len() == 2 && s[1]["writing"] == true)).await;
    let warning =
        record["warnings"].as_array().and_then(|w| w.iter().find_map(|w| w.as_str().filter(|w| w.contains("spool disk full")))).map(String::from);
    println!("sessions: {}; warning: {warning:?}", record["sessions"]);
    assert_eq!((record["sessions"][0]["node"].as_str(), record["sessions"][1]["node"].as_str()), (Some("rec-a"), Some("rec-b")), "{record:#}");
    // The registry says why rec-a takes no new recording (its next heartbeat, within 2 s).
    fleet_tests::wait::until("rec-a saying it takes no new recording", Duration::from_secs(5), || async {
        let nodes = api.send("GET", "/v1/nodes", Some(fleet_tests::API_KEY), None).await.body;
        let rec_a = nodes["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "rec-a").cloned().unwrap_or_default();
        if rec_a["holding"].as_str().is_some_and(|h| h.contains("spool disk full")) { Ok(()) } else { Err(rec_a.to_string()) }
    })
    .await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete"], Duration::from_secs(90)).await;
    let (mp4, _) = setup.read_output(&record);
    let path = setup.dir.path().join("out.mp4");
    std::fs::write(&path, &mp4).unwrap();
    assert_eq!(fleet_tests::media::decode_errors(&path), "");
    let lost = fleet_tests::media::black_seconds(&path, "640:360:0:180", 30.0);
    println!("media lost at the hand-back: {lost:.2} s");
    warning.expect("a disk-full warning on the job")
}

/// `redundancy: 2`: two recorders capture the room at once, and killing either loses nothing: the
/// transcode takes each instant from whichever capture has it.
async fn redundant_capture_survives_losing(replica_killed: u8) {
    let setup = Setup::local();
    let api = &setup.api;
    // rec-a may take both messages of the job: it must leave the second capture to rec-b.
    let recorder_a = setup.fleet.recorder("rec-a", "recorder-only", 2);
    let recorder_b = setup.fleet.recorder("rec-b", "recorder-only", 1);
    let _transcoder = setup.fleet.transcoder("tx");
    let id = api.start(r#"{"room":"r","source":{"type":"test","participants":2},"redundancy":2}"#).await;
    let writing = |r: &Value| r["sessions"].as_array().unwrap().iter().filter(|s| s["writing"] == true).count() == 2;
    let record = wait_for(api, &id, Duration::from_secs(30), writing).await;
    let sessions = record["sessions"].as_array().unwrap();
    let nodes: std::collections::BTreeSet<&str> = sessions.iter().map(|s| s["node"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 2, "the two captures run on two nodes: {record:#}");
    let replicas: std::collections::BTreeSet<u64> = sessions.iter().map(|s| s["replica"].as_u64().unwrap_or(0)).collect();
    assert_eq!(replicas, [0, 1].into(), "{record:#}");
    tokio::time::sleep(Duration::from_secs(6)).await;

    let victim = sessions.iter().find(|s| s["replica"].as_u64().unwrap_or(0) == replica_killed as u64).unwrap()["node"].as_str().unwrap().to_string();
    let killed_at = now_ms();
    let (_survivor, killed) = if victim == "rec-a" { (recorder_b, recorder_a) } else { (recorder_a, recorder_b) };
    drop(killed); // SIGKILL: its open segments never reach storage
    // The controller finds the capture lost and ends its session; the other capture carries the job.
    let lost = |r: &Value| r["sessions"].as_array().unwrap().iter().any(|s| s["end_reason"] == "recorder_lost");
    let record = wait_for(api, &id, Duration::from_secs(15), lost).await;
    assert_eq!(record["state"], "recording", "{record:#}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(120)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    let (mp4, _) = setup.read_output(&record);
    let path = setup.dir.path().join("redundant.mp4");
    std::fs::write(&path, &mp4).unwrap();
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    let first_start = record["sessions"].as_array().unwrap().iter().filter_map(|s| s["started_at_ms"].as_u64()).min().unwrap();
    let last_end = record["sessions"].as_array().unwrap().iter().filter_map(|s| s["ended_at_ms"].as_u64()).max().unwrap();
    let span = (last_end - first_start) as f64 / 1000.0;
    assert!((duration - span).abs() < 0.5, "MP4 {duration} s must cover the whole span {span} s");
    assert_eq!(fleet_tests::media::decode_errors(&path), "", "the MP4 decodes cleanly across the switch");

    // Nothing lost: a flash in every second, for both participants, and no black around the kill.
    let seconds = duration.floor() as usize;
    for tile in ["640:360:0:180", "640:360:640:180"] {
        let flashes = flash_seconds(&path, tile, seconds);
        let lost: Vec<usize> = (1..seconds).filter(|s| !flashes.contains(s)).collect();
        assert!(
            lost.is_empty(),
            "tile {tile}: seconds without a flash {lost:?} (capture {replica_killed} killed at {:.1} s)",
            (killed_at - first_start) as f64 / 1000.0
        );
        let black = fleet_tests::media::black_seconds(&path, tile, 30.0);
        assert!(black < 0.1, "tile {tile}: {black} s black");
    }
    eprintln!("redundant capture, capture {replica_killed} ({victim}) killed: MP4 {duration:.2} s of a {span:.2} s span, nothing lost");
}

#[tokio::test(flavor = "multi_thread")]
async fn redundant_capture_loses_nothing_when_the_first_recorder_dies() {
    redundant_capture_survives_losing(0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redundant_capture_loses_nothing_when_the_second_recorder_dies() {
    redundant_capture_survives_losing(1).await;
}

/// A redundant recording is transcoded while it records: a chunk waits until both captures' media of
/// it is in storage. Then the first capture's recorder dies: its media stops where its uploads did, so
/// the chunks after that wait for the stop and take the second capture's media. Nothing is lost and no
/// chunk is transcoded twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_redundant_recording_is_transcoded_while_it_records() {
    let mut setup = Setup::local();
    setup.fleet.transcoder_extra = "chunk_seconds = 4\n".into();
    setup.fleet.recorder_settings = "progressive_interval_s = 2\n".into();
    let recorder_a = setup.fleet.recorder("rec-a", "recorder-only", 1);
    let recorder_b = setup.fleet.recorder("rec-b", "recorder-only", 1);
    let transcoder = setup.fleet.transcoder("tx");
    let api = &setup.api;
    let id = api.start(r#"{"room":"r","source":{"type":"test","participants":2},"redundancy":2}"#).await;
    let writing = |r: &Value| r["sessions"].as_array().unwrap().iter().filter(|s| s["writing"] == true).count() == 2;
    wait_for(api, &id, Duration::from_secs(30), writing).await;
    // Two 4 s chunks final in both captures (within about 14 s on a quiet machine).
    let progressed = |r: &Value| r["chunks"]["done"].as_array().map_or(0, Vec::len) >= 2 && r["state"] == "recording";
    let recording = wait_for(api, &id, Duration::from_secs(45), progressed).await;
    let done_while_recording = fleet_tests::chunks::done(&recording);

    let sessions = recording["sessions"].as_array().unwrap();
    let first_capture = sessions.iter().find(|s| s["replica"].as_u64().unwrap_or(0) == 0).unwrap()["node"].as_str().unwrap().to_string();
    let (_survivor, killed) = if first_capture == "rec-a" { (recorder_b, recorder_a) } else { (recorder_a, recorder_b) };
    drop(killed); // SIGKILL
    let lost = |r: &Value| r["sessions"].as_array().unwrap().iter().any(|s| s["end_reason"] == "recorder_lost");
    wait_for(api, &id, Duration::from_secs(15), lost).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(120)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    let log = fleet_tests::procs::without_colours(&transcoder.log_text());
    let count = fleet_tests::chunks::assert_each_transcoded_once(&record, &done_while_recording, &log);

    let (mp4, _) = setup.read_output(&record);
    let path = setup.dir.path().join("redundant-progressive.mp4");
    std::fs::write(&path, &mp4).unwrap();
    assert_eq!(fleet_tests::media::decode_errors(&path), "");
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    let seconds = duration.floor() as usize;
    for tile in ["640:360:0:180", "640:360:640:180"] {
        let flashes = flash_seconds(&path, tile, seconds);
        let lost: Vec<usize> = (1..seconds).filter(|s| !flashes.contains(s)).collect();
        let warnings = || log.lines().filter(|l| l.contains("WARN") || l.contains("chunk done")).collect::<Vec<_>>().join("\n");
        assert!(lost.is_empty(), "tile {tile}: seconds without a flash {lost:?}; the transcoder's warnings and chunks:\n{}", warnings());
        let black = fleet_tests::media::black_seconds(&path, tile, 30.0);
        assert!(black < 0.1, "tile {tile}: {black} s black");
    }
    eprintln!("redundant, progressive: {} of {count} chunks done while recording, MP4 {duration:.2} s, nothing lost", done_while_recording.len());
}

/// A redundant job on a one-recorder fleet records with one capture; the second waits for a node of
/// its own (past JetStream's delivery limit) and starts when one joins.
#[tokio::test(flavor = "multi_thread")]
async fn a_redundant_capture_waits_for_a_second_recorder() {
    let setup = Setup::local();
    let api = &setup.api;
    let _recorder_a = setup.fleet.recorder("rec-a", "recorder-only", 2);
    let _transcoder = setup.fleet.transcoder("tx");
    let id = api.start(r#"{"room":"r","source":{"type":"test","participants":1},"redundancy":2}"#).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    // Longer than 20 offers 2 s apart: the record queue's max_deliver would have dropped it by now.
    tokio::time::sleep(Duration::from_secs(45)).await;
    let record = api.get(&id).await;
    assert_eq!(record["sessions"].as_array().unwrap().len(), 1, "one node, one capture: {record:#}");
    let _recorder_b = setup.fleet.recorder("rec-b", "recorder-only", 1);
    let both = |r: &Value| r["sessions"].as_array().unwrap().iter().filter(|s| s["writing"] == true && s["ended_at_ms"].is_null()).count() == 2;
    let record = wait_for(api, &id, Duration::from_secs(20), both).await;
    assert_eq!(record["sessions"][1]["node"], "rec-b", "{record:#}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(120)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
}
