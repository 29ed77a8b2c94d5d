//! `deploy/dev.sh demo`: a recording on the embedded defaults, end to end. NATS, the controller and a
//! recorder node in mode `both` record room "demo" of LiveKit's own livekit-server with three real
//! publishers (LiveKit's Python SDK: one joins late, one mutes its camera, one publishes H.264 and leaves)
//! for 20 s through the API, then print the job, the room events of its timeline, the MP4's ffprobe
//! summary and, last, `recording: <path>`. `--devroom` records the devroom stand-in instead (no root).
//!
//! The real server's publishers ignore loopback, so that run happens in a private network namespace
//! (`unshare -n`, root) on a veth pair with private addresses: nothing leaves the machine. Everything the
//! run wrote stays in `.fleet-dev/demo-*`.

use fleet_tests::devroom::Devroom;
use fleet_tests::livekit_server::{LiveKitOptions, LiveKitServer};
use fleet_tests::netns;
use fleet_tests::publisher::{Publisher, PublisherSpec};
use fleet_tests::{Setup, StorageSetup};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const ROOM: &str = "demo";
const RECORD_FOR: Duration = Duration::from_secs(20);

fn main() {
    let devroom = std::env::args().any(|a| a == "--devroom");
    if !devroom {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("the real-server demo needs root for its network namespace; try: sudo deploy/dev.sh demo, or deploy/dev.sh demo --devroom");
            std::process::exit(1);
        }
        netns::run_binary_inside();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("a runtime");
    runtime.block_on(demo(devroom));
}

fn say(line: &str) {
    eprintln!("[demo] {line}");
}

async fn demo(devroom: bool) {
    let work = work_dir();
    let storage = work.path().join("storage");
    let mut setup = Setup::with_storage(work, StorageSetup::Local(storage.clone()), storage.clone());
    let dir = setup.dir.path().to_path_buf();

    // The room and who is in it.
    let mut publishers = Vec::new();
    let server = if devroom {
        say("starting devroom (LiveKit stand-in; encodes its clips once, cached in target/devroom-clips)");
        let scenario = std::fs::read_to_string(workspace().join("deploy/devroom/demo.toml")).expect("deploy/devroom/demo.toml");
        let room = Devroom::start(&dir, &scenario);
        setup.fleet.recorder_extra = room.recorder_toml(30);
        Server::Devroom(room)
    } else {
        say("starting livekit-server and three publishers (LiveKit's Python SDK)");
        let server = LiveKitServer::start(&dir, &LiveKitOptions { node_ip: netns::SERVER_IP.into(), ..LiveKitOptions::default() });
        setup.fleet.recorder_extra = server.recorder_toml(30);
        let spec = |identity: &str, index, codec, flags: &[&str]| PublisherSpec {
            seconds: 40.0,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            ..PublisherSpec::new(identity, index, codec)
        };
        let alice = Publisher::start(&server, ROOM, &PublisherSpec { simulcast: true, ..spec("alice", 0, "vp8", &["--mute-camera", "8:12"]) }, &dir);
        publishers.push(Publisher::start(&server, ROOM, &spec("bob", 1, "h264", &["--leave-at", "16"]), &dir));
        alice.wait_published(Duration::from_secs(60));
        publishers.push(alice);
        Server::Livekit(server)
    };
    let _recorder = setup.fleet.recorder("demo-node", "both", 2);
    let room_url = match &server {
        Server::Livekit(server) => server.url(),
        Server::Devroom(room) => room.url(),
    };
    say(&format!(
        "fleet up: controller http://127.0.0.1:{}, room server {room_url}, recorder demo-node (mode both); logs in {}",
        setup.port,
        dir.display()
    ));

    let api = &setup.api;
    let id = api.start(&format!(r#"{{"room":"{ROOM}"}}"#)).await;
    say(&format!("recording {id} requested"));
    api.wait_for_state(&id, &["recording"], Duration::from_secs(60)).await;
    say(&format!("recording room '{ROOM}' for {} s: dana joins after 5 s, alice mutes her camera, bob leaves", RECORD_FOR.as_secs()));
    if let Server::Livekit(server) = &server {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let dana = PublisherSpec { seconds: 40.0, ..PublisherSpec::new("dana", 2, "vp8") };
        publishers.push(Publisher::start(server, ROOM, &dana, &dir));
        tokio::time::sleep(RECORD_FOR - Duration::from_secs(5)).await;
    } else {
        tokio::time::sleep(RECORD_FOR).await;
    }
    assert_eq!(api.stop(&id).await.status, 202, "the stop was refused");
    say("stopped; waiting for the transcode");
    let record = api.wait_for_state(&id, &["complete", "failed"], Duration::from_secs(300)).await;
    let summary: Value = ["id", "state", "end_reason", "error", "sessions", "output"].iter().map(|k| (k.to_string(), record[k].clone())).collect();
    println!("{}", serde_json::to_string_pretty(&summary).expect("JSON"));
    if record["state"] != "complete" {
        say("the recording failed; see the logs above");
        std::process::exit(1);
    }
    say("room events in the timeline (seconds from the start of the capture):");
    print_room_events(&storage.join(format!("recordings/{id}/raw/s1/timeline.jsonl")));
    let mp4 = record["output"]["location"].as_str().expect("an output location").to_string();
    let _ = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration,size:stream=codec_name,profile,width,height,r_frame_rate,sample_rate,channels"])
        .args(["-of", "default=nw=1", &mp4])
        .status();
    drop(publishers);
    println!("recording: {mp4}");
}

/// The room's server, kept running until the end.
enum Server {
    Livekit(LiveKitServer),
    Devroom(Devroom),
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf()
}

/// `.fleet-dev/demo-<time>-*`, kept after the run.
fn work_dir() -> tempfile::TempDir {
    let root = workspace().join(".fleet-dev");
    std::fs::create_dir_all(&root).expect(".fleet-dev");
    let stamp = fleet_protocol::time::now_ms() / 1000;
    let mut dir = tempfile::Builder::new().prefix(&format!("demo-{stamp}-")).tempdir_in(&root).expect("a demo folder");
    dir.disable_cleanup(true);
    dir
}

fn print_room_events(timeline: &Path) {
    let Ok(text) = std::fs::read_to_string(timeline) else { return };
    let wanted = ["participant_", "track_published", "track_unpublished", "track_muted"];
    for entry in text.lines().filter_map(|l| serde_json::from_str::<Value>(l).ok()) {
        let kind = entry["type"].as_str().unwrap_or("");
        if !wanted.iter().any(|w| kind.starts_with(w)) {
            continue;
        }
        let t = entry["running_ns"].as_f64().unwrap_or(0.0) / 1e9;
        let fields: Vec<String> = ["participant", "track", "codec", "muted"]
            .iter()
            .filter(|k| !entry[**k].is_null())
            .map(|k| format!("{k}={}", entry[*k].as_str().map(str::to_string).unwrap_or_else(|| entry[*k].to_string())))
            .collect();
        println!("{t:7.2} s  {kind:<20} {}", fields.join(" "));
    }
}
