//! The join box by box: the chunks' media bytes are copied as they are (the kernel copies them, file to
//! file) behind one `moov` whose sample tables are the chunks' tables laid end to end. No sample passes
//! through GStreamer, so an hour of chunks joins in about the time its bytes take to copy.
//!
//! Only chunks that follow on exactly are joined so (same tracks, timescales and edit shift, each
//! showing all of its media); others are refused with the reason, for the remux to try.

use super::boxes::{self, BoxError, Kind, Node, Placed};
use super::tables::{self, Edit, TrackTables};
use mp4_atom::{Atom, Co64, Codec, Ctts, Decode, Elst, Encode, Hdlr, Mdhd, Mvhd, Stco, Stsc, Stsd, Stss, Stsz, Stts, Tkhd};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConcatError {
    /// The chunks are not joined box by box (the remux may still join them).
    #[error("{0}")]
    Refused(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

const STBL: [&Kind; 4] = [b"mdia", b"minf", b"stbl", b"stsd"];

/// Joins `chunks` (MP4 files, in time order, each with the same tracks) into `output`, moov first.
pub fn run(chunks: &[PathBuf], output: &Path) -> Result<(), ConcatError> {
    let files = chunks.iter().enumerate().map(|(index, path)| ChunkFile::read(path).map_err(|e| e.chunk(index))).collect::<Result<Vec<_>, _>>()?;
    let first = files.first().ok_or_else(|| ConcatError::Refused("no chunks".into()))?;
    for (index, file) in files.iter().enumerate() {
        let handlers = |f: &ChunkFile| f.tracks.iter().map(|t| t.handler).collect::<Vec<_>>();
        if handlers(file) != handlers(first) {
            return Err(refused(format!("chunk {index} has other tracks than the first chunk")));
        }
        if file.movie_timescale != first.movie_timescale {
            return Err(refused(format!("chunk {index}: movie timescale {}, the first chunk's is {}", file.movie_timescale, first.movie_timescale)));
        }
    }

    // Each chunk's media bytes follow the last chunk's in the joined mdat.
    let mut shifts = Vec::with_capacity(files.len());
    let mut payload_len = 0u64;
    for file in &files {
        let payload = file.mdat.payload();
        shifts.push(payload_len as i64 - payload.start as i64);
        payload_len += payload.end - payload.start;
    }
    let mut joined = Vec::new();
    for track in 0..first.tracks.len() {
        let (descriptions, per_chunk) = sample_descriptions(&files, track);
        let tables = files
            .iter()
            .zip(per_chunk)
            .map(|(file, descriptions)| TrackTables { descriptions, ..file.tracks[track].tables.clone() })
            .collect::<Vec<_>>();
        let joined_tables = tables::join(&tables, &shifts, first.movie_timescale).map_err(|e| refused(format!("track {}: {e}", track + 1)))?;
        joined.push(JoinedTrack { tables: joined_tables, descriptions });
    }

    let ftyp = first.ftyp.clone().ok_or_else(|| refused("the first chunk has no ftyp box".into()))?;
    let mdat_header_len = if u32::try_from(payload_len + 8).is_ok() { 8 } else { 16 };
    let last_offset = joined.iter().flat_map(|t| t.tables.offsets.last()).max().copied().unwrap_or(0);
    // The offsets point past the moov, whose size depends on whether they need 64 bits.
    let mut wide = false;
    let mut moov = assemble(first, &joined, 0, wide)?;
    let mut base = ftyp.len() as u64 + moov.len() as u64 + mdat_header_len;
    if u32::try_from(last_offset + base).is_err() {
        wide = true;
        base = ftyp.len() as u64 + assemble(first, &joined, 0, wide)?.len() as u64 + mdat_header_len;
    }
    moov = assemble(first, &joined, base, wide)?;

    let mut out = File::create(output)?;
    let mut head = ftyp;
    head.extend_from_slice(&moov);
    boxes::write_header(&mut head, b"mdat", payload_len);
    out.write_all(&head)?;
    for (file, path) in files.iter().zip(chunks) {
        let payload = file.mdat.payload();
        let mut source = File::open(path)?;
        source.seek(SeekFrom::Start(payload.start))?;
        let copied = std::io::copy(&mut source.take(payload.end - payload.start), &mut out)?;
        if copied != payload.end - payload.start {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, format!("{} shrank while being joined", path.display())).into());
        }
    }
    out.flush()?;
    Ok(())
}

fn refused(reason: String) -> ConcatError {
    ConcatError::Refused(reason)
}

/// A chunk file, read as far as the join needs.
struct ChunkFile {
    ftyp: Option<Vec<u8>>,
    moov: Node,
    mdat: Placed,
    movie_timescale: u32,
    tracks: Vec<ChunkTrack>,
}

struct ChunkTrack {
    handler: [u8; 4],
    tables: TrackTables,
    /// The sample description box's entries, as written, and as compared (bit rates left out).
    entries: Vec<(Vec<u8>, Codec)>,
}

struct JoinedTrack {
    tables: TrackTables,
    descriptions: Vec<Vec<u8>>,
}

/// Why one chunk cannot be read for the join.
struct Unreadable(String);

impl Unreadable {
    fn chunk(self, index: usize) -> ConcatError {
        ConcatError::Refused(format!("chunk {index}: {}", self.0))
    }
}

impl From<std::io::Error> for Unreadable {
    fn from(err: std::io::Error) -> Self {
        Unreadable(format!("i/o: {err}"))
    }
}

impl From<BoxError> for Unreadable {
    fn from(err: BoxError) -> Self {
        Unreadable(err.to_string())
    }
}

impl ChunkFile {
    fn read(path: &Path) -> Result<ChunkFile, Unreadable> {
        let mut file = File::open(path)?;
        let placed = boxes::top_level(&mut file)?;
        let read = |file: &mut File, at: &Placed| -> Result<Vec<u8>, Unreadable> {
            let mut bytes = vec![0; usize::try_from(at.size).map_err(|_| Unreadable("box too large".into()))?];
            file.seek(SeekFrom::Start(at.offset))?;
            file.read_exact(&mut bytes)?;
            Ok(bytes)
        };
        let one = |kind: &Kind| -> Result<Placed, Unreadable> {
            let mut found = placed.iter().filter(|b| &b.kind == kind);
            match (found.next(), found.next()) {
                (Some(b), None) => Ok(*b),
                (None, _) => Err(Unreadable(format!("no {} box", String::from_utf8_lossy(kind)))),
                (Some(_), Some(_)) => Err(Unreadable(format!("more than one {} box", String::from_utf8_lossy(kind)))),
            }
        };
        let ftyp = match placed.iter().find(|b| &b.kind == b"ftyp") {
            Some(at) => Some(read(&mut file, at)?),
            None => None,
        };
        let moov = Node::parse(&read(&mut file, &one(b"moov")?)?)?;
        let mdat = one(b"mdat")?;
        let movie_timescale = decode::<Mvhd>(moov.leaf(&[b"mvhd"]))?.timescale;
        let tracks = moov.children().iter().filter(|c| &c.kind() == b"trak").map(|trak| read_track(trak, &mdat)).collect::<Result<_, _>>()?;
        Ok(ChunkFile { ftyp, moov, mdat, movie_timescale, tracks })
    }
}

fn decode<T: Atom>(leaf: Option<&[u8]>) -> Result<T, Unreadable> {
    let bytes = leaf.ok_or_else(|| Unreadable(format!("no {} box", T::KIND)))?;
    T::decode(&mut &bytes[..]).map_err(|e| Unreadable(format!("{}: {e}", T::KIND)))
}

fn decode_if<T: Atom>(leaf: Option<&[u8]>) -> Result<Option<T>, Unreadable> {
    leaf.map(|bytes| decode(Some(bytes))).transpose()
}

fn read_track(trak: &Node, mdat: &Placed) -> Result<ChunkTrack, Unreadable> {
    let stbl = |kind: &'static Kind| trak.leaf(&[STBL[0], STBL[1], STBL[2], kind]);
    let mdhd: Mdhd = decode(trak.leaf(&[b"mdia", b"mdhd"]))?;
    let handler = decode::<Hdlr>(trak.leaf(&[b"mdia", b"hdlr"]))?.handler;
    let edit = match decode_if::<Elst>(trak.leaf(&[b"edts", b"elst"]))? {
        None => None,
        Some(elst) => match elst.entries.as_slice() {
            [entry] if entry.media_rate == 1i16.into() => match entry.media_time {
                Some(media_time) => Some(Edit { media_time, segment_duration: entry.segment_duration }),
                None => return Err(Unreadable("an edit list with an empty edit".into())),
            },
            entries => return Err(Unreadable(format!("an edit list of {} edits", entries.len()))),
        },
    };
    let offsets = match (decode_if::<Stco>(stbl(b"stco"))?, decode_if::<Co64>(stbl(b"co64"))?) {
        (Some(stco), None) => stco.entries.into_iter().map(u64::from).collect(),
        (None, Some(co64)) => co64.entries,
        _ => return Err(Unreadable("not exactly one chunk offset box".into())),
    };
    let payload = mdat.payload();
    if offsets.iter().any(|o: &u64| !payload.contains(o)) {
        return Err(Unreadable("a chunk offset outside the mdat box".into()));
    }
    let stsd_leaf = stbl(b"stsd").ok_or_else(|| Unreadable("no stsd box".into()))?;
    let codecs = decode::<Stsd>(Some(stsd_leaf))?.codecs;
    let raw = boxes::split(stsd_leaf.get(16..).ok_or_else(|| Unreadable("short stsd box".into()))?)?;
    if raw.len() != codecs.len() {
        return Err(Unreadable("the stsd box's entries could not be told apart".into()));
    }
    let entries: Vec<(Vec<u8>, Codec)> = raw.into_iter().map(<[u8]>::to_vec).zip(codecs.iter().map(comparable)).collect();
    let tables = TrackTables {
        timescale: mdhd.timescale,
        media_duration: mdhd.duration,
        edit,
        stts: decode::<Stts>(stbl(b"stts"))?.entries,
        ctts: decode_if::<Ctts>(stbl(b"ctts"))?.map(|c| c.entries),
        stss: decode_if::<Stss>(stbl(b"stss"))?.map(|s| s.entries),
        sizes: decode::<Stsz>(stbl(b"stsz"))?.samples,
        stsc: decode::<Stsc>(stbl(b"stsc"))?.entries,
        offsets,
        descriptions: (1..=entries.len() as u32).collect(),
    };
    Ok(ChunkTrack { handler: handler.into(), tables, entries })
}

/// A sample description as compared between chunks: bit rates differ from chunk to chunk and do not
/// change how the samples decode.
fn comparable(codec: &Codec) -> Codec {
    let mut codec = codec.clone();
    match &mut codec {
        Codec::Avc1(avc) => avc.btrt = None,
        Codec::Mp4a(aac) => {
            aac.btrt = None;
            let config = &mut aac.esds.es_desc.dec_config;
            (config.max_bitrate, config.avg_bitrate, config.buffer_size_db) = (0, 0, Default::default());
        }
        _ => {}
    }
    codec
}

/// The joined track's sample descriptions (each distinct one once, in order of first use), and for
/// every chunk which of them its own descriptions are. Chunks from different encoders (other H.264
/// parameter sets) keep theirs: the track then has several, as MP4 allows.
fn sample_descriptions(files: &[ChunkFile], track: usize) -> (Vec<Vec<u8>>, Vec<Vec<u32>>) {
    let mut distinct: Vec<(Vec<u8>, Codec)> = Vec::new();
    let mut per_chunk = Vec::new();
    for file in files {
        let mut map = Vec::new();
        for (raw, codec) in &file.tracks[track].entries {
            let index = match distinct.iter().position(|(_, known)| known == codec) {
                Some(index) => index,
                None => {
                    distinct.push((raw.clone(), codec.clone()));
                    distinct.len() - 1
                }
            };
            map.push(index as u32 + 1);
        }
        per_chunk.push(map);
    }
    (distinct.into_iter().map(|(raw, _)| raw).collect(), per_chunk)
}

/// The joined moov: the first chunk's, with every duration and sample table replaced; chunk offsets
/// are relative to the mdat's payload, which starts at `base`.
fn assemble(first: &ChunkFile, tracks: &[JoinedTrack], base: u64, wide: bool) -> Result<Vec<u8>, ConcatError> {
    let mut moov = first.moov.clone();
    let movie_timescale = first.movie_timescale;
    let mut movie_duration = 0u64;
    let Node::Container { children, .. } = &mut moov else { unreachable!("moov is a container") };
    let traks = children.iter_mut().filter(|c| &c.kind() == b"trak");
    for (trak, joined) in traks.zip(tracks) {
        let tables = &joined.tables;
        let duration = match tables.edit {
            Some(edit) => edit.segment_duration,
            None => (tables.media_duration as u128 * movie_timescale as u128 / tables.timescale.max(1) as u128) as u64,
        };
        movie_duration = movie_duration.max(duration);
        let mut tkhd: Tkhd = decode(trak.leaf(&[b"tkhd"])).map_err(|e| refused(e.0))?;
        tkhd.duration = duration;
        trak.replace(&[b"tkhd"], leaf(&tkhd)?);
        if let Some(edit) = tables.edit {
            let mut elst: Elst = decode(trak.leaf(&[b"edts", b"elst"])).map_err(|e| refused(e.0))?;
            elst.entries.truncate(1);
            elst.entries[0].segment_duration = edit.segment_duration;
            trak.child_mut(b"edts").expect("an edit list was read").replace(&[b"elst"], leaf(&elst)?);
        }
        let mdia = trak.child_mut(b"mdia").expect("read before");
        let mut mdhd: Mdhd = decode(mdia.leaf(&[b"mdhd"])).map_err(|e| refused(e.0))?;
        mdhd.duration = tables.media_duration;
        mdia.replace(&[b"mdhd"], leaf(&mdhd)?);
        let stbl = mdia.child_mut(b"minf").and_then(|m| m.child_mut(b"stbl")).expect("read before");
        stbl.replace(&[b"stsd"], stsd(&joined.descriptions));
        stbl.replace(&[b"stts"], leaf(&Stts { entries: tables.stts.clone() })?);
        match &tables.ctts {
            Some(entries) => stbl.replace(&[b"ctts"], leaf(&Ctts { entries: entries.clone() })?),
            None => stbl.remove(&[b"ctts"]),
        }
        match &tables.stss {
            Some(entries) => stbl.replace(&[b"stss"], leaf(&Stss { entries: entries.clone() })?),
            None => stbl.remove(&[b"stss"]),
        }
        stbl.replace(&[b"stsz"], leaf(&Stsz { samples: tables.sizes.clone() })?);
        stbl.replace(&[b"stsc"], leaf(&Stsc { entries: tables.stsc.clone() })?);
        let offsets = tables.offsets.iter().map(|o| o + base);
        let chunk_offsets =
            if wide { leaf(&Co64 { entries: offsets.collect() })? } else { leaf(&Stco { entries: offsets.map(|o| o as u32).collect() })? };
        stbl.replace(&[b"stco", b"co64"], chunk_offsets);
    }
    let mut mvhd: Mvhd = decode(moov.leaf(&[b"mvhd"])).map_err(|e| refused(e.0))?;
    mvhd.duration = movie_duration;
    moov.replace(&[b"mvhd"], leaf(&mvhd)?);
    let mut out = Vec::new();
    moov.encode(&mut out);
    Ok(out)
}

fn leaf<T: Atom>(atom: &T) -> Result<Node, ConcatError> {
    let mut bytes = Vec::new();
    atom.encode(&mut bytes).map_err(|e| refused(format!("encoding {}: {e}", T::KIND)))?;
    Ok(Node::Leaf(bytes))
}

/// A sample description box holding `entries`.
fn stsd(entries: &[Vec<u8>]) -> Node {
    let mut payload = vec![0u8; 4];
    payload.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    entries.iter().for_each(|e| payload.extend_from_slice(e));
    let mut bytes = Vec::new();
    boxes::write_header(&mut bytes, b"stsd", payload.len() as u64);
    bytes.extend_from_slice(&payload);
    Node::Leaf(bytes)
}
