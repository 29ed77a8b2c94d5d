//! Reading frames of recorded media: what a patch of a frame shows (a synthetic participant's flat
//! colour, a placeholder, the background), the speaker outline's amber, where text is.

use fleet_pipelines::markers;
use std::path::Path;
use std::process::Command;

/// What a sampled patch shows.
pub fn classify(rgb: [f64; 3]) -> String {
    let argb = |c: u32| [((c >> 16) & 0xff) as f64, ((c >> 8) & 0xff) as f64, (c & 0xff) as f64];
    let candidates = [
        ("alice", argb(markers::colour(0))),
        ("bob", argb(markers::colour(1))),
        ("carol", argb(markers::colour(2))),
        ("placeholder", argb(fleet_pipelines::transcode::PLACEHOLDER_ARGB)),
        ("black", [0.0; 3]),
        ("white", [255.0; 3]),
    ];
    let distance = |c: &[f64; 3]| c.iter().zip(rgb).map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
    let (name, best) = candidates.iter().map(|(n, c)| (*n, distance(c))).min_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    if best < 60.0 { name.to_string() } else { format!("unknown {rgb:?}") }
}

/// The mean colour of a `size`×`size` patch centred on (x, y) of the frame at `t_s`.
pub fn patch(path: &Path, t_s: f64, (x, y): (i32, i32), size: i32) -> [f64; 3] {
    let mut command = Command::new("ffmpeg");
    command.args(["-v", "error"]);
    // A still image (t = 0) has nothing to seek in: ffmpeg gives no frame for `-ss 0` there.
    if t_s > 0.0 {
        command.args(["-ss", &format!("{t_s:.3}")]);
    }
    let output = command
        .arg("-i")
        .arg(path)
        .args(["-frames:v", "1", "-vf", &format!("crop={size}:{size}:{}:{},scale=1:1:flags=area,format=rgb24", x - size / 2, y - size / 2)])
        .args(["-f", "rawvideo", "-"])
        .output()
        .unwrap();
    assert!(output.stdout.len() >= 3, "no frame at {t_s} s: {}", String::from_utf8_lossy(&output.stderr));
    [output.stdout[0] as f64, output.stdout[1] as f64, output.stdout[2] as f64]
}

/// Who is shown at (x, y) around `t_s`, stepping past the once-a-second white flashes.
pub fn who(path: &Path, t_s: f64, at: (i32, i32), size: i32) -> String {
    for step in 0..4 {
        let seen = classify(patch(path, t_s + step as f64 * 0.13, at, size));
        if seen != "white" {
            return seen;
        }
    }
    "white".into()
}

/// Columns of near-white text in the `width`×`height` region at (x, y) around `t_s` (stepping past the
/// white flashes): the first and last such column, if any.
pub fn text_columns(path: &Path, t_s: f64, (x, y): (i32, i32), (width, height): (i32, i32)) -> Option<(usize, usize)> {
    for step in 0..4 {
        let output = Command::new("ffmpeg")
            .args(["-v", "error", "-ss", &format!("{:.3}", t_s + step as f64 * 0.13), "-i"])
            .arg(path)
            .args(["-frames:v", "1", "-vf", &format!("crop={width}:{height}:{x}:{y},format=gray"), "-f", "rawvideo", "-"])
            .output()
            .unwrap();
        let bright: Vec<usize> =
            (0..width as usize).filter(|col| output.stdout.chunks(width as usize).any(|row| row.get(*col).is_some_and(|&v| v > 200))).collect();
        if bright.len() < width as usize * 9 / 10 {
            return bright.first().map(|first| (*first, *bright.last().unwrap()));
        }
    }
    None
}

/// The outline's amber (look::HIGHLIGHT_ARGB), as a classified patch shows it.
pub fn classify_outline(seen: &str) -> bool {
    let Some(rgb) = seen.strip_prefix("unknown [").and_then(|s| s.strip_suffix(']')) else { return false };
    let rgb: Vec<f64> = rgb.split(", ").filter_map(|v| v.parse().ok()).collect();
    let amber = fleet_pipelines::look::HIGHLIGHT_ARGB;
    let target = [((amber >> 16) & 0xff) as f64, ((amber >> 8) & 0xff) as f64, (amber & 0xff) as f64];
    rgb.len() == 3 && rgb.iter().zip(target).all(|(a, b)| (a - b).abs() < 40.0)
}
