//! Layouts that follow the room (issue 4): three recordings of one devroom room in the speaker,
//! screen-share and single layouts; frames sampled at known instants of the room's script must show
//! the right participant in the right tile (each synthetic participant has its own flat colour), with
//! their name on it (the initials on a placeholder) and the active speaker's tile outlined.

use fleet_tests::Setup;
use fleet_tests::devroom::Devroom;
use fleet_tests::frames::{classify, classify_outline, patch, text_columns, who};
use fleet_tests::media::decode_errors;
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const ROOM: &str = r#"
[[rooms]]
name = "lk-layouts"
close_after_s = 14

[[rooms.participants]]
identity = "alice"
video_codec = "vp8"
speaking = [[1, 4]]

[[rooms.participants]]
identity = "bob"
video_codec = "h264"
speaking = [[6, 9]]

[[rooms.participants]]
identity = "carol"
video_codec = "vp8"
mute_camera = [[2, 5]]
screen_share = [[10, 13]]
"#;

/// Centres of the tiles of a strip of `n` below the 1280x576 focus area (pipelines::layout).
fn strip(n: i32) -> Vec<(i32, i32)> {
    let left = (1280 - 256 * n) / 2;
    (0..n).map(|i| (left + 256 * i + 128, 648)).collect()
}

const FOCUS: (i32, i32) = (640, 288);

struct Recorded {
    mp4: std::path::PathBuf,
    record: Value,
    /// Where the room's t = 0 sits in the recording, in seconds.
    opened_s: f64,
}

impl Recorded {
    fn who(&self, room_t_s: f64, at: (i32, i32), size: i32) -> String {
        who(&self.mp4, room_t_s + self.opened_s, at, size)
    }
}

async fn finish(setup: &Setup, id: &str, created_ms: f64) -> Recorded {
    let record = setup.api.wait_for_state(id, &["complete", "failed"], Duration::from_secs(240)).await;
    assert_eq!(record["state"], "complete", "{record:#}");
    let session = record["sessions"][0]["id"].as_str().unwrap();
    let text = std::fs::read_to_string(setup.root.join(format!("recordings/{id}/raw/{session}/timeline.jsonl"))).unwrap();
    let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let wall_zero_ms = first["wall_ms"].as_f64().unwrap() - first["running_ns"].as_f64().unwrap() / 1e6;
    let mp4 = setup.root.join(format!("recordings/{id}/{id}.mp4"));
    let errors = decode_errors(&mp4);
    assert!(errors.is_empty(), "{id}: {errors}");
    Recorded { mp4, record, opened_s: (created_ms - wall_zero_ms) / 1000.0 }
}

#[tokio::test(flavor = "multi_thread")]
async fn layouts_follow_the_room() {
    let mut setup = Setup::local();
    let devroom = Devroom::start(setup.dir.path(), ROOM);
    setup.fleet.recorder_extra = devroom.recorder_toml(60);
    // A logo on the transcoders' disk (the `both` node's too), named by the branded job: a 160x80 magenta PNG in the top right.
    let logo = setup.dir.path().join("logo.png");
    let made = Command::new("ffmpeg")
        .args(["-v", "error", "-f", "lavfi", "-i", "color=c=0xff00ff:s=320x160", "-frames:v", "1"])
        .arg(&logo)
        .status()
        .unwrap();
    assert!(made.success());
    setup.fleet.transcoder_extra =
        format!("[transcoder.logos.fleet]\nfile = \"{}\"\ncorner = \"top_right\"\nwidth = 160\nmargin = 24\n", logo.display());
    let _recorder = setup.fleet.recorder("rec-1", "both", 4);
    let _transcoder = setup.fleet.transcoder("tx-1");

    let speaker = setup.api.start(r#"{"room":"lk-layouts","layout":"speaker"}"#).await;
    let share = setup.api.start(r#"{"room":"lk-layouts","layout":"screen_share"}"#).await;
    let single = setup.api.start(r#"{"room":"lk-layouts","layout":"single","participant":"bob"}"#).await;
    let branding = r##"{"title":"Quarterly review","background":"#203040","highlight":"none","logo":"fleet","tile_gap":16}"##;
    let branded = setup.api.start(&format!(r#"{{"room":"lk-layouts","layout":"grid","branding":{branding}}}"#)).await;
    setup.api.wait_for_state(&speaker, &["recording"], Duration::from_secs(30)).await;
    let created_ms = devroom.room_state("lk-layouts").await.expect("room open")["created_ms"].as_f64().unwrap();

    let speaker = finish(&setup, &speaker, created_ms).await;
    let share = finish(&setup, &share, created_ms).await;
    let single = finish(&setup, &single, created_ms).await;
    let branded = finish(&setup, &branded, created_ms).await;
    println!(
        "the room opened at {:.3} / {:.3} / {:.3} / {:.3} s of the recordings",
        speaker.opened_s, share.opened_s, single.opened_s, branded.opened_s
    );

    let mut wrong = Vec::new();
    let mut expect = |what: &str, seen: String, expected: &str| {
        println!("{what}: {seen}");
        if seen != expected {
            wrong.push(format!("{what}: expected {expected}, saw {seen}"));
        }
    };
    // Speaker: alice speaks 1-4 s, bob 6-9 s; carol's camera is off 2-5 s and she shares 10-13 s.
    expect("speaker 3 s focus", speaker.who(3.0, FOCUS, 64), "alice");
    let tiles = strip(2);
    expect("speaker 3 s strip 1", speaker.who(3.0, tiles[0], 32), "bob");
    // A placeholder's initials are at its centre: its colour is sampled above and right of them.
    let off_centre = |(x, y): (i32, i32), by: (i32, i32)| (x + by.0, y - by.1);
    expect("speaker 3 s strip 2 (camera off)", speaker.who(3.0, off_centre(tiles[1], (80, 40)), 24), "placeholder");
    expect("speaker 8 s focus", speaker.who(8.0, FOCUS, 64), "bob");
    expect("speaker 8 s strip 1", speaker.who(8.0, tiles[0], 32), "alice");
    expect("speaker 8 s strip 2", speaker.who(8.0, tiles[1], 32), "carol");
    expect("speaker 11.5 s focus (silence keeps bob)", speaker.who(11.5, FOCUS, 64), "bob");
    expect("speaker 11.5 s strip 3 (the share)", speaker.who(11.5, strip(3)[2], 32), "carol");
    // Screen share: a grid until carol shares, then her share large and the cameras in a strip.
    expect("share 3 s top left", share.who(3.0, (320, 180), 64), "alice");
    expect("share 3 s top right", share.who(3.0, (960, 180), 64), "bob");
    expect("share 3 s bottom left (camera off)", share.who(3.0, off_centre((320, 540), (200, 110)), 48), "placeholder");
    expect("share 3 s bottom right (no one)", share.who(3.0, (960, 540), 64), "black");
    expect("share 11.5 s focus", share.who(11.5, FOCUS, 64), "carol");
    for (tile, name) in strip(3).into_iter().zip(["alice", "bob", "carol"]) {
        expect(&format!("share 11.5 s strip {name}"), share.who(11.5, tile, 32), name);
    }
    expect("share 13.5 s back to the grid", share.who(13.5, (320, 180), 64), "alice");
    // Single: bob, full frame, whoever speaks.
    for t in [3.0, 11.5] {
        expect(&format!("single {t} s"), single.who(t, (640, 360), 64), "bob");
        expect(&format!("single {t} s corner"), single.who(t, (100, 100), 32), "bob");
    }
    // The outline: amber bars on the speaker's tile edges (the grid's alice at 3 s; bob's focus at 8 s),
    // none in a silence or around a silent tile.
    let outline = |seen: String| if classify_outline(&seen) { "outline".to_string() } else { seen };
    expect("share 3 s alice's right edge (she speaks)", outline(share.who(3.0, (640, 180), 4)), "outline");
    expect("share 3 s bob's bottom edge (silent)", outline(share.who(3.0, (960, 359), 2)), "bob");
    expect("speaker 8 s the focus's top edge (bob speaks)", outline(speaker.who(8.0, (640, 2), 4)), "outline");
    expect("speaker 11.5 s the focus's top edge (silence)", outline(speaker.who(11.5, (640, 2), 4)), "bob");
    // Names: white text at each tile's bottom left, as long as the name; the placeholder's initials centred.
    let name_width = |recorded: &Recorded, t: f64, corner: (i32, i32)| {
        text_columns(&recorded.mp4, t + recorded.opened_s, (corner.0, corner.1 - 30), (120, 30)).map(|(first, last)| last - first + 1)
    };
    let alice = name_width(&share, 3.0, (0, 360));
    let bob = name_width(&share, 3.0, (640, 360));
    let carol = name_width(&share, 3.0, (0, 720));
    println!("name widths at 3 s: alice {alice:?}, bob {bob:?}, carol {carol:?} px");
    match (alice, bob, carol) {
        (Some(a), Some(b), Some(c)) if a > b && c > b && (20..=80).contains(&a) && (12..=60).contains(&b) => {}
        _ => wrong.push(format!("names at 3 s: widths alice {alice:?}, bob {bob:?}, carol {carol:?} (5, 3, 5 letters)")),
    }
    let initials = text_columns(&share.mp4, 3.0 + share.opened_s, (280, 500), (80, 80));
    println!("carol's initial at 3 s: columns {initials:?}");
    if !initials.is_some_and(|(first, last)| first > 10 && last < 70) {
        wrong.push(format!("carol's placeholder: no centred initial ({initials:?})"));
    }
    // Branding: the background colour where no tile is, the logo where configured, the title at the top
    // centre, no outline; the logo's absence elsewhere.
    let colour = |(x, y): (i32, i32), size: i32| {
        // Past the white flashes, as `who` steps.
        let mut rgb = [255.0; 3];
        for step in 0..4 {
            rgb = patch(&branded.mp4, 3.0 + branded.opened_s + step as f64 * 0.13, (x, y), size);
            if rgb.iter().any(|v| *v < 200.0) {
                break;
            }
        }
        format!("{:.0},{:.0},{:.0}", rgb[0], rgb[1], rgb[2])
    };
    let near = |seen: &str, expected: [f64; 3]| {
        let seen: Vec<f64> = seen.split(',').map(|v| v.parse().unwrap()).collect();
        seen.iter().zip(expected).all(|(a, b)| (a - b).abs() < 24.0)
    };
    let background = colour((960, 540), 64);
    let logo_shown = colour((1176, 64), 32);
    let beside_logo = colour((1040, 64), 16);
    println!("branded 3 s: background {background}, logo {logo_shown}, beside it {beside_logo}");
    if !near(&background, [32.0, 48.0, 64.0]) {
        wrong.push(format!("branded background: {background}, expected #203040"));
    }
    if !near(&logo_shown, [255.0, 0.0, 255.0]) || near(&beside_logo, [255.0, 0.0, 255.0]) {
        wrong.push(format!("logo: {logo_shown} at its place (magenta expected), {beside_logo} beside it"));
    }
    let title = text_columns(&branded.mp4, 3.0 + branded.opened_s, (440, 0), (400, 48));
    println!("branded 3 s: title columns {title:?}");
    if title.is_none_or(|(first, last)| last - first <= 100) {
        wrong.push(format!("title: no text at the top centre ({title:?})"));
    }
    // Where the outline would straddle alice's right edge (her tile ends at 632 with the gap).
    let edge = branded.who(3.0, (631, 180), 2);
    if classify_outline(&edge) {
        wrong.push(format!("highlight none: alice's right edge shows {edge}"));
    }
    // A 16 px gap between tiles (8 at the frame's edges) shows the background.
    for at in [(640, 180), (4, 180), (320, 360)] {
        let gap = colour(at, 4);
        println!("branded 3 s: gap at {at:?} {gap}");
        if !near(&gap, [32.0, 48.0, 64.0]) {
            wrong.push(format!("tile gap at {at:?}: {gap}, expected the background #203040"));
        }
    }
    // The poster: a JPEG of the MP4's size showing the MP4's frame at its instant (its manifest lists it).
    let poster = &share.record["output"]["poster"];
    let at_s = poster["at_s"].as_f64().expect("a poster");
    let jpeg = setup.root.join("recordings").join(poster["key"].as_str().unwrap());
    let probe = fleet_tests::media::ffprobe(&jpeg);
    let stream = &probe["streams"][0];
    println!("poster at {at_s} s: {} {}x{}", stream["codec_name"], stream["width"], stream["height"]);
    assert_eq!((stream["codec_name"].as_str(), stream["width"].as_u64(), stream["height"].as_u64()), (Some("mjpeg"), Some(1280), Some(720)));
    for tile in [(320, 180), (960, 180)] {
        let (in_poster, in_mp4) = (classify(patch(&jpeg, 0.0, tile, 48)), classify(patch(&share.mp4, at_s, tile, 48)));
        if in_poster != in_mp4 {
            wrong.push(format!("poster at {tile:?}: {in_poster}, the MP4 at {at_s} s: {in_mp4}"));
        }
    }
    let manifest_key = share.record["output"]["manifest_key"].as_str().unwrap();
    let manifest: Value = serde_json::from_slice(&std::fs::read(setup.root.join("recordings").join(manifest_key)).unwrap()).unwrap();
    assert_eq!(manifest["output"]["poster"], *poster, "the manifest lists the poster");
    assert!(wrong.is_empty(), "{wrong:#?}");
}
