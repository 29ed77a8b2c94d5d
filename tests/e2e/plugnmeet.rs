//! plugNmeet drop-in (issue 6): a stand-in for plugnmeet-server, written from plugNmeet's field lists
//! (REFERENCE.md A) and what plugnmeet-server 2.4.0 was seen to do, drives the fleet as its recorder: it
//! watches the registration in `pnm-recorderInfo`, sends `PlugNmeetToRecorder` requests on
//! `recorderChannel`, and receives `RecorderToPlugNmeet` notifies on `/auth/recorder/notify`, checking
//! `API-KEY` and `HASH-SIGNATURE` as the server does. The drop-in logs in to a NATS set up as plugNmeet's,
//! through an auth callout that grants plugNmeet's recorder permissions and no more
//! ([`fleet_tests::plugnmeet_nats`]). `tests/e2e/real_plugnmeet.rs` runs the same against the real server.

use async_nats::jetstream::kv;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use fleet_controller::plugnmeet::proto::transcoding_task::TaskDetails;
use fleet_controller::plugnmeet::proto::{
    CommonResponse, PlugNmeetToRecorder, RecorderToPlugNmeet, RecordingTasks, TranscodingTask, TranscodingTaskMergeRecordings,
    TranscodingTaskPostRecording,
};
use fleet_protocol::time::now_ms;
use fleet_tests::devroom::Devroom;
use fleet_tests::media::{decode_errors, ffprobe, moov_before_mdat, stream};
use fleet_tests::plugnmeet_nats::PlugnmeetNats;
use fleet_tests::procs::free_port;
use fleet_tests::rtmp::{RtmpServer, probe_stream};
use fleet_tests::{Fleet, Nats, StorageSetup, bin_path};
use hmac::{Hmac, Mac};
use prost::Message;
use sha2::Sha256;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PNM_KEY: &str = "plugnmeet";
const PNM_SECRET: &str = "plugnmeet-secret-0123456789";
const RECORDER_ID: &str = "fleet-1";
const ROOM_TABLE_ID: i64 = 42;
const RECORDING_ID: &str = "RM_pnm-1700000000000";
const RTMP_ID: &str = "RM_pnm-rtmp-1700000000000";

const SCENARIO: &str = r#"
[[rooms]]
name = "pnm-room"

[[rooms.participants]]
identity = "alice"

[[rooms.participants]]
identity = "bob"
video_codec = "h264"
"#;

/// Notifies the stand-in accepted, in arrival order, and how many it refused.
#[derive(Clone, Default)]
struct Notifies {
    accepted: Arc<Mutex<Vec<RecorderToPlugNmeet>>>,
    refused: Arc<Mutex<u32>>,
}

impl Notifies {
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new().route("/auth/recorder/notify", post(notify)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        url
    }

    fn tasks(&self) -> Vec<(RecordingTasks, bool)> {
        self.accepted.lock().unwrap().iter().map(|n| (RecordingTasks::try_from(n.task).unwrap(), n.status)).collect()
    }

    async fn wait_for(&self, task: RecordingTasks, timeout: Duration) -> RecorderToPlugNmeet {
        self.wait_for_recording(task, RECORDING_ID, timeout).await
    }

    async fn wait_for_recording(&self, task: RecordingTasks, recording_id: &str, timeout: Duration) -> RecorderToPlugNmeet {
        fleet_tests::wait::until(&format!("a {task:?} notify"), timeout, || async {
            let found = self.accepted.lock().unwrap().iter().find(|n| n.task == task as i32 && n.recording_id == recording_id).cloned();
            found.ok_or_else(|| format!("{:?}", self.tasks()))
        })
        .await
    }
}

/// The server's check: the API key, then HMAC-SHA256 of the raw body with the secret, hex, constant time.
async fn notify(State(notifies): State<Notifies>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mut mac = Hmac::<Sha256>::new_from_slice(PNM_SECRET.as_bytes()).unwrap();
    mac.update(&body);
    let signed = hex::decode(header("HASH-SIGNATURE")).is_ok_and(|sig| mac.verify_slice(&sig).is_ok());
    if header("API-KEY") != PNM_KEY || !signed || header("content-type") != "application/protobuf" {
        *notifies.refused.lock().unwrap() += 1;
        return StatusCode::UNAUTHORIZED;
    }
    match RecorderToPlugNmeet::decode(body) {
        Ok(message) if message.from == "recorder" => {
            notifies.accepted.lock().unwrap().push(message);
            StatusCode::OK
        }
        _ => {
            *notifies.refused.lock().unwrap() += 1;
            StatusCode::BAD_REQUEST
        }
    }
}

fn request(task: RecordingTasks, recorder_id: &str) -> PlugNmeetToRecorder {
    PlugNmeetToRecorder {
        from: "plugnmeet".into(),
        task: task as i32,
        room_table_id: ROOM_TABLE_ID,
        room_id: "pnm-room".into(),
        room_sid: "RM_pnm".into(),
        recording_id: RECORDING_ID.into(),
        recorder_id: recorder_id.into(),
        access_token: "a plugNmeet web-client token".into(),
        rtmp_url: None,
    }
}

/// Request/reply on the recorder channel with plugNmeet's 3 s timeout; `None` when nobody answered.
async fn ask(nats: &async_nats::Client, message: &PlugNmeetToRecorder) -> Option<CommonResponse> {
    let reply = tokio::time::timeout(Duration::from_secs(3), nats.request("recorderChannel", message.encode_to_vec().into())).await;
    match reply {
        Ok(Ok(reply)) => Some(CommonResponse::decode(reply.payload).expect("replies are CommonResponse")),
        _ => None,
    }
}

async fn field(bucket: &kv::Store, n: u8) -> Option<String> {
    let value = bucket.get(format!("recorder_{RECORDER_ID}-FIELD_{n}")).await.unwrap()?;
    Some(String::from_utf8(value.to_vec()).unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn plugnmeet_server_records_through_the_fleet() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("storage");
    let main_path = dir.path().join("recording_files");
    let nats = Nats::start(dir.path());
    let devroom = Devroom::start(dir.path(), SCENARIO);
    // plugNmeet's NATS, where the drop-in logs in as plugNmeet's recorders do; plugnmeet-server creates its
    // bucket, the fleet only uses it.
    let pnm_nats = PlugnmeetNats::start(dir.path(), PNM_KEY, PNM_SECRET).await;
    let bucket = pnm_nats.create_recorder_objects().await;
    let pnm = pnm_nats.server_connection().await;
    let notifies = Notifies::default();
    let server_url = notifies.start().await;

    let mut fleet = Fleet::new(dir.path(), &nats, StorageSetup::Local(root.clone()));
    fleet.recorder_extra = devroom.recorder_toml(30);
    fleet.controller_extra = format!(
        "[controller.plugnmeet]\nenabled = true\nnats_url = \"{}\"\nrecorder_id = \"{RECORDER_ID}\"\napi_key = \"{PNM_KEY}\"\napi_secret = \"{PNM_SECRET}\"\nserver_url = \"{server_url}\"\nmain_path = \"{}\"\nsub_path = \"node_01\"\n[storage]\nkind = \"local\"\nlocal_root = \"{}\"\nprefix = \"recordings\"\n",
        pnm_nats.url(),
        main_path.display(),
        root.display()
    );
    let port = free_port();
    let controller = fleet.controller(port);
    let _recorder = fleet.recorder("rec-1", "both", 2);

    // Registration: five fields; the capacity follows the fleet's recorders (one node, two slots).
    fleet_tests::wait::until("max_limit 2", Duration::from_secs(15), || async {
        let max_limit = field(&bucket, 0).await;
        if max_limit.as_deref() == Some("2") { Ok(()) } else { Err(format!("{max_limit:?}")) }
    })
    .await;
    let ping: u64 = field(&bucket, 1).await.unwrap().parse().unwrap();
    assert!(now_ms().abs_diff(ping) < 5_000, "last ping {ping} is not recent");
    assert!(field(&bucket, 2).await.unwrap().parse::<u32>().unwrap() >= 1);
    assert_eq!(field(&bucket, 3).await.as_deref(), Some("0"));
    let cpu = field(&bucket, 4).await.unwrap();
    assert!(cpu.len() == 6 && cpu.parse::<f64>().is_ok_and(|c| (0.0..=1.0).contains(&c)), "cpu score {cpu:?}");
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let next_ping: u64 = field(&bucket, 1).await.unwrap().parse().unwrap();
    assert!(next_ping > ping, "pings every 3 s");

    // A second process with the same recorder id refuses to start, as plugNmeet's recorder does.
    let clash = std::process::Command::new("timeout")
        .args(["20", &bin_path("controller").to_string_lossy(), "--config", &dir.path().join("controller.toml").to_string_lossy()])
        .env("FLEET_CONTROLLER__LISTEN", format!("127.0.0.1:{}", free_port()))
        .output()
        .unwrap();
    let clash_log = String::from_utf8_lossy(&clash.stderr).to_string() + &String::from_utf8_lossy(&clash.stdout);
    assert!(!clash.status.success() && clash_log.contains("another recorder"), "duplicate id not refused: {clash_log}");

    // Starts for another recorder get no answer; RTMP without a URL is refused with a reason.
    assert_eq!(ask(&pnm, &request(RecordingTasks::StartRecording, "other-recorder")).await, None);
    let rtmp = ask(&pnm, &request(RecordingTasks::StartRtmp, RECORDER_ID)).await.expect("RTMP answered");
    assert!(!rtmp.status && rtmp.msg.contains("RTMP"), "{rtmp:?}");

    let started = ask(&pnm, &request(RecordingTasks::StartRecording, RECORDER_ID)).await.expect("start answered");
    assert!(started.status && started.msg == "success", "{started:?}");
    let twice = ask(&pnm, &request(RecordingTasks::StartRecording, RECORDER_ID)).await.expect("second start answered");
    assert!(!twice.status, "the same room twice: {twice:?}");

    let start_notify = notifies.wait_for(RecordingTasks::StartRecording, Duration::from_secs(30)).await;
    assert!(start_notify.status);
    assert_eq!(
        (start_notify.recording_id.as_str(), start_notify.room_table_id, start_notify.recorder_id.as_str()),
        (RECORDING_ID, ROOM_TABLE_ID, RECORDER_ID)
    );
    tokio::time::sleep(Duration::from_secs(6)).await;

    // Stops reach every recorder; only the holder answers. A room we do not hold gets silence.
    let mut other_room = request(RecordingTasks::Stop, "");
    other_room.room_table_id = 99;
    assert_eq!(ask(&pnm, &other_room).await, None);
    let stopped = ask(&pnm, &request(RecordingTasks::StopRecording, "")).await.expect("stop answered by the holder");
    assert!(stopped.status, "{stopped:?}");

    let finished = notifies.wait_for(RecordingTasks::RecordingTranscodingFinished, Duration::from_secs(180)).await;
    assert!(finished.status, "{finished:?}");
    let order: Vec<RecordingTasks> = notifies.tasks().into_iter().map(|(t, _)| t).collect();
    assert_eq!(
        order,
        [
            RecordingTasks::EndRtmp,
            RecordingTasks::StartRecording,
            RecordingTasks::EndRecording,
            RecordingTasks::RecordingProceeded,
            RecordingTasks::RecordingTranscodingFinished
        ],
        "plugNmeet's order"
    );
    // The refused RTMP start is reported with its reason (plugNmeet shows a recorder's reply to no one).
    assert_eq!(notifies.tasks()[0], (RecordingTasks::EndRtmp, false));
    assert!(notifies.tasks()[1..].iter().all(|(_, ok)| *ok), "{:?}", notifies.tasks());
    let proceeded = notifies.wait_for(RecordingTasks::RecordingProceeded, Duration::from_secs(1)).await;
    let expected_path = format!("node_01/pnm-room/{RECORDING_ID}.mp4");
    assert_eq!(proceeded.file_path, expected_path, "relative to plugNmeet's main_path");
    let mp4 = main_path.join(&expected_path);
    let bytes = std::fs::read(&mp4).unwrap();
    assert!((proceeded.file_size as f64 - bytes.len() as f64 / 1e6).abs() <= 0.006, "file_size {} MB for {} bytes", proceeded.file_size, bytes.len());
    assert!(moov_before_mdat(&bytes));
    assert!(decode_errors(&mp4).is_empty());
    let duration: f64 = ffprobe(&mp4)["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!(duration > 5.0, "{duration} s");
    assert_eq!(*notifies.refused.lock().unwrap(), 0, "every notify carries a valid signature");

    // START_RTMP: the room streams live to the URL plugNmeet passes, until STOP_RTMP.
    let nginx = RtmpServer::start(dir.path());
    let stream_url = nginx.url("live", "pnm-stream-key");
    let mut start_rtmp = request(RecordingTasks::StartRtmp, RECORDER_ID);
    (start_rtmp.recording_id, start_rtmp.rtmp_url) = (RTMP_ID.into(), Some(stream_url.clone()));
    let started = ask(&pnm, &start_rtmp).await.expect("START_RTMP answered");
    assert!(started.status, "{started:?}");
    let live = notifies.wait_for_recording(RecordingTasks::StartRtmp, RTMP_ID, Duration::from_secs(30)).await;
    assert!(live.status, "{live:?}");
    let pulled = probe_stream(&stream_url, Duration::from_secs(20)).expect("the RTMP stream plays");
    assert!(pulled.iter().any(|(codec, ..)| codec == "h264") && pulled.iter().any(|(codec, ..)| codec == "aac"), "{pulled:?}");
    let stopped = ask(&pnm, &request(RecordingTasks::StopRtmp, "")).await.expect("STOP_RTMP answered by the holder");
    assert!(stopped.status, "{stopped:?}");
    let ended = notifies.wait_for_recording(RecordingTasks::EndRtmp, RTMP_ID, Duration::from_secs(30)).await;
    assert!(ended.status, "{ended:?}");
    assert_eq!(*notifies.refused.lock().unwrap(), 0);

    // A clean shutdown purges the registration at once.
    controller.terminate(Duration::from_secs(10));
    for n in 0..5 {
        assert_eq!(field(&bucket, n).await, None, "FIELD_{n} left behind");
    }
    drop(devroom);
}

async fn wait_for_registration(bucket: &kv::Store, after_ms: u64, what: &str) {
    fleet_tests::wait::until(&format!("a registration {what}"), Duration::from_secs(10), || async {
        let ping = field(bucket, 1).await.and_then(|p| p.parse::<u64>().ok());
        let registered = ping.is_some_and(|ping| ping > after_ms) && field(bucket, 0).await.is_some();
        if registered { Ok(()) } else { Err(format!("last ping {ping:?}")) }
    })
    .await
}

/// Start order does not matter: a controller started before plugnmeet-server made its bucket registers
/// when the bucket appears, and again when the bucket was lost and recreated (plugnmeet-server restarted
/// on a NATS without its JetStream data).
#[tokio::test(flavor = "multi_thread")]
async fn the_drop_in_waits_for_plugnmeets_bucket_and_registers_again_when_it_is_recreated() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let notifies = Notifies::default();
    let server_url = notifies.start().await;
    let mut fleet = Fleet::new(dir.path(), &nats, StorageSetup::Local(dir.path().join("storage")));
    let pnm_nats = PlugnmeetNats::start(dir.path(), PNM_KEY, PNM_SECRET).await;
    fleet.controller_extra = format!(
        "[controller.plugnmeet]\nenabled = true\nnats_url = \"{}\"\nrecorder_id = \"{RECORDER_ID}\"\napi_key = \"{PNM_KEY}\"\napi_secret = \"{PNM_SECRET}\"\nserver_url = \"{server_url}\"\n",
        pnm_nats.url()
    );
    let port = free_port();
    let _controller = fleet.controller(port);
    let pnm = pnm_nats.server_connection().await;
    // The controller serves its API without the bucket, and answers on the recorder channel already.
    let rtmp = ask(&pnm, &request(RecordingTasks::StartRtmp, RECORDER_ID)).await.expect("the recorder channel is served before the bucket exists");
    assert!(!rtmp.status);
    // plugNmeet chooses a recorder by score alone: a fleet without a free recorder slot refuses the start.
    let full = ask(&pnm, &request(RecordingTasks::StartRecording, RECORDER_ID)).await.expect("start answered");
    assert!(!full.status && full.msg.contains("no free recorder slot"), "{full:?}");

    let js = async_nats::jetstream::new(pnm.clone());
    let created = now_ms();
    let bucket = pnm_nats.create_bucket().await;
    wait_for_registration(&bucket, created, "after the bucket was created").await;

    js.delete_key_value("pnm-recorderInfo").await.unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let recreated = now_ms();
    let bucket = pnm_nats.create_bucket().await;
    wait_for_registration(&bucket, recreated, "after the bucket was recreated").await;
}

/// A short test file made with ffmpeg: `size` picture, a tone, `seconds` long, in the container the name says.
fn make_input(path: &std::path::Path, size: &str, seconds: u32, audio_codec: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i", &format!("testsrc=size={size}:rate=25:duration={seconds}")])
        .args(["-f", "lavfi", "-i", &format!("sine=frequency=440:duration={seconds}")])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-c:a", audio_codec, "-shortest"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success(), "ffmpeg made no {}", path.display());
}

fn transcoding_task(recording_id: &str, details: TaskDetails) -> TranscodingTask {
    TranscodingTask {
        recording_id: recording_id.into(),
        room_id: "room1".into(),
        room_sid: "RM_t".into(),
        room_table_id: 7,
        recorder_id: "node_01".into(),
        task_details: Some(details),
    }
}

/// plugNmeet's transcoder queue: post-recording and merge tasks run on a fleet transcoder that has the
/// recordings root mounted; the results land where plugNmeet looks and are reported as its transcoder does.
/// Garbage and hostile tasks are refused without stopping the queue.
#[tokio::test(flavor = "multi_thread")]
async fn plugnmeet_transcoding_tasks_run_on_fleet_transcoders() {
    let dir = tempfile::tempdir().unwrap();
    let main_path = dir.path().join("recording_files");
    make_input(&main_path.join("node_01/room1/RM_p-1_raw.mkv"), "1280x720", 3, "pcm_s16le");
    make_input(&main_path.join("node_01/room1/a.mp4"), "640x360", 2, "aac");
    make_input(&main_path.join("node_02/room1/b.mp4"), "1280x720", 3, "aac");
    let nats = Nats::start(dir.path());
    let pnm_nats = PlugnmeetNats::start(dir.path(), PNM_KEY, PNM_SECRET).await;
    pnm_nats.create_recorder_objects().await;
    let js = async_nats::jetstream::new(pnm_nats.server_connection().await);
    let notifies = Notifies::default();
    let server_url = notifies.start().await;
    let mut fleet = Fleet::new(dir.path(), &nats, StorageSetup::Local(dir.path().join("storage")));
    fleet.controller_extra = format!(
        "[controller.plugnmeet]\nenabled = true\nnats_url = \"{}\"\nrecorder_id = \"{RECORDER_ID}\"\napi_key = \"{PNM_KEY}\"\napi_secret = \"{PNM_SECRET}\"\nserver_url = \"{server_url}\"\nmain_path = \"{}\"\n[storage]\nkind = \"local\"\nlocal_root = \"{}\"\n",
        pnm_nats.url(),
        main_path.display(),
        dir.path().join("storage").display()
    );
    fleet.transcoder_extra = format!("shared_files_root = \"{}\"\n", main_path.display());
    let _controller = fleet.controller(free_port());
    let _transcoder = fleet.transcoder("tx-1");

    let publish = |payload: Vec<u8>| {
        let js = js.clone();
        async move { js.publish("pnm-RecorderTranscoderJobs", payload.into()).await.unwrap().await.unwrap() }
    };
    // Hostile first: garbage, then a path out of the root. Neither may stop the queue.
    publish(b"not a protobuf \xff\xff".to_vec()).await;
    let escape = TranscodingTaskMergeRecordings { file_paths: vec!["../../etc/passwd".into()] };
    publish(transcoding_task("RM_bad-3", TaskDetails::MergeRecordings(escape)).encode_to_vec()).await;
    let post = TranscodingTaskPostRecording {
        file_path: main_path.join("node_01/room1").to_string_lossy().into(),
        file_name: "RM_p-1_raw.mkv".into(),
        recording_variant: 0,
    };
    publish(transcoding_task("RM_p-1", TaskDetails::PostRecording(post)).encode_to_vec()).await;
    let merge = TranscodingTaskMergeRecordings { file_paths: vec!["node_01/room1/a.mp4".into(), "node_02/room1/b.mp4".into()] };
    publish(transcoding_task("RM_m-2", TaskDetails::MergeRecordings(merge)).encode_to_vec()).await;

    let refused = notifies.wait_for_recording(RecordingTasks::RecordingTranscodingFinished, "RM_bad-3", Duration::from_secs(30)).await;
    assert!(!refused.status && refused.msg.contains("recordings root"), "{refused:?}");
    for (recording_id, expected_path, seconds) in [("RM_p-1", "node_01/room1/RM_p-1.mp4", 3.0), ("RM_m-2", "node_01/room1/RM_m-2.mp4", 5.0)] {
        let finished = notifies.wait_for_recording(RecordingTasks::RecordingTranscodingFinished, recording_id, Duration::from_secs(120)).await;
        assert!(finished.status, "{finished:?}");
        let proceeded = notifies.wait_for_recording(RecordingTasks::RecordingProceeded, recording_id, Duration::from_secs(1)).await;
        assert_eq!(proceeded.file_path, expected_path);
        assert_eq!(proceeded.room_table_id, 7);
        let mp4 = main_path.join(expected_path);
        let bytes = std::fs::read(&mp4).unwrap();
        assert!(moov_before_mdat(&bytes), "{expected_path}: faststart");
        let errors = decode_errors(&mp4);
        assert!(errors.is_empty(), "{expected_path} must decode cleanly: {errors}");
        let probe = ffprobe(&mp4);
        let duration: f64 = probe["format"]["duration"].as_str().unwrap().parse().unwrap();
        assert!((duration - seconds).abs() < 0.25, "{expected_path}: {duration} s, expected {seconds}");
        let video = stream(&probe, "video");
        assert_eq!((video["codec_name"].as_str(), video["profile"].as_str(), video["width"].as_u64()), (Some("h264"), Some("High"), Some(1280)));
        assert_eq!(stream(&probe, "audio")["codec_name"], "aac");
    }
    // Order per recording: PROCEEDED before FINISHED; inputs are left in place.
    let tasks: Vec<(String, i32)> = notifies.accepted.lock().unwrap().iter().map(|n| (n.recording_id.clone(), n.task)).collect();
    for recording_id in ["RM_p-1", "RM_m-2"] {
        let mine: Vec<i32> = tasks.iter().filter(|(r, _)| r == recording_id).map(|(_, t)| *t).collect();
        assert_eq!(mine, [RecordingTasks::RecordingProceeded as i32, RecordingTasks::RecordingTranscodingFinished as i32]);
    }
    assert!(main_path.join("node_01/room1/RM_p-1_raw.mkv").exists());
    assert_eq!(*notifies.refused.lock().unwrap(), 0);
}
