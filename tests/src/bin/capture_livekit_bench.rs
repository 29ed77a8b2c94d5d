//! Capture through LiveKit's real server beside devroom (`deploy/dev.sh bench`), written to
//! `target/bench/capture-livekit.json` with the machine it ran on:
//! - Recorder CPU (seconds of CPU per wall second, one core = 1.0), peak RSS and media bytes stored per
//!   second while it records a 4-publisher room for N seconds: once from devroom, once from livekit-server
//!   with four `lk room join --publish` publishers sending a camera-like VP8 720p30 clip (~1.5 Mbps) and
//!   Opus, the bitrates of devroom's participants. Only the recorder process is measured.
//! - API start → first media bytes written, p50/p99 over N recordings of a 1-publisher room, on both.
//!
//! The run happens in a private network namespace (it re-runs itself under `unshare -n`): `lk` (pion)
//! and livekit-server need an interface other than loopback for media.

use fleet_tests::api::Api;
use fleet_tests::bench::machine;
use fleet_tests::capture_bench::{Options, SCENARIO, options, record_four, start_to_first_media};
use fleet_tests::devroom::Devroom;
use fleet_tests::livekit_server::{API_KEY, API_SECRET, LiveKitOptions, LiveKitServer, tool_path};
use fleet_tests::procs::{Proc, free_port};
use fleet_tests::{Fleet, Nats, StorageSetup, netns};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn main() {
    netns::run_binary_inside();
    tokio::runtime::Runtime::new().unwrap().block_on(run(options()));
}

async fn run(options: Options) {
    let (camera, voice) = clips();
    let mut dir = tempfile::tempdir().unwrap();
    if std::env::var_os("FLEET_KEEP_TEST_DIRS").is_some() {
        dir.disable_cleanup(true);
        eprintln!("[bench] keeping {}", dir.path().display());
    }
    let nats = Nats::start(dir.path());
    let root = dir.path().join("storage");
    let mut fleet = Fleet::new(dir.path(), &nats, StorageSetup::Local(root.clone()));
    let port = free_port();
    let _controller = fleet.controller(port);
    let api = Api::new(port);

    eprintln!("[bench] devroom");
    let devroom = Devroom::start(dir.path(), SCENARIO);
    fleet.recorder_extra = devroom.recorder_toml(3600);
    let recorder = fleet.recorder("bench-devroom", "recorder-only", 4);
    let devroom_figures = json!({
        "api_start_to_first_media_ms": start_to_first_media(&api, &nats, &options).await,
        "record_four_publishers": record_four(&api, &recorder, &root, &options).await,
    });
    drop((recorder, devroom));

    // `lk` publishes a file once (no loop): each publisher starts just before what it is measured for.
    eprintln!("[bench] livekit-server, publishers: lk room join --publish");
    let server = LiveKitServer::start(dir.path(), &LiveKitOptions { node_ip: netns::SERVER_IP.into(), empty_timeout_s: 3600, ..Default::default() });
    fleet.recorder_extra = server.recorder_toml(3600);
    let recorder = fleet.recorder("bench-livekit", "recorder-only", 4);
    let solo = publisher(&server, "bench-latency", "solo", &camera, &voice, dir.path());
    wait_for_publishers(&server, "bench-latency", 1).await;
    let latency = start_to_first_media(&api, &nats, &options).await;
    drop(solo);
    let four: Vec<Proc> = ["p1", "p2", "p3", "p4"].iter().map(|p| publisher(&server, "bench-four", p, &camera, &voice, dir.path())).collect();
    wait_for_publishers(&server, "bench-four", 4).await;
    let livekit_figures = json!({
        "api_start_to_first_media_ms": latency,
        "record_four_publishers": record_four(&api, &recorder, &root, &options).await,
    });
    drop((recorder, four));

    let ratio = |field: &str| {
        livekit_figures["record_four_publishers"][field].as_f64().unwrap() / devroom_figures["record_four_publishers"][field].as_f64().unwrap()
    };
    let result = json!({
        "machine": machine(),
        "devroom": devroom_figures,
        "livekit_server": livekit_figures,
        "livekit_over_devroom": {
            "recorder_cores": ratio("recorder_cores"),
            "recorder_peak_rss_mb": ratio("recorder_peak_rss_mb"),
            "stored_bytes_per_s": ratio("stored_bytes_per_s"),
        },
        "room": "4 publishers, each VP8 1280x720 30 fps ~1.5 Mbps + Opus: devroom's pre-encoded media; through livekit-server v1.13.5, `lk room join --publish` of a camera-like clip (testsrc2 with noise, libvpx)",
        "targets": { "cores": 0.05, "rss_mb": 60, "start_to_first_media_p99_ms": 500 },
        "note": "recorder-only node; the SFU, the publishers and the controller run in their own processes and are not counted",
    });
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    let path = out.join("capture-livekit.json");
    std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
    eprintln!("[bench] written to {}", path.display());
}

/// One `lk room join` publishing the clips (looped) as `identity`.
fn publisher(server: &LiveKitServer, room: &str, identity: &str, camera: &Path, voice: &Path, dir: &Path) -> Proc {
    let (camera, voice) = (camera.to_string_lossy(), voice.to_string_lossy());
    let url = server.url();
    let args = [
        "room",
        "join",
        "--url",
        &url,
        "--api-key",
        API_KEY,
        "--api-secret",
        API_SECRET,
        "--identity",
        identity,
        "--publish",
        &camera,
        "--publish",
        &voice,
        "--fps",
        "30",
        room,
    ];
    Proc::spawn_remote(&format!("lk-{room}-{identity}"), &tool_path("lk"), &args, &[], dir)
}

async fn wait_for_publishers(server: &LiveKitServer, room: &str, count: usize) {
    let client = server.room_client();
    fleet_tests::wait::until(&format!("{room}: {count} publishers with both tracks"), Duration::from_secs(60), || async {
        let publishing = client.list_participants(room).await.unwrap_or_default().iter().filter(|p| p.tracks.len() >= 2).count();
        if publishing >= count { Ok(()) } else { Err(format!("{publishing} publishing")) }
    })
    .await
}

/// The publishers' clips, made once per machine under `target/bench/clips`: a camera-like 720p30 VP8 at
/// ~1.5 Mbps (moving test pattern with sensor-like noise) and 48 kHz Opus, 100 s (enough for a 60 s
/// measurement; `lk` does not loop them).
fn clips() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/clips");
    std::fs::create_dir_all(&dir).unwrap();
    let (camera, voice) = (dir.join("camera-720p30-vp8-1500k-100s.ivf"), dir.join("voice-opus-48k-100s.ogg"));
    let make = |path: &Path, args: &[&str]| {
        if path.exists() {
            return;
        }
        eprintln!("[bench] making {}", path.display());
        let partial = path.with_extension("partial");
        let status = std::process::Command::new("ffmpeg").args(["-v", "error", "-y"]).args(args).arg(&partial).status().expect("ffmpeg runs");
        assert!(status.success(), "ffmpeg could not make {}", path.display());
        std::fs::rename(&partial, path).unwrap();
    };
    make(
        &camera,
        &[
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=1280x720:rate=30,noise=alls=12:allf=t",
            "-t",
            "100",
            "-c:v",
            "libvpx",
            "-b:v",
            "1500k",
            "-minrate",
            "1500k",
            "-maxrate",
            "1500k",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-g",
            "60",
            "-f",
            "ivf",
        ],
    );
    make(&voice, &["-f", "lavfi", "-i", "sine=frequency=330:sample_rate=48000", "-t", "100", "-c:a", "libopus", "-b:a", "32k", "-f", "ogg"]);
    (camera, voice)
}
