//! One recorded track's decryptor: drops the SFU's injected frames (they end with the room's trailer),
//! passes empty frames (never encrypted), opens the rest with the sender's key ring, and counts what it saw.
//! A frame that does not open is reported, never fatal: the caller drops it.

use crate::frame::{self, FrameCodec};
use crate::keyring::KeyRing;

/// What became of one frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Decrypted {
    /// The publisher's frame in the clear.
    Frame(Vec<u8>),
    /// A frame the SFU injected (it ends with the room's trailer): not the publisher's, dropped.
    Injected,
    /// Did not decrypt (why): dropped.
    Failed(String),
}

/// Counts of one track's frames.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrackStats {
    pub decrypted: u64,
    pub injected: u64,
    pub failed: u64,
    /// The first failure's reason.
    pub first_failure: Option<String>,
}

pub struct TrackDecryptor {
    codec: FrameCodec,
    ring: KeyRing,
    trailers: Vec<Vec<u8>>,
    stats: TrackStats,
}

impl TrackDecryptor {
    /// `trailers`: the room's `sif_trailer` as each capture session's join gave it.
    pub fn new(codec: FrameCodec, ring: KeyRing, mut trailers: Vec<Vec<u8>>) -> TrackDecryptor {
        trailers.retain(|t| !t.is_empty());
        TrackDecryptor { codec, ring, trailers, stats: TrackStats::default() }
    }

    pub fn decrypt(&mut self, frame: &[u8]) -> Decrypted {
        if self.trailers.iter().any(|trailer| frame.ends_with(trailer)) {
            self.stats.injected += 1;
            return Decrypted::Injected;
        }
        if frame.is_empty() {
            self.stats.decrypted += 1;
            return Decrypted::Frame(Vec::new());
        }
        let opened = frame::split(self.codec, frame).map_err(|e| e.to_string()).and_then(|parts| {
            let plain = self.ring.open(parts.key_index, &parts.iv, parts.header, &parts.sealed).map_err(|e| e.to_string())?;
            Ok([parts.header, &plain].concat())
        });
        match opened {
            Ok(plain) => {
                self.stats.decrypted += 1;
                Decrypted::Frame(plain)
            }
            Err(reason) => {
                self.stats.failed += 1;
                self.stats.first_failure.get_or_insert_with(|| reason.clone());
                Decrypted::Failed(reason)
            }
        }
    }

    pub fn stats(&self) -> &TrackStats {
        &self.stats
    }

    /// Starts counting again (the track is read once more from its start).
    pub fn reset_stats(&mut self) {
        self.stats = TrackStats::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf;
    use crate::keyring::tests::seal_with;
    use fleet_protocol::e2ee::{E2eeKey, Kdf};

    /// A frame as a LiveKit sender writes it.
    fn encrypt(codec: FrameCodec, frame: &[u8], material: &[u8], key_index: u8) -> Vec<u8> {
        let clear = match codec {
            FrameCodec::Opus => 1,
            FrameCodec::Vp8 => 10,
            _ => unreachable!(),
        };
        let iv = [9u8; 12];
        let sealed = seal_with(Kdf::Pbkdf2, material, 0, &iv, &frame[..clear], &frame[clear..]);
        [&frame[..clear], &sealed, &iv, &[12, key_index]].concat()
    }

    fn ring(text: &str) -> KeyRing {
        KeyRing::new(&[E2eeKey { index: 0, passphrase: Some(text.into()), base64: None, kdf: Kdf::Pbkdf2 }], kdf::DEFAULT_SALT, 0).unwrap()
    }

    #[test]
    fn decrypts_drops_injected_frames_and_counts_failures() {
        let opus = [0xfc, 1, 2, 3, 4, 5];
        let mut track = TrackDecryptor::new(FrameCodec::Opus, ring("room key"), vec![b"TRAILER".to_vec()]);
        assert_eq!(track.decrypt(&encrypt(FrameCodec::Opus, &opus, b"room key", 0)), Decrypted::Frame(opus.to_vec()));
        assert_eq!(track.decrypt(b"\xf8silenceTRAILER"), Decrypted::Injected);
        assert_eq!(track.decrypt(&[]), Decrypted::Frame(Vec::new()));
        assert!(matches!(track.decrypt(&encrypt(FrameCodec::Opus, &opus, b"other key", 0)), Decrypted::Failed(_)));
        assert!(matches!(track.decrypt(&encrypt(FrameCodec::Opus, &opus, b"room key", 5)), Decrypted::Failed(r) if r.contains("index 5")));
        assert_eq!((track.stats().decrypted, track.stats().injected, track.stats().failed), (2, 1, 2));
    }

    #[test]
    fn vp8_keyframes_keep_ten_clear_bytes() {
        let keyframe: Vec<u8> = (0..40u8).map(|b| if b == 0 { 0x10 } else { b }).collect();
        let mut track = TrackDecryptor::new(FrameCodec::Vp8, ring("k"), Vec::new());
        let encrypted = encrypt(FrameCodec::Vp8, &keyframe, b"k", 0);
        assert_eq!(&encrypted[..10], &keyframe[..10]);
        assert_eq!(track.decrypt(&encrypted), Decrypted::Frame(keyframe));
    }
}
