//! Streams the live composite (no tracks: background and silence) to an RTMP URL for a few seconds.
//! `cargo run -p fleet-pipelines --example live_smoke -- rtmp://127.0.0.1:19350/live/x 6`
fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("an RTMP URL");
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(6);
    let live =
        fleet_pipelines::live::LiveComposite::start(fleet_pipelines::live::LiveSpec::hd720("x264enc"), 0, |event| eprintln!("{event:?}")).unwrap();
    live.add_output("o1", &fleet_pipelines::live::OutputTarget::Rtmp(url)).unwrap();
    std::thread::sleep(std::time::Duration::from_secs(seconds));
    live.stop();
}
