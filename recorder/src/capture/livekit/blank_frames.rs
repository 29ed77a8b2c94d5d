//! The SFU's blank frames. When a track is unpublished, livekit-server flushes a fraction of a second of
//! tiny keyframes down every subscriber's track (VP8 8x8, H.264 2x2: `pkg/sfu/downtrack.go`), sometimes
//! before the participant update that says the track is gone. They are not the publisher's picture, and
//! recorded they would become a picture-size change at the end of every track. No camera sends pictures
//! of 16x16 or less, so a keyframe that small is taken for one of them and not recorded.

use fleet_pipelines::avc::h264_sps_size;
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
}
