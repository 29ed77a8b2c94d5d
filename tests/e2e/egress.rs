//! LiveKit Egress-compatible API (issue 6): LiveKit's own server SDKs drive recordings of a devroom room
//! through the controller's Twirp routes, unchanged: the Rust `livekit-api` `EgressClient` (protobuf) and
//! the Python `livekit-api` `LiveKitAPI.egress` (protobuf) start, list and stop recordings; requests we
//! cannot honour get Twirp errors with reasons; LiveKit-format webhooks verify with LiveKit's receiver.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use fleet_tests::devroom::{Devroom, LIVEKIT_API_KEY, LIVEKIT_API_SECRET};
use fleet_tests::media::{decode_errors, ffprobe, moov_before_mdat, stream};
use fleet_tests::procs::free_port;
use fleet_tests::{Fleet, Nats, StorageSetup};
use livekit_api::access_token::{AccessToken, TokenVerifier, VideoGrants};
use livekit_api::services::egress::{EgressClient, EgressListFilter, EgressListOptions, EgressOutput, RoomCompositeOptions, encoding};
use livekit_api::webhooks::WebhookReceiver;
use livekit_protocol as lk;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SCENARIO: &str = r#"
[[rooms]]
name = "egress-room"

[[rooms.participants]]
identity = "alice"
video_codec = "vp8"

[[rooms.participants]]
identity = "bob"
video_codec = "h264"
"#;

/// LiveKit webhooks as a LiveKit app receives them: verified with LiveKit's own `WebhookReceiver`.
type Received = Arc<Mutex<Vec<(String, String, i32)>>>;

async fn start_webhook_receiver() -> (String, Received, Arc<Mutex<u32>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/livekit", listener.local_addr().unwrap());
    let received: Received = Arc::default();
    let rejected = Arc::new(Mutex::new(0u32));
    let app = Router::new().route("/livekit", post(receive)).with_state((received.clone(), rejected.clone()));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received, rejected)
}

async fn receive(State((received, rejected)): State<(Received, Arc<Mutex<u32>>)>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let auth = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    let receiver = WebhookReceiver::new(TokenVerifier::with_api_key(LIVEKIT_API_KEY, LIVEKIT_API_SECRET));
    match receiver.receive(std::str::from_utf8(&body).unwrap_or(""), auth) {
        Ok(event) => {
            let info = event.egress_info.unwrap_or_default();
            received.lock().unwrap().push((event.event, info.egress_id, info.status));
            StatusCode::OK
        }
        Err(_) => {
            *rejected.lock().unwrap() += 1;
            StatusCode::UNAUTHORIZED
        }
    }
}

async fn wait_for_status(client: &EgressClient, id: &str, wanted: lk::EgressStatus, timeout: Duration) -> lk::EgressInfo {
    fleet_tests::wait::until(&format!("{id} {wanted:?}"), timeout, || async {
        let options = EgressListOptions { filter: EgressListFilter::Egress(id.to_string()), ..Default::default() };
        let items = client.list_egress(options).await.expect("ListEgress answers");
        let Some(info) = items.into_iter().find(|i| i.egress_id == id) else { return Err("not listed".to_string()) };
        if info.status == wanted as i32 {
            return Ok(info);
        }
        assert!(
            !matches!(lk::EgressStatus::try_from(info.status), Ok(lk::EgressStatus::EgressFailed | lk::EgressStatus::EgressAborted)),
            "{id} ended {:?}: {}",
            info.status,
            info.error
        );
        Err(format!("{info:?}"))
    })
    .await
}

fn python_client(url: &str, extra: &[&str]) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join("target/pyenv/bin/python");
    assert!(python.exists(), "{} is missing: run `deploy/dev.sh deps` (installs LiveKit's Python SDK)", python.display());
    let output = Command::new(python)
        .arg(root.join("tests/conformance/egress_client.py"))
        .args(["--url", url, "--api-key", LIVEKIT_API_KEY, "--api-secret", LIVEKIT_API_SECRET, "--room", "egress-room", "--identity", "alice"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "python client failed:\n{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn livekit_server_sdks_drive_recordings_through_the_egress_api() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let nats = Nats::start(dir.path());
    let devroom = Devroom::start(dir.path(), SCENARIO);
    let (hook_url, hooks, rejected) = start_webhook_receiver().await;
    let mut fleet = Fleet::new(dir.path(), &nats, StorageSetup::Local(root.clone()));
    fleet.recorder_extra = devroom.recorder_toml(30);
    fleet.controller_extra = format!(
        "[controller.egress]\nenabled = true\napi_key = \"{LIVEKIT_API_KEY}\"\napi_secret = \"{LIVEKIT_API_SECRET}\"\nwebhook_urls = [\"{hook_url}\"]\n"
    );
    let port = free_port();
    let _controller = fleet.controller(port);
    let _recorder = fleet.recorder("rec-1", "both", 2);
    let url = format!("http://127.0.0.1:{port}");
    let client = EgressClient::with_api_key(&url, LIVEKIT_API_KEY, LIVEKIT_API_SECRET);

    // Rust SDK: a room composite, 640x360 to keep the transcode short.
    let file =
        lk::EncodedFileOutput { file_type: lk::EncodedFileType::Mp4 as i32, filepath: "rooms/{room_name}-{utc}.mp4".into(), ..Default::default() };
    let options = RoomCompositeOptions {
        layout: "grid".into(),
        encoding: encoding::EncodingOptions { width: 640, height: 360, video_bitrate: 800, ..encoding::H264_720P_30 },
        ..Default::default()
    };
    let started = client.start_room_composite_egress("egress-room", vec![EgressOutput::File(file)], options).await.expect("StartRoomCompositeEgress");
    assert_eq!(started.status, lk::EgressStatus::EgressStarting as i32);
    assert_eq!(started.room_name, "egress-room");
    assert!(matches!(started.request, Some(lk::egress_info::Request::RoomComposite(ref r)) if r.layout == "grid"));
    let room_id = started.egress_id.clone();
    wait_for_status(&client, &room_id, lk::EgressStatus::EgressActive, Duration::from_secs(30)).await;

    // Python SDK: a participant egress, listing, and the refusals.
    let py = python_client(&url, &[]);
    println!("python client: {py}");
    let participant_id = py["started"]["egress_id"].as_str().unwrap().to_string();
    assert_eq!(py["started"]["status"], "EGRESS_STARTING");
    assert_eq!(py["started"]["identity"], "alice");
    let listed: Vec<&str> = py["listed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(listed.contains(&room_id.as_str()) && listed.contains(&participant_id.as_str()), "{listed:?}");
    assert_eq!((py["track"]["code"].as_str(), py["track"]["status"].as_u64()), (Some("unimplemented"), Some(501)));
    assert!(py["track"]["msg"].as_str().unwrap().contains("StartParticipantEgress"));
    assert_eq!(py["stream"]["code"], "unimplemented", "SRT streams are refused");
    assert_eq!((py["stop_unknown"]["code"].as_str(), py["stop_unknown"]["status"].as_u64()), (Some("not_found"), Some(404)));
    assert_eq!((py["wrong_secret"]["code"].as_str(), py["wrong_secret"]["status"].as_u64()), (Some("unauthenticated"), Some(401)));

    wait_for_status(&client, &participant_id, lk::EgressStatus::EgressActive, Duration::from_secs(30)).await;

    // Twirp's JSON encoding (LiveKit's protojson: camelCase, enums by name), and the token checks.
    let token = |grants: VideoGrants| {
        AccessToken::with_api_key(LIVEKIT_API_KEY, LIVEKIT_API_SECRET).with_identity("app").with_grants(grants).to_jwt().unwrap()
    };
    let twirp_json = |method: &str, token: String, body: &'static str| {
        let request = reqwest::Client::new()
            .post(format!("{url}/twirp/livekit.Egress/{method}"))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let recorder_grant = VideoGrants { room_record: true, ..Default::default() };
    let (status, listed) = twirp_json("ListEgress", token(recorder_grant.clone()), r#"{"roomName":"egress-room","active":true}"#).await;
    assert_eq!(status, 200, "{listed}");
    let item = listed["items"].as_array().unwrap().iter().find(|i| i["egressId"] == room_id.as_str()).cloned().unwrap_or_default();
    assert_eq!(item["status"], "EGRESS_ACTIVE", "{listed}");
    assert_eq!(item["roomName"], "egress-room");
    let join_only = VideoGrants { room_join: true, room: "egress-room".into(), ..Default::default() };
    let (status, refused) = twirp_json("ListEgress", token(join_only), "{}").await;
    assert_eq!((status, refused["code"].as_str()), (401, Some("unauthenticated")), "a token without roomRecord: {refused}");
    let (status, malformed) = twirp_json("StopEgress", token(recorder_grant), "{not json").await;
    assert_eq!((status, malformed["code"].as_str()), (400, Some("malformed")), "{malformed}");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let stopped = client.stop_egress(&room_id).await.expect("StopEgress");
    assert_eq!(stopped.status, lk::EgressStatus::EgressEnding as i32, "stop is asynchronous: the capture is ending");
    let py_stop = python_client(&url, &["--stop", &participant_id]);
    assert_eq!(py_stop["stopped"]["egress_id"], participant_id.as_str());
    // Stopping twice: still ending, or past capture (Twirp failed_precondition, as LiveKit answers).
    match client.stop_egress(&room_id).await {
        Ok(info) => assert_eq!(info.status, lk::EgressStatus::EgressEnding as i32),
        Err(err) => assert!(err.to_string().contains("failed_precondition"), "{err}"),
    }

    // Each file where its request's filepath template put it (the Python SDK's had no extension).
    // `{utc}`: 20261205093000123; `{time}`: 2026-12-05T093000.
    let stamped = |name: &str, prefix: &str| {
        let stamp = name.strip_prefix(prefix).and_then(|rest| rest.strip_suffix(".mp4")).unwrap_or_default();
        stamp.len() == 17 && stamp.chars().all(|c| c.is_ascii_digit() || "-T".contains(c))
    };
    for (id, width, prefix) in [(&room_id, 640, "rooms/egress-room-"), (&participant_id, 640, "calls/egress-room/alice-")] {
        let info = wait_for_status(&client, id, lk::EgressStatus::EgressComplete, Duration::from_secs(180)).await;
        assert_eq!(info.file_results.len(), 1, "{info:?}");
        let file = &info.file_results[0];
        assert!(file.size > 0 && file.duration > 4_000_000_000, "{file:?}");
        assert!(info.started_at > 0 && info.ended_at >= info.started_at, "{info:?}");
        assert!(stamped(&file.filename, prefix), "{} is not {prefix}<time>.mp4", file.filename);
        let path = root.join("recordings").join(&file.filename);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as i64, file.size);
        assert!(decode_errors(&path).is_empty());
        assert!(moov_before_mdat(&std::fs::read(&path).unwrap()));
        let probe = ffprobe(&path);
        assert_eq!(stream(&probe, "video")["width"], width);
        assert_eq!(stream(&probe, "audio")["codec_name"], "aac");
    }

    // Webhooks: started, updated, ended for each, every one verified by LiveKit's receiver.
    let got = fleet_tests::wait::until("egress_ended for both", Duration::from_secs(30), || async {
        let got = hooks.lock().unwrap().clone();
        let ended = |id: &str| got.iter().any(|(e, i, s)| e == "egress_ended" && i == id && *s == lk::EgressStatus::EgressComplete as i32);
        if ended(&room_id) && ended(&participant_id) { Ok(got) } else { Err(format!("{got:?}")) }
    })
    .await;
    for id in [&room_id, &participant_id] {
        let events: Vec<&str> = got.iter().filter(|(_, i, _)| i == id).map(|(e, _, _)| e.as_str()).collect();
        assert_eq!(events.first(), Some(&"egress_started"), "{id}: {events:?}");
        assert!(events.contains(&"egress_updated"), "{id}: {events:?}");
    }
    assert_eq!(*rejected.lock().unwrap(), 0, "every webhook must verify");
    drop(devroom);
}

/// LiveKit's own CLI (`lk` 2.18.2, a Twirp protobuf client) against the controller: `egress start` of a
/// room composite and a participant egress, `list`, `stop`; the requests the fleet cannot honour
/// (track composite, update-layout) are refused with their reason, as `lk` prints it.
#[tokio::test(flavor = "multi_thread")]
async fn livekit_cli_drives_the_egress_api() {
    let lk = fleet_tests::livekit_server::tool_path("lk");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let nats = Nats::start(dir.path());
    let devroom = Devroom::start(dir.path(), SCENARIO);
    let mut fleet = Fleet::new(dir.path(), &nats, StorageSetup::Local(root.clone()));
    fleet.recorder_extra = devroom.recorder_toml(30);
    fleet.controller_extra = format!("[controller.egress]\nenabled = true\napi_key = \"{LIVEKIT_API_KEY}\"\napi_secret = \"{LIVEKIT_API_SECRET}\"\n");
    let port = free_port();
    let _controller = fleet.controller(port);
    let _recorder = fleet.recorder("rec-1", "both", 2);
    let url = format!("http://127.0.0.1:{port}");
    let run = |args: &[&str]| -> (bool, String) {
        let output = Command::new(&lk)
            .args(["--url", &url, "--api-key", LIVEKIT_API_KEY, "--api-secret", LIVEKIT_API_SECRET])
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
        println!("$ lk {}\n{text}", args.join(" "));
        (output.status.success(), text)
    };
    let request = |name: &str, json: &str| -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, json).unwrap();
        path.to_string_lossy().into_owned()
    };
    let egress_id = |text: &str| -> String {
        let at = text.find("EG_").unwrap_or_else(|| panic!("no egress id in lk's answer: {text}"));
        text[at..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
    };

    let composite = request(
        "composite.json",
        r#"{"room_name":"egress-room","layout":"grid","file_outputs":[{"file_type":"MP4","filepath":"composite.mp4"}],"advanced":{"width":640,"height":360,"framerate":30,"video_bitrate":800}}"#,
    );
    let (ok, text) = run(&["egress", "start", "--type", "room-composite", &composite]);
    assert!(ok, "{text}");
    let room_id = egress_id(&text);
    let participant = request("participant.json", r#"{"room_name":"egress-room","identity":"bob","file_outputs":[{"filepath":"bob.mp4"}]}"#);
    let (ok, text) = run(&["egress", "start", "--type", "participant", &participant]);
    assert!(ok, "{text}");
    let participant_id = egress_id(&text);

    // What the fleet cannot do is refused with the reason, not accepted and ignored.
    let track_composite = request(
        "track-composite.json",
        r#"{"room_name":"egress-room","audio_track_id":"TR_a","video_track_id":"TR_v","file_outputs":[{"filepath":"t.mp4"}]}"#,
    );
    let (ok, text) = run(&["egress", "start", "--type", "track-composite", &track_composite]);
    assert!(!ok && text.contains("unimplemented"), "track composite: {text}");
    let unknown_field = request("room-id.json", r#"{"room_name":"egress-room","file_outputs":[{"filepath":"{room_id}.mp4"}]}"#);
    let (ok, text) = run(&["egress", "start", "--type", "room-composite", &unknown_field]);
    assert!(!ok && text.contains("invalid_argument") && text.contains("{room_id}"), "a filepath field the fleet cannot fill: {text}");
    let (ok, text) = run(&["egress", "update-layout", "--id", &room_id, "--layout", "speaker"]);
    assert!(!ok && text.contains("unimplemented"), "update-layout: {text}");

    let client = EgressClient::with_api_key(&url, LIVEKIT_API_KEY, LIVEKIT_API_SECRET);
    for id in [&room_id, &participant_id] {
        wait_for_status(&client, id, lk::EgressStatus::EgressActive, Duration::from_secs(30)).await;
    }
    let (ok, text) = run(&["egress", "list", "--room", "egress-room"]);
    assert!(ok && text.contains(&room_id) && text.contains(&participant_id), "list: {text}");
    let (ok, text) = run(&["egress", "list", "--json", "--id", &room_id]);
    // lk prints the protobuf structs: enums as numbers.
    assert!(ok && text.contains(&format!("\"status\": {}", lk::EgressStatus::EgressActive as i32)), "list --json: {text}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (ok, text) = run(&["egress", "stop", "--id", &room_id, "--id", &participant_id]);
    assert!(ok, "stop: {text}");
    for (id, name) in [(&room_id, "composite.mp4"), (&participant_id, "bob.mp4")] {
        let info = wait_for_status(&client, id, lk::EgressStatus::EgressComplete, Duration::from_secs(180)).await;
        assert_eq!(info.file_results[0].filename, name);
        let path = root.join("recordings").join(name);
        assert_eq!(std::fs::metadata(&path).unwrap().len() as i64, info.file_results[0].size);
        assert!(decode_errors(&path).is_empty());
    }
    let (ok, text) = run(&["egress", "list", "--json", "--id", &participant_id]);
    assert!(ok && text.contains(&format!("\"status\": {}", lk::EgressStatus::EgressComplete as i32)), "list after the end: {text}");
}
