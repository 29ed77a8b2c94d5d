//! H.264 access units between Annex-B (start codes, as WebRTC depacketizers rebuild them) and the
//! length-prefixed form Matroska stores, without touching a byte of the units: the way an encrypted
//! track is stored, whose units no parser may rewrite (its frames must decrypt byte-exact).

use fleet_e2ee::frame::{nal_units, unescape};

/// The units of an Annex-B access unit with 4-byte start codes, as 4-byte big-endian lengths and the
/// units. None when a unit is not introduced by a 4-byte start code (the conversion would not be exact).
pub fn annex_b_to_length_prefixed(access_unit: &[u8]) -> Option<Vec<u8>> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= access_unit.len() {
        if access_unit[i..i + 3] == [0, 0, 1] {
            if i == 0 || access_unit[i - 1] != 0 {
                return None;
            }
            starts.push(i - 1);
            i += 3;
        } else {
            i += 1;
        }
    }
    if starts.first() != Some(&0) {
        return None;
    }
    let mut out = Vec::with_capacity(access_unit.len());
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(access_unit.len());
        let unit = &access_unit[start + 4..end];
        out.extend_from_slice(&(unit.len() as u32).to_be_bytes());
        out.extend_from_slice(unit);
    }
    Some(out)
}

/// The inverse of [`annex_b_to_length_prefixed`]. None when the lengths overrun the buffer.
pub fn length_prefixed_to_annex_b(data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(data.len());
    let mut rest = data;
    while !rest.is_empty() {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let unit = rest.get(4..4 + len)?;
        out.extend_from_slice(&[0, 0, 0, 1]);
        out.extend_from_slice(unit);
        rest = &rest[4 + len..];
    }
    Some(out)
}

/// An `AVCDecoderConfigurationRecord` (4-byte lengths) from the first SPS and PPS of an Annex-B access
/// unit, which stay in the clear in an encrypted frame.
pub fn decoder_config(access_unit: &[u8]) -> Option<Vec<u8>> {
    let prefixed = annex_b_to_length_prefixed(access_unit)?;
    let mut units = Vec::new();
    let mut rest = prefixed.as_slice();
    while rest.len() >= 4 {
        let len = u32::from_be_bytes(rest[..4].try_into().ok()?) as usize;
        units.push(rest.get(4..4 + len)?);
        rest = &rest[4 + len..];
    }
    let sps = units.iter().find(|u| u.first().is_some_and(|h| h & 0x1f == 7) && u.len() >= 4)?;
    let pps = units.iter().find(|u| u.first().is_some_and(|h| h & 0x1f == 8))?;
    let mut config = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    config.extend_from_slice(&u16::try_from(sps.len()).ok()?.to_be_bytes());
    config.extend_from_slice(sps);
    config.push(1);
    config.extend_from_slice(&u16::try_from(pps.len()).ok()?.to_be_bytes());
    config.extend_from_slice(pps);
    Some(config)
}

/// Picture size (in whole macroblocks, before cropping) from the first SPS of an Annex-B access unit.
pub fn h264_sps_size(access_unit: &[u8]) -> Option<(u32, u32)> {
    let (at, len) = nal_units(access_unit).find(|&(at, len)| len > 0 && access_unit[at] & 0x1f == 7)?;
    let rbsp = unescape(&access_unit[at + 1..at + len]);
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
    // Publisher data: sizes past H.264's largest level (and arithmetic that would overflow) are refused.
    let width_mbs = bits.ue()?.checked_add(1)?;
    let height_units = bits.ue()?.checked_add(1)?;
    let frame_mbs_only = bits.bits(1)?;
    let width = width_mbs.checked_mul(16)?;
    let height = (2 - frame_mbs_only).checked_mul(height_units)?.checked_mul(16)?;
    (width <= MAX_DIMENSION && height <= MAX_DIMENSION).then_some((width, height))
}

/// Larger than any H.264 level allows (8192x4320 at level 6.2).
const MAX_DIMENSION: u32 = 16_384;

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

    #[test]
    fn conversions_are_exact_even_with_trailing_zero_bytes() {
        // An escaped encrypted tail may end in zeros (key index 0); they belong to their unit.
        let au = [0, 0, 0, 1, 0x67, 0x42, 0xc0, 0x1f, 0, 0, 0, 1, 0x68, 0xce, 0, 0, 0, 1, 0x65, 0x88, 7, 0, 0];
        let prefixed = annex_b_to_length_prefixed(&au).unwrap();
        assert_eq!(&prefixed[..8], &[0, 0, 0, 4, 0x67, 0x42, 0xc0, 0x1f]);
        assert_eq!(length_prefixed_to_annex_b(&prefixed).unwrap(), au);
        let config = decoder_config(&au).unwrap();
        assert_eq!(config, [1, 0x42, 0xc0, 0x1f, 0xff, 0xe1, 0, 4, 0x67, 0x42, 0xc0, 0x1f, 1, 0, 2, 0x68, 0xce]);
    }

    #[test]
    fn three_byte_start_codes_and_bad_lengths_are_refused() {
        assert_eq!(annex_b_to_length_prefixed(&[0, 0, 1, 0x65, 1]), None);
        assert_eq!(annex_b_to_length_prefixed(&[9, 0, 0, 0, 1, 0x65]), None, "bytes before the first start code");
        assert_eq!(length_prefixed_to_annex_b(&[0, 0, 0, 9, 1]), None);
    }
}
