//! Tests with real WebRTC publishers run in a private network namespace. libwebrtc (LiveKit's Python SDK,
//! Chromium) ignores loopback when it gathers candidates, so media must cross a real interface; a veth
//! pair with private addresses inside a namespace the test made keeps every packet on this machine.
//!
//! A test calls [`enter`] first: in the parent it re-runs the same test binary under `unshare -n`
//! (only that test), waits for it and reports its result; in the child it brings the interfaces up.

use std::process::Command;

/// The namespace's address for servers that real publishers must reach (livekit-server's `node_ip`), as
/// `deploy/netns-veth.sh` sets it.
pub const SERVER_IP: &str = "10.77.0.1";
/// The peer address on the other end of the veth pair.
pub const PEER_IP: &str = "10.77.0.2";

const INSIDE: &str = "FLEET_TEST_IN_NETNS";

/// `test`: the test's name as the harness knows it (the function's name). Returns `true` in the child,
/// inside the namespace, where the test body should run; `false` in the parent, after the child passed
/// (it panics with the child's output when the child failed).
pub fn enter(test: &str) -> bool {
    if std::env::var_os(INSIDE).is_some() {
        setup_interfaces();
        return true;
    }
    // One at a time: real publishers encode live, and two such tests side by side on a 2-core machine
    // starve each other's publishers (their A/V timing is what the tests measure).
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let exe = std::env::current_exe().expect("the test binary's path");
    let status = Command::new("unshare")
        .arg("-n")
        .arg(&exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(INSIDE, "1")
        .status()
        .expect("unshare runs (needs root or user namespaces)");
    assert!(status.success(), "{test} failed inside its network namespace ({status}); its output is above");
    false
}

/// For a binary (a bench) whose whole run needs the namespace: outside, re-runs itself under `unshare -n`
/// with the same arguments and exits with its status; inside, brings the interfaces up and returns.
pub fn run_binary_inside() {
    if std::env::var_os(INSIDE).is_some() {
        setup_interfaces();
        return;
    }
    let exe = std::env::current_exe().expect("the binary's path");
    let status = Command::new("unshare")
        .arg("-n")
        .arg(&exe)
        .args(std::env::args().skip(1))
        .env(INSIDE, "1")
        .status()
        .expect("unshare runs (needs root or user namespaces)");
    std::process::exit(status.code().unwrap_or(1));
}

fn setup_interfaces() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/netns-veth.sh");
    let status = Command::new(&script).status().expect("deploy/netns-veth.sh runs");
    assert!(status.success(), "{} failed", script.display());
}

/// The veth end that [`PEER_IP`] is on; further test addresses go there too.
const PEER_INTERFACE: &str = "fleet-v1";

/// Adds `ip` (in the namespace's /24) to the veth pair, for a process whose path a test will cut with
/// [`remove_address`]. Returns `ip`.
pub fn add_address(ip: &str) -> String {
    ip_addr("add", ip);
    ip.to_string()
}

/// Removes an address [`add_address`] added: packets to it go nowhere, and sends from a socket bound to
/// it fail, until it is added again (the socket stays bound).
pub fn remove_address(ip: &str) {
    ip_addr("del", ip);
}

fn ip_addr(verb: &str, ip: &str) {
    let status = Command::new("ip").args(["addr", verb, &format!("{ip}/24"), "dev", PEER_INTERFACE]).status().expect("ip runs");
    assert!(status.success(), "ip addr {verb} {ip} failed");
}
