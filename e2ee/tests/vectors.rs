//! Frames from a real recording: LiveKit's Python SDK 1.2.1 (its native frame cryptor) publishing with the
//! shared key below through livekit-server 1.13.5, stored by the recorder (`tests/e2e/e2ee.rs`), taken
//! out of the raw segments (H.264 back to Annex-B with 4-byte start codes, as the transcoder hands it).
//! They open only with the key they were sealed with, the clear header authenticated.

use fleet_e2ee::keyring::KeyRing;
use fleet_e2ee::{Decrypted, E2eeKey, FrameCodec, Kdf, TrackDecryptor, kdf};

const ROOM_KEY: &str = "e2ee-room-passphrase-7f3a";

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/vectors").join(name)).unwrap()
}

fn decryptor(codec: FrameCodec, passphrase: &str) -> TrackDecryptor {
    let key = E2eeKey { index: 0, passphrase: Some(passphrase.into()), base64: None, kdf: Kdf::Pbkdf2 };
    TrackDecryptor::new(codec, KeyRing::new(&[key], kdf::DEFAULT_SALT, 0).unwrap(), Vec::new())
}

fn open(codec: FrameCodec, name: &str) -> Vec<u8> {
    match decryptor(codec, ROOM_KEY).decrypt(&vector(name)) {
        Decrypted::Frame(plain) => plain,
        other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn vp8_frames_of_the_python_sdk_decrypt() {
    let keyframe = open(FrameCodec::Vp8, "vp8-0.bin");
    assert_eq!(&keyframe[3..6], &[0x9d, 0x01, 0x2a], "a keyframe's start code, in its clear header");
    assert_eq!(keyframe[..10], vector("vp8-0.bin")[..10]);
    assert_eq!(keyframe.len(), vector("vp8-0.bin").len() - 30, "tag, IV and trailer removed");
    let delta = open(FrameCodec::Vp8, "vp8-1.bin");
    assert_eq!(delta[0] & 1, 1, "a delta frame");
}

#[test]
fn h264_frames_of_the_python_sdk_decrypt() {
    let keyframe = open(FrameCodec::H264, "h264-0.bin");
    let types: Vec<u8> = fleet_e2ee::frame::nal_units(&keyframe).map(|(at, _)| keyframe[at] & 0x1f).collect();
    assert_eq!(types, vec![7, 8, 5], "SPS, PPS and the IDR slice: {types:?}");
    let delta = open(FrameCodec::H264, "h264-1.bin");
    let types: Vec<u8> = fleet_e2ee::frame::nal_units(&delta).map(|(at, _)| delta[at] & 0x1f).collect();
    assert_eq!(types, vec![1], "one non-IDR slice");
}

#[test]
fn opus_frames_of_the_python_sdk_decrypt() {
    for name in ["opus-0.bin", "opus-1.bin"] {
        let packet = open(FrameCodec::Opus, name);
        assert_eq!(packet[0], vector(name)[0], "the TOC byte is the clear header");
        assert!(packet.len() > 20, "{name}: {} bytes", packet.len());
    }
}

#[test]
fn a_wrong_key_or_codec_opens_nothing() {
    for (codec, name) in [(FrameCodec::Vp8, "vp8-0.bin"), (FrameCodec::H264, "h264-0.bin"), (FrameCodec::Opus, "opus-0.bin")] {
        assert!(matches!(decryptor(codec, "another key").decrypt(&vector(name)), Decrypted::Failed(_)), "{name}");
    }
    // Read as Opus, a VP8 keyframe's header is one byte, not ten: the authenticated header differs.
    assert!(matches!(decryptor(FrameCodec::Opus, ROOM_KEY).decrypt(&vector("vp8-0.bin")), Decrypted::Failed(_)));
}
