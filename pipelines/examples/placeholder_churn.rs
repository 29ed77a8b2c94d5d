use fleet_pipelines::track_writer::TrackCodec;
fn main() {
    let live =
        fleet_pipelines::live::LiveComposite::start(fleet_pipelines::live::LiveSpec::hd720("x264enc"), 0, |event| eprintln!("EVENT {event:?}"))
            .unwrap();
    for round in 0..20 {
        let who = format!("p{round}");
        live.add_track(&format!("a{round}"), &who, &who, TrackCodec::Opus);
        std::thread::sleep(std::time::Duration::from_millis(round * 5));
        live.add_track(&format!("v{round}"), &who, &who, TrackCodec::Vp8);
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    live.stop();
}
