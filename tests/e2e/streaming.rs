//! Live streaming (issue 16): a recorder composites a devroom room live and pushes it to real RTMP
//! servers (nginx with its RTMP module); the tests pull the streams back with ffprobe/ffmpeg.

use fleet_tests::Setup;
use fleet_tests::devroom::Devroom;
use fleet_tests::media::decode_errors;
use fleet_tests::rtmp::{RtmpServer, capture_stream, probe_stream};
use serde_json::Value;
use std::time::{Duration, Instant};

const ROOM: &str = r#"
[[rooms]]
name = "live"
close_after_s = 90

[[rooms.participants]]
identity = "alice"
video_codec = "vp8"
speaking = [[1, 60]]

[[rooms.participants]]
identity = "bob"
video_codec = "h264"
"#;

/// Each test here runs a live composite (decode, composite and encode at 720p): on 2 cores two of them
/// side by side starve each other, so they run one at a time and each measures only itself.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

fn stream<'a>(record: &'a Value, id: &str) -> &'a Value {
    record["streams"].as_array().and_then(|s| s.iter().find(|s| s["id"] == id)).unwrap_or_else(|| panic!("no stream {id} in {record:#}"))
}

async fn wait_for_stream(setup: &Setup, job: &str, id: &str, what: &str, ok: impl Fn(&Value) -> bool, timeout: Duration) -> Value {
    fleet_tests::wait::until(&format!("stream {id} {what}"), timeout, || async {
        let record = setup.api.get(job).await;
        if ok(stream(&record, id)) { Ok(record) } else { Err(format!("{:#}", record["streams"])) }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_room_streams_live_to_two_servers_survives_a_restart_and_loses_one_url() {
    let _one_at_a_time = one_at_a_time().await;
    let mut setup = Setup::local();
    let devroom = Devroom::start(setup.dir.path(), ROOM);
    let mut nginx = RtmpServer::start(setup.dir.path());
    setup.fleet.recorder_extra = devroom.recorder_toml(60);
    let _recorder = setup.fleet.recorder("rec-1", "both", 2);

    let (one, two) = (nginx.url("live", "one-secret-key"), nginx.url("live", "two-secret-key"));
    let body = format!(r#"{{"room":"live","outputs":{{"rtmp":["{one}","{two}"]}}}}"#);
    let reply = setup.api.send("POST", "/v1/recordings", Some(fleet_tests::API_KEY), Some(&body)).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(!reply.body.to_string().contains("secret-key"), "stream keys never come back: {}", reply.body);
    let job = reply.body["id"].as_str().unwrap().to_string();

    let record = wait_for_stream(&setup, &job, "rtmp1", "live", |s| s["state"] == "live", Duration::from_secs(60)).await;
    assert_eq!(stream(&record, "rtmp1")["url"], format!("rtmp://127.0.0.1:{}/live/…", nginx.port));
    let probed = probe_stream(&one, Duration::from_secs(15)).expect("the stream plays");
    println!("pulled: {probed:?}");
    assert!(probed.contains(&("h264".into(), 1280, 720)), "{probed:?}");
    assert!(probed.iter().any(|(codec, ..)| codec == "aac"), "{probed:?}");

    // A few seconds as a viewer gets them: every frame decodes, and it keeps real time.
    let captured = setup.dir.path().join("pulled.flv");
    let started = Instant::now();
    capture_stream(&one, 6, &captured).unwrap();
    let took = started.elapsed().as_secs_f64();
    let errors = decode_errors(&captured);
    assert!(errors.is_empty(), "the pulled stream decodes cleanly: {errors}");
    let probe = fleet_tests::media::ffprobe(&captured);
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    println!("pulled {duration:.2} s of stream in {took:.2} s");
    assert!(duration >= 5.5, "{probe:#}");
    assert!(took < 6.0 + 4.0, "6 s of stream arrived within {took:.1} s: the stream keeps real time");

    // One URL removed while live: that stream ends at the server, the other goes on.
    let removed = setup.api.send("DELETE", &format!("/v1/recordings/{job}/streams/rtmp2"), Some(fleet_tests::API_KEY), None).await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(stream(&removed.body, "rtmp2")["state"], "removed");
    fleet_tests::wait::until("the removed stream gone from the server", Duration::from_secs(15), || async {
        match probe_stream(&two, Duration::from_secs(4)) {
            Err(_) => Ok(()),
            Ok(streams) => Err(format!("still playing: {streams:?}")),
        }
    })
    .await;
    probe_stream(&one, Duration::from_secs(15)).expect("the other stream still plays");

    // The server goes away for 5 s: the stream comes back and the job says it retried.
    nginx.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let restarted = Instant::now();
    nginx.restart();
    let record =
        wait_for_stream(&setup, &job, "rtmp1", "live again", |s| s["state"] == "live" && s["retries"].as_u64() >= Some(1), Duration::from_secs(30))
            .await;
    let back = restarted.elapsed().as_secs_f64();
    let rtmp1 = stream(&record, "rtmp1");
    println!("live again {back:.1} s after the server restarted: {rtmp1}");
    assert!(rtmp1["last_error"].as_str().is_some_and(|e| !e.is_empty()), "the drop's reason is kept: {rtmp1}");
    probe_stream(&one, Duration::from_secs(15)).expect("the stream plays again after the restart");

    // Adding a URL while live.
    let three = nginx.url("live", "three");
    let added =
        setup.api.send("POST", &format!("/v1/recordings/{job}/streams"), Some(fleet_tests::API_KEY), Some(&format!(r#"{{"url":"{three}"}}"#))).await;
    assert_eq!(added.status, 201, "{}", added.body);
    wait_for_stream(&setup, &job, "rtmp3", "live", |s| s["state"] == "live", Duration::from_secs(30)).await;
    probe_stream(&three, Duration::from_secs(15)).expect("the added stream plays");

    // The recording from the same capture is complete, and the streams ended with it.
    setup.api.stop(&job).await;
    let record = setup.api.wait_for_state(&job, &["complete", "failed"], Duration::from_secs(180)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    assert_eq!(stream(&record, "rtmp1")["state"], "ended");
    assert_eq!(stream(&record, "rtmp2")["state"], "removed");
    let (mp4, _) = setup.read_output(&record);
    assert!(mp4.len() > 100_000, "the recording was written beside the streams");
}

const SYNC_ROOM: &str = r#"
[[rooms]]
name = "live-sync"
close_after_s = 120

[[rooms.participants]]
identity = "p1"

[[rooms.participants]]
identity = "p2"
video_codec = "h264"
"#;

/// A minute of the stream as a viewer pulls it: each participant's flash and beep, sent together by
/// devroom, arrive together, and every second's markers are there.
#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_minute_is_in_sync() {
    let _one_at_a_time = one_at_a_time().await;
    let mut setup = Setup::local();
    let devroom = Devroom::start(setup.dir.path(), SYNC_ROOM);
    let nginx = RtmpServer::start(setup.dir.path());
    setup.fleet.recorder_extra = devroom.recorder_toml(60);
    let _recorder = setup.fleet.recorder("rec-1", "both", 2);
    let url = nginx.url("live", "sync");
    let job = setup.api.start(&format!(r#"{{"room":"live-sync","outputs":{{"file":false,"rtmp":["{url}"]}}}}"#)).await;
    wait_for_stream(&setup, &job, "rtmp1", "live", |s| s["state"] == "live", Duration::from_secs(60)).await;
    let pulled = setup.dir.path().join("minute.flv");
    capture_stream(&url, 60, &pulled).unwrap();
    let duration: f64 = fleet_tests::media::ffprobe(&pulled)["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!(duration >= 59.0, "{duration} s pulled");
    // Two 16:9 cameras side by side in a 1280x720 grid: each 640x360, letterboxed in its 640x720 half.
    let tiles = ["640:360:0:180", "640:360:640:180"].map(String::from);
    let report = fleet_tests::sync::check_paired(&pulled, &tiles, 30.0, 1.0, duration - 1.0);
    let mut summary = serde_json::to_value(&report).unwrap();
    summary["offsets_ms"] = serde_json::json!(report.offsets_ms.len());
    println!("streamed minute sync report: {summary}");
    assert!(report.found_ratio >= 0.95, "markers found: {summary}");
    assert!(report.p95_abs_offset_ms <= 45.0, "A/V offset: {summary}");
    assert!(report.max_cadence_drift_ms <= 40.0, "cadence drift: {summary}");
    setup.api.stop(&job).await;
    let record = setup.api.wait_for_state(&job, &["complete", "failed"], Duration::from_secs(60)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
}

const LOOK_ROOM: &str = r#"
[[rooms]]
name = "live-look"
close_after_s = 22

[[rooms.participants]]
identity = "alice"
video_codec = "vp8"
speaking = [[2, 10]]

[[rooms.participants]]
identity = "bob"
video_codec = "h264"
speaking = [[12, 20]]

[[rooms.participants]]
identity = "carol"
video_codec = "vp8"
mute_camera = [[0, 11]]
"#;

/// What viewers of a stream see: the recorder's live composite (written as HLS here, to read frames
/// back at known room times) in the node's and the job's branding: background, 16 px gaps, logo,
/// title; carol's placeholder while her camera is off, her camera after; the speaker outlined.
#[tokio::test(flavor = "multi_thread")]
async fn a_live_composite_shows_the_brand_placeholders_and_the_speaker() {
    let _one_at_a_time = one_at_a_time().await;
    use fleet_tests::frames::{classify_outline, patch, text_columns, who};
    let mut setup = Setup::local();
    let devroom = Devroom::start(setup.dir.path(), LOOK_ROOM);
    setup.fleet.recorder_extra = devroom.recorder_toml(60);
    // The node's logo (its `[transcoder]` look is the live composite's too): magenta, top right.
    let logo = setup.dir.path().join("logo.png");
    let made = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "color=c=0xff00ff:s=320x160", "-frames:v", "1"])
        .arg(&logo)
        .status()
        .unwrap();
    assert!(made.success());
    setup.fleet.transcoder_extra = format!("[transcoder.logos.fleet]\nfile = \"{}\"\ncorner = \"top_right\"\n", logo.display());
    let _recorder = setup.fleet.recorder("rec-1", "both", 1);
    let branding = r##"{"title":"Quarterly review","background":"#203040","logo":"fleet","tile_gap":16}"##;
    let job = setup.api.start(&format!(r#"{{"room":"live-look","branding":{branding},"outputs":{{"file":false,"hls":{{"segment_s":2}}}}}}"#)).await;
    setup.api.wait_for_state(&job, &["recording"], Duration::from_secs(30)).await;
    let created_ms = devroom.room_state("live-look").await.expect("room open")["created_ms"].as_f64().unwrap();
    let record = setup.api.wait_for_state(&job, &["complete", "failed"], Duration::from_secs(90)).await;
    assert_eq!(record["state"], "complete", "the room closing ends the stream-only job: {record:#}");
    let text = std::fs::read_to_string(setup.root.join(format!("recordings/{job}/raw/s1/timeline.jsonl"))).unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let wall_zero_ms = first["wall_ms"].as_f64().unwrap() - first["running_ns"].as_f64().unwrap() / 1e6;
    // The HLS starts with the session: room time t is at t + opened_s in it.
    let opened_s = (created_ms - wall_zero_ms) / 1000.0;
    let hls = setup.root.join(format!("recordings/{job}/hls/playlist.m3u8"));
    let errors = decode_errors(&hls);
    assert!(errors.is_empty(), "{errors}");

    let mut wrong = Vec::new();
    let mut verify = |what: &str, seen: String, expected: &str| {
        println!("{what}: {seen}");
        if seen != expected {
            wrong.push(format!("{what}: expected {expected}, saw {seen}"));
        }
    };
    let at = |t: f64| t + opened_s;
    let colour = |t: f64, point: (i32, i32), size: i32| {
        let rgb = patch(&hls, at(t), point, size);
        let near = |expected: [f64; 3]| rgb.iter().zip(expected).all(|(a, b)| (a - b).abs() < 24.0);
        if near([32.0, 48.0, 64.0]) {
            "background".to_string()
        } else if near([255.0, 0.0, 255.0]) {
            "logo".to_string()
        } else {
            format!("{rgb:?}")
        }
    };
    let outlined = |t: f64, point: (i32, i32)| {
        let seen = who(&hls, at(t), point, 4);
        if classify_outline(&seen) { "outline".to_string() } else { seen }
    };
    // A 2x2 grid: alice, bob / carol, (empty); tiles 624x344 with 8 px margins, cameras letterboxed in them.
    for t in [6.0, 16.0] {
        verify(&format!("{t} s gap between alice and bob"), colour(t, (640, 180), 4), "background");
        verify(&format!("{t} s gap above carol"), colour(t, (320, 360), 4), "background");
        verify(&format!("{t} s the empty slot"), colour(t, (960, 540), 16), "background");
        verify(&format!("{t} s the logo"), colour(t, (1176, 64), 16), "logo");
    }
    let title = text_columns(&hls, at(6.0), (440, 0), (400, 48));
    verify("6 s the title at the top centre", format!("{}", title.is_some_and(|(first, last)| last - first > 100)), "true");
    verify("6 s carol (camera off)", who(&hls, at(6.0), (120, 420), 24), "placeholder");
    verify("16 s carol (camera on)", who(&hls, at(16.0), (120, 420), 24), "carol");
    verify("6 s alice's right edge (she speaks)", outlined(6.0, (632, 180)), "outline");
    let not_outlined = |t: f64, point: (i32, i32)| if outlined(t, point) == "outline" { "outline" } else { "no outline" }.to_string();
    verify("6 s bob's left edge (silent)", not_outlined(6.0, (648, 180)), "no outline");
    verify("16 s bob's left edge (he speaks)", outlined(16.0, (648, 180)), "outline");
    verify("16 s alice's right edge (silent)", not_outlined(16.0, (632, 180)), "no outline");
    assert!(wrong.is_empty(), "{wrong:#?}");
}

/// The playlist's segment names (`#EXTINF` then the name), and whether it is closed (`#EXT-X-ENDLIST`).
fn playlist_segments(text: &str) -> (Vec<String>, bool) {
    let names = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(str::to_string).collect();
    (names, text.contains("#EXT-X-ENDLIST"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_room_is_written_as_live_hls_and_snapshots_beside_its_recording() {
    let _one_at_a_time = one_at_a_time().await;
    let mut setup = Setup::local();
    let devroom = Devroom::start(setup.dir.path(), ROOM);
    setup.fleet.recorder_extra = devroom.recorder_toml(60);
    let _recorder = setup.fleet.recorder("rec-1", "both", 2);
    let key = Some(fleet_tests::API_KEY);
    for (body, says) in [
        (r#"{"room":"live","outputs":{"hls":{"segment_s":0}}}"#, "segment_s"),
        (r#"{"room":"live","outputs":{"images":{"interval_s":0}}}"#, "interval_s"),
        (r#"{"room":"live","audio_only":true,"outputs":{"hls":{}}}"#, "audio_only"),
        (r#"{"room":"live","outputs":{"hls":{"segments":3}}}"#, "unknown field"),
    ] {
        let reply = setup.api.send("POST", "/v1/recordings", key, Some(body)).await;
        assert!((400..500).contains(&reply.status), "{body}: {} {}", reply.status, reply.body);
        assert!(reply.body.to_string().contains(says), "{body}: {}", reply.body);
    }

    // A logo this node does not have: drawn without it, and the job says so.
    let body =
        r#"{"room":"live","branding":{"logo":"absent"},"outputs":{"hls":{"segment_s":2,"live_window":3},"images":{"interval_s":2,"width":320}}}"#;
    let job = setup.api.start(body).await;
    let dir = setup.root.join(format!("recordings/{job}"));

    // While live: the live playlist lists the last three segments, each already in storage.
    let record = fleet_tests::wait::until("four HLS segments", Duration::from_secs(60), || async {
        let record = setup.api.get(&job).await;
        if record["hls"]["segments"].as_u64() >= Some(4) { Ok(record) } else { Err(format!("{:#}", record["hls"])) }
    })
    .await;
    assert_eq!(record["hls"]["live_playlist"], format!("{job}/hls/live.m3u8"));
    let live = std::fs::read_to_string(dir.join("hls/live.m3u8")).expect("the live playlist is stored");
    let (names, closed) = playlist_segments(&live);
    assert_eq!(names.len(), 3, "{live}");
    assert!(!closed, "a live playlist stays open: {live}");
    for name in &names {
        assert!(dir.join("hls").join(name).is_file(), "{name} listed before it was stored: {live}");
    }
    let first = dir.join("hls/00001.ts");
    let probed = fleet_tests::media::ffprobe(&first);
    let codecs: Vec<&str> = probed["streams"].as_array().unwrap().iter().filter_map(|s| s["codec_name"].as_str()).collect();
    assert!(codecs.contains(&"h264") && codecs.contains(&"aac"), "{probed:#}");
    tokio::time::sleep(Duration::from_secs(4)).await;

    setup.api.stop(&job).await;
    let record = setup.api.wait_for_state(&job, &["complete", "failed"], Duration::from_secs(180)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    let hls = &record["hls"];
    println!("hls: {hls:#}\nimages: {:#}", record["images"]);
    assert!(hls["ended_at_ms"].as_u64().is_some(), "{hls:#}");
    let warnings = record["warnings"].to_string();
    assert!(warnings.contains("live composite: logo \\\"absent\\\" is not configured on this node"), "{warnings}");

    // Every segment stored, the playlist closed, and the whole of it plays as one stream.
    let playlist = dir.join("hls/playlist.m3u8");
    let (names, closed) = playlist_segments(&std::fs::read_to_string(&playlist).unwrap());
    assert!(closed, "the playlist ends with the capture");
    assert_eq!(names.len() as u64, hls["segments"].as_u64().unwrap(), "{names:?}");
    assert!(names.len() >= 6, "{names:?}");
    let bytes: u64 = names.iter().map(|n| std::fs::metadata(dir.join("hls").join(n)).expect("stored").len()).sum();
    assert_eq!(bytes, hls["bytes"].as_u64().unwrap());
    let errors = decode_errors(&playlist);
    assert!(errors.is_empty(), "the HLS decodes cleanly: {errors}");
    let probe = fleet_tests::media::ffprobe(&playlist);
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    let listed = hls["duration_ms"].as_f64().unwrap() / 1000.0;
    println!("HLS: {} segments, {duration:.2} s probed, {listed:.2} s listed", names.len());
    assert!((duration - listed).abs() < 1.0, "probed {duration} s, the playlist lists {listed} s");

    // A snapshot every 2 s, 320 wide at the composite's shape.
    let images = &record["images"];
    let count = images["count"].as_u64().unwrap();
    assert!(count as f64 >= listed / 2.0 - 1.0, "{count} snapshots over {listed} s");
    for index in 1..=count {
        let image = dir.join(format!("images/{index:05}.jpg"));
        let probed = fleet_tests::media::ffprobe(&image);
        let stream = &probed["streams"][0];
        assert_eq!(
            (stream["codec_name"].as_str(), stream["width"].as_u64(), stream["height"].as_u64()),
            (Some("mjpeg"), Some(320), Some(180)),
            "{image:?}"
        );
    }

    // Spooled copies go once stored; the recording from the same capture is there too.
    let spooled: Vec<_> =
        walk(&setup.dir.path().join("spool-rec-1")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "ts" || e == "jpg")).collect();
    assert!(spooled.is_empty(), "left in the spool: {spooled:?}");
    let (mp4, _) = setup.read_output(&record);
    assert!(mp4.len() > 100_000);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries.flatten().flat_map(|e| if e.path().is_dir() { walk(&e.path()) } else { vec![e.path()] }).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_url_that_never_works_fails_fast_with_the_reason_and_bad_requests_are_refused() {
    let _one_at_a_time = one_at_a_time().await;
    let mut setup = Setup::local();
    let devroom = Devroom::start(setup.dir.path(), ROOM);
    let nginx = RtmpServer::start(setup.dir.path());
    setup.fleet.recorder_extra = devroom.recorder_toml(60);
    let _recorder = setup.fleet.recorder("rec-1", "both", 3);
    let key = Some(fleet_tests::API_KEY);

    for (body, says) in [
        (r#"{"room":"live","outputs":{"rtmp":["http://x/live/k"]}}"#, "rtmp://"),
        (r#"{"room":"live","outputs":{"file":false}}"#, "must stream"),
        (r#"{"room":"live","source":{"type":"test"},"outputs":{"rtmp":["rtmp://h/live/k"]}}"#, "livekit source"),
    ] {
        let reply = setup.api.send("POST", "/v1/recordings", key, Some(body)).await;
        assert!((400..500).contains(&reply.status), "{body}: {} {}", reply.status, reply.body);
        assert!(reply.body.to_string().contains(says), "{body}: {}", reply.body);
    }

    // nginx has no application `nope`: it closes the connection, every time.
    let body = format!(r#"{{"room":"live","outputs":{{"file":false,"rtmp":["{}"]}}}}"#, nginx.url("nope", "k"));
    let job = setup.api.start(&body).await;
    let started = Instant::now();
    let record = wait_for_stream(&setup, &job, "rtmp1", "failed", |s| s["state"] == "failed", Duration::from_secs(60)).await;
    let rtmp1 = stream(&record, "rtmp1");
    println!("failed after {:.1} s: {rtmp1}", started.elapsed().as_secs_f64());
    assert!(rtmp1["last_error"].as_str().unwrap_or("").contains("connect"), "{rtmp1}");

    // Streams change only on a streaming job that captures.
    let plain = setup.api.start(r#"{"room":"live"}"#).await;
    let url = r#"{"url":"rtmp://127.0.0.1:1/live/x"}"#;
    let refused = setup.api.send("POST", &format!("/v1/recordings/{plain}/streams"), key, Some(url)).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    setup.api.stop(&plain).await;

    // A stream-only job with no stream left has nothing to do: this one failed, so the job did.
    let record = setup.api.wait_for_state(&job, &["complete", "failed"], Duration::from_secs(60)).await;
    assert_eq!(record["state"], "failed", "{record:#}");
    assert!(record["error"].as_str().unwrap_or("").contains("every stream output failed"), "{record:#}");

    // One whose last stream is removed ends complete, without a transcode.
    let body = format!(r#"{{"room":"live","outputs":{{"file":false,"rtmp":["{}"]}}}}"#, nginx.url("live", "solo"));
    let solo = setup.api.start(&body).await;
    wait_for_stream(&setup, &solo, "rtmp1", "live", |s| s["state"] == "live", Duration::from_secs(60)).await;
    let unknown = setup.api.send("DELETE", &format!("/v1/recordings/{solo}/streams/rtmp7"), key, None).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    let removed = setup.api.send("DELETE", &format!("/v1/recordings/{solo}/streams/rtmp1"), key, None).await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    let record = setup.api.wait_for_state(&solo, &["complete", "failed"], Duration::from_secs(60)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    assert_eq!(record["end_reason"], "streams_ended", "{record:#}");
    assert!(record["output"].is_null(), "no file: {record:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn livekit_egress_clients_stream_and_update_streams() {
    let _one_at_a_time = one_at_a_time().await;
    use fleet_tests::devroom::{LIVEKIT_API_KEY, LIVEKIT_API_SECRET};
    use livekit_api::services::egress::{EgressClient, EgressListFilter, EgressListOptions, EgressOutput, RoomCompositeOptions};
    use livekit_protocol as lk;
    let dir = tempfile::tempdir().unwrap();
    let nats = fleet_tests::Nats::start(dir.path());
    let devroom = Devroom::start(dir.path(), ROOM);
    let nginx = RtmpServer::start(dir.path());
    let mut fleet = fleet_tests::Fleet::new(dir.path(), &nats, fleet_tests::StorageSetup::Local(dir.path().join("storage")));
    fleet.recorder_extra = devroom.recorder_toml(60);
    fleet.controller_extra = format!("[controller.egress]\nenabled = true\napi_key = \"{LIVEKIT_API_KEY}\"\napi_secret = \"{LIVEKIT_API_SECRET}\"\n");
    let port = fleet_tests::procs::free_port();
    let _controller = fleet.controller(port);
    let _recorder = fleet.recorder("rec-1", "both", 2);
    let client = EgressClient::with_api_key(&format!("http://127.0.0.1:{port}"), LIVEKIT_API_KEY, LIVEKIT_API_SECRET);

    // Stream only (no file), as LiveKit's SDK asks for it.
    let (first, second) = (nginx.url("live", "egress-a"), nginx.url("live", "egress-b"));
    let output = lk::StreamOutput { protocol: lk::StreamProtocol::Rtmp as i32, urls: vec![first.clone()] };
    let started =
        client.start_room_composite_egress("live", vec![EgressOutput::Stream(output)], RoomCompositeOptions::default()).await.expect("started");
    let id = started.egress_id.clone();
    let info_of = |id: String| {
        let client = &client;
        async move {
            let options = EgressListOptions { filter: EgressListFilter::Egress(id.clone()), ..Default::default() };
            client.list_egress(options).await.expect("listed").into_iter().find(|i| i.egress_id == id).expect("listed")
        }
    };
    let info = fleet_tests::wait::until("the egress streaming", Duration::from_secs(60), || async {
        let info = info_of(id.clone()).await;
        if info.status == lk::EgressStatus::EgressActive as i32 && info.stream_results.first().is_some_and(|s| s.started_at > 0) {
            Ok(info)
        } else {
            Err(format!("{info:?}"))
        }
    })
    .await;
    assert_eq!(info.stream_results[0].url, format!("rtmp://127.0.0.1:{}/live/…", nginx.port), "the key is hidden");
    probe_stream(&first, Duration::from_secs(15)).expect("the egress stream plays");

    // UpdateStream: one URL in, the first out.
    let updated = client.update_stream(&id, vec![second.clone()], vec![first.clone()]).await.expect("UpdateStream");
    assert_eq!(updated.stream_results.len(), 2, "{updated:?}");
    assert_eq!(updated.stream_results[0].status, lk::stream_info::Status::Finished as i32);
    fleet_tests::wait::until("the added URL streaming", Duration::from_secs(30), || async {
        let info = info_of(id.clone()).await;
        if info.stream_results[1].started_at > 0 { Ok(()) } else { Err(format!("{info:?}")) }
    })
    .await;
    probe_stream(&second, Duration::from_secs(15)).expect("the added stream plays");
    let unknown = client.update_stream(&id, vec![], vec![nginx.url("live", "never")]).await;
    assert!(unknown.is_err(), "removing a URL the egress does not stream to is refused");

    let stopped = client.stop_egress(&id).await.expect("StopEgress");
    assert_eq!(stopped.status, lk::EgressStatus::EgressEnding as i32);
    let done = fleet_tests::wait::until("the egress complete", Duration::from_secs(60), || async {
        let info = info_of(id.clone()).await;
        if info.status == lk::EgressStatus::EgressComplete as i32 { Ok(info) } else { Err(format!("{info:?}")) }
    })
    .await;
    assert!(done.file_results.is_empty(), "no file was asked for");
    assert!(done.stream_results.iter().all(|s| s.status == lk::stream_info::Status::Finished as i32 && s.ended_at > 0), "{done:?}");

    // Segment (HLS) and image outputs, and their results.
    let segments = lk::SegmentedFileOutput { segment_duration: 2, ..Default::default() };
    let images = lk::ImageOutput { capture_interval: 2, width: 320, height: 180, ..Default::default() };
    let outputs = vec![EgressOutput::Segments(segments), EgressOutput::Image(images)];
    let started = client.start_room_composite_egress("live", outputs, RoomCompositeOptions::default()).await.expect("started");
    let id = started.egress_id.clone();
    fleet_tests::wait::until("two segments and two images", Duration::from_secs(60), || async {
        let info = info_of(id.clone()).await;
        let segments = info.segment_results.first().map_or(0, |s| s.segment_count);
        let images = info.image_results.first().map_or(0, |s| s.image_count);
        if segments >= 2 && images >= 2 { Ok(()) } else { Err(format!("{info:?}")) }
    })
    .await;
    client.stop_egress(&id).await.expect("StopEgress");
    let done = fleet_tests::wait::until("the segment egress complete", Duration::from_secs(60), || async {
        let info = info_of(id.clone()).await;
        if info.status == lk::EgressStatus::EgressComplete as i32 { Ok(info) } else { Err(format!("{info:?}")) }
    })
    .await;
    let hls = &done.segment_results[0];
    println!("segment results: {hls:?}\nimage results: {:?}", done.image_results);
    assert_eq!(hls.playlist_name, format!("{id}/hls/playlist.m3u8"));
    assert!(hls.ended_at > hls.started_at && hls.duration > 0 && hls.size > 0, "{hls:?}");
    let playlist = std::fs::read_to_string(dir.path().join("storage/recordings").join(&hls.playlist_name)).expect("stored");
    assert_eq!(playlist.matches("#EXTINF").count() as i64, hls.segment_count);
    assert!(done.image_results[0].image_count >= 2 && done.image_results[0].ended_at > 0, "{done:?}");
}
