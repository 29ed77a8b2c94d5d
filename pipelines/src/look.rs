//! What the composite looks like beyond who is where: names on tiles, initials on placeholders, the
//! active speaker's outline, the background, a logo and a title. Each part is a small GStreamer element
//! chain the composite transcode adds; the decisions (which tile, which name) come from the schedule.

use crate::{PipelineError, make};
use gstreamer as gst;
use gstreamer::prelude::*;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq)]
pub struct Look {
    /// Each tile carries its participant's name; a placeholder shows their initials.
    pub names: bool,
    /// Pango family and style for names, initials and the title, e.g. `Sans Bold`.
    pub font: String,
    /// The names' size in points at 720 lines (scaled with the output's height).
    pub name_points: u32,
    /// Behind the tiles (ARGB).
    pub background_argb: u32,
    /// The active speaker's tile is outlined in this colour (ARGB); `None`: no outline.
    pub highlight_argb: Option<u32>,
    /// Drawn at the top centre of the frame.
    pub title: Option<String>,
    pub logo: Option<Logo>,
    /// Space between tiles in pixels at 720 lines (half of it at the frame's edges).
    pub tile_gap: u32,
}

impl Default for Look {
    fn default() -> Self {
        Look {
            names: true,
            font: "Sans Bold".into(),
            name_points: 13,
            background_argb: 0xff000000,
            highlight_argb: Some(HIGHLIGHT_ARGB),
            title: None,
            logo: None,
            tile_gap: 0,
        }
    }
}

impl Look {
    /// Tiles only: no names, no outline, black.
    pub fn plain() -> Look {
        Look { names: false, highlight_argb: None, ..Look::default() }
    }
}

/// The default outline of the active speaker's tile: amber, visible on dark and light video alike.
pub const HIGHLIGHT_ARGB: u32 = 0xfff5b400;

/// An image (PNG or JPEG, transparency kept) drawn over the composite in a corner, `width` pixels wide
/// (its height from its aspect ratio), `margin` pixels from the frame's edges.
#[derive(Debug, Clone, PartialEq)]
pub struct Logo {
    pub file: PathBuf,
    pub corner: Corner,
    pub width: i32,
    pub margin: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Corner {
    TopLeft,
    #[default]
    TopRight,
    BottomLeft,
    BottomRight,
}

impl Logo {
    /// Where a `width`×`height` logo sits in a `frame_width`×`frame_height` frame.
    pub fn position(&self, (width, height): (i32, i32), (frame_width, frame_height): (i32, i32)) -> (i32, i32) {
        let right = frame_width - width - self.margin;
        let bottom = frame_height - height - self.margin;
        match self.corner {
            Corner::TopLeft => (self.margin, self.margin),
            Corner::TopRight => (right, self.margin),
            Corner::BottomLeft => (self.margin, bottom),
            Corner::BottomRight => (right, bottom),
        }
    }
}

/// Half the outline's thickness in pixels at 720 lines: it straddles the tile's edge.
pub const OUTLINE_PX: i32 = 3;

impl Look {
    /// The gap between tiles in pixels for an output `height` lines tall (even, so tiles stay even).
    pub fn gap_px(&self, height: u32) -> i32 {
        ((self.tile_gap as u64 * height as u64 / 720) as i32) & !1
    }

    /// A Pango font description `points` tall at 720 lines, scaled to `height`.
    pub fn font_desc(&self, points: u32, height: u32) -> String {
        let scaled = (points as u64 * height as u64).div_ceil(720).max(6);
        format!("{} {scaled}", self.font)
    }
}

/// A text overlay for a tile's name: bottom left, on a shaded box, its size fixed in pixels (not scaled
/// with the tile, so a small strip tile's name stays readable).
pub fn name_overlay(look: &Look, name: &str, output_height: u32) -> Result<gst::Element, PipelineError> {
    let overlay = make("textoverlay")?;
    overlay.set_property("text", name);
    overlay.set_property("font-desc", look.font_desc(look.name_points, output_height));
    overlay.set_property_from_str("valignment", "bottom");
    overlay.set_property_from_str("halignment", "left");
    overlay.set_property("shaded-background", true);
    overlay.set_property("auto-resize", false);
    overlay.set_property("xpad", 8i32);
    overlay.set_property("ypad", 6i32);
    overlay.set_property_from_str("wrap-mode", "none");
    Ok(overlay)
}

/// A text overlay for a placeholder's initials: large, centred, drawn on the placeholder's own frame
/// before it is scaled to its tile (so the initials grow and shrink with the tile).
pub fn initials_overlay(look: &Look, initials: &str) -> Result<gst::Element, PipelineError> {
    let overlay = make("textoverlay")?;
    overlay.set_property("text", initials);
    overlay.set_property("font-desc", format!("{} 64", look.font));
    overlay.set_property_from_str("valignment", "center");
    overlay.set_property_from_str("halignment", "center");
    overlay.set_property("auto-resize", false);
    overlay.set_property("draw-shadow", false);
    Ok(overlay)
}

/// The title across the top of the composite.
pub fn title_overlay(look: &Look, title: &str, output_height: u32) -> Result<gst::Element, PipelineError> {
    let overlay = make("textoverlay")?;
    overlay.set_property("text", title);
    overlay.set_property("font-desc", look.font_desc(look.name_points * 3 / 2, output_height));
    overlay.set_property_from_str("valignment", "top");
    overlay.set_property_from_str("halignment", "center");
    overlay.set_property("shaded-background", true);
    overlay.set_property("auto-resize", false);
    overlay.set_property("ypad", 10i32);
    Ok(overlay)
}

/// The logo: decoded and scaled once, then repeated for `frames` frames at `fps` (`None`: live, for as
/// long as the pipeline runs), onto its own compositor pad at its tile, above everything else.
pub fn add_logo(
    pipeline: &gst::Pipeline,
    compositor: &gst::Element,
    logo: &Logo,
    frames: Option<i32>,
    fps: u32,
    frame: (i32, i32),
) -> Result<(), PipelineError> {
    if !logo.file.is_file() {
        return Err(PipelineError::Build(format!("logo {} is not a readable file", logo.file.display())));
    }
    let source = make("filesrc")?;
    source.set_property("location", logo.file.to_string_lossy().to_string());
    let decode = make("decodebin")?;
    let convert = make("videoconvert")?;
    let scale = make("videoscale")?;
    let sized = make("capsfilter")?;
    sized.set_property(
        "caps",
        gst::Caps::builder("video/x-raw")
            .field("format", "AYUV")
            .field("width", logo.width & !1)
            .field("pixel-aspect-ratio", gst::Fraction::new(1, 1))
            .build(),
    );
    let freeze = make("imagefreeze")?;
    match frames {
        Some(frames) => freeze.set_property("num-buffers", frames),
        None => freeze.set_property("is-live", true),
    }
    let rate = make("capsfilter")?;
    rate.set_property("caps", gst::Caps::builder("video/x-raw").field("framerate", gst::Fraction::new(fps as i32, 1)).build());
    pipeline.add_many([&source, &decode, &convert, &scale, &sized, &freeze, &rate])?;
    source.link(&decode)?;
    gst::Element::link_many([&convert, &scale, &sized, &freeze, &rate])?;
    let pad = compositor.request_pad_simple("sink_%u").ok_or_else(|| PipelineError::Build("compositor pad".into()))?;
    pad.set_property("zorder", LOGO_ZORDER);
    // Its height is known once the scaler has fixed it (the image's aspect ratio): placed then.
    let placement = logo.clone();
    pad.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |pad, info| {
        if let Some(gst::EventView::Caps(caps)) = info.event().map(|e| e.view())
            && let Some(s) = caps.caps().structure(0)
            && let (Ok(width), Ok(height)) = (s.get::<i32>("width"), s.get::<i32>("height"))
        {
            let (x, y) = placement.position((width, height), frame);
            pad.set_property("xpos", x);
            pad.set_property("ypos", y);
        }
        gst::PadProbeReturn::Ok
    });
    rate.static_pad("src").expect("src pad").link(&pad).map_err(|e| PipelineError::Build(format!("logo: {e:?}")))?;
    crate::transcode::link_when_decoded(&decode, convert.static_pad("sink").expect("sink pad"));
    Ok(())
}

/// Above every tile and the outline.
const LOGO_ZORDER: u32 = 100_001;
/// Above every tile.
pub const OUTLINE_ZORDER: u32 = 100_000;
