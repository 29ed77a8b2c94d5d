//! `deploy/dev.sh chaos`: each fault against real processes (nats-server, the s3s-fs S3 server, a
//! controller, two recorders, two transcoders), one recording of two synthetic participants per fault,
//! and what the fault cost: recordings affected, seconds of media lost, duplicates, final state. Printed
//! as a table and written to `target/bench/chaos.json` with the machine it ran on.
//!
//! Media lost is measured from the MP4: the participants flash once a second (each capture session on
//! its own clock), so every interval between flashes beyond one second (and a frame) is media lost.
//! Duplicates are webhooks beyond one per state plus outputs beyond one MP4 and one manifest.

use fleet_tests::bench::machine;
use fleet_tests::procs::Proc;
use fleet_tests::webhook::Receiver;
use fleet_tests::{S3, Setup, StorageSetup, WEBHOOK_SECRET};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
enum Fault {
    RecorderKilled,
    RecorderDrained,
    TranscoderKilled,
    NatsRestarted,
    NatsClusterMemberKilled,
    ObjectStoreDown,
    ControllerRestarted,
    /// `redundancy: 2`, and the recorder of capture 0 or 1 killed (not restarted).
    RedundantRecorderKilled(u8),
}

impl Fault {
    const ALL: [Fault; 9] = [
        Fault::RecorderKilled,
        Fault::RecorderDrained,
        Fault::TranscoderKilled,
        Fault::NatsRestarted,
        Fault::NatsClusterMemberKilled,
        Fault::ObjectStoreDown,
        Fault::ControllerRestarted,
        Fault::RedundantRecorderKilled(0),
        Fault::RedundantRecorderKilled(1),
    ];

    fn describe(self) -> &'static str {
        match self {
            Fault::RecorderKilled => "recorder SIGKILL mid-recording (restarted 3 s later)",
            Fault::RecorderDrained => "recorder SIGTERM mid-recording (drain, hand-over)",
            Fault::TranscoderKilled => "transcoder SIGKILL mid-transcode",
            Fault::NatsRestarted => "nats-server down 8 s mid-recording",
            Fault::NatsClusterMemberKilled => "3-server NATS cluster: the job bucket's leader killed 8 s mid-recording",
            Fault::ObjectStoreDown => "S3 server down 15 s mid-recording",
            Fault::ControllerRestarted => "controller down 5 s mid-recording",
            Fault::RedundantRecorderKilled(0) => "redundancy 2: the first capture's recorder SIGKILL mid-recording",
            Fault::RedundantRecorderKilled(_) => "redundancy 2: the second capture's recorder SIGKILL mid-recording",
        }
    }
}

#[derive(Debug, Serialize)]
struct Outcome {
    fault: &'static str,
    recordings_affected: usize,
    media_lost_s: f64,
    duplicates: usize,
    final_state: String,
    /// Seconds during which two capture sessions of the recording ran at once (a hand-over overlaps 2 s).
    concurrent_capture_s: f64,
    sessions: Vec<String>,
    /// The job's objects outside its raw media, and the states its webhooks reported, in order.
    outputs: Vec<String>,
    webhook_states: Vec<String>,
    note: String,
    wall_s: f64,
}

/// The processes of one run; fields drop in order, the folder last.
struct World {
    recorders: BTreeMap<String, Proc>,
    transcoders: BTreeMap<String, Proc>,
    s3: S3,
    hooks: Receiver,
    setup: Setup,
}

impl World {
    /// `cluster`: NATS as a 3-server cluster (streams and buckets with 3 replicas).
    async fn start(cluster: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let s3 = S3::start(dir.path());
        let storage = StorageSetup::S3 { endpoint: s3.endpoint(), ca_file: None };
        let mut setup =
            if cluster { Setup::on_nats_cluster(dir, storage, Default::default()) } else { Setup::with_storage(dir, storage, Default::default()) };
        // A 4 s transcode AckWait so a killed transcoder's job moves on quickly (the controller owns it).
        setup.controller = None;
        if cluster {
            // Its `[queues]` section is every process's already.
            setup.fleet.common_extra.push_str("transcode_ack_wait_s = 4\n");
        } else {
            setup.fleet.controller_extra = "[queues]\ntranscode_ack_wait_s = 4\n".into();
        }
        setup.controller = Some(setup.fleet.controller(setup.port));
        let recorders = ["rec-a", "rec-b"].map(|id| (id.to_string(), setup.fleet.recorder(id, "recorder-only", 1))).into();
        let transcoders = ["tx-a", "tx-b"].map(|id| (id.to_string(), setup.fleet.transcoder(id))).into();
        let hooks = Receiver::start(WEBHOOK_SECRET).await;
        Self { recorders, transcoders, s3, hooks, setup }
    }

    async fn record(&self, id: &str) -> Value {
        self.setup.api.get(id).await
    }

    async fn wait_for(&self, id: &str, timeout: Duration, done: impl Fn(&Value) -> bool) -> Value {
        // The caller judges a record that never got there: the last one seen comes back either way.
        let polled = fleet_tests::wait::poll(timeout, Duration::from_millis(200), || async {
            let record = self.record(id).await;
            if done(&record) { Ok(record) } else { Err(record.to_string()) }
        })
        .await;
        polled.unwrap_or_else(|seen| serde_json::from_str(&seen).unwrap_or(Value::Null))
    }
}

async fn run(fault: Fault) -> Outcome {
    let started = Instant::now();
    let mut world = World::start(matches!(fault, Fault::NatsClusterMemberKilled)).await;
    let api = fleet_tests::api::Api::new(world.setup.port);
    let mut note = String::new();
    let redundancy = if matches!(fault, Fault::RedundantRecorderKilled(_)) { 2 } else { 1 };
    let body =
        format!(r#"{{"room":"chaos","source":{{"type":"test","participants":2}},"webhook_url":"{}","redundancy":{redundancy}}}"#, world.hooks.url());
    let id = api.start(&body).await;
    let writing = |r: &Value| r["sessions"].as_array().is_some_and(|s| s.iter().filter(|s| s["writing"] == true).count() == redundancy);
    let record = world.wait_for(&id, Duration::from_secs(30), |r| r["state"] == "recording" && writing(r)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let holder = record["sessions"][0]["node"].as_str().unwrap_or_default().to_string();

    match fault {
        Fault::RecorderKilled => {
            world.recorders.remove(&holder);
            tokio::time::sleep(Duration::from_secs(3)).await;
            let restarted = world.setup.fleet.recorder(&holder, "recorder-only", 1);
            world.recorders.insert(holder.clone(), restarted);
            tokio::time::sleep(Duration::from_secs(8)).await;
        }
        Fault::RecorderDrained => {
            if let Some(mut draining) = world.recorders.remove(&holder) {
                draining.signal_term();
                // Judged by the outcome: a drain that takes longer shows there.
                let _ = fleet_tests::wait::poll(Duration::from_secs(40), Duration::from_millis(200), || {
                    let exited = draining.exited();
                    async move { if exited { Ok(()) } else { Err(String::new()) } }
                })
                .await;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        Fault::TranscoderKilled => {}
        Fault::RedundantRecorderKilled(replica) => {
            let sessions = record["sessions"].as_array().cloned().unwrap_or_default();
            let of_capture = sessions.iter().find(|s| s["replica"].as_u64().unwrap_or(0) == replica as u64);
            let node = of_capture.and_then(|s| s["node"].as_str()).unwrap_or_default().to_string();
            world.recorders.remove(&node);
            note = format!("killed {node}, not restarted");
            tokio::time::sleep(Duration::from_secs(8)).await;
        }
        Fault::NatsRestarted => {
            world.setup.nats.kill();
            tokio::time::sleep(Duration::from_secs(8)).await;
            world.setup.nats.restart();
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
        Fault::NatsClusterMemberKilled => {
            let setup = &mut world.setup;
            let leader = fleet_tests::Nats::leader_of(std::iter::once(&mut setup.nats).chain(setup.nats_peers.iter_mut()), "KV_fleet-jobs").await;
            leader.kill();
            tokio::time::sleep(Duration::from_secs(8)).await;
            leader.restart();
            tokio::time::sleep(Duration::from_secs(6)).await;
        }
        Fault::ObjectStoreDown => {
            world.s3.kill();
            tokio::time::sleep(Duration::from_secs(15)).await;
            world.s3.restart();
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
        Fault::ControllerRestarted => {
            world.setup.controller = None;
            tokio::time::sleep(Duration::from_secs(5)).await;
            world.setup.controller = Some(world.setup.fleet.controller(world.setup.port));
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    // The stop is retried: right after a NATS or controller restart the first try may find it unready.
    for _ in 0..20 {
        if api.stop(&id).await.status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if let Fault::TranscoderKilled = fault {
        world.wait_for(&id, Duration::from_secs(60), |r| r["state"] == "transcoding" && r["progress"]["node"].is_string()).await;
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let record = world.record(&id).await;
        match (record["state"].as_str(), record["progress"]["node"].as_str()) {
            (Some("transcoding"), Some(node)) => {
                note = format!("killed {node} at {:.0} %", record["progress"]["percent"].as_f64().unwrap_or(0.0));
                world.transcoders.remove(node);
            }
            (state, _) => note = format!("not killed: the job was {} first", state.unwrap_or("?")),
        }
    }
    let record = world.wait_for(&id, Duration::from_secs(180), |r| matches!(r["state"].as_str(), Some("complete" | "failed" | "aborted"))).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // let a late duplicate webhook show

    let final_state = record["state"].as_str().unwrap_or("?").to_string();
    let sessions = record["sessions"]
        .as_array()
        .map(|s| {
            s.iter()
                .map(|s| {
                    format!(
                        "{} {} ({})",
                        s["id"].as_str().unwrap_or("?"),
                        s["node"].as_str().unwrap_or("?"),
                        s["end_reason"].as_str().unwrap_or("open")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let states: Vec<String> = world.hooks.events_for(&id).iter().map(|d| d.body["state"].as_str().unwrap_or("").to_string()).collect();
    let distinct: std::collections::BTreeSet<&String> = states.iter().collect();
    let outputs = output_keys(&world.s3, &id).await;
    // The MP4, its manifest and its poster are the outputs; anything beyond is doubled.
    let duplicates = (states.len() - distinct.len()) + outputs.len().saturating_sub(3);
    let media_lost_s = if final_state == "complete" {
        let mp4 = world.s3.get(&format!("recordings/{id}/{id}.mp4")).await;
        let path = world.setup.dir.path().join("out.mp4");
        std::fs::write(&path, &mp4).unwrap();
        lost_seconds(&path, &record)
    } else {
        f64::NAN
    };
    Outcome {
        fault: fault.describe(),
        recordings_affected: 1,
        media_lost_s,
        duplicates,
        final_state,
        concurrent_capture_s: concurrent_capture_s(&record),
        sessions,
        outputs,
        webhook_states: states,
        note,
        wall_s: started.elapsed().as_secs_f64(),
    }
}

/// Total time covered by more than one capture session (a killed session's end is its last segment's,
/// unknown here, so such a session counts as ended where the next began).
fn concurrent_capture_s(record: &Value) -> f64 {
    let sessions = record["sessions"].as_array().cloned().unwrap_or_default();
    let spans: Vec<(u64, u64)> = sessions
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let start = s["started_at_ms"].as_u64()?;
            let next_start = sessions.get(i + 1).and_then(|n| n["started_at_ms"].as_u64());
            let end = s["ended_at_ms"].as_u64().or(next_start)?;
            Some((start, end))
        })
        .collect();
    let mut overlap_ms = 0;
    for (i, a) in spans.iter().enumerate() {
        for b in &spans[i + 1..] {
            overlap_ms += a.1.min(b.1).saturating_sub(a.0.max(b.0));
        }
    }
    overlap_ms as f64 / 1000.0
}

/// Objects of the job outside its raw media (the recording, its manifest, and anything doubled).
async fn output_keys(s3: &S3, id: &str) -> Vec<String> {
    let listing = s3.client().await.list_objects_v2().bucket(fleet_tests::S3_BUCKET).prefix(format!("recordings/{id}/")).send().await;
    listing.map(|l| l.contents().iter().filter_map(|o| o.key().map(String::from)).filter(|k| !k.contains("/raw/")).collect()).unwrap_or_default()
}

/// Seconds of media missing from the MP4: black frames in a participant's tile (the worse one counts),
/// plus any shortfall of the MP4 against the recorded span.
fn lost_seconds(path: &std::path::Path, record: &Value) -> f64 {
    let sessions = record["sessions"].as_array().cloned().unwrap_or_default();
    let first = sessions.iter().filter_map(|s| s["started_at_ms"].as_u64()).min().unwrap_or(0);
    let last = sessions.iter().filter_map(|s| s["ended_at_ms"].as_u64()).max().unwrap_or(first);
    let span = (last - first) as f64 / 1000.0;
    let duration: f64 = fleet_tests::media::ffprobe(path)["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    let black = ["640:360:0:180", "640:360:640:180"].iter().map(|tile| fleet_tests::media::black_seconds(path, tile, 30.0)).fold(0.0, f64::max);
    black + (span - duration).max(0.0)
}

#[tokio::main]
async fn main() {
    let only: Option<String> = std::env::args().nth(1);
    let mut outcomes = Vec::new();
    for fault in Fault::ALL {
        if only.as_deref().is_some_and(|o| !format!("{fault:?}").to_lowercase().contains(&o.to_lowercase())) {
            continue;
        }
        eprintln!("chaos: {} ...", fault.describe());
        let outcome = run(fault).await;
        eprintln!("chaos: {outcome:?}");
        outcomes.push(outcome);
    }
    println!("\n| fault | recordings affected | media lost (s) | duplicates | concurrent capture (s) | final state | sessions | note |");
    println!("|---|---|---|---|---|---|---|---|");
    for o in &outcomes {
        println!(
            "| {} | {} | {:.1} | {} | {:.1} | {} | {} | {} |",
            o.fault,
            o.recordings_affected,
            o.media_lost_s,
            o.duplicates,
            o.concurrent_capture_s,
            o.final_state,
            o.sessions.join(", "),
            o.note
        );
    }
    let result = serde_json::json!({ "machine": machine(), "faults": outcomes });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("chaos.json");
    std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("\nwritten to {}", path.display());
}
