//! The fleet as plugNmeet's recorder, against plugNmeet's own server (plugnmeet-server 2.4.0 with its
//! MariaDB, Redis and auth-callout NATS) and LiveKit's real SFU, with a real publisher (LiveKit's Python
//! SDK): nothing on plugNmeet's side is changed or stood in for.
//!
//! plugnmeet-server is not installable from the registries this project uses (the Go module proxy
//! refuses its module), so these tests need a binary built by the operator ([`plugnmeet_server::binary`]);
//! without one they print that they did not run, and pass.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fleet_controller::plugnmeet::proto::{CommonResponse, RecordingTasks};
use fleet_protocol::time::now_ms;
use fleet_tests::Setup;
use fleet_tests::livekit_server::{LiveKitOptions, LiveKitServer};
use fleet_tests::media::{decode_errors, ffprobe, moov_before_mdat};
use fleet_tests::netns;
use fleet_tests::plugnmeet_server::{self, PNM_API_SECRET, PlugnmeetServer};
use fleet_tests::publisher::{Publisher, PublisherSpec};
use fleet_tests::rtmp::{RtmpServer, probe_stream};
use hmac::{Hmac, Mac};
use prost::Message;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const RECORDER_ID: &str = "fleet";
const SUB_PATH: &str = "fleet";
const ROOM: &str = "pnm-room";

/// plugNmeet's `RecordingReq`, the body of its web client's `/api/recording` and `/api/rtmp` calls.
#[derive(Clone, PartialEq, prost::Message)]
struct RecordingReq {
    #[prost(enumeration = "RecordingTasks", tag = "1")]
    task: i32,
    #[prost(string, tag = "2")]
    room_id: String,
    #[prost(int64, tag = "3")]
    room_table_id: i64,
    #[prost(string, tag = "4")]
    sid: String,
    #[prost(string, optional, tag = "5")]
    rtmp_url: Option<String>,
}

/// plugNmeet's webhooks as a user's server receives them, each checked as its SDKs check them: the
/// `Authorization` header is an HS256 token signed with the API secret whose `sha256` claim is the
/// base64 SHA-256 of the body.
#[derive(Clone, Default)]
struct Webhooks {
    events: Arc<Mutex<Vec<Value>>>,
    unsigned: Arc<Mutex<u32>>,
}

impl Webhooks {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/plugnmeet-webhook", listener.local_addr().unwrap());
        let app = Router::new().route("/plugnmeet-webhook", post(receive)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn recording_events(&self) -> Vec<(String, String)> {
        let events = self.events.lock().unwrap();
        events.iter().filter(|e| e["recording_info"].is_object()).map(|e| (e["event"].as_str().unwrap_or("").to_string(), record_id(e))).collect()
    }

    /// The `n`th (from 1) recording event named `event`.
    async fn wait_for(&self, event: &str, n: usize, timeout: Duration) -> Value {
        fleet_tests::wait::until(&format!("{event} #{n}"), timeout, || async {
            let found: Vec<Value> = self.events.lock().unwrap().iter().filter(|e| e["event"] == event).cloned().collect();
            found.get(n - 1).cloned().ok_or_else(|| format!("recording events so far: {:?}", self.recording_events()))
        })
        .await
    }
}

fn record_id(event: &Value) -> String {
    event["recording_info"]["record_id"].as_str().unwrap_or("").to_string()
}

async fn receive(State(hooks): State<Webhooks>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let token = headers.get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
    if !signed_for(token, &body) {
        *hooks.unsigned.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    }
    match serde_json::from_slice(&body) {
        Ok(event) => {
            hooks.events.lock().unwrap().push(event);
            StatusCode::OK
        }
        Err(_) => StatusCode::BAD_REQUEST,
    }
}

fn signed_for(token: &str, body: &[u8]) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, claims, signature] = parts[..] else { return false };
    let mut mac = Hmac::<Sha256>::new_from_slice(PNM_API_SECRET.as_bytes()).unwrap();
    mac.update(format!("{header}.{claims}").as_bytes());
    let Ok(signature) = URL_SAFE_NO_PAD.decode(signature) else { return false };
    let Ok(claims) = URL_SAFE_NO_PAD.decode(claims).map_err(|_| ()).and_then(|c| serde_json::from_slice::<Value>(&c).map_err(|_| ())) else {
        return false;
    };
    mac.verify_slice(&signature).is_ok() && claims["sha256"] == STANDARD.encode(Sha256::digest(body))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap()
}

/// A recording task as plugNmeet's web client sends it for a signed-in admin.
async fn recording_task(
    pnm: &PlugnmeetServer,
    room: &str,
    path: &str,
    token: &str,
    task: RecordingTasks,
    sid: &str,
    rtmp_url: Option<&str>,
) -> CommonResponse {
    let request = RecordingReq { task: task as i32, room_id: room.into(), room_table_id: 0, sid: sid.into(), rtmp_url: rtmp_url.map(str::to_string) };
    let answer = pnm.user_call(path, token, request.encode_to_vec()).await;
    CommonResponse::decode(answer.as_slice()).unwrap_or_else(|e| panic!("{path}: not a CommonResponse ({e}): {:?}", String::from_utf8_lossy(&answer)))
}

/// plugNmeet's recording list for the room (its fetch API), oldest first.
async fn recordings(pnm: &PlugnmeetServer) -> Vec<Value> {
    let answer = pnm.call("/auth/recording/fetch", &json!({ "room_ids": [ROOM], "order_by": "ASC" })).await;
    answer["result"]["recordings_list"].as_array().cloned().unwrap_or_default()
}

/// The recorder registration plugNmeet reads: `recorder_<id>-FIELD_1`, the last ping (ms).
async fn last_ping(pnm: &PlugnmeetServer) -> Option<u64> {
    let js = async_nats::jetstream::new(pnm.server_connection().await);
    let bucket = js.get_key_value("pnm-recorderInfo").await.ok()?;
    let value = bucket.get(format!("recorder_{RECORDER_ID}-FIELD_1")).await.ok()??;
    String::from_utf8_lossy(&value).parse().ok()
}

async fn wait_for_ping_after(pnm: &PlugnmeetServer, after_ms: u64, timeout: Duration) {
    fleet_tests::wait::until("the fleet registered with plugNmeet", timeout, || async {
        let ping = last_ping(pnm).await;
        if ping.is_some_and(|ping| ping > after_ms) { Ok(()) } else { Err(format!("last ping {ping:?}")) }
    })
    .await
}

/// A recording plugNmeet lists: its file under plugNmeet's recordings root, of the size it lists, a
/// faststart MP4 that decodes; returns the file's path and duration.
fn check_listed_file(pnm: &PlugnmeetServer, listed: &Value) -> (std::path::PathBuf, f64) {
    let record_id = listed["record_id"].as_str().unwrap();
    let file_path = listed["file_path"].as_str().unwrap();
    assert_eq!(file_path, format!("{SUB_PATH}/{ROOM}/{record_id}.mp4"), "{listed:#?}");
    let path = pnm.recordings.join(file_path);
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let listed_mb = listed["file_size"].as_f64().unwrap();
    assert!((listed_mb - bytes.len() as f64 / 1e6).abs() <= 0.006, "listed {listed_mb} MB for {} bytes", bytes.len());
    assert!(moov_before_mdat(&bytes), "{file_path}: faststart");
    assert_eq!(decode_errors(&path), "", "{file_path} decodes");
    let duration: f64 = ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
    (path, duration)
}

/// The A/V sync of the one publisher (marker index 0), full frame in the MP4: the bounds the real-LiveKit
/// tests hold LiveKit's Python SDK publishers to.
fn assert_publisher_in_sync(mp4: &Path, duration: f64) {
    let audio = fleet_tests::sync::decode_audio(mp4);
    let report = fleet_tests::sync::check_paired_against(mp4, &audio, &[("640:360:320:180".into(), 0)], 30.0, 1.0, duration - 1.0);
    let mut offsets = report.offsets_ms.clone();
    offsets.sort_by(f64::total_cmp);
    let median = offsets.get(offsets.len() / 2).copied().unwrap_or(f64::NAN);
    println!("sync: {}", serde_json::to_string(&report).unwrap());
    assert!(report.found_ratio >= 0.8, "markers found: {report:?}");
    assert!(report.missing.len() <= 1, "flashes without their beep: {report:?}");
    assert!(median.abs() <= 150.0, "median A/V offset {median} ms: {report:?}");
}

/// The plugnmeet-server binary, in the test's own network namespace; `None` where the test does not go on
/// here: there is no binary (reported as not run), or this is the process that ran it in its namespace.
fn in_its_namespace(test: &str) -> Option<std::path::PathBuf> {
    let Some(binary) = plugnmeet_server::binary() else {
        println!("NOT RUN: no plugnmeet-server binary (set FLEET_PLUGNMEET_SERVER; README, \"Use the fleet as plugNmeet's recorder\")");
        return None;
    };
    netns::enter(test).then_some(binary)
}

/// The whole round with plugNmeet's own server: the fleet registers through plugNmeet's NATS auth callout
/// and is chosen by the server's recorder selection; recordings started and stopped through plugNmeet's
/// API appear in its recording list with the right path and size, are served by its download API and
/// pass the sync checker; its webhooks fire in order. START_RTMP streams the room live. A recorder killed
/// mid-recording is replaced without plugNmeet hearing of an end, and ending the room in plugNmeet stops
/// the recording. plugNmeet's merge request runs on a fleet transcoder. After plugNmeet's NATS restarts,
/// the fleet registers again, and after plugnmeet-server restarts it is still chosen.
#[test]
fn plugnmeet_server_records_through_the_fleet() {
    let Some(binary) = in_its_namespace("plugnmeet_server_records_through_the_fleet") else { return };
    runtime().block_on(async {
        let mut setup = Setup::local();
        let livekit = LiveKitServer::start(setup.dir.path(), &LiveKitOptions { node_ip: netns::SERVER_IP.into(), ..LiveKitOptions::default() });
        let webhooks = Webhooks::default();
        let webhook_url = webhooks.start().await;
        let mut pnm = PlugnmeetServer::start(&binary, setup.dir.path(), &livekit, &webhook_url);

        // The fleet: a controller answering as plugNmeet's recorder "fleet", one recorder (mode both: it also
        // transcodes, with plugNmeet's recordings root mounted for merge tasks).
        setup.controller = None;
        setup.fleet.controller_extra =
            format!("{}[storage]\nkind = \"local\"\nlocal_root = \"{}\"\n", pnm.controller_toml(RECORDER_ID, SUB_PATH), setup.root.display());
        setup.fleet.recorder_extra = livekit.recorder_toml(30);
        setup.fleet.transcoder_extra = format!("shared_files_root = \"{}\"\n", pnm.recordings.display());
        setup.controller = Some(setup.fleet.controller(setup.port));
        let recorder_1 = setup.fleet.recorder("rec-1", "both", 2);
        wait_for_ping_after(&pnm, 0, Duration::from_secs(20)).await;

        // A room made through plugNmeet's API, a publisher in it, an admin's token.
        let created =
            pnm.call("/auth/room/create", &json!({ "room_id": ROOM, "metadata": { "room_title": "Fleet test", "room_features": {} } })).await;
        assert_eq!(created["status"], true, "{created:#}\n{}", pnm.log_tail());
        let sid = created["room_info"]["sid"].as_str().unwrap().to_string();
        let mut spec = PublisherSpec::new("alice", 0, "vp8");
        spec.seconds = 120.0;
        let alice = Publisher::start(&livekit, ROOM, &spec, setup.dir.path());
        alice.wait_published(Duration::from_secs(30));
        let joined = pnm
            .call("/auth/room/getJoinToken", &json!({ "room_id": ROOM, "user_info": { "name": "Admin", "user_id": "admin_1", "is_admin": true } }))
            .await;
        assert_eq!(joined["status"], true, "{joined:#}");
        let token = joined["token"].as_str().unwrap().to_string();

        // Recording 1: started and stopped by plugNmeet's admin.
        let started = recording_task(&pnm, ROOM, "/api/recording", &token, RecordingTasks::StartRecording, &sid, None).await;
        assert!(started.status, "start: {started:?}\n{}", pnm.log_tail());
        let start_event = webhooks.wait_for("start_recording", 1, Duration::from_secs(30)).await;
        assert_eq!(start_event["recording_info"]["recorder_id"], RECORDER_ID, "plugNmeet chose the fleet: {start_event:#}");
        tokio::time::sleep(Duration::from_secs(14)).await;
        let stopped = recording_task(&pnm, ROOM, "/api/recording", &token, RecordingTasks::StopRecording, &sid, None).await;
        assert!(stopped.status, "stop: {stopped:?}");
        webhooks.wait_for("end_recording", 1, Duration::from_secs(30)).await;
        let proceeded = webhooks.wait_for("recording_proceeded", 1, Duration::from_secs(240)).await;
        let first_id = record_id(&proceeded);

        let listed = recordings(&pnm).await;
        assert_eq!(listed.len(), 1, "{listed:#?}");
        assert_eq!(listed[0]["record_id"], first_id.as_str());
        let (first_mp4, first_duration) = check_listed_file(&pnm, &listed[0]);
        assert!((10.0..20.0).contains(&first_duration), "{first_duration} s for about 14 s recorded");
        assert_publisher_in_sync(&first_mp4, first_duration);
        println!("plugNmeet lists the recording: {}\n  its file: {}", listed[0], first_mp4.display());

        // plugNmeet serves it: its download token and route give the same bytes.
        let download = pnm.call("/auth/recording/getDownloadToken", &json!({ "record_id": first_id })).await;
        let served = reqwest::get(format!("{}/download/recording/{}", pnm.url(), download["token"].as_str().unwrap())).await.unwrap();
        assert_eq!(served.status(), 200);
        assert_eq!(served.bytes().await.unwrap().to_vec(), std::fs::read(&first_mp4).unwrap(), "plugNmeet serves the file the fleet placed");

        // RTMP: plugNmeet's START_RTMP streams the room to the URL its user gave, until STOP_RTMP.
        let nginx = RtmpServer::start(setup.dir.path());
        let stream_url = nginx.url("live", "pnm-user-key");
        let rtmp = recording_task(&pnm, ROOM, "/api/rtmp", &token, RecordingTasks::StartRtmp, &sid, Some(&stream_url)).await;
        assert!(rtmp.status, "{rtmp:?}\n{}", pnm.log_tail());
        webhooks.wait_for("start_rtmp", 1, Duration::from_secs(30)).await;
        let pulled = probe_stream(&stream_url, Duration::from_secs(20)).expect("plugNmeet's RTMP stream plays");
        println!("pulled plugNmeet's stream: {pulled:?}");
        assert!(pulled.iter().any(|(codec, ..)| codec == "h264"), "{pulled:?}");
        let stopped = recording_task(&pnm, ROOM, "/api/rtmp", &token, RecordingTasks::StopRtmp, &sid, None).await;
        assert!(stopped.status, "{stopped:?}");
        webhooks.wait_for("end_rtmp", 1, Duration::from_secs(30)).await;

        // Recording 2: its recorder is killed mid-recording; a standby takes over and plugNmeet hears no end.
        let started = recording_task(&pnm, ROOM, "/api/recording", &token, RecordingTasks::StartRecording, &sid, None).await;
        assert!(started.status, "second start: {started:?}\n{}", pnm.log_tail());
        webhooks.wait_for("start_recording", 2, Duration::from_secs(30)).await;
        let job = capturing_job(&setup).await;
        let recorder_2 = setup.fleet.recorder("rec-2", "both", 2);
        tokio::time::sleep(Duration::from_secs(6)).await;
        drop(recorder_1); // SIGKILL
        let record = wait_for_sessions(&setup, &job, 2, Duration::from_secs(30)).await;
        assert_eq!(record["sessions"][1]["node"], "rec-2", "{record:#}");
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert_eq!(
            webhooks.recording_events().iter().filter(|(e, _)| e == "end_recording").count(),
            1,
            "plugNmeet heard no end while the fleet resumed"
        );

        // Ending the room in plugNmeet stops the recording; plugNmeet lists it.
        let ended = pnm.call("/auth/room/endRoom", &json!({ "room_id": ROOM })).await;
        assert_eq!(ended["status"], true, "{ended:#}");
        webhooks.wait_for("end_recording", 2, Duration::from_secs(30)).await;
        let proceeded = webhooks.wait_for("recording_proceeded", 2, Duration::from_secs(240)).await;
        let second_id = record_id(&proceeded);
        let listed = recordings(&pnm).await;
        assert_eq!(listed.len(), 2, "{listed:#?}");
        let (_, second_duration) = check_listed_file(&pnm, &listed[1]);
        assert!(second_duration >= 10.0, "the second recording covers the takeover: {second_duration} s");

        // plugNmeet's merge request becomes a transcoder task the fleet runs; the result is listed too.
        let merge =
            pnm.call("/auth/recording/mergeRecordings", &json!({ "by_ids": { "room_id": ROOM, "recording_ids": [first_id, second_id] } })).await;
        assert_eq!(merge["status"], true, "{merge:#}");
        let merged = webhooks.wait_for("recording_proceeded", 3, Duration::from_secs(300)).await;
        let finished = webhooks.wait_for("recording_transcoding_finished", 3, Duration::from_secs(30)).await;
        assert_eq!(record_id(&finished), record_id(&merged));
        let listed = recordings(&pnm).await;
        assert_eq!(listed.len(), 3, "{listed:#?}");
        let merged_listing = listed.iter().find(|l| l["record_id"] == record_id(&merged).as_str()).expect("the merged recording is listed");
        println!("merged: {merged_listing}");
        let merged_path = pnm.recordings.join(merged_listing["file_path"].as_str().unwrap());
        assert_eq!(decode_errors(&merged_path), "");
        let merged_duration: f64 = ffprobe(&merged_path)["format"]["duration"].as_str().unwrap().parse().unwrap();
        assert!(
            (merged_duration - first_duration - second_duration).abs() < 1.0,
            "merged {merged_duration} s of {first_duration} + {second_duration}"
        );

        // Order per recording, as plugNmeet's own recorder reports; every webhook carried a valid signature.
        for id in [&first_id, &second_id] {
            let mine: Vec<String> = webhooks.recording_events().into_iter().filter(|(_, r)| r == id).map(|(e, _)| e).collect();
            assert_eq!(mine, ["start_recording", "end_recording", "recording_proceeded", "recording_transcoding_finished"], "{id}");
        }
        assert_eq!(*webhooks.unsigned.lock().unwrap(), 0);

        // plugNmeet's NATS restarts (its JetStream kept): the fleet logs in again through the callout and pings.
        let before = now_ms();
        pnm.restart_nats();
        wait_for_ping_after(&pnm, before, Duration::from_secs(30)).await;
        // plugnmeet-server restarts: it still chooses the fleet for a new room's recording. Its auth callout
        // is down meanwhile, so the fleet's connection may be logging in again: wait for its next ping.
        let before = now_ms();
        pnm.restart_server();
        wait_for_ping_after(&pnm, before, Duration::from_secs(30)).await;
        let room_2 = "pnm-room-2";
        let created =
            pnm.call("/auth/room/create", &json!({ "room_id": room_2, "metadata": { "room_title": "After restarts", "room_features": {} } })).await;
        assert_eq!(created["status"], true, "{created:#}\n{}", pnm.log_tail());
        let sid_2 = created["room_info"]["sid"].as_str().unwrap().to_string();
        let bob = Publisher::start(&livekit, room_2, &PublisherSpec::new("bob", 1, "vp8"), setup.dir.path());
        bob.wait_published(Duration::from_secs(30));
        let joined = pnm
            .call("/auth/room/getJoinToken", &json!({ "room_id": room_2, "user_info": { "name": "Admin", "user_id": "admin_1", "is_admin": true } }))
            .await;
        let token_2 = joined["token"].as_str().unwrap().to_string();
        let started = recording_task(&pnm, room_2, "/api/recording", &token_2, RecordingTasks::StartRecording, &sid_2, None).await;
        let controller_log = setup.controller.as_ref().map(|c| c.log_text()).unwrap_or_default();
        assert!(started.status, "start after the restarts: {started:?}\n{}\n--- controller:\n{controller_log}", pnm.log_tail());
        webhooks.wait_for("start_recording", 3, Duration::from_secs(30)).await;
        assert_eq!(pnm.call("/auth/room/endRoom", &json!({ "room_id": room_2 })).await["status"], true);
        webhooks.wait_for("end_recording", 3, Duration::from_secs(30)).await;
        drop((alice, bob, recorder_2));
    });
}

/// The one fleet job that is capturing, by the controller's API.
async fn capturing_job(setup: &Setup) -> String {
    fleet_tests::wait::until("a recording job", Duration::from_secs(20), || async {
        let list = setup.api.send("GET", "/v1/recordings?state=recording", Some(fleet_tests::API_KEY), None).await;
        let job = list.body["recordings"].as_array().and_then(|r| r.first()).and_then(|job| job["id"].as_str()).map(str::to_string);
        job.ok_or_else(|| list.body.to_string())
    })
    .await
}

async fn wait_for_sessions(setup: &Setup, job: &str, sessions: usize, timeout: Duration) -> Value {
    fleet_tests::wait::until(&format!("session {sessions}"), timeout, || async {
        let record = setup.api.get(job).await;
        let there = record["sessions"].as_array().is_some_and(|s| s.len() >= sessions) && record["state"] == "recording";
        if there { Ok(record) } else { Err(record.to_string()) }
    })
    .await
}

/// A room plugnmeet-server encrypts end to end with its own key: the drop-in reads the key from the room's
/// settings, seals it, and the recording plugNmeet lists is decrypted (the publisher's picture and markers,
/// in sync). A room whose users insert their own key is refused in plugNmeet's words.
#[test]
fn plugnmeet_e2ee_rooms_are_recorded_with_the_servers_key() {
    let Some(binary) = in_its_namespace("plugnmeet_e2ee_rooms_are_recorded_with_the_servers_key") else { return };
    runtime().block_on(async {
        let mut setup = Setup::local();
        let livekit = LiveKitServer::start(setup.dir.path(), &LiveKitOptions { node_ip: netns::SERVER_IP.into(), ..LiveKitOptions::default() });
        let webhooks = Webhooks::default();
        let webhook_url = webhooks.start().await;
        let pnm = PlugnmeetServer::start(&binary, setup.dir.path(), &livekit, &webhook_url);
        let (public, private_file) = fleet_tests::transcoder_key_pair(setup.dir.path());
        setup.controller = None;
        setup.fleet.controller_settings = format!("e2ee_public_key = \"{public}\"\n");
        setup.fleet.controller_extra =
            format!("{}[storage]\nkind = \"local\"\nlocal_root = \"{}\"\n", pnm.controller_toml(RECORDER_ID, SUB_PATH), setup.root.display());
        setup.fleet.recorder_extra = livekit.recorder_toml(30);
        setup.fleet.transcoder_extra = format!("e2ee_private_key_file = \"{}\"\n", private_file.display());
        setup.controller = Some(setup.fleet.controller(setup.port));
        let _recorder = setup.fleet.recorder("rec-1", "both", 2);
        wait_for_ping_after(&pnm, 0, Duration::from_secs(20)).await;

        let e2ee = |self_insert: bool| json!({ "is_enabled": true, "enabled_self_insert_encryption_key": self_insert });
        let create = |room: &str, self_insert: bool| {
            json!({ "room_id": room, "metadata": { "room_title": "E2EE", "room_features": { "end_to_end_encryption_features": e2ee(self_insert) } } })
        };
        let created = pnm.call("/auth/room/create", &create(ROOM, false)).await;
        assert_eq!(created["status"], true, "{created:#}\n{}", pnm.log_tail());
        let metadata: Value = serde_json::from_str(created["room_info"]["metadata"].as_str().unwrap()).unwrap();
        let key = metadata["room_features"]["end_to_end_encryption_features"]["encryption_key"].as_str().unwrap().to_string();
        let sid = created["room_info"]["sid"].as_str().unwrap().to_string();
        // plugNmeet's web client gives the key to LiveKit's setKey(string): a passphrase, as here.
        let mut spec = PublisherSpec::new("alice", 0, "vp8");
        spec.seconds = 60.0;
        spec.flags = vec!["--e2ee-key".into(), key.clone()];
        let alice = Publisher::start(&livekit, ROOM, &spec, setup.dir.path());
        alice.wait_published(Duration::from_secs(30));
        let joined = pnm
            .call("/auth/room/getJoinToken", &json!({ "room_id": ROOM, "user_info": { "name": "Admin", "user_id": "admin_1", "is_admin": true } }))
            .await;
        let token = joined["token"].as_str().unwrap().to_string();

        let started = recording_task(&pnm, ROOM, "/api/recording", &token, RecordingTasks::StartRecording, &sid, None).await;
        assert!(started.status, "start: {started:?}\n{}", pnm.log_tail());
        webhooks.wait_for("start_recording", 1, Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(14)).await;
        let stopped = recording_task(&pnm, ROOM, "/api/recording", &token, RecordingTasks::StopRecording, &sid, None).await;
        assert!(stopped.status, "stop: {stopped:?}");
        webhooks.wait_for("recording_proceeded", 1, Duration::from_secs(240)).await;
        let listed = recordings(&pnm).await;
        assert_eq!(listed.len(), 1, "{listed:#?}");
        let (mp4, duration) = check_listed_file(&pnm, &listed[0]);
        assert_publisher_in_sync(&mp4, duration);
        let jobs = setup.api.send("GET", "/v1/recordings", Some(fleet_tests::API_KEY), None).await;
        let job = &jobs.body["recordings"][0];
        assert!(job["request"]["e2ee"]["sealed_keys"].is_string(), "the job holds the room's key sealed: {job:#}");
        assert!(!jobs.body.to_string().contains(&key), "the room's key in the clear");
        assert!(job["warnings"].as_array().is_none_or(|w| w.is_empty()), "every frame decrypted: {job:#}");

        // A room whose users type their own key: plugNmeet's recorder cannot record it, nor can the fleet.
        let own = pnm.call("/auth/room/create", &create("pnm-own-key", true)).await;
        assert_eq!(own["status"], true, "{own:#}");
        let own_sid = own["room_info"]["sid"].as_str().unwrap().to_string();
        let own_token = pnm
            .call("/auth/room/getJoinToken", &json!({ "room_id": "pnm-own-key", "user_info": { "name": "Admin", "user_id": "admin_2", "is_admin": true } }))
            .await["token"]
            .as_str()
            .unwrap()
            .to_string();
        let refused = recording_task(&pnm, "pnm-own-key", "/api/recording", &own_token, RecordingTasks::StartRecording, &own_sid, None).await;
        println!("self-inserted key: {refused:?}");
        assert!(!refused.status, "a room with a self-inserted key is not recorded: {refused:?}");
        // plugnmeet-server shows its users its own words for any refusal; the fleet's reason is plugNmeet's client's.
        let reason = fleet_controller::plugnmeet::room_e2ee::SELF_INSERTED_KEY_REFUSAL;
        assert!(setup.controller.as_ref().unwrap().log_text().contains(reason), "the refusal gives plugNmeet's reason");
        drop(alice);
    });
}
