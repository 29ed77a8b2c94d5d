//! Facts measured from a finished MP4 file: duration (from `mvhd`), sample entry codecs (from each
//! track's `stsd`), and whether `moov` comes before `mdat` (faststart).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

#[derive(Debug, Clone, PartialEq)]
pub struct Mp4Info {
    pub duration_s: f64,
    pub faststart: bool,
    /// Sample entry four-character codes, one per track, e.g. `avc1`, `mp4a`.
    pub sample_entries: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Mp4Error {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a valid MP4: {0}")]
    Invalid(&'static str),
}

pub fn read(path: &Path) -> Result<Mp4Info, Mp4Error> {
    let mut file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let (mut moov, mut moov_at, mut mdat_at) = (None, None, None);
    let mut offset = 0u64;
    while offset + 8 <= len {
        file.seek(SeekFrom::Start(offset))?;
        let mut header = [0u8; 16];
        file.read_exact(&mut header[..8])?;
        let mut size = u32::from_be_bytes(header[..4].try_into().unwrap()) as u64;
        let kind: [u8; 4] = header[4..8].try_into().unwrap();
        let mut header_len = 8;
        if size == 1 {
            file.read_exact(&mut header[8..16])?;
            size = u64::from_be_bytes(header[8..16].try_into().unwrap());
            header_len = 16;
        } else if size == 0 {
            size = len - offset;
        }
        if size < header_len {
            return Err(Mp4Error::Invalid("box smaller than its header"));
        }
        match &kind {
            b"moov" => {
                let mut body = vec![0u8; (size - header_len) as usize];
                file.read_exact(&mut body)?;
                moov = Some(body);
                moov_at = Some(offset);
            }
            b"mdat" => mdat_at = mdat_at.or(Some(offset)),
            _ => {}
        }
        offset += size;
    }
    let moov = moov.ok_or(Mp4Error::Invalid("no moov box"))?;
    let mvhd = find(&moov, b"mvhd").ok_or(Mp4Error::Invalid("no mvhd box"))?;
    let duration_s = mvhd_duration(mvhd).ok_or(Mp4Error::Invalid("short mvhd box"))?;
    let sample_entries = children(&moov)
        .filter(|(kind, _)| kind == b"trak")
        .filter_map(|(_, trak)| {
            let stsd = find_path(trak, &[b"mdia", b"minf", b"stbl", b"stsd"])?;
            // full box header (4) + entry count (4) + first entry size (4) + format (4)
            stsd.get(12..16).map(|f| String::from_utf8_lossy(f).into_owned())
        })
        .collect();
    let faststart = matches!((moov_at, mdat_at), (Some(m), Some(d)) if m < d);
    Ok(Mp4Info { duration_s, faststart, sample_entries })
}

fn mvhd_duration(mvhd: &[u8]) -> Option<f64> {
    let be32 = |at: usize| mvhd.get(at..at + 4).map(|b| u32::from_be_bytes(b.try_into().unwrap()) as u64);
    let be64 = |at: usize| mvhd.get(at..at + 8).map(|b| u64::from_be_bytes(b.try_into().unwrap()));
    let (timescale, duration) = match mvhd.first()? {
        1 => (be32(20)?, be64(24)?),
        _ => (be32(12)?, be32(16)?),
    };
    (timescale > 0).then(|| duration as f64 / timescale as f64)
}

/// Child boxes of a container body: (type, body).
fn children(body: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let header = body.get(at..at + 8)?;
        let size = u32::from_be_bytes(header[..4].try_into().unwrap()) as usize;
        let kind: [u8; 4] = header[4..8].try_into().unwrap();
        if size < 8 || at + size > body.len() {
            return None;
        }
        let child = &body[at + 8..at + size];
        at += size;
        Some((kind, child))
    })
}

fn find<'a>(body: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    children(body).find(|(k, _)| k == kind).map(|(_, b)| b)
}

fn find_path<'a>(body: &'a [u8], path: &[&[u8; 4]]) -> Option<&'a [u8]> {
    path.iter().try_fold(body, |body, kind| find(body, kind))
}
