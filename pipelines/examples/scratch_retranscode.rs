fn main() {
    let args: Vec<String> = std::env::args().collect();
    fleet_pipelines::init().unwrap();
    let tracks = fleet_pipelines::segment_reader::session_tracks(std::path::Path::new(&args[1])).unwrap();
    let ns: u64 = args[3].parse().unwrap();
    fleet_pipelines::transcode::run(&fleet_pipelines::transcode::TranscodeSpec::hd720(tracks, ns, "x264enc", args[2].clone().into()), |_| {})
        .unwrap();
}
