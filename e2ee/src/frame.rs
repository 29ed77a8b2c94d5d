//! One encrypted frame taken apart: `[clear header][ciphertext + 16-byte tag][IV (12)][IV length (1)][key
//! index (1)]`. The clear header (also the AEAD's associated data) is what lets the SFU and packetizers
//! work: Opus's TOC byte, VP8's payload header, H.264's parameter sets and slice NAL header. For H.264 the
//! encrypted tail is escaped like NAL unit payload (emulation prevention), so it never forms a start code.

/// The codecs whose frames LiveKit encrypts, as far as their clear bytes differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameCodec {
    Opus,
    Vp8,
    Vp9,
    H264,
}

impl FrameCodec {
    /// From a codec name as the timeline stores it (`vp8`, `h264`, `opus`, `vp9`).
    pub fn from_name(name: &str) -> Option<FrameCodec> {
        match name.to_ascii_lowercase().as_str() {
            "opus" => Some(FrameCodec::Opus),
            "vp8" => Some(FrameCodec::Vp8),
            "vp9" => Some(FrameCodec::Vp9),
            "h264" => Some(FrameCodec::H264),
            _ => None,
        }
    }
}

pub const IV_LEN: usize = 12;
pub const TAG_LEN: usize = 16;
/// IV length and key index.
const TRAILER_LEN: usize = 2;

/// An encrypted frame's parts.
#[derive(Debug, PartialEq, Eq)]
pub struct EncryptedFrame<'a> {
    /// Sent in the clear, and authenticated.
    pub header: &'a [u8],
    /// Ciphertext followed by the 16-byte tag.
    pub sealed: Vec<u8>,
    pub iv: [u8; IV_LEN],
    pub key_index: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame too short to be encrypted")]
    TooShort,
    #[error("IV length {0} (12 expected)")]
    IvLength(u8),
}

/// Takes an encrypted frame apart.
pub fn split(codec: FrameCodec, frame: &[u8]) -> Result<EncryptedFrame<'_>, FrameError> {
    let header_len = clear_len(codec, frame)?;
    if frame.len() < header_len {
        return Err(FrameError::TooShort);
    }
    let (header, tail) = frame.split_at(header_len);
    let tail = if codec == FrameCodec::H264 { unescape(tail) } else { tail.to_vec() };
    if tail.len() < TAG_LEN + IV_LEN + TRAILER_LEN {
        return Err(FrameError::TooShort);
    }
    let key_index = tail[tail.len() - 1];
    let iv_len = tail[tail.len() - 2];
    if usize::from(iv_len) != IV_LEN {
        return Err(FrameError::IvLength(iv_len));
    }
    let iv_at = tail.len() - TRAILER_LEN - IV_LEN;
    let iv: [u8; IV_LEN] = tail[iv_at..iv_at + IV_LEN].try_into().expect("12 bytes");
    let mut sealed = tail;
    sealed.truncate(iv_at);
    Ok(EncryptedFrame { header, sealed, iv, key_index })
}

/// How many leading bytes of a frame are sent in the clear.
fn clear_len(codec: FrameCodec, frame: &[u8]) -> Result<usize, FrameError> {
    match codec {
        FrameCodec::Opus => Ok(1),
        // The first byte's lowest bit is clear on a keyframe (whose header also carries the picture size).
        FrameCodec::Vp8 => Ok(if frame.first().is_some_and(|b| b & 0x01 == 0) { 10 } else { 3 }),
        FrameCodec::Vp9 => Ok(0),
        // Up to the first slice's NAL header and one byte more; none without a slice. The native
        // senders count in a byte, so a header past 255 bytes wraps: copied, or such frames would not open.
        FrameCodec::H264 => {
            let slice = nal_units(frame).find(|&(at, _)| frame.get(at).is_some_and(|h| matches!(h & 0x1f, 1 | 5)));
            Ok(slice.map_or(0, |(at, _)| (at + 2) % 256))
        }
    }
}

/// The start offsets (after the start code) and lengths of an Annex-B buffer's NAL units.
pub fn nal_units(data: &[u8]) -> impl Iterator<Item = (usize, usize)> + '_ {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push((i, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    let count = starts.len();
    (0..count).map(move |n| {
        let (_, begin) = starts[n];
        let mut end = if n + 1 < count { starts[n + 1].0 } else { data.len() };
        // A four-byte start code's leading zero belongs to it, not to the unit before.
        if n + 1 < count && end > begin && data[end - 1] == 0 {
            end -= 1;
        }
        (begin, end - begin)
    })
}

/// Removes emulation-prevention bytes (the 3 of every `00 00 03`).
pub fn unescape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut zeros = 0;
    for &byte in data {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

/// Inserts emulation-prevention bytes so that `data` holds no start code (the inverse of [`unescape`]).
pub fn escape(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 64);
    let mut zeros = 0;
    for &byte in data {
        if zeros >= 2 && byte <= 3 {
            out.push(3);
            zeros = 0;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_leaves_no_start_code() {
        let data = [0u8, 0, 0, 1, 0, 0, 3, 7, 0, 0, 2, 0, 0];
        let escaped = escape(&data);
        assert!(!escaped.windows(3).any(|w| w == [0, 0, 1] || w == [0, 0, 0]), "{escaped:?}");
        assert_eq!(unescape(&escaped), data);
    }

    #[test]
    fn nal_units_of_an_access_unit() {
        let au = [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3, 0, 0, 1, 0x65, 9, 9];
        let units: Vec<_> = nal_units(&au).map(|(at, len)| &au[at..at + len]).collect();
        assert_eq!(units, vec![&[0x67, 1, 2][..], &[0x68, 3], &[0x65, 9, 9]]);
    }

    #[test]
    fn clear_bytes_per_codec() {
        let frame = [[0u8; 38].as_slice(), &[12, 4]].concat();
        assert_eq!(split(FrameCodec::Opus, &frame).unwrap().header.len(), 1);
        assert_eq!(split(FrameCodec::Vp8, &frame).unwrap().header.len(), 10, "keyframe");
        let delta = [[1u8; 38].as_slice(), &[12, 4]].concat();
        assert_eq!(split(FrameCodec::Vp8, &delta).unwrap().header.len(), 3);
        assert_eq!(split(FrameCodec::Vp8, &[1u8; 40]).unwrap_err(), FrameError::IvLength(1));
        let vp9 = split(FrameCodec::Vp9, &frame).unwrap();
        assert_eq!((vp9.header.len(), vp9.key_index, vp9.sealed.len()), (0, 4, 26));
        let mut h264 = vec![0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x65, 0x88];
        h264.extend(escape(&[[0u8; 16].as_slice(), &[0u8; 12], &[12, 0]].concat()));
        let parts = split(FrameCodec::H264, &h264).unwrap();
        assert_eq!(parts.header, &h264[..13]);
        assert_eq!((parts.sealed.len(), parts.key_index), (16, 0));
        let no_slice = [[0u8, 0, 0, 1, 0x67].as_slice(), &[1u8; 30], &[12, 0]].concat();
        assert_eq!(split(FrameCodec::H264, &no_slice).unwrap().header.len(), 0, "all of it is ciphertext");
        assert_eq!(split(FrameCodec::Opus, &[0u8; 20]).unwrap_err(), FrameError::TooShort);
    }
}
