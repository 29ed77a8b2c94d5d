//! HLS playlists (RFC 8216) of a job's live segments, written by us rather than by `hlssink2` so that
//! one list of segments gives both playlists (every segment, and the live window), and so a recorder
//! taking the job over continues the playlist it finds in storage. No I/O here.

use std::fmt::Write;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaylistSegment {
    /// Relative to the playlist (`00001.ts`).
    pub uri: String,
    pub duration_ms: u64,
    /// The first segment after a break (another recorder's session): players reset their decoders.
    pub discontinuity: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Playlist {
    segments: Vec<PlaylistSegment>,
    /// The next segment starts a new session's media.
    break_pending: bool,
    ended: bool,
}

#[derive(Debug, thiserror::Error)]
#[error("not an HLS media playlist: {0}")]
pub struct InvalidPlaylist(&'static str);

impl Playlist {
    pub fn segments(&self) -> &[PlaylistSegment] {
        &self.segments
    }

    pub fn duration_ms(&self) -> u64 {
        self.segments.iter().map(|s| s.duration_ms).sum()
    }

    pub fn push(&mut self, uri: String, duration_ms: u64) {
        let discontinuity = std::mem::take(&mut self.break_pending) && !self.segments.is_empty();
        self.segments.push(PlaylistSegment { uri, duration_ms, discontinuity });
    }

    /// What follows comes from another capture session (its timestamps start again).
    pub fn mark_break(&mut self) {
        self.break_pending = true;
    }

    /// No segment will follow: players stop at the end instead of waiting for more.
    pub fn end(&mut self) {
        self.ended = true;
    }

    /// Every segment (an `EVENT` playlist: players may start at the beginning, and it only grows).
    pub fn render_all(&self) -> String {
        self.render(0, Some("EVENT"))
    }

    /// The last `window` segments, for players that follow live.
    pub fn render_live(&self, window: usize) -> String {
        self.render(self.segments.len().saturating_sub(window.max(1)), None)
    }

    fn render(&self, first: usize, kind: Option<&str>) -> String {
        let shown = &self.segments[first..];
        // Each segment's length rounded to the nearest second must not exceed the target (RFC 8216 4.3.3.1).
        let target = shown.iter().map(|s| (s.duration_ms + 500) / 1000).max().unwrap_or(1).max(1);
        let discontinuities_before = self.segments[..first].iter().filter(|s| s.discontinuity).count();
        let mut text = String::from("#EXTM3U\n#EXT-X-VERSION:3\n");
        let _ = writeln!(text, "#EXT-X-TARGETDURATION:{target}");
        let _ = writeln!(text, "#EXT-X-MEDIA-SEQUENCE:{first}");
        if discontinuities_before > 0 {
            let _ = writeln!(text, "#EXT-X-DISCONTINUITY-SEQUENCE:{discontinuities_before}");
        }
        if let Some(kind) = kind {
            let _ = writeln!(text, "#EXT-X-PLAYLIST-TYPE:{kind}");
        }
        for segment in shown {
            if segment.discontinuity {
                text.push_str("#EXT-X-DISCONTINUITY\n");
            }
            let _ = writeln!(text, "#EXTINF:{}.{:03},\n{}", segment.duration_ms / 1000, segment.duration_ms % 1000, segment.uri);
        }
        if self.ended {
            text.push_str("#EXT-X-ENDLIST\n");
        }
        text
    }

    /// Reads a playlist this module wrote (every segment), to continue it.
    pub fn parse(text: &str) -> Result<Playlist, InvalidPlaylist> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        if lines.next() != Some("#EXTM3U") {
            return Err(InvalidPlaylist("no #EXTM3U header"));
        }
        let mut playlist = Playlist::default();
        let mut duration_ms = None;
        let mut discontinuity = false;
        for line in lines {
            if let Some(rest) = line.strip_prefix("#EXTINF:") {
                let seconds: f64 = rest.split(',').next().unwrap_or_default().parse().map_err(|_| InvalidPlaylist("a bad #EXTINF"))?;
                duration_ms = Some((seconds * 1000.0).round() as u64);
            } else if line == "#EXT-X-DISCONTINUITY" {
                discontinuity = true;
            } else if line == "#EXT-X-ENDLIST" {
                playlist.ended = true;
            } else if !line.starts_with('#') {
                let duration_ms = duration_ms.take().ok_or(InvalidPlaylist("a segment without #EXTINF"))?;
                playlist.segments.push(PlaylistSegment { uri: line.to_string(), duration_ms, discontinuity });
                discontinuity = false;
            }
        }
        Ok(playlist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_playlists_list_the_segments_and_a_takeover_continues_them() {
        let mut playlist = Playlist::default();
        playlist.push("00001.ts".into(), 6_006);
        playlist.push("00002.ts".into(), 5_994);
        playlist.push("00003.ts".into(), 6_500);
        let all = playlist.render_all();
        assert!(
            all.starts_with("#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:7\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:EVENT\n"),
            "{all}"
        );
        assert!(all.contains("#EXTINF:6.006,\n00001.ts\n#EXTINF:5.994,\n00002.ts\n"));
        assert!(!all.contains("ENDLIST"));
        let live = playlist.render_live(2);
        assert!(live.contains("#EXT-X-MEDIA-SEQUENCE:1\n") && !live.contains("00001.ts") && live.contains("00003.ts"), "{live}");
        assert!(!live.contains("PLAYLIST-TYPE"));

        // Another recorder reads it back and goes on after a break.
        let mut taken = Playlist::parse(&all).unwrap();
        assert_eq!(taken.segments(), playlist.segments());
        taken.mark_break();
        taken.push("00004.ts".into(), 4_000);
        taken.push("00005.ts".into(), 6_000);
        taken.end();
        let all = taken.render_all();
        assert!(all.contains("00003.ts\n#EXT-X-DISCONTINUITY\n#EXTINF:4.000,\n00004.ts\n#EXTINF:6.000,\n00005.ts\n#EXT-X-ENDLIST\n"), "{all}");
        assert!(Playlist::parse(&all).unwrap().segments()[3].discontinuity);
        let live = taken.render_live(1);
        assert!(live.contains("#EXT-X-DISCONTINUITY-SEQUENCE:1\n#EXTINF:6.000,\n00005.ts\n#EXT-X-ENDLIST"), "{live}");
        assert_eq!(taken.duration_ms(), 28_500);

        assert!(Playlist::parse("garbage").is_err());
        assert!(Playlist::parse("#EXTM3U\nx.ts\n").is_err());
    }
}
