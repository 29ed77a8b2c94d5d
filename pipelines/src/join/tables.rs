//! One track's sample tables, chunk after chunk: the arithmetic of a join, without I/O. Each chunk's
//! samples keep their sizes, durations, composition offsets and sync flags; their numbering, chunk
//! numbering, sample descriptions and file offsets move by what came before them.

use mp4_atom::{CttsEntry, StscEntry, StszSamples, SttsEntry};

/// A track's single edit: its media from `media_time` on, for `segment_duration` (movie timescale).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edit {
    pub media_time: u64,
    pub segment_duration: u64,
}

/// One chunk's tables of one track, as its file has them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TrackTables {
    pub timescale: u32,
    /// Sum of the sample durations (`mdhd`).
    pub media_duration: u64,
    pub edit: Option<Edit>,
    pub stts: Vec<SttsEntry>,
    pub ctts: Option<Vec<CttsEntry>>,
    /// `None`: every sample is a sync sample.
    pub stss: Option<Vec<u32>>,
    pub sizes: StszSamples,
    pub stsc: Vec<StscEntry>,
    /// Chunk offsets, in the chunk file.
    pub offsets: Vec<u64>,
    /// The joined track's sample description for each of this file's (`stsc` indexes are 1-based).
    pub descriptions: Vec<u32>,
}

/// Why a set of chunks cannot be joined box by box (the remux may still join them).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Mismatch {
    #[error("chunk {0}: timescale {1}, the first chunk's is {2}")]
    Timescale(usize, u32, u32),
    #[error("chunk {0}: its edit list shows {1} of its {2} ticks of media (movie timescale)")]
    EditTrims(usize, u64, u64),
    #[error("chunk {0}: inconsistent sample tables: {1}")]
    Tables(usize, &'static str),
}

impl TrackTables {
    pub fn sample_count(&self) -> u64 {
        self.stts.iter().map(|e| e.sample_count as u64).sum()
    }

    fn size_count(&self) -> u64 {
        match &self.sizes {
            StszSamples::Identical { count, .. } => *count as u64,
            StszSamples::Different { sizes } => sizes.len() as u64,
        }
    }

    fn check(&self, index: usize) -> Result<(), Mismatch> {
        let bad = |why| Err(Mismatch::Tables(index, why));
        if self.sample_count() != self.size_count() {
            return bad("stts and stsz count different samples");
        }
        if self.stts.iter().map(|e| e.sample_count as u64 * e.sample_delta as u64).sum::<u64>() != self.media_duration {
            return bad("the sample durations do not add up to the media duration");
        }
        if let Some(ctts) = &self.ctts
            && ctts.iter().map(|e| e.sample_count as u64).sum::<u64>() != self.sample_count()
        {
            return bad("ctts and stts count different samples");
        }
        if self.stsc.first().is_some_and(|e| e.first_chunk != 1) || self.stsc.iter().any(|e| e.first_chunk as usize > self.offsets.len()) {
            return bad("stsc does not fit the chunk offsets");
        }
        if self.stsc.iter().any(|e| e.sample_description_index == 0 || e.sample_description_index as usize > self.descriptions.len()) {
            return bad("stsc names a sample description the file does not have");
        }
        Ok(())
    }
}

/// `value` in timescale `from`, in timescale `to`, rounded to the nearest tick.
fn rescale(value: u64, from: u32, to: u32) -> u64 {
    ((value as u128 * to as u128 + from as u128 / 2) / from.max(1) as u128) as u64
}

/// The joined track's tables. `shifts[i]`: what chunk i's file offsets move by in the joined file.
pub fn join(chunks: &[TrackTables], shifts: &[i64], movie_timescale: u32) -> Result<TrackTables, Mismatch> {
    let first = chunks.first().ok_or(Mismatch::Tables(0, "no chunks"))?;
    let mut joined = TrackTables { timescale: first.timescale, ..TrackTables::default() };
    let all_sync = chunks.iter().all(|c| c.stss.is_none());
    // A chunk's edit starts its presentation at its `media_time` (an encoder's reordering delay); the
    // joined track has the first chunk's, so a chunk with another delay has its composition offsets
    // moved by the difference (chunks from different encoders).
    let delay = |c: &TrackTables| c.edit.map_or(0, |e| e.media_time) as i64;
    let moved = |c: &TrackTables| delay(first) - delay(c);
    let any_ctts = chunks.iter().any(|c| c.ctts.is_some() || moved(c) != 0);
    let uniform_size = match &first.sizes {
        StszSamples::Identical { size, .. } if chunks.iter().all(|c| matches!(c.sizes, StszSamples::Identical { size: s, .. } if s == *size)) => {
            Some(*size)
        }
        _ => None,
    };
    let (mut sizes, mut ctts, mut stss) = (Vec::new(), Vec::new(), Vec::new());
    let (mut samples_before, mut edit_duration) = (0u64, 0u64);
    for (index, (chunk, &shift)) in chunks.iter().zip(shifts).enumerate() {
        chunk.check(index)?;
        if chunk.timescale != first.timescale {
            return Err(Mismatch::Timescale(index, chunk.timescale, first.timescale));
        }
        // Chunk after chunk is one edit when each shows all of its media.
        let media_in_movie = rescale(chunk.media_duration, chunk.timescale, movie_timescale);
        match chunk.edit {
            Some(edit) if edit.segment_duration.abs_diff(media_in_movie) > 1 => {
                return Err(Mismatch::EditTrims(index, edit.segment_duration, media_in_movie));
            }
            Some(edit) => edit_duration += edit.segment_duration,
            None => edit_duration += media_in_movie,
        }

        joined.media_duration += chunk.media_duration;
        for entry in &chunk.stts {
            match joined.stts.last_mut() {
                Some(last) if last.sample_delta == entry.sample_delta => last.sample_count += entry.sample_count,
                _ => joined.stts.push(entry.clone()),
            }
        }
        if any_ctts {
            let zero = [CttsEntry { sample_count: chunk.sample_count() as u32, sample_offset: 0 }];
            for entry in chunk.ctts.as_deref().unwrap_or(&zero) {
                let offset = entry.sample_offset + moved(chunk);
                match ctts.last_mut() {
                    Some(CttsEntry { sample_count, sample_offset }) if *sample_offset == offset => *sample_count += entry.sample_count,
                    _ => ctts.push(CttsEntry { sample_count: entry.sample_count, sample_offset: offset }),
                }
            }
        }
        if !all_sync {
            let numbers = samples_before as u32 + 1..=(samples_before + chunk.sample_count()) as u32;
            match &chunk.stss {
                Some(own) => stss.extend(own.iter().map(|n| n + samples_before as u32)),
                None => stss.extend(numbers),
            }
        }
        if uniform_size.is_none() {
            match &chunk.sizes {
                StszSamples::Identical { count, size } => sizes.extend(std::iter::repeat_n(*size, *count as usize)),
                StszSamples::Different { sizes: own } => sizes.extend_from_slice(own),
            }
        }
        let chunks_before = joined.offsets.len() as u32;
        for entry in &chunk.stsc {
            let description = chunk.descriptions[entry.sample_description_index as usize - 1];
            let same_run = joined
                .stsc
                .last()
                .is_some_and(|last: &StscEntry| last.samples_per_chunk == entry.samples_per_chunk && last.sample_description_index == description);
            if !same_run {
                joined.stsc.push(StscEntry {
                    first_chunk: entry.first_chunk + chunks_before,
                    samples_per_chunk: entry.samples_per_chunk,
                    sample_description_index: description,
                });
            }
        }
        for &offset in &chunk.offsets {
            let moved = offset.checked_add_signed(shift).ok_or(Mismatch::Tables(index, "a chunk offset moves out of range"))?;
            joined.offsets.push(moved);
        }
        samples_before += chunk.sample_count();
    }
    if u32::try_from(samples_before).is_err() {
        return Err(Mismatch::Tables(chunks.len() - 1, "more samples than an MP4 track holds"));
    }
    joined.sizes = match uniform_size {
        Some(size) => StszSamples::Identical { count: samples_before as u32, size },
        None => StszSamples::Different { sizes },
    };
    joined.ctts = any_ctts.then_some(ctts);
    joined.stss = (!all_sync).then_some(stss);
    let any_edit = chunks.iter().any(|c| c.edit.is_some());
    joined.edit = any_edit.then_some(Edit { media_time: delay(first) as u64, segment_duration: edit_duration });
    joined.descriptions = Vec::new();
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stts(count: u32, delta: u32) -> SttsEntry {
        SttsEntry { sample_count: count, sample_delta: delta }
    }

    fn stsc(first_chunk: u32, samples: u32, description: u32) -> StscEntry {
        StscEntry { first_chunk, samples_per_chunk: samples, sample_description_index: description }
    }

    /// A video chunk: `frames` at 100 ticks (3000 Hz), a keyframe every 15, two frames of reordering
    /// delay, chunks of 5 samples, all described by the joined track's `description`.
    fn video(frames: u32, description: u32) -> TrackTables {
        TrackTables {
            timescale: 3000,
            media_duration: frames as u64 * 100,
            edit: Some(Edit { media_time: 200, segment_duration: frames as u64 * 100 }),
            stts: vec![stts(frames, 100)],
            ctts: Some(vec![CttsEntry { sample_count: frames, sample_offset: 200 }]),
            stss: Some((1..=frames).step_by(15).collect()),
            sizes: StszSamples::Different { sizes: (0..frames).map(|i| 1000 + i).collect() },
            stsc: vec![stsc(1, 5, 1)],
            offsets: (0..frames.div_ceil(5)).map(|c| 100 + c as u64 * 5000).collect(),
            descriptions: vec![description],
        }
    }

    #[test]
    fn chunks_follow_on_in_every_table() {
        let joined = join(&[video(30, 1), video(20, 1)], &[10, 150_000], 3000).unwrap();
        assert_eq!(joined.media_duration, 5000);
        assert_eq!(joined.stts, vec![stts(50, 100)]);
        assert_eq!(joined.ctts, Some(vec![CttsEntry { sample_count: 50, sample_offset: 200 }]));
        assert_eq!(joined.stss, Some(vec![1, 16, 31, 46]));
        assert_eq!(joined.edit, Some(Edit { media_time: 200, segment_duration: 5000 }));
        assert_eq!(joined.stsc, vec![stsc(1, 5, 1)]);
        assert_eq!(joined.offsets.len(), 10);
        assert_eq!((joined.offsets[0], joined.offsets[5], joined.offsets[6], joined.offsets[7]), (110, 25_110, 150_100, 155_100));
        let StszSamples::Different { sizes } = &joined.sizes else { panic!("sizes differ per sample") };
        assert_eq!((sizes.len(), sizes[30]), (50, 1000));
    }

    #[test]
    fn a_chunk_with_other_parameter_sets_keeps_its_own_description() {
        let mut last = video(20, 2);
        last.stsc = vec![stsc(1, 5, 1), stsc(4, 2, 1)];
        let joined = join(&[video(30, 1), last], &[0, 0], 3000).unwrap();
        assert_eq!(joined.stsc, vec![stsc(1, 5, 1), stsc(7, 5, 2), stsc(10, 2, 2)]);
    }

    #[test]
    fn audio_without_reordering_or_sync_table_stays_compact() {
        let audio = |frames: u32| TrackTables {
            timescale: 48_000,
            media_duration: frames as u64 * 1024,
            stts: vec![stts(frames, 1024)],
            sizes: StszSamples::Identical { count: frames, size: 6 },
            stsc: vec![stsc(1, frames, 1)],
            offsets: vec![0],
            descriptions: vec![1],
            ..TrackTables::default()
        };
        let joined = join(&[audio(117), audio(118)], &[0, 0], 3000).unwrap();
        assert_eq!((joined.ctts, joined.stss, joined.edit), (None, None, None));
        assert_eq!(joined.sizes, StszSamples::Identical { count: 235, size: 6 });
        assert_eq!(joined.stsc, vec![stsc(1, 117, 1), stsc(2, 118, 1)]);
        // A chunk without composition offsets among chunks with them gets zeros.
        let mut plain = video(10, 1);
        plain.ctts = None;
        let joined = join(&[video(10, 1), plain], &[0, 0], 3000).unwrap();
        assert_eq!(joined.ctts, Some(vec![CttsEntry { sample_count: 10, sample_offset: 200 }, CttsEntry { sample_count: 10, sample_offset: 0 }]));
    }

    #[test]
    fn a_chunk_from_an_encoder_without_reordering_keeps_its_place() {
        // An encoder without B-frames: no edit, no composition offsets; its frames present at their
        // decode times, so in a track that shows media from 200 on they move by 200.
        let mut plain = video(10, 2);
        (plain.edit, plain.ctts) = (None, None);
        let joined = join(&[video(10, 1), plain.clone()], &[0, 0], 3000).unwrap();
        assert_eq!(joined.ctts, Some(vec![CttsEntry { sample_count: 20, sample_offset: 200 }]));
        assert_eq!(joined.edit, Some(Edit { media_time: 200, segment_duration: 2000 }));
        // The other way round: the first chunk shows from 0, the next one's offsets go down by 200.
        let joined = join(&[plain.clone(), video(10, 1)], &[0, 0], 3000).unwrap();
        assert_eq!(joined.ctts, Some(vec![CttsEntry { sample_count: 20, sample_offset: 0 }]));
        assert_eq!(joined.edit, Some(Edit { media_time: 0, segment_duration: 2000 }));
        assert_eq!(join(&[plain.clone(), plain], &[0, 0], 3000).unwrap().edit, None);
    }

    #[test]
    fn chunks_that_do_not_follow_on_are_refused() {
        let mut other = video(10, 1);
        other.timescale = 90_000;
        assert!(matches!(join(&[video(10, 1), other], &[0, 0], 3000), Err(Mismatch::Timescale(1, 90_000, 3000))));
        let mut trimmed = video(10, 1);
        trimmed.edit = Some(Edit { media_time: 200, segment_duration: 500 });
        assert!(matches!(join(&[video(10, 1), trimmed], &[0, 0], 3000), Err(Mismatch::EditTrims(1, 500, 1000))));
        let mut short = video(10, 1);
        short.media_duration = 900;
        assert!(matches!(join(&[short], &[0], 3000), Err(Mismatch::Tables(0, _))));
    }
}
