//! The backbone end to end (issue: fleet backbone): controller API → JetStream → recorder → storage →
//! transcoder → MP4, against real nats-server, a real S3 server and real GStreamer pipelines.

use fleet_tests::api::Api;
use fleet_tests::media::{decode_errors, ffprobe, moov_before_mdat, stream};
use fleet_tests::webhook::Receiver;
use fleet_tests::{API_KEY, S3, Setup, StorageSetup, WEBHOOK_SECRET};
use serde_json::{Value, json};
use sha2::Digest;
use std::path::Path;
use std::time::Duration;

const RECORD_FOR: Duration = Duration::from_secs(6);
const FINISH_TIMEOUT: Duration = Duration::from_secs(90);

fn test_room(participants: u32) -> String {
    format!(r#"{{"room":"room-a","source":{{"type":"test","participants":{participants}}}}}"#)
}

/// Starts a recording, lets it run, stops it, and waits until it is complete. Returns the record.
async fn record_and_finish(api: &Api, body: &str) -> Value {
    let id = api.start(body).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    tokio::time::sleep(RECORD_FOR).await;
    let stop = api.stop(&id).await;
    assert_eq!(stop.status, 202, "{}", stop.body);
    api.wait_for_state(&id, &["complete"], FINISH_TIMEOUT).await
}

/// Checks an MP4 against the product's promises and its manifest.
fn check_recording(record: &Value, mp4: &[u8], manifest: &Value, dir: &Path) {
    let path = dir.join(format!("{}.mp4", record["id"].as_str().unwrap()));
    std::fs::write(&path, mp4).unwrap();
    let probe = ffprobe(&path);
    let video = stream(&probe, "video");
    assert_eq!(video["codec_name"], "h264");
    assert_eq!(video["profile"], "High");
    assert_eq!(video["pix_fmt"], "yuv420p");
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(1280), Some(720)));
    let audio = stream(&probe, "audio");
    assert_eq!(audio["codec_name"], "aac");
    assert_eq!(audio["profile"], "LC");
    assert_eq!(audio["sample_rate"], "48000");
    assert_eq!(audio["channels"], 2);
    assert!(moov_before_mdat(mp4), "moov must come before mdat (faststart)");
    assert_eq!(decode_errors(&path), "", "the MP4 must decode cleanly");

    let session = &record["sessions"][0];
    let recorded_s = (session["ended_at_ms"].as_u64().unwrap() - session["started_at_ms"].as_u64().unwrap()) as f64 / 1000.0;
    let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!((duration - recorded_s).abs() <= 0.5, "MP4 lasts {duration} s, recorded {recorded_s} s");
    assert!(recorded_s >= RECORD_FOR.as_secs_f64() - 0.5, "recorded only {recorded_s} s");

    let output = &record["output"];
    let sha = hex::encode(sha2::Sha256::digest(mp4));
    assert_eq!(output["sha256"], sha);
    assert_eq!(output["size_bytes"].as_u64(), Some(mp4.len() as u64));
    assert_eq!(manifest["output"]["sha256"], sha);
    assert_eq!(manifest["output"]["size_bytes"].as_u64(), Some(mp4.len() as u64));
    let manifest_duration = manifest["output"]["duration_s"].as_f64().unwrap();
    assert!((manifest_duration - duration).abs() < 0.05, "manifest says {manifest_duration} s, ffprobe {duration} s");
    assert_eq!(manifest["faststart"], true);
    assert_eq!(manifest["output"]["video_codec"], "h264");
    assert_eq!(manifest["output"]["audio_codec"], "aac");
}

#[tokio::test(flavor = "multi_thread")]
async fn recording_lands_in_s3_with_signed_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(dir.path());
    let setup = Setup::with_storage(dir, StorageSetup::S3 { endpoint: s3.endpoint(), ca_file: None }, Default::default());
    let _recorder = setup.fleet.recorder("rec-a", "both", 2);
    let api = &setup.api;
    let hooks = Receiver::start(WEBHOOK_SECRET).await;

    let body =
        format!(r#"{{"room":"room-a","source":{{"type":"test","participants":2}},"webhook_url":"{}","metadata":{{"course":"math"}}}}"#, hooks.url());
    let record = record_and_finish(api, &body).await;
    api.assert_documented("JobRecord", &record).await;
    let id = record["id"].as_str().unwrap();
    assert_eq!(record["end_reason"], "api_stop");
    assert_eq!(record["output"]["key"], format!("{id}/{id}.mp4"));
    let mp4 = s3.get(&format!("recordings/{id}/{id}.mp4")).await;
    let manifest: Value = serde_json::from_slice(&s3.get(&format!("recordings/{id}/manifest.json")).await).unwrap();
    assert_eq!(manifest["metadata"]["course"], "math");
    check_recording(&record, &mp4, &manifest, setup.dir.path());
    // A link to the MP4 is the store's own presigned URL: it opens the file without credentials, and
    // nothing opens it without the signature.
    let link = api.send("GET", &format!("/v1/recordings/{id}/media/mp4"), Some(API_KEY), None).await;
    assert_eq!(link.status, 200, "{}", link.body);
    api.assert_documented("Link", &link.body).await;
    let url = link.body["url"].as_str().unwrap();
    assert!(url.starts_with(&s3.endpoint()) && url.contains("X-Amz-Signature="), "{url}");
    let fetched = reqwest::get(url).await.unwrap();
    assert_eq!(fetched.status(), 200);
    assert!(fetched.bytes().await.unwrap() == mp4, "the presigned URL gave other bytes than the MP4");
    let unsigned = reqwest::get(url.split('?').next().unwrap()).await.unwrap();
    assert_eq!(unsigned.status(), 403, "the MP4 without a signature");
    // Raw segments and the timeline stay next to the recording.
    let timeline = String::from_utf8(s3.get(&format!("recordings/{id}/raw/s1/timeline.jsonl")).await).unwrap();
    assert!(timeline.lines().any(|l| l.contains("\"segment_closed\"")), "{timeline}");

    // Webhooks: every state, in order, each signed.
    let wanted = ["queued", "starting", "recording", "finalizing", "transcoding", "complete"];
    let events = fleet_tests::wait::until("a webhook for every state", Duration::from_secs(20), || async {
        let events: Vec<String> = hooks.events_for(id).iter().map(|d| d.body["state"].as_str().unwrap_or("").to_string()).collect();
        if events.len() >= wanted.len() { Ok(events) } else { Err(format!("{events:?}")) }
    })
    .await;
    assert_eq!(events, wanted);
    for delivery in hooks.events_for(id) {
        assert!(delivery.signature_ok, "bad signature on {}", delivery.event);
        assert_eq!(delivery.event, format!("recording.{}", delivery.body["state"].as_str().unwrap()));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn recording_lands_in_local_storage() {
    let setup = Setup::local();
    let _recorder = setup.fleet.recorder("rec-a", "both", 2);
    let record = record_and_finish(&setup.api, &test_room(3)).await;
    let id = record["id"].as_str().unwrap();
    let (mp4, manifest) = setup.read_output(&record);
    check_recording(&record, &mp4, &manifest, setup.dir.path());
    // Nothing left in the spool once uploads were confirmed.
    let spool = setup.dir.path().join("spool-rec-a").join(id);
    assert!(!spool.exists(), "spool not cleaned: {}", spool.display());
}

#[tokio::test(flavor = "multi_thread")]
async fn separate_recorder_and_transcoder_processes_give_the_same_result() {
    let setup = Setup::local();
    let _recorder = setup.fleet.recorder("rec-only", "recorder-only", 2);
    let _transcoder = setup.fleet.transcoder("tx-a");
    let api = &setup.api;

    // The registry shows both roles.
    fleet_tests::wait::until("both roles registered", Duration::from_secs(20), || async {
        let nodes = api.send("GET", "/v1/nodes", Some(API_KEY), None).await.body;
        let roles: Vec<(String, String)> = nodes["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| (n["id"].as_str().unwrap().to_string(), n["role"].as_str().unwrap().to_string()))
            .collect();
        if roles.contains(&("rec-only".into(), "recorder".into())) && roles.contains(&("tx-a".into(), "transcoder".into())) {
            let tx = nodes["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "tx-a").unwrap();
            assert!(tx["encoders"].as_array().unwrap().iter().any(|e| e == "x264enc"), "{tx}");
            api.assert_documented("NodeList", &nodes).await;
            return Ok(());
        }
        Err(nodes.to_string())
    })
    .await;

    let body = r#"{"room":"room-a","source":{"type":"test","participants":2},"audio_per_participant":true}"#;
    let record = record_and_finish(api, body).await;
    assert_eq!(record["sessions"][0]["node"], "rec-only");
    let (mp4, manifest) = setup.read_output(&record);
    check_recording(&record, &mp4, &manifest, setup.dir.path());

    // One audio file per participant, as long as the recording, holding that participant's tone only.
    let files = record["output"]["participant_audio"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{record:#}");
    assert_eq!(manifest["output"]["participant_audio"], record["output"]["participant_audio"]);
    let duration = record["output"]["duration_s"].as_f64().unwrap();
    for (index, file) in files.iter().enumerate() {
        assert_eq!(file["participant"], format!("participant-{}", index + 1));
        let path = setup.root.join("recordings").join(file["key"].as_str().unwrap());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), file["size_bytes"].as_u64().unwrap());
        assert_eq!(decode_errors(&path), "", "{} must decode cleanly", path.display());
        let probe = ffprobe(&path);
        assert_eq!(probe["streams"].as_array().unwrap().len(), 1, "audio only: {probe}");
        let own_duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
        assert!((own_duration - duration).abs() < 0.1, "{own_duration} s vs the recording's {duration} s");
        let samples = fleet_tests::sync::decode_audio(&path);
        let own = fleet_tests::sync::tone_power(&samples, fleet_pipelines::markers::tone_hz(index));
        let other = fleet_tests::sync::tone_power(&samples, fleet_pipelines::markers::tone_hz(1 - index));
        println!("{}: own tone {own:.2e}, the other's {other:.2e}", file["participant"]);
        assert!(own > 100.0 * other, "participant {index}: own tone {own:.2e}, the other's {other:.2e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_refuses_bad_requests_and_aborts_unstarted_jobs() {
    let setup = Setup::local(); // no recorder: jobs stay queued
    let api = &setup.api;
    let key = Some(API_KEY);
    let good = test_room(2);

    let expect = |reply: fleet_tests::api::Reply, status: u16| {
        assert_eq!(reply.status, status, "{}", reply.body);
        if status >= 400 {
            assert!(reply.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "no reason: {}", reply.body);
        }
    };
    let anonymous = api.send("POST", "/v1/recordings", None, Some(&good)).await;
    assert_eq!(anonymous.www_authenticate.as_deref(), Some(r#"Bearer realm="fleet""#), "a 401 names its scheme");
    expect(anonymous, 401);
    expect(api.send("POST", "/v1/recordings", Some("wrong"), Some(&good)).await, 403);
    expect(api.send("GET", "/v1/nodes", None, None).await, 401);
    expect(api.send("POST", "/v1/recordings", key, Some("{not json")).await, 400);
    expect(api.send("POST", "/v1/recordings", key, Some(r#"{"room":"r","colour":"red"}"#)).await, 422);
    expect(api.send("POST", "/v1/recordings", key, Some(r#"{"room":5}"#)).await, 422);
    expect(api.send("POST", "/v1/recordings", key, Some(r#"{"room":""}"#)).await, 422);
    expect(api.send("POST", "/v1/recordings", key, Some(r#"{"room":"r","source":{"type":"test"},"max_duration_s":99999999}"#)).await, 422);
    expect(api.send("POST", "/v1/recordings", key, Some(r#"{"room":"r","wait_for_room_s":100000}"#)).await, 422);
    expect(api.send("POST", "/v1/recordings", key, Some(r#"{"room":"r","redundancy":3}"#)).await, 422);
    expect(api.send("POST", "/v1/recordings", key, Some(r#"{"room":"r","redundancy":2,"outputs":{"rtmp":["rtmp://127.0.0.1/live/k"]}}"#)).await, 422);
    for filepath in ["../up.mp4", "{room_id}.mp4", "{date}.mp4", "rec_x/raw/a.mp4", "sp ace.mp4"] {
        let body = serde_json::json!({ "room": "r", "filepath": filepath }).to_string();
        let refused = api.send("POST", "/v1/recordings", key, Some(&body)).await;
        assert!(refused.body.to_string().contains("filepath"), "{filepath}: {:?}", refused.body);
        expect(refused, 422);
    }
    // A retried start with the same Idempotency-Key finds the job the first one made.
    let idempotent = |key: &'static str| {
        let good = good.clone();
        async move {
            let response = reqwest::Client::new()
                .post(format!("http://127.0.0.1:{}/v1/recordings", setup.port))
                .bearer_auth(API_KEY)
                .header("idempotency-key", key)
                .header("content-type", "application/json")
                .body(good)
                .send()
                .await
                .unwrap();
            let replayed = response.headers().get("idempotent-replayed").is_some();
            (response.status().as_u16(), replayed, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let (status, replayed, first) = idempotent("retry-me-1").await;
    assert_eq!((status, replayed), (201, false), "{first}");
    let (status, replayed, again) = idempotent("retry-me-1").await;
    assert_eq!((status, replayed, &again["id"]), (200, true, &first["id"]), "{again}");
    let (status, _, other) = idempotent("retry-me-2").await;
    assert!(status == 201 && other["id"] != first["id"], "{other}");
    let (status, _, refused) = idempotent("no spaces").await;
    assert_eq!(status, 400, "{refused}");
    let huge = format!(r#"{{"room":"r","metadata":{{"x":"{}"}}}}"#, "a".repeat(200_000));
    expect(api.send("POST", "/v1/recordings", key, Some(&huge)).await, 413);
    expect(api.send("GET", "/v1/recordings/..%2Fetc", key, None).await, 400);
    expect(api.send("GET", "/v1/recordings/rec_doesnotexist", key, None).await, 404);
    expect(api.send("POST", "/v1/recordings/rec_doesnotexist/stop", key, None).await, 404);
    expect(api.send("GET", "/v1/recordings?state=bogus", key, None).await, 400);
    expect(api.send("GET", "/v1/nope", key, None).await, 404);

    // Stop before any recorder picked the job: aborted; a second stop conflicts.
    let id = api.start(&good).await;
    assert_eq!(api.get(&id).await["state"], "queued");
    let stop = api.stop(&id).await;
    assert_eq!(stop.status, 200, "{}", stop.body);
    assert_eq!(stop.body["state"], "aborted");
    expect(api.stop(&id).await, 409);

    let listed = api.send("GET", "/v1/recordings?room=room-a&state=aborted", key, None).await;
    assert_eq!(listed.status, 200);
    assert!(listed.body["recordings"].as_array().unwrap().iter().any(|r| r["id"] == id.as_str()));
    let none = api.send("GET", "/v1/recordings?room=other-room", key, None).await;
    assert_eq!(none.body["recordings"].as_array().unwrap().len(), 0);
    // Pages: newest first, `next` leads to the rest, each job once.
    let paged = good.replace("room-a", "room-paged");
    let mut started = Vec::new();
    for _ in 0..3 {
        started.push(api.start(&paged).await);
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.reverse();
    let mut seen = Vec::new();
    let mut query = "/v1/recordings?room=room-paged&limit=2".to_string();
    for _ in 0..3 {
        let page = api.send("GET", &query, key, None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(page.body["recordings"].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_string()));
        let Some(next) = page.body["next"].as_str() else { break };
        query = format!("/v1/recordings?room=room-paged&limit=2&after={next}");
    }
    assert_eq!(seen, started, "pages in order, newest first");
    expect(api.send("GET", "/v1/recordings?after=nonsense", key, None).await, 400);
    // Found by the schemathesis fuzz: an over-long room filter is refused, as the document says.
    expect(api.send("GET", &format!("/v1/recordings?room={}", "r".repeat(129)), key, None).await, 400);

    // A route asked with a method it does not take: 405 with the API's error body.
    let wrong_method = api.send("DELETE", "/v1/nodes", key, None).await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.body["error"]["code"], "method_not_allowed", "{}", wrong_method.body);

    // Public endpoints.
    assert_eq!(api.send("GET", "/healthz", None, None).await.status, 200);
    assert_eq!(api.send("GET", "/readyz", None, None).await.status, 200);
    let openapi = api.send("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(openapi.body["openapi"].as_str().map(|v| v.starts_with("3.")), Some(true));
    api.assert_documented("RecordingPage", &listed.body).await;
    api.assert_documented("ErrorBody", &wrong_method.body).await;
    let metrics = api.send("GET", "/metrics", key, None).await;
    let text = metrics.body.as_str().unwrap();
    assert!(text.contains("fleet_recordings_created_total 6"), "two idempotent ones (the replay made none), one, then three to page through: {text}");
    assert!(text.contains("fleet_http_requests_total{route=\"/v1/recordings\",status=\"401\"} 1"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn third_job_waits_for_a_free_slot() {
    let setup = Setup::local();
    let _a = setup.fleet.recorder("rec-a", "recorder-only", 1);
    let _b = setup.fleet.recorder("rec-b", "recorder-only", 1);
    let api = &setup.api;

    let first = api.start(&test_room(1)).await;
    let second = api.start(&test_room(1)).await;
    api.wait_for_state(&first, &["recording"], Duration::from_secs(30)).await;
    api.wait_for_state(&second, &["recording"], Duration::from_secs(30)).await;
    let third = api.start(&test_room(1)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(api.get(&third).await["state"], "queued", "both slots are busy: the third job must wait");
    let a = api.get(&first).await["sessions"][0]["node"].as_str().unwrap().to_string();
    let b = api.get(&second).await["sessions"][0]["node"].as_str().unwrap().to_string();
    assert_ne!(a, b, "one job per recorder");

    assert_eq!(api.stop(&first).await.status, 202);
    let third_record = api.wait_for_state(&third, &["recording"], Duration::from_secs(20)).await;
    assert_eq!(third_record["sessions"][0]["node"].as_str().unwrap(), a, "the freed slot takes the waiting job");
    // No transcoder runs here: stopped jobs wait, finalized, in the transcode queue.
    api.wait_for_state(&first, &["finalizing"], Duration::from_secs(20)).await;
    for id in [&second, &third] {
        assert_eq!(api.stop(id).await.status, 202);
        api.wait_for_state(id, &["finalizing"], Duration::from_secs(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn controller_restart_mid_recording_loses_nothing() {
    let mut setup = Setup::local();
    let _recorder = setup.fleet.recorder("rec-a", "both", 2);
    let hooks = Receiver::start(WEBHOOK_SECRET).await;

    let body = format!(r#"{{"room":"room-a","source":{{"type":"test","participants":1}},"webhook_url":"{}"}}"#, hooks.url());
    let api = &setup.api;
    let id = api.start(&body).await;
    api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    setup.controller = None; // SIGKILL
    tokio::time::sleep(Duration::from_secs(3)).await;
    setup.controller = Some(setup.fleet.controller(setup.port));
    let api = &setup.api;
    let record = api.get(&id).await;
    assert_eq!(record["state"], "recording", "the recording went on without the controller");
    assert_eq!(api.stop(&id).await.status, 202);
    let record = api.wait_for_state(&id, &["complete"], FINISH_TIMEOUT).await;
    assert!(setup.root.join(format!("recordings/{id}/{id}.mp4")).exists());
    assert_eq!(record["sessions"].as_array().unwrap().len(), 1);
    // The restarted controller's durable consumer delivers every state. Delivery is at least once: a
    // controller killed between a POST and its ack sends that event again, with the same
    // X-Fleet-Delivery id, which is what receivers de-duplicate on.
    let (states, repeated) = fleet_tests::wait::until("webhooks up to complete", Duration::from_secs(20), || async {
        let deliveries = hooks.events_for(&id);
        let mut seen = std::collections::HashSet::new();
        let mut states = Vec::new();
        let mut repeated = Vec::new();
        for delivery in &deliveries {
            let state = delivery.body["state"].as_str().unwrap().to_string();
            if seen.insert(delivery.delivery_id.clone()) {
                states.push(state);
            } else {
                repeated.push(state);
            }
        }
        if states.last().map(String::as_str) == Some("complete") { Ok((states, repeated)) } else { Err(format!("{states:?}")) }
    })
    .await;
    println!("states {states:?}; redelivered after the kill: {repeated:?}");
    assert_eq!(states, ["queued", "starting", "recording", "finalizing", "transcoding", "complete"]);
    assert!(repeated.len() <= 1, "only an event in flight at the kill may come twice: {repeated:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn custom_output_preset_is_honoured() {
    let setup = Setup::local();
    let _recorder = setup.fleet.recorder("rec-a", "both", 1);
    let body = r#"{"room":"room-a","source":{"type":"test","participants":2},"video_preset":{"width":640,"height":360,"fps":25,"video_kbps":800}}"#;
    let record = record_and_finish(&setup.api, body).await;
    assert_eq!(record["request"]["video_preset"]["fps"], 25, "{record:#}");
    let (mp4, _) = setup.read_output(&record);
    let path = setup.dir.path().join("custom.mp4");
    std::fs::write(&path, &mp4).unwrap();
    let probe = ffprobe(&path);
    let video = stream(&probe, "video");
    assert_eq!((video["width"].as_u64(), video["height"].as_u64()), (Some(640), Some(360)), "{video}");
    assert_eq!(video["avg_frame_rate"], "25/1", "{video}");
    assert_eq!(video["profile"], "High");
    let kbps = video["bit_rate"].as_str().unwrap().parse::<f64>().unwrap() / 1000.0;
    assert!(kbps < 1200.0, "asked for 800 kbps, got {kbps:.0}");
    assert_eq!(decode_errors(&path), "");
}

/// `gpu` routing (issue 4): on a fleet without GPUs, a job that forbids the GPU is encoded on the CPU,
/// and a job that requires one waits in the GPU queue, untouched by the CPU-only transcoder, instead of
/// being encoded on the CPU or failed.
#[tokio::test(flavor = "multi_thread")]
async fn gpu_policy_routes_transcodes() {
    let setup = Setup::local();
    let _recorder = setup.fleet.recorder("rec-only", "recorder-only", 2);
    let _transcoder = setup.fleet.transcoder("tx-cpu");
    let api = &setup.api;

    let forbid = r#"{"room":"room-a","source":{"type":"test","participants":1},"gpu":"forbid"}"#;
    let require = r#"{"room":"room-b","source":{"type":"test","participants":1},"gpu":"require"}"#;
    let required_id = api.start(require).await;
    let forbidden = record_and_finish(api, forbid).await;
    assert_eq!(forbidden["request"]["gpu"], "forbid");
    let (_, manifest) = setup.read_output(&forbidden);
    assert_eq!(manifest["encoder"], "x264enc", "{manifest:#}");

    let stop = api.stop(&required_id).await;
    assert_eq!(stop.status, 202, "{}", stop.body);
    api.wait_for_state(&required_id, &["finalizing"], Duration::from_secs(30)).await;
    // Its transcode sits in the GPU queue; the CPU transcoder, idle, does not take it. Beside it at most
    // one progressive ask of the recording: the recorder asks again only once its last ask was taken, so
    // asks that no transcoder serves do not pile up (a recording of this length left four before).
    let nats = async_nats::connect(setup.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let mut stream = js.get_stream("FLEET_TRANSCODE").await.unwrap();
    let pending = || async {
        let mut gpu_queue = stream.get_consumer::<async_nats::jetstream::consumer::pull::Config>("transcoders-gpu").await.unwrap();
        gpu_queue.info().await.unwrap().num_pending
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    let queued = pending().await;
    assert!((1..=2).contains(&queued), "{queued} messages in the GPU queue: the transcode, and at most one ask");
    let waiting = api.get(&required_id).await;
    assert_eq!(waiting["state"], "finalizing", "a job requiring a GPU must wait for one: {waiting:#}");
    assert_eq!(waiting["transcode_attempts"], 0);
    assert!(waiting["warnings"].to_string().contains("no transcoder with one is registered"), "the wait is explained: {waiting:#}");
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.subjects, ["fleet.transcode", "fleet.transcode.gpu", "fleet.transcode.files"]);
}

/// NATS with one login per process (`controller nats-users`): a recording still goes from the API to an
/// MP4 through a recorder and a transcoder on their least-privilege users, while the recorder's login
/// is refused when it tries what only the controller may do.
#[tokio::test(flavor = "multi_thread")]
async fn per_role_nats_logins_record_and_refuse_the_rest() {
    let setup = Setup::local_with_nats_logins(&["rec-a"], &["tx-a"]);
    let _recorder = setup.fleet.recorder("rec-a", "recorder-only", 1);
    let _transcoder = setup.fleet.transcoder("tx-a");
    let record = record_and_finish(&setup.api, &test_room(1)).await;
    let (mp4, manifest) = setup.read_output(&record);
    check_recording(&record, &mp4, &manifest, setup.dir.path());

    // The recorder's own login, used for what it may not do.
    let password = std::fs::read_to_string(setup.dir.path().join("nats-users/rec-a.password")).unwrap();
    let (violations_tx, mut violations) = tokio::sync::mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::with_user_and_password("rec-a".into(), password)
        .event_callback(move |event| {
            let violations_tx = violations_tx.clone();
            async move {
                if let async_nats::Event::ServerError(err) = event {
                    let _ = violations_tx.send(err.to_string());
                }
            }
        })
        .connect(setup.nats.url())
        .await
        .unwrap();
    let mut js = async_nats::jetstream::new(client.clone());
    js.set_timeout(Duration::from_secs(2));
    let mut refused = Vec::new();
    let forged = serde_json::json!({"job_id": "rec_forged0000000000"}).to_string();
    match js.publish("fleet.record", forged.into()).await {
        Ok(ack) => refused.push(("queue a recording", ack.await.is_err())),
        Err(_) => refused.push(("queue a recording", true)),
    }
    refused.push(("delete the record stream", js.delete_stream("FLEET_RECORD").await.is_err()));
    refused.push((
        "create a stream",
        js.create_stream(async_nats::jetstream::stream::Config { name: "EVIL".into(), subjects: vec!["evil.>".into()], ..Default::default() })
            .await
            .is_err(),
    ));
    let nodes = js.get_key_value("fleet-nodes").await.expect("a recorder may open the node registry");
    refused.push(("write another node's key", nodes.put("tx-a", "{}".into()).await.is_err()));
    refused.push(("pull the transcoders' queue", {
        let stream = js.get_stream("FLEET_TRANSCODE").await.unwrap();
        let consumer: async_nats::jetstream::consumer::PullConsumer = stream.get_consumer("transcoders").await.unwrap();
        consumer.fetch().max_messages(1).expires(Duration::from_secs(1)).messages().await.is_err()
            || tokio::time::timeout(Duration::from_secs(3), async {
                use futures::StreamExt;
                let mut batch = consumer.fetch().max_messages(1).expires(Duration::from_secs(1)).messages().await.unwrap();
                batch.next().await.is_none_or(|m| m.is_err())
            })
            .await
            .unwrap_or(true)
    }));
    // Job records: not writable directly, and the controller refuses changes to a job the recorder does
    // not hold (the transcoder completed it) or in another node's name.
    let job_id = record["id"].as_str().unwrap();
    let jobs = js.get_key_value("fleet-jobs").await.expect("a recorder may read job records");
    let before = jobs.entry(job_id).await.unwrap().expect("the job's record");
    refused.push(("write a job record", jobs.put(job_id, "{}".into()).await.is_err()));
    for (transition, subject) in [
        (json!({"transition": "fail", "error": "forged"}), "fleet.jobs.apply.recorder.rec-a"),
        (json!({"transition": "claim_transcode", "node": "rec-a", "attempt": 1}), "fleet.jobs.apply.recorder.rec-a"),
        (json!({"transition": "request_stop"}), "fleet.jobs.apply.recorder.rec-a"),
        (json!({"transition": "fail", "error": "forged"}), "fleet.jobs.apply.transcoder.tx-a"),
    ] {
        let request = json!({"request_id": "forged-1", "job_id": job_id, "transition": transition});
        let answer = tokio::time::timeout(Duration::from_secs(3), client.request(subject, request.to_string().into())).await;
        let outcome = match &answer {
            Ok(Ok(reply)) => serde_json::from_slice::<Value>(&reply.payload).unwrap()["outcome"].as_str().unwrap_or("").to_string(),
            _ => "no answer".to_string(),
        };
        println!("{subject} {transition}: {outcome}");
        refused.push(("change a job it does not hold", outcome == "forbidden" || outcome == "no answer"));
    }
    let after = jobs.entry(job_id).await.unwrap().unwrap();
    assert_eq!(after.revision, before.revision, "the job record was changed");
    println!("refused: {refused:?}");
    for (what, was_refused) in &refused {
        assert!(was_refused, "the recorder's login could {what}");
    }
    client.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut messages = Vec::new();
    while let Ok(message) = violations.try_recv() {
        messages.push(message);
    }
    assert!(messages.iter().any(|m| m.contains("Permissions Violation") && m.contains("fleet.record")), "server errors: {messages:?}");
    assert!(
        messages.iter().any(|m| m.contains("Permissions Violation") && m.contains("fleet.jobs.apply.transcoder.tx-a")),
        "server errors: {messages:?}"
    );

    // Nothing reached the queue, and the registry entry of tx-a is still its own.
    let admin = async_nats::jetstream::new(
        async_nats::ConnectOptions::with_user_and_password(
            "controller".into(),
            std::fs::read_to_string(setup.dir.path().join("nats-users/controller.password")).unwrap(),
        )
        .connect(setup.nats.url())
        .await
        .unwrap(),
    );
    let mut record_stream = admin.get_stream("FLEET_RECORD").await.unwrap();
    let info = record_stream.info().await.unwrap();
    println!("record stream after the attempts: {} messages, last seq {}", info.state.messages, info.state.last_sequence);
    assert_eq!(info.state.last_sequence, 1, "only the controller's one job was ever queued");
    let entry = admin.get_key_value("fleet-nodes").await.unwrap().get("tx-a").await.unwrap();
    assert!(entry.is_some_and(|v| v.as_ref() != b"{}"), "tx-a's registry entry was overwritten");
}

#[tokio::test(flavor = "multi_thread")]
async fn api_nats_and_s3_over_tls_record_and_refuse_clients_that_skip_it() {
    let dir = tempfile::tempdir().unwrap();
    let certs = fleet_tests::test_ca(&dir.path().join("tls"));
    let s3 = S3::start(dir.path());
    let s3_https = format!("https://127.0.0.1:{}", fleet_tests::tls_proxy(&certs, s3.port()).await);
    let storage = StorageSetup::S3 { endpoint: s3_https.clone(), ca_file: Some(certs.ca.clone()) };
    let setup = Setup::over_tls(dir, &certs, storage, Default::default());
    let _node = setup.fleet.recorder("tls-node", "both", 2);
    // The whole path over TLS: the API on HTTPS, NATS over TLS, S3 over HTTPS, all with the test CA.
    let record = record_and_finish(&setup.api, &test_room(1)).await;
    let id = record["id"].as_str().unwrap();
    let mp4 = s3.get(&format!("recordings/{id}/{id}.mp4")).await;
    let manifest: Value = serde_json::from_slice(&s3.get(&format!("recordings/{id}/manifest.json")).await).unwrap();
    check_recording(&record, &mp4, &manifest, setup.dir.path());

    // Plain HTTP gets no answer from the HTTPS port.
    let client = || reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let plain = client().get(format!("http://127.0.0.1:{}/v1/recordings", setup.port)).bearer_auth(API_KEY).send().await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    // A client that does not trust the CA refuses the controller's certificate.
    let refused = client().get(format!("https://127.0.0.1:{}/v1/recordings", setup.port)).send().await.unwrap_err();
    assert!(format!("{refused:?}").to_lowercase().contains("certificate"), "not a certificate refusal: {refused:?}");
    // A NATS client without the CA does not get in either, asking for TLS or not.
    fleet_runtime::tls::install_crypto_provider();
    for require_tls in [true, false] {
        let nats =
            tokio::time::timeout(Duration::from_secs(10), async_nats::ConnectOptions::new().require_tls(require_tls).connect(setup.nats.url())).await;
        let refused = format!("{nats:?}");
        println!("NATS client without the CA (require_tls {require_tls}): {refused}");
        assert!(matches!(nats, Ok(Err(_))), "a NATS client that does not trust the CA was not refused: {refused}");
    }
    // Storage without the CA refuses the S3 server's certificate.
    let untrusting = fleet_runtime::config::StorageConfig {
        kind: fleet_runtime::config::StorageKind::S3,
        s3: fleet_runtime::config::S3Config {
            endpoint: Some(s3_https),
            access_key_id: Some(fleet_tests::S3_ACCESS_KEY.into()),
            secret_access_key: Some(fleet_tests::S3_SECRET_KEY.into()),
            bucket: fleet_tests::S3_BUCKET.into(),
            ..Default::default()
        },
        ..Default::default()
    };
    let storage = fleet_runtime::storage::Storage::from_config(&untrusting).await.unwrap();
    let refused = storage.put_bytes("tls-check/object", b"x".to_vec()).await.unwrap_err().to_string();
    assert!(refused.to_lowercase().contains("certificate"), "not a certificate refusal: {refused}");
    // The controller's key is checked over HTTPS as over HTTP.
    let unkeyed = setup.api.send("GET", "/v1/recordings", None, None).await;
    assert_eq!(unkeyed.status, 401, "{}", unkeyed.body);
}

/// Files past the multipart threshold go up in parts (S3 refuses a single PUT above 5 GiB): stored
/// byte for byte, as a multipart object; smaller ones in one PUT. (s3s-fs cannot list open uploads, so
/// the abort of a failed one is not checked here.)
#[tokio::test(flavor = "multi_thread")]
async fn large_files_upload_to_s3_in_parts() {
    use fleet_runtime::config::{S3Config, StorageConfig, StorageKind};
    use fleet_runtime::storage::Storage;
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3::start(dir.path());
    let config = StorageConfig {
        kind: StorageKind::S3,
        prefix: "recordings".into(),
        s3: S3Config {
            bucket: fleet_tests::S3_BUCKET.into(),
            endpoint: Some(s3.endpoint()),
            access_key_id: Some(fleet_tests::S3_ACCESS_KEY.into()),
            secret_access_key: Some(fleet_tests::S3_SECRET_KEY.into()),
            multipart_threshold_mb: 5,
            multipart_part_mb: 5,
            ..Default::default()
        },
        ..Default::default()
    };
    let storage = Storage::from_config(&config).await.unwrap();
    // 12 MiB and a bit: three parts (5, 5, 2 MiB + 123 bytes).
    let big: Vec<u8> = (0..(12 << 20) + 123u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let path = dir.path().join("big.mp4");
    std::fs::write(&path, &big).unwrap();
    storage.put_file("job_1/job_1.mp4", &path).await.unwrap();
    let small = dir.path().join("small.json");
    std::fs::write(&small, b"{}").unwrap();
    storage.put_file("job_1/manifest.json", &small).await.unwrap();

    let client = s3.client().await;
    let etag = |key: &'static str| {
        let client = client.clone();
        async move { client.head_object().bucket(fleet_tests::S3_BUCKET).key(key).send().await.unwrap().e_tag().unwrap_or_default().to_string() }
    };
    let (big_etag, small_etag) = (etag("recordings/job_1/job_1.mp4").await, etag("recordings/job_1/manifest.json").await);
    println!("ETags: {big_etag} (12 MiB), {small_etag} (2 bytes)");
    assert!(big_etag.trim_matches('"').ends_with("-3"), "a three-part object: {big_etag}");
    assert!(!small_etag.contains('-'), "one PUT: {small_etag}");
    assert!(s3.get("recordings/job_1/job_1.mp4").await == big, "stored byte for byte");
}

/// `controller hash-key` takes the key on standard input (an argument shows in `ps`), and prints the
/// same hash as with the argument.
#[test]
fn hash_key_reads_the_key_from_standard_input() {
    use std::io::Write;
    let controller = fleet_tests::bin_path("controller");
    let mut child = std::process::Command::new(&controller)
        .arg("hash-key")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"s3cret\n").unwrap();
    let from_stdin = child.wait_with_output().unwrap();
    assert!(from_stdin.status.success());
    let from_argument = std::process::Command::new(&controller).args(["hash-key", "s3cret"]).output().unwrap();
    // sha256("s3cret"), as `printf %s s3cret | sha256sum` prints it.
    let expected = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0\n";
    assert_eq!(String::from_utf8_lossy(&from_stdin.stdout), expected);
    assert_eq!(String::from_utf8_lossy(&from_argument.stdout), expected);
    let empty = std::process::Command::new(&controller).arg("hash-key").stdin(std::process::Stdio::null()).output().unwrap();
    assert!(!empty.status.success(), "no key is an error, not the hash of nothing");
}

/// Names a Prometheus text exposition declares (`# TYPE` lines), as queries see them: a counter with
/// `_total`, a histogram with `_bucket`, `_sum` and `_count`. Every declared name also has a HELP line.
fn exported_metric_names(exposition: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else { continue };
        let (name, kind) = rest.split_once(' ').unwrap();
        assert!(exposition.contains(&format!("# HELP {name} ")), "{name} has no HELP line");
        match kind {
            "counter" => names.insert(format!("{name}_total")),
            "histogram" => ["_bucket", "_sum", "_count"].iter().all(|suffix| names.insert(format!("{name}{suffix}"))),
            _ => names.insert(name.to_string()),
        };
    }
    names
}

/// Every role serves Prometheus metrics with HELP lines (the recorder and transcoder on `[metrics]
/// listen`, with /healthz and /readyz beside them), and the Grafana dashboard in deploy/ queries only
/// metrics the processes export.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_queries_only_exported_metrics() {
    let mut setup = Setup::local();
    let (recorder_port, transcoder_port) = (fleet_tests::procs::free_port(), fleet_tests::procs::free_port());
    setup.fleet.recorder_extra = format!("[metrics]\nlisten = \"127.0.0.1:{recorder_port}\"\n");
    let _recorder = setup.fleet.recorder("rec-metrics", "both", 1);
    setup.fleet.recorder_extra.clear();
    setup.fleet.transcoder_extra = format!("[metrics]\nlisten = \"127.0.0.1:{transcoder_port}\"\n");
    let _transcoder = setup.fleet.transcoder("tx-metrics");
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let mut exported = std::collections::BTreeSet::new();
    for port in [recorder_port, transcoder_port] {
        fleet_tests::procs::wait_for_port(port, Duration::from_secs(30));
        let get = |path: &str| http.get(format!("http://127.0.0.1:{port}{path}")).send();
        assert_eq!(get("/healthz").await.unwrap().status(), 200);
        // Ready once connected to NATS, which the process did before it started serving.
        assert_eq!(get("/readyz").await.unwrap().status(), 200);
        let metrics = get("/metrics").await.unwrap();
        assert_eq!(metrics.status(), 200);
        exported.extend(exported_metric_names(&metrics.text().await.unwrap()));
    }
    // The second scrape counts the first: the API's own series exist once a request was served.
    setup.api.send("GET", "/metrics", Some(API_KEY), None).await;
    let controller = setup.api.send("GET", "/metrics", Some(API_KEY), None).await;
    assert_eq!(controller.status, 200);
    exported.extend(exported_metric_names(controller.body.as_str().unwrap()));
    for prefix in ["fleet_recorder_", "fleet_transcoder_", "fleet_http_", "fleet_queue_"] {
        assert!(exported.iter().any(|name| name.starts_with(prefix)), "no {prefix} metric exported: {exported:?}");
    }

    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/grafana/fleet-dashboard.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let mut rest = expr;
            while let Some(at) = rest.find("fleet_") {
                let name: String = rest[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                rest = &rest[at + name.len()..];
                queried.insert((panel["title"].as_str().unwrap().to_string(), name));
            }
        }
    }
    assert!(queried.len() >= 20, "the dashboard queries {} metrics", queried.len());
    let unknown: Vec<&(String, String)> = queried.iter().filter(|(_, name)| !exported.contains(name)).collect();
    assert!(unknown.is_empty(), "panels query metrics no process exports: {unknown:?}\nexported: {exported:?}");
}

/// `fleetctl` against a real controller and nodes: start, get, list, nodes, stop, then watch to the
/// MP4; an API refusal is an error with the API's reason; completions and the man page come out.
#[tokio::test(flavor = "multi_thread")]
async fn fleetctl_drives_a_recording_from_start_to_mp4() {
    let setup = Setup::local();
    let _recorder = setup.fleet.recorder("rec-ctl", "both", 1);
    let url = setup.api.base.clone();
    let fleetctl = |args: &[&str]| {
        let output = std::process::Command::new(fleet_tests::bin_path("fleetctl"))
            .args(args)
            .env("FLEET_URL", &url)
            .env("FLEET_API_KEY", API_KEY)
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned(), String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let (ok, out, err) = fleetctl(&["start", "--request", r#"{"room":"ctl-room","source":{"type":"test","participants":1}}"#]);
    assert!(ok, "{err}");
    let id = out.split('\t').next().unwrap().to_string();
    setup.api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
    let (ok, out, _) = fleetctl(&["--json", "get", &id]);
    assert!(ok);
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap()["request"]["room"], "ctl-room");
    let (ok, out, _) = fleetctl(&["list", "--room", "ctl-room"]);
    assert!(ok && out.lines().nth(1).is_some_and(|l| l.starts_with(&id) && l.contains("recording")), "{out}");
    let (ok, out, _) = fleetctl(&["nodes"]);
    assert!(ok && out.contains("rec-ctl") && out.contains("recorder"), "{out}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (ok, out, err) = fleetctl(&["stop", &id]);
    assert!(ok, "{err}");
    assert!(out.contains(&id));
    let (ok, out, err) = fleetctl(&["watch", &id, "--interval-ms", "200"]);
    assert!(ok, "watch ends 0 on complete: {err}");
    assert!(out.contains("complete") && out.contains(".mp4"), "{out}");

    let (ok, _, err) = fleetctl(&["get", "not a valid id"]);
    assert!(!ok && err.contains("400"), "{err}");
    let (ok, _, err) = fleetctl(&["--api-key", "wrong", "nodes"]);
    assert!(!ok && err.contains("403") && err.contains("not valid"), "{err}");
    let (ok, out, _) = fleetctl(&["completions", "bash"]);
    assert!(ok && out.contains("fleetctl") && out.contains("watch"));
    let (ok, out, _) = fleetctl(&["man"]);
    assert!(ok && out.contains(".TH fleetctl 1"), "{out}");
}

/// The dashboard in headless Chromium: connect with a key, start a synthetic-room recording from its
/// form, stop it with its button, see the MP4; no console or page error (the Content-Security-Policy
/// allows the page's own script and styles only). Screenshots are kept in target/test-artifacts/dashboard.
#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_starts_and_stops_a_recording_in_a_browser() {
    let setup = Setup::local();
    let _recorder = setup.fleet.recorder("rec-dash", "both", 1);
    let browser_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("browser");
    assert!(
        browser_dir.join("node_modules/playwright-core").exists() && Path::new("/usr/bin/chromium").exists(),
        "the browser is not installed: run `deploy/dev.sh deps` (Debian's chromium, npm packages in tests/browser)"
    );
    let artefacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/dashboard");
    let _ = std::fs::remove_dir_all(&artefacts);
    let page = reqwest::get(format!("{}/dashboard", setup.api.base)).await.unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"), "{policy}");
    let run = tokio::process::Command::new("node")
        .arg(browser_dir.join("dashboard.mjs"))
        .args(["--url", &setup.api.base, "--key", API_KEY, "--out"])
        .arg(&artefacts)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    println!("{stdout}{}", String::from_utf8_lossy(&run.stderr));
    assert!(run.status.success(), "the dashboard run failed: {stdout}");
    assert!(stdout.contains("\"event\":\"complete\""), "{stdout}");
    for shot in ["recording.png", "complete.png"] {
        let bytes = std::fs::read(artefacts.join(shot)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{shot}: {} bytes", bytes.len());
    }
}
