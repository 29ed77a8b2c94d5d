//! `cargo run -p fleet-tests --bin list_bench [-- --records N]`: listing recordings with many job
//! records (100 000 by default) in the bucket. Records are written straight into the job bucket (5 % of
//! them in one room, a fifth of them failed); a controller then serves `GET /v1/recordings` from its
//! index. Measured: the index's load at start, and p50/p99 of 200 requests per query (the whole first
//! page, a room, a state, a page further on by cursor). The baseline in the same run is what listing
//! did before the index: read every record (`JobStore::list`). Written to `target/bench/list.json`.

use fleet_protocol::{JobRecord, JobRequest, JobState, SafeId};
use fleet_runtime::bus::{Bus, QueueSettings, Topology};
use fleet_runtime::config::NatsConfig;
use fleet_tests::api::Api;
use fleet_tests::bench::{machine, summary};
use fleet_tests::procs::free_port;
use fleet_tests::{API_KEY, Fleet, Nats, StorageSetup};
use futures::StreamExt;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::main]
async fn main() {
    let count: usize = fleet_tests::bench::single_option("records", 100_000);
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(dir.path());
    let bus = Bus::connect(&NatsConfig { url: nats.url(), ..Default::default() }, &QueueSettings::default(), "bench", Topology::Own).await.unwrap();
    let js = async_nats::jetstream::new(bus.client().clone());
    let kv = js.get_key_value("fleet-jobs").await.unwrap();
    eprintln!("[bench] writing {count} job records");
    let written = Instant::now();
    let base_ms = 1_790_000_000_000u64;
    futures::stream::iter(0..count)
        .map(|i| {
            let kv = kv.clone();
            async move {
                let room = if i % 20 == 0 { "town-hall".to_string() } else { format!("room-{}", i % 997) };
                let request: JobRequest = serde_json::from_value(json!({ "room": room })).unwrap();
                let mut record = JobRecord::new(SafeId::parse(format!("rec_{i:08}")).unwrap(), request, base_ms + i as u64 * 1000);
                record.state = if i % 5 == 0 { JobState::Failed } else { JobState::Complete };
                kv.put(record.id.as_str(), serde_json::to_vec(&record).unwrap().into()).await.unwrap();
            }
        })
        .buffer_unordered(256)
        .collect::<Vec<()>>()
        .await;
    eprintln!("[bench] written in {:.1} s", written.elapsed().as_secs_f64());

    // Before the index: every record read for one listing.
    let scan = Instant::now();
    let all = bus.jobs().list(|r| r.request.room == "town-hall").await.unwrap();
    let full_scan_s = scan.elapsed().as_secs_f64();
    assert_eq!(all.len(), count.div_ceil(20));
    eprintln!("[bench] a listing that reads every record: {full_scan_s:.1} s");

    let fleet = Fleet::new(dir.path(), &nats, StorageSetup::Local(dir.path().join("storage")));
    let port = free_port();
    let started = Instant::now();
    let _controller = fleet.controller(port);
    let api = Api::new(port);
    // The first listing waits for the index (it answers 503 after 10 s of loading).
    let first = loop {
        let reply = api.send("GET", "/v1/recordings?limit=1", Some(API_KEY), None).await;
        if reply.status == 200 {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let index_ready_s = started.elapsed().as_secs_f64();
    assert_eq!(first.body["recordings"][0]["id"], format!("rec_{:08}", count - 1));
    let cursor = api.send("GET", "/v1/recordings?limit=1000", Some(API_KEY), None).await.body["next"].as_str().unwrap().to_string();
    let queries = [
        ("first page (100 records)", "/v1/recordings".to_string()),
        ("one room (5 % of records), first 100", "/v1/recordings?room=town-hall".to_string()),
        ("one state, first 50", "/v1/recordings?state=failed&limit=50".to_string()),
        ("the page after the first 1000 (cursor)", format!("/v1/recordings?after={cursor}")),
    ];
    let mut results = Vec::new();
    for (what, path) in &queries {
        let mut ms = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            let reply = api.send("GET", path, Some(API_KEY), None).await;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            assert_eq!(reply.status, 200, "{what}: {}", reply.body);
        }
        let figures = summary(&mut ms);
        eprintln!("[bench] {what}: {figures}");
        results.push(json!({ "query": what, "path": path, "ms": figures }));
    }
    let result = json!({
        "machine": machine(),
        "records": count,
        "controller_index_ready_s": index_ready_s,
        "baseline_listing_that_reads_every_record_s": full_scan_s,
        "target": "GET /v1/recordings p99 under 100 ms with 100 000 records",
        "queries": results,
    });
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("list.json"), serde_json::to_string_pretty(&result).unwrap()).unwrap();
    println!("{}", serde_json::to_string_pretty(&result).unwrap());
}
