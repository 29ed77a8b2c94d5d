//! The SFU's blank frames. When a track is unpublished, livekit-server flushes a fraction of a second of
//! tiny keyframes down every subscriber's track (VP8 8x8, H.264 2x2: `pkg/sfu/downtrack.go`), sometimes
//! before the participant update that says the track is gone. They are not the publisher's picture, and
//! recorded they would become a picture-size change at the end of every track. No camera sends pictures
//! of 16x16 or less, so a keyframe that small is taken for one of them and not recorded.

use fleet_pipelines::track_writer::{TrackCodec, vp8_size};

/// Largest width and height of a picture taken for the SFU's filler.
const BLANK_MAX_SIDE: u32 = 16;

/// True for a keyframe of a tiny picture. Only keyframes are judged: a delta frame has no size.
pub fn is_blank_keyframe(codec: TrackCodec, frame: &[u8]) -> bool {
    let size = match codec {
        TrackCodec::Vp8 => vp8_size(frame).map(|(w, h)| (w as u32, h as u32)),
        TrackCodec::H264 => h264_sps_size(frame),
        TrackCodec::Vp9 | TrackCodec::Opus => None,
    };
    size.is_some_and(|(w, h)| w <= BLANK_MAX_SIDE && h <= BLANK_MAX_SIDE)
}

/// Picture size (in whole macroblocks, before cropping) from the first SPS of an Annex-B access unit.
pub fn h264_sps_size(access_unit: &[u8]) -> Option<(u32, u32)> {
    let sps = annex_b_nal_units(access_unit).find(|nal| nal.first().is_some_and(|h| h & 0x1f == 7))?;
    let rbsp = unescape(&sps[1..]);
    let mut bits = BitReader { data: &rbsp, pos: 0 };
    let profile_idc = bits.bits(8)?;
    bits.bits(16)?; // constraint flags, level_idc
    bits.ue()?; // seq_parameter_set_id
    if [100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135].contains(&profile_idc) {
        if bits.ue()? == 3 {
            bits.bits(1)?; // separate_colour_plane_flag
        }
        bits.ue()?; // bit_depth_luma_minus8
        bits.ue()?; // bit_depth_chroma_minus8
        bits.bits(1)?; // qpprime_y_zero_transform_bypass_flag
        if bits.bits(1)? == 1 {
            return None; // scaling matrices: not worth parsing to tell a size
        }
    }
    bits.ue()?; // log2_max_frame_num_minus4
    match bits.ue()? {
        0 => {
            bits.ue()?; // log2_max_pic_order_cnt_lsb_minus4
        }
        1 => {
            bits.bits(1)?;
            bits.se()?;
            bits.se()?;
            for _ in 0..bits.ue()?.min(255) {
                bits.se()?;
            }
        }
        _ => {}
    }
    bits.ue()?; // max_num_ref_frames
    bits.bits(1)?; // gaps_in_frame_num_value_allowed_flag
    let width_mbs = bits.ue()? + 1;
    let height_units = bits.ue()? + 1;
    let frame_mbs_only = bits.bits(1)?;
    Some((width_mbs * 16, (2 - frame_mbs_only) * height_units * 16))
}

fn annex_b_nal_units(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let ends: Vec<usize> = starts.iter().skip(1).map(|&s| s - 3).chain([data.len()]).collect();
    starts.into_iter().zip(ends).map(move |(s, e)| {
        // A 4-byte start code leaves a zero at the end of the unit before it.
        let mut end = e;
        while end > s && data[end - 1] == 0 {
            end -= 1;
        }
        &data[s..end]
    })
}

/// Removes emulation-prevention bytes (00 00 03 → 00 00).
fn unescape(nal: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nal.len());
    let mut zeros = 0;
    for &byte in nal {
        if zeros >= 2 && byte == 3 {
            zeros = 0;
            continue;
        }
        zeros = if byte == 0 { zeros + 1 } else { 0 };
        out.push(byte);
    }
    out
}

struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bits(&mut self, n: u32) -> Option<u32> {
        let mut value = 0u32;
        for _ in 0..n {
            let byte = *self.data.get(self.pos / 8)?;
            value = (value << 1) | ((byte >> (7 - self.pos % 8)) & 1) as u32;
            self.pos += 1;
        }
        Some(value)
    }

    /// Unsigned Exp-Golomb.
    fn ue(&mut self) -> Option<u32> {
        let mut zeros = 0;
        while self.bits(1)? == 0 {
            zeros += 1;
            if zeros > 31 {
                return None;
            }
        }
        Some((1u32 << zeros) - 1 + self.bits(zeros)?)
    }

    fn se(&mut self) -> Option<i32> {
        let k = self.ue()?;
        Some(if k % 2 == 1 { k.div_ceil(2) as i32 } else { -((k / 2) as i32) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the SPS fields `h264_sps_size` reads, for a baseline (66) or high (100) profile.
    fn sps(profile: u8, width_mbs: u32, height_mbs: u32) -> Vec<u8> {
        let mut bits: Vec<u8> = Vec::new();
        let mut put = |value: u32, n: u32| (0..n).rev().for_each(|i| bits.push(((value >> i) & 1) as u8));
        let ue = |put: &mut dyn FnMut(u32, u32), v: u32| {
            let len = 32 - (v + 1).leading_zeros();
            put(0, len - 1);
            put(v + 1, len);
        };
        put(profile as u32, 8);
        put(0, 8);
        put(31, 8);
        ue(&mut put, 0); // sps id
        if profile == 100 {
            ue(&mut put, 1); // 4:2:0
            ue(&mut put, 0);
            ue(&mut put, 0);
            put(0, 1);
            put(0, 1);
        }
        ue(&mut put, 0); // log2_max_frame_num
        ue(&mut put, 2); // poc type 2
        ue(&mut put, 1); // refs
        put(0, 1);
        ue(&mut put, width_mbs - 1);
        ue(&mut put, height_mbs - 1);
        put(1, 1); // frame_mbs_only
        put(1, 1); // stop bit
        while !bits.len().is_multiple_of(8) {
            bits.push(0);
        }
        let mut nal = vec![0, 0, 0, 1, 0x67];
        nal.extend(bits.chunks(8).map(|byte| byte.iter().fold(0u8, |acc, b| (acc << 1) | b)));
        // An IDR slice after it, as in a keyframe's access unit.
        nal.extend_from_slice(&[0, 0, 1, 0x65, 0x88, 0x84, 0x00]);
        nal
    }

    #[test]
    fn reads_h264_picture_size_from_the_sps() {
        assert_eq!(h264_sps_size(&sps(66, 40, 23)), Some((640, 368)));
        assert_eq!(h264_sps_size(&sps(100, 80, 45)), Some((1280, 720)));
        assert_eq!(h264_sps_size(&[0, 0, 1, 0x65, 0x88]), None, "no SPS");
    }

    #[test]
    fn tiny_keyframes_are_the_sfus_filler() {
        assert!(is_blank_keyframe(TrackCodec::H264, &sps(66, 1, 1)));
        assert!(!is_blank_keyframe(TrackCodec::H264, &sps(66, 20, 12)));
        let vp8 = |w: u16, h: u16| {
            let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
            frame.extend_from_slice(&w.to_le_bytes());
            frame.extend_from_slice(&h.to_le_bytes());
            frame
        };
        assert!(is_blank_keyframe(TrackCodec::Vp8, &vp8(8, 8)));
        assert!(!is_blank_keyframe(TrackCodec::Vp8, &vp8(320, 180)));
        assert!(!is_blank_keyframe(TrackCodec::Opus, &[0; 20]));
    }

    #[test]
    fn emulation_prevention_is_removed() {
        assert_eq!(unescape(&[0, 0, 3, 1, 0, 0, 3]), vec![0, 0, 1, 0, 0]);
    }
}
