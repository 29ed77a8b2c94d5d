//! What the composite shows when: a schedule of scenes, each a list of layers (a video track or a
//! participant's placeholder) with the tile it fills. The transcoder plans the schedule from the room's
//! timeline; the pipeline only looks scenes up by output time. Also the tile geometry of each layout.

use std::collections::BTreeMap;

/// A rectangle of the output frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tile {
    pub x: i32,
    pub y: i32,
    pub width: i32,
    pub height: i32,
}

/// Something drawn in a tile.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Layer {
    /// A video track, by its input name (`participant/track`).
    Track(String),
    /// The stand-in tile of a participant without a visible camera, by participant id.
    Placeholder(String),
}

impl Layer {
    /// The participant the layer belongs to.
    pub fn participant(&self) -> &str {
        match self {
            Layer::Track(name) => name.split('/').next().unwrap_or(name),
            Layer::Placeholder(participant) => participant,
        }
    }
}

/// The layers shown from `start_ns` until the next scene starts. Later layers draw on top.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scene {
    pub start_ns: u64,
    pub layers: Vec<(Layer, Tile)>,
    /// The active speaker's tile, outlined.
    pub highlight: Option<Tile>,
}

/// Scenes in time order; before the first one nothing is shown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    scenes: Vec<Scene>,
    /// participant → the name shown on their tiles.
    names: BTreeMap<String, String>,
}

impl Schedule {
    /// Keeps scenes in time order and drops a scene identical to the one before it.
    pub fn new(mut scenes: Vec<Scene>) -> Schedule {
        scenes.sort_by_key(|s| s.start_ns);
        let mut kept: Vec<Scene> = Vec::with_capacity(scenes.len());
        for scene in scenes {
            match kept.last_mut() {
                Some(last) if last.start_ns == scene.start_ns => *last = scene,
                Some(last) if (&last.layers, last.highlight) == (&scene.layers, scene.highlight) => {}
                _ => kept.push(scene),
            }
        }
        Schedule { scenes: kept, names: BTreeMap::new() }
    }

    /// The names shown on each participant's tiles (participant → name).
    pub fn with_names(mut self, names: BTreeMap<String, String>) -> Schedule {
        self.names = names;
        self
    }

    /// participant → name, as [`Schedule::with_names`] gave them.
    pub fn names(&self) -> &BTreeMap<String, String> {
        &self.names
    }

    /// The name shown on `layer`'s tile: its participant's name, else the participant id.
    pub fn label(&self, layer: &Layer) -> String {
        let participant = layer.participant();
        self.names.get(participant).cloned().unwrap_or_else(|| participant.to_string())
    }

    /// Every video track in a static grid for the whole recording (no room history to go by).
    pub fn static_grid(tracks: &[String], width: u32, height: u32) -> Schedule {
        let layers = tracks.iter().cloned().map(Layer::Track).zip(grid(tracks.len(), width, height)).collect();
        Schedule::new(vec![Scene { start_ns: 0, layers, highlight: None }])
    }

    pub fn scenes(&self) -> &[Scene] {
        &self.scenes
    }

    /// The index of the scene showing at `t_ns`.
    pub fn index_at(&self, t_ns: u64) -> Option<usize> {
        self.scenes.partition_point(|s| s.start_ns <= t_ns).checked_sub(1)
    }

    /// Where `layer` is drawn at `t_ns`, if anywhere.
    pub fn tile_at(&self, layer: &Layer, t_ns: u64) -> Option<Tile> {
        let scene = &self.scenes[self.index_at(t_ns)?];
        scene.layers.iter().find(|(l, _)| l == layer).map(|(_, tile)| *tile)
    }

    /// Every layer that is ever shown.
    pub fn layers(&self) -> Vec<Layer> {
        let mut layers: Vec<Layer> = self.scenes.iter().flat_map(|s| s.layers.iter().map(|(l, _)| l.clone())).collect();
        layers.sort();
        layers.dedup();
        layers
    }
}

/// An even grid: columns = ceil(sqrt(n)), rows as needed, tiles rounded to even sizes for I420.
pub fn grid(n: usize, width: u32, height: u32) -> Vec<Tile> {
    if n == 0 {
        return Vec::new();
    }
    let cols = (n as f64).sqrt().ceil() as usize;
    let rows = n.div_ceil(cols);
    let tile_w = (width as usize / cols) & !1;
    let tile_h = (height as usize / rows) & !1;
    (0..n).map(|i| Tile { x: ((i % cols) * tile_w) as i32, y: ((i / cols) * tile_h) as i32, width: tile_w as i32, height: tile_h as i32 }).collect()
}

/// The tiles shrunk by half of `gap` on every side: `gap` between neighbours, half of it at the edges.
pub fn with_gap(tiles: Vec<Tile>, gap: i32) -> Vec<Tile> {
    let half = (gap / 2) & !1;
    if half <= 0 {
        return tiles;
    }
    tiles
        .into_iter()
        .map(|t| {
            let (width, height) = ((t.width - 2 * half).max(2), (t.height - 2 * half).max(2));
            Tile { x: t.x + half, y: t.y + half, width, height }
        })
        .collect()
}

/// One large tile above a strip of `strip` small 16:9 tiles along the bottom fifth of the frame,
/// centred. With an empty strip the focus takes the whole frame.
pub fn focus_with_strip(strip: usize, width: u32, height: u32) -> (Tile, Vec<Tile>) {
    let full = Tile { x: 0, y: 0, width: width as i32, height: height as i32 };
    if strip == 0 {
        return (full, Vec::new());
    }
    let strip_h = (height as usize / 5) & !1;
    let tile_w = ((strip_h * 16 / 9).min(width as usize / strip)) & !1;
    let tile_h = (tile_w * 9 / 16).min(strip_h) & !1;
    let left = (width as usize - tile_w * strip) / 2;
    let top = height as usize - strip_h + (strip_h - tile_h) / 2;
    let focus = Tile { height: (height as usize - strip_h) as i32, ..full };
    let tiles = (0..strip).map(|i| Tile { x: (left + i * tile_w) as i32, y: top as i32, width: tile_w as i32, height: tile_h as i32 }).collect();
    (focus, tiles)
}

/// Up to two initials of a name, upper case, for a placeholder tile.
pub fn initials(name: &str) -> String {
    let initials: String = name.split_whitespace().filter_map(|word| word.chars().next()).take(2).flat_map(char::to_uppercase).collect();
    if initials.is_empty() { "?".into() } else { initials }
}

/// `tile` grown by `by` pixels on every side, kept inside a `width`×`height` frame.
pub fn outline(tile: Tile, by: i32, width: u32, height: u32) -> [Tile; 4] {
    let left = (tile.x - by).max(0);
    let top = (tile.y - by).max(0);
    let right = (tile.x + tile.width + by).min(width as i32);
    let bottom = (tile.y + tile.height + by).min(height as i32);
    let (w, h) = (right - left, bottom - top);
    let thickness = by.max(1) * 2;
    [
        Tile { x: left, y: top, width: w, height: thickness.min(h) },
        Tile { x: left, y: (bottom - thickness).max(top), width: w, height: thickness.min(h) },
        Tile { x: left, y: top, width: thickness.min(w), height: h },
        Tile { x: (right - thickness).max(left), y: top, width: thickness.min(w), height: h },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_layouts() {
        assert_eq!(grid(1, 1280, 720), vec![Tile { x: 0, y: 0, width: 1280, height: 720 }]);
        let two = grid(2, 1280, 720);
        assert_eq!(two[1], Tile { x: 640, y: 0, width: 640, height: 720 });
        let three = grid(3, 1280, 720);
        assert_eq!(three[2], Tile { x: 0, y: 360, width: 640, height: 360 });
        assert_eq!(grid(5, 1280, 720).len(), 5);
    }

    #[test]
    fn focus_and_strip_fit_the_frame() {
        let (focus, strip) = focus_with_strip(3, 1280, 720);
        assert_eq!(focus, Tile { x: 0, y: 0, width: 1280, height: 576 });
        assert_eq!(strip.len(), 3);
        assert_eq!(strip[0], Tile { x: 256, y: 576, width: 256, height: 144 });
        assert_eq!(strip[2].x + strip[2].width, 1024);
        // Many participants shrink the strip's tiles rather than overflow the frame.
        let (_, many) = focus_with_strip(12, 1280, 720);
        let last = many.last().unwrap();
        assert!(last.x + last.width <= 1280 && last.y + last.height <= 720);
        assert_eq!(focus_with_strip(0, 1280, 720).0.height, 720);
    }

    #[test]
    fn scenes_are_looked_up_by_time() {
        let a = Layer::Track("a/cam".into());
        let tile = grid(1, 1280, 720)[0];
        let schedule = Schedule::new(vec![
            Scene { start_ns: 5, layers: vec![], highlight: None },
            Scene { start_ns: 1, layers: vec![(a.clone(), tile)], highlight: None },
            Scene { start_ns: 3, layers: vec![(a.clone(), tile)], highlight: None },
            Scene { start_ns: 4, layers: vec![(a.clone(), tile)], highlight: Some(tile) },
        ]);
        // The identical scene at 3 is merged into the one at 1; the highlight at 4 is a change.
        assert_eq!(schedule.scenes().len(), 3);
        assert_eq!(schedule.tile_at(&a, 0), None);
        assert_eq!(schedule.tile_at(&a, 1), Some(tile));
        assert_eq!(schedule.tile_at(&a, 4), Some(tile));
        assert_eq!(schedule.tile_at(&a, 5), None);
        assert_eq!(schedule.layers(), vec![a.clone()]);
        assert_eq!(schedule.scenes()[1].highlight, Some(tile));
        let named = schedule.with_names([("a".to_string(), "Alice A.".to_string())].into());
        assert_eq!(named.label(&a), "Alice A.");
        assert_eq!(named.label(&Layer::Placeholder("b".into())), "b", "no name: the id");
    }

    #[test]
    fn an_outline_straddles_the_tile_edge_inside_the_frame() {
        let tile = Tile { x: 0, y: 360, width: 640, height: 360 };
        let [top, bottom, left, right] = outline(tile, 3, 1280, 720);
        assert_eq!(top, Tile { x: 0, y: 357, width: 643, height: 6 });
        assert_eq!(bottom, Tile { x: 0, y: 714, width: 643, height: 6 }, "clipped at the frame's bottom");
        assert_eq!(left, Tile { x: 0, y: 357, width: 6, height: 363 });
        assert_eq!(right, Tile { x: 637, y: 357, width: 6, height: 363 });
    }

    #[test]
    fn initials_of_names() {
        assert_eq!(initials("alice"), "A");
        assert_eq!(initials("Ada Lovelace King"), "AL");
        assert_eq!(initials("  émile  zola "), "ÉZ");
        assert_eq!(initials(""), "?");
    }
}
