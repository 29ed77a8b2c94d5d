//! End-to-end encrypted rooms against the real livekit-server, with LiveKit's Python SDK publishing
//! encrypted tracks (its native frame cryptor): the recorder stores ciphertext, the transcoder holding the
//! key pair decrypts, and no key reaches a log, NATS or storage.

use fleet_tests::Setup;
use fleet_tests::livekit_server::LiveKitServer;
use fleet_tests::media::decode_errors;
use fleet_tests::netns;
use fleet_tests::publisher::{Publisher, PublisherSpec};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

mod real_server;
use real_server::*;

const ROOM_KEY: &str = "e2ee-room-passphrase-7f3a";
const OWN_KEY: &str = "carols-own-key-91c2";

/// The publishers' tints (U, V offsets), as `publisher.py` paints them, by marker index.
const TINTS: [(f64, f64); 3] = [(-20.0, 40.0), (-30.0, -30.0), (40.0, -20.0)];

/// A fleet whose transcoders hold a key pair made by `transcoder e2ee-keygen`, whose controller seals
/// jobs' keys to it, beside livekit-server; one recorder in mode both.
fn fleet_with_key_pair(slots: u32) -> (Setup, LiveKitServer, fleet_tests::procs::Proc) {
    let mut setup = Setup::local();
    let (public, private_file) = fleet_tests::transcoder_key_pair(setup.dir.path());
    use std::os::unix::fs::PermissionsExt as _;
    assert_eq!(std::fs::metadata(&private_file).unwrap().permissions().mode() & 0o777, 0o600, "the private key is its owner's only");
    setup.fleet.controller_settings = format!("e2ee_public_key = \"{public}\"\n");
    setup.fleet.transcoder_extra = format!("e2ee_private_key_file = \"{}\"\n", private_file.display());
    setup.controller = None;
    setup.controller = Some(setup.fleet.controller(setup.port));
    let server = LiveKitServer::start(
        setup.dir.path(),
        &fleet_tests::livekit_server::LiveKitOptions { node_ip: netns::SERVER_IP.into(), ..Default::default() },
    );
    setup.fleet.recorder_extra = server.recorder_toml(30);
    let recorder = setup.fleet.recorder("rec-1", "both", slots);
    (setup, server, recorder)
}

fn publisher(identity: &str, index: usize, codec: &'static str, flags: &[&str]) -> PublisherSpec {
    let mut spec = PublisherSpec::new(identity, index, codec);
    // Three live encoders share 2 cores here: small pictures, so none of them starves.
    (spec.width, spec.height, spec.seconds) = (320, 180, 45.0);
    spec.flags = flags.iter().map(|f| f.to_string()).collect();
    spec
}

/// Mean Y, U and V of the picture in `crop` at `at_s`, decoded by ffmpeg.
fn planes_at(mp4: &Path, crop: &str, at_s: f64) -> (f64, f64, f64) {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-ss", &format!("{at_s:.2}"), "-i"])
        .arg(mp4)
        .args(["-frames:v", "1", "-vf", &format!("crop={crop},format=yuv420p"), "-f", "rawvideo", "-"])
        .output()
        .unwrap();
    let (w, h): (usize, usize) = {
        let mut parts = crop.split(':').map(|p| p.parse::<usize>().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    };
    let (luma, chroma) = (w * h, (w / 2) * (h / 2));
    assert_eq!(out.stdout.len(), luma + 2 * chroma, "ffmpeg gave no picture at {at_s} s: {}", String::from_utf8_lossy(&out.stderr));
    let mean = |plane: &[u8]| plane.iter().map(|&b| b as f64).sum::<f64>() / plane.len() as f64;
    (mean(&out.stdout[..luma]), mean(&out.stdout[luma..luma + chroma]), mean(&out.stdout[luma + chroma..]))
}

/// An ARGB colour in limited-range BT.601 YUV (what the MP4 holds).
fn bt601(argb: u32) -> (f64, f64, f64) {
    let [r, g, b] = [(argb >> 16) & 0xff, (argb >> 8) & 0xff, argb & 0xff].map(f64::from);
    (16.0 + 0.257 * r + 0.504 * g + 0.098 * b, 128.0 - 0.148 * r - 0.291 * g + 0.439 * b, 128.0 + 0.439 * r - 0.368 * g - 0.071 * b)
}

/// The median tint of a tile over several instants (a flash, white and untinted, may fall on one).
fn tile_tint(mp4: &Path, crop: &str, from_s: f64, to_s: f64) -> (f64, f64) {
    let samples: Vec<(f64, f64)> = (0..7)
        .map(|i| {
            let (_, u, v) = planes_at(mp4, crop, from_s + (to_s - from_s) * i as f64 / 6.0);
            (u, v)
        })
        .collect();
    let us: Vec<f64> = samples.iter().map(|s| s.0).collect();
    let vs: Vec<f64> = samples.iter().map(|s| s.1).collect();
    (median(&us) - 128.0, median(&vs) - 128.0)
}

/// The tracks (`participant/track`) the warnings containing `needle` name: one warning per track, or per
/// track and chunk when the transcode went in chunks (`chunk 1 (10-20 s): dave/TR_…: …`).
fn tracks_named<'a>(warnings: &'a [Value], needle: &str) -> std::collections::BTreeSet<&'a str> {
    warnings
        .iter()
        .filter_map(|w| w.as_str().filter(|w| w.contains(needle)))
        .filter_map(|w| w.split(": ").find(|part| part.contains('/')).and_then(|part| part.split_whitespace().next()))
        .collect()
}

fn assert_tint(mp4: &Path, crop: &str, from_s: f64, to_s: f64, index: usize, who: &str) {
    let (u, v) = tile_tint(mp4, crop, from_s, to_s);
    let (want_u, want_v) = TINTS[index];
    println!("{who}: tint ({u:.1}, {v:.1}), painted ({want_u}, {want_v})");
    assert!(
        (u - want_u).abs() <= 8.0 && (v - want_v).abs() <= 8.0,
        "{who}'s tile is not their picture: tint ({u:.1}, {v:.1}), painted ({want_u}, {want_v})"
    );
}

/// Every file under `dir`, except the publishers' own logs (they are given the keys on their command line).
fn fleet_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if !entry.file_name().to_string_lossy().starts_with("publisher-") {
                files.push(path);
            }
        }
    }
    files
}

/// The forms a secret could leak in: as given, and the AES key derived from it (bytes, hex, base64).
fn secret_forms(passphrase: &str) -> Vec<Vec<u8>> {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = fleet_e2ee::kdf::aes_key(fleet_e2ee::Kdf::Pbkdf2, passphrase.as_bytes(), fleet_e2ee::kdf::DEFAULT_SALT);
    vec![
        passphrase.as_bytes().to_vec(),
        b64.encode(passphrase).into_bytes(),
        key.to_vec(),
        hex::encode(key).into_bytes(),
        b64.encode(key).into_bytes(),
    ]
}

/// Three publishers with end-to-end encryption: VP8 and H.264 with the room's key, VP8 with the
/// publisher's own key; each with Opus. Raw segments are ciphertext; the MP4 has every picture, in sync.
#[test]
fn an_encrypted_room_is_stored_as_ciphertext_and_decrypted_by_the_transcoder() {
    if !netns::enter("an_encrypted_room_is_stored_as_ciphertext_and_decrypted_by_the_transcoder") {
        return;
    }
    runtime().block_on(async {
        let (setup, server, _recorder) = fleet_with_key_pair(2);
        let room = "e2ee-room";
        let dir = setup.dir.path();
        let alice = Publisher::start(&server, room, &publisher("alice", 0, "vp8", &["--e2ee-key", ROOM_KEY]), dir);
        alice.wait_published(Duration::from_secs(30));
        let bob = Publisher::start(&server, room, &publisher("bob", 1, "h264", &["--e2ee-key", ROOM_KEY]), dir);
        bob.wait_published(Duration::from_secs(30));
        let carol = Publisher::start(&server, room, &publisher("carol", 2, "vp8", &["--e2ee-own-key", OWN_KEY]), dir);
        carol.wait_published(Duration::from_secs(30));

        let request = json!({
            "room": room,
            "e2ee": { "keys": { "shared": [{ "passphrase": ROOM_KEY }], "participants": { "carol": [{ "passphrase": OWN_KEY }] } } },
        });
        let id = setup.api.start(&request.to_string()).await;
        setup.api.wait_for_state(&id, &["recording"], Duration::from_secs(30)).await;
        tokio::time::sleep(Duration::from_secs(18)).await;
        let record = stop_and_complete(&setup, &id, Duration::from_secs(240)).await;
        println!("warnings: {}", record["warnings"]);
        assert!(record["warnings"].as_array().is_none_or(|w| w.is_empty()), "warnings: {record:#}");

        // The record shows that keys are there, sealed, and never what they are.
        let e2ee = &record["request"]["e2ee"];
        assert!(e2ee["sealed_keys"].as_str().is_some_and(|s| s.len() > 40) && e2ee.get("keys").is_none(), "{e2ee:#}");

        let session = record["sessions"][0]["id"].as_str().unwrap().to_string();
        let entries = timeline(&setup.root, &id, &session);
        let published: Vec<&Value> = entries.iter().filter(|e| e["type"] == "track_published").collect();
        assert_eq!(published.len(), 6, "{entries:#?}");
        assert!(published.iter().all(|e| e["encryption"] == "gcm"), "every track is marked encrypted: {published:#?}");
        assert!(entries.iter().any(|e| e["type"] == "e2ee_trailer"), "the room's trailer is kept");

        // The stored video is ciphertext: a decoder makes nothing of it.
        let raw = setup.root.join(format!("recordings/{id}/raw/{session}"));
        for participant in ["alice", "bob", "carol"] {
            let video = published.iter().find(|e| e["participant"] == participant && e["kind"] == "video").unwrap();
            let segment = raw.join(participant).join(video["track"].as_str().unwrap()).join("00001.mkv");
            let errors = decode_errors(&segment);
            println!("{participant}: decoding a raw segment: {} error lines", errors.lines().count());
            assert!(!errors.is_empty(), "{}: the stored video decodes as it is: not ciphertext", segment.display());
        }

        let path = keep_mp4(&setup, &record, "e2ee-room.mp4");
        let duration: f64 = fleet_tests::media::ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
        let grid = [(0, 0, 640, 360), (640, 0, 640, 360), (0, 360, 640, 360)];
        for (index, who) in ["alice", "bob", "carol"].iter().enumerate() {
            assert_tint(&path, &picture_crop(grid[index]), 1.5, duration - 1.5, index, who);
        }
        assert_in_sync(&sync_reports(&path, &[0, 1, 2], &grid, 1.0, duration - 1.0), &[Sender::PythonSdk; 3]);

        // No key, nor the AES key derived from it, anywhere the fleet writes: logs, NATS's streams and
        // buckets (its store on disk), storage, spools and scratch space.
        drop((alice, bob, carol));
        let files = fleet_files(dir);
        assert!(files.iter().any(|f| f.to_string_lossy().contains("jetstream")), "the NATS store is searched");
        for secret in [ROOM_KEY, OWN_KEY] {
            for form in secret_forms(secret) {
                for file in &files {
                    let bytes = std::fs::read(file).unwrap_or_default();
                    assert!(!bytes.windows(form.len()).any(|w| w == form), "{}: holds a form of a key", file.display());
                }
            }
        }
        println!("searched {} files for {} forms of each key", files.len(), secret_forms(ROOM_KEY).len());
    });
}

/// A wrong key: the job completes and names the tracks it could not decrypt, with counts. No key for a
/// publisher: their tracks are left out (a placeholder tile) with a warning. A job that requires keys for
/// every encrypted track and lacks one fails, naming the track. A key change mid-recording (a new key
/// index) is followed when the job carries both keys.
#[test]
fn wrong_keys_are_reported_and_a_key_change_is_followed() {
    if !netns::enter("wrong_keys_are_reported_and_a_key_change_is_followed") {
        return;
    }
    runtime().block_on(async {
        let (setup, server, _recorder) = fleet_with_key_pair(4);
        let dir = setup.dir.path();
        let dave = Publisher::start(&server, "e2ee-wrong", &publisher("dave", 0, "vp8", &["--e2ee-key", "daves-real-key"]), dir);
        let erin = Publisher::start(&server, "e2ee-rekey", &publisher("erin", 1, "vp8", &["--e2ee-key", "first-key", "--e2ee-key-change", "14:second-key"]), dir);
        dave.wait_published(Duration::from_secs(30));
        erin.wait_published(Duration::from_secs(30));

        let wrong = json!({ "room": "e2ee-wrong", "e2ee": { "keys": { "shared": [{ "passphrase": "not-the-key" }] } } });
        let required = json!({ "room": "e2ee-wrong", "e2ee": { "keys": { "participants": { "someone-else": [{ "passphrase": "x" }] } }, "require_keys": true } });
        let keyless = json!({ "room": "e2ee-wrong", "e2ee": { "keys": { "participants": { "someone-else": [{ "passphrase": "x" }] } } } });
        let rekey = json!({ "room": "e2ee-rekey", "e2ee": { "keys": { "shared": [{ "index": 0, "passphrase": "first-key" }, { "index": 1, "passphrase": "second-key" }] } } });
        let mut ids = Vec::new();
        for request in [&wrong, &required, &rekey, &keyless] {
            ids.push(setup.api.start(&request.to_string()).await);
        }
        for id in &ids {
            setup.api.wait_for_state(id, &["recording"], Duration::from_secs(30)).await;
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
        for id in &ids {
            assert_eq!(setup.api.stop(id).await.status, 202);
        }
        let [wrong_id, required_id, rekey_id, keyless_id] = [&ids[0], &ids[1], &ids[2], &ids[3]];

        let wrong = setup.api.wait_for_state(wrong_id, &["complete", "failed"], Duration::from_secs(240)).await;
        assert_eq!(wrong["state"], "complete", "{wrong:#}");
        let warnings = wrong["warnings"].as_array().cloned().unwrap_or_default();
        println!("wrong key: {warnings:#?}");
        let undecrypted = tracks_named(&warnings, "could not be decrypted");
        assert_eq!(undecrypted.len(), 2, "camera and microphone named: {warnings:#?}");
        assert!(undecrypted.iter().all(|track| track.starts_with("dave/")), "{warnings:#?}");
        keep_mp4(&setup, &wrong, "wrong-key.mp4");

        let required = setup.api.wait_for_state(required_id, &["complete", "failed"], Duration::from_secs(240)).await;
        assert_eq!(required["state"], "failed", "{required:#}");
        let error = required["error"].as_str().unwrap();
        assert!(error.contains("dave/") && error.contains("no key") && error.contains("requires keys"), "{error}");

        let keyless = setup.api.wait_for_state(keyless_id, &["complete", "failed"], Duration::from_secs(240)).await;
        assert_eq!(keyless["state"], "complete", "{keyless:#}");
        let warnings = keyless["warnings"].as_array().cloned().unwrap_or_default();
        let keyless_tracks = tracks_named(&warnings, "no key");
        assert_eq!(keyless_tracks.len(), 2, "camera and microphone: {warnings:#?}");
        assert!(keyless_tracks.iter().all(|track| track.starts_with("dave/")), "{warnings:#?}");
        assert!(warnings.iter().all(|w| w.as_str().unwrap().contains("no key")), "{warnings:#?}");
        let path = keep_mp4(&setup, &keyless, "keyless.mp4");
        let duration: f64 = fleet_tests::media::ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
        // Away from the placeholder's centred initial and its name at the bottom left.
        let shown = planes_at(&path, "320:180:64:64", duration / 2.0);
        let placeholder = bt601(fleet_pipelines::transcode::PLACEHOLDER_ARGB);
        println!("keyless: dave's tile is YUV {shown:.1?}, the placeholder {placeholder:.1?}");
        let near = (shown.0 - placeholder.0).abs().max((shown.1 - placeholder.1).abs()).max((shown.2 - placeholder.2).abs());
        assert!(near <= 4.0, "dave's camera, with no key, is the placeholder: YUV {shown:.1?}, placeholder {placeholder:.1?}");

        let rekey = setup.api.wait_for_state(rekey_id, &["complete", "failed"], Duration::from_secs(240)).await;
        assert_eq!(rekey["state"], "complete", "{rekey:#}");
        assert!(rekey["warnings"].as_array().is_none_or(|w| w.is_empty()), "both keys given: every frame decrypts: {rekey:#}");
        let changed_ms = erin.events().iter().find(|e| e["event"] == "key_changed").and_then(|e| e["wall_ms"].as_u64());
        let session = &rekey["sessions"][0];
        let (from_ms, to_ms) = (session["started_at_ms"].as_u64().unwrap(), session["ended_at_ms"].as_u64().unwrap());
        assert!(changed_ms.is_some_and(|at| from_ms + 2_000 < at && at + 2_000 < to_ms), "erin changed keys while recorded: {changed_ms:?} in {from_ms}..{to_ms}");
        let path = keep_mp4(&setup, &rekey, "rekey.mp4");
        let duration: f64 = fleet_tests::media::ffprobe(&path)["format"]["duration"].as_str().unwrap().parse().unwrap();
        // Alone in the room, erin fills the picture: her tint after the change says the new key decrypted.
        assert_tint(&path, &picture_crop((0, 0, 1280, 720)), duration - 6.0, duration - 1.0, 1, "erin after the key change");
        drop((dave, erin));
    });
}
