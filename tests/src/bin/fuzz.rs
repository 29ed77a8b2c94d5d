//! `deploy/dev.sh fuzz`: schemathesis drives every operation of the controller's OpenAPI document with
//! generated valid and invalid requests against a real controller (and NATS) and checks: no 5xx,
//! documented status codes and content types, responses matching their schemas, invalid data refused.
//! Writes `target/bench/api-fuzz.json`; fails when schemathesis does or the controller logged an error.
//! The controller has no webhook secret, so generated jobs that ask for webhooks (to random hosts) are
//! refused and nothing leaves this machine.

use fleet_tests::procs::free_port;
use fleet_tests::{API_KEY, Fleet, Nats, StorageSetup};
use serde_json::{Value, json};
use std::path::Path;
use std::process::Command;

const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection";

fn main() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the workspace").to_path_buf();
    let schemathesis = workspace.join("target/fuzzenv/bin/schemathesis");
    assert!(schemathesis.exists(), "{} is missing: run `deploy/dev.sh fuzz` (installs it)", schemathesis.display());
    let seconds = std::env::var("FUZZ_SECONDS").unwrap_or_else(|_| "240".into());
    std::fs::create_dir_all(workspace.join(".fleet-dev")).expect(".fleet-dev");
    let mut work = tempfile::Builder::new().prefix("fuzz-").tempdir_in(workspace.join(".fleet-dev")).expect("a work folder");
    work.disable_cleanup(true);
    let dir = work.path();

    let nats = Nats::start(dir);
    let mut fleet = Fleet::new(dir, &nats, StorageSetup::Local(dir.join("storage")));
    fleet.webhook_secret = None;
    // Above the document's largest field (sealed e2ee keys, 256 KiB), so its limits are what refuses
    // an over-long request, not the body limit.
    fleet.controller_settings = "max_body_bytes = 1048576\n".into();
    let port = free_port();
    let controller = fleet.controller(port);

    let report = dir.join("report.json");
    let status = Command::new(&schemathesis)
        .args(["run", &format!("http://127.0.0.1:{port}/v1/openapi.json"), "-H", &format!("Authorization: Bearer {API_KEY}")])
        .args(["--checks", CHECKS, "--max-time", &seconds, "--workers", "1", "--report", "json", "--report-json-path"])
        .arg(&report)
        .status()
        .expect("schemathesis runs");
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap_or_default()).unwrap_or(Value::Null);
    let summary = json!({
        "machine": fleet_tests::bench::machine(),
        "schemathesis": report["schemathesis_version"],
        "seconds": report["running_time"],
        "test_cases": report["test_cases"],
        "failures": report["failures"],
    });
    let out = workspace.join("target/bench/api-fuzz.json");
    std::fs::create_dir_all(out.parent().expect("a folder")).expect("target/bench");
    std::fs::write(&out, serde_json::to_string_pretty(&summary).expect("JSON")).expect("the summary");
    println!("{}", serde_json::to_string_pretty(&summary).expect("JSON"));
    let log = controller.log_text();
    let controller_failed = log.contains("ERROR") || log.contains("panicked");
    if controller_failed {
        eprintln!("the controller logged errors: {}", dir.display());
    }
    std::process::exit(if status.success() && !controller_failed { 0 } else { 1 });
}
