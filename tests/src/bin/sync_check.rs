//! Checks A/V sync markers in an MP4: `sync_check [--audio FILE] FILE FROM_S TO_S CROP=INDEX...` (CROP as
//! ffmpeg's `w:h:x:y`, INDEX the participant's marker index; `--audio`: beeps from that file, e.g. a
//! participant's own audio, instead of the MP4's mix). Prints the report as JSON.

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let audio = if args.first().is_some_and(|a| a == "--audio") && args.len() > 1 {
        let file = args.remove(1);
        args.remove(0);
        Some(fleet_tests::sync::decode_audio(std::path::Path::new(&file)))
    } else {
        None
    };
    if args.len() < 4 {
        eprintln!("usage: sync_check [--audio FILE] FILE FROM_S TO_S CROP=INDEX...");
        std::process::exit(2);
    }
    let path = std::path::Path::new(&args[0]);
    let (from, to): (f64, f64) = (args[1].parse().expect("FROM_S"), args[2].parse().expect("TO_S"));
    let tiles: Vec<(String, usize)> = args[3..]
        .iter()
        .map(|a| {
            let (crop, index) = a.split_once('=').expect("CROP=INDEX");
            (crop.to_string(), index.parse().expect("INDEX"))
        })
        .collect();
    let audio = audio.unwrap_or_else(|| fleet_tests::sync::decode_audio(path));
    let report = fleet_tests::sync::check_paired_against(path, &audio, &tiles, 30.0, from, to);
    println!("{}", serde_json::to_string_pretty(&report).unwrap());
}
