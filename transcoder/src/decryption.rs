//! End-to-end encrypted tracks: what the timelines say is encrypted, and a decryptor per such track,
//! with the keys the job carries (sealed to this node's key pair). A track no key is given for is left out
//! (its tile becomes a placeholder) with a warning naming it, or fails the job when the request says so.
//! Frames that do not decrypt are dropped and counted; the counts become the job's warnings.

use crate::error::TranscodeError;
use fleet_e2ee::keyring::KeyRing;
use fleet_e2ee::{Decrypted, E2eeKeys, FrameCodec, TrackDecryptor};
use fleet_pipelines::segment_reader::{FrameFilter, TrackInput};
use fleet_protocol::timeline::{self, Entry};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// An encrypted track as a timeline announced it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct EncryptedTrack {
    pub codec: String,
    /// The publisher's identity (whose per-participant keys apply).
    pub identity: Option<String>,
}

/// What the capture sessions' timelines say about encryption.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct TimelineE2ee {
    /// By track name (`<participant>/<track>`, as the inputs name them).
    pub tracks: BTreeMap<String, EncryptedTrack>,
    /// The room's trailer as each session's join gave it.
    pub trailers: Vec<Vec<u8>>,
}

impl TimelineE2ee {
    /// Adds one session's timeline.
    pub fn read(&mut self, text: &str) {
        let mut identities: BTreeMap<String, String> = BTreeMap::new();
        for line in timeline::parse(text) {
            match line.entry {
                Entry::ParticipantJoined { participant, identity, .. } => {
                    identities.insert(participant, identity);
                }
                Entry::TrackPublished { participant, track, codec, encryption: Some(_), .. } => {
                    let identity = identities.get(&participant).cloned();
                    self.tracks.insert(format!("{participant}/{track}"), EncryptedTrack { codec, identity });
                }
                Entry::E2eeTrailer { trailer } => {
                    if let Some(bytes) = timeline::decode_trailer(&trailer)
                        && !self.trailers.contains(&bytes)
                    {
                        self.trailers.push(bytes);
                    }
                }
                _ => {}
            }
        }
    }
}

/// The decryptors of one transcode, kept to report their counts.
#[derive(Default)]
pub(crate) struct Decryption {
    tracks: Vec<(String, Arc<Mutex<TrackDecryptor>>)>,
    /// Tracks left out for want of a key.
    pub left_out: Vec<String>,
}

impl Decryption {
    /// Gives every encrypted track of `tracks` its decryptor; takes out those with no key (or fails when
    /// `require_keys`). Plain tracks are untouched.
    pub fn attach(
        tracks: &mut Vec<TrackInput>,
        found: &TimelineE2ee,
        keys: Option<&E2eeKeys>,
        require_keys: bool,
    ) -> Result<Decryption, TranscodeError> {
        let mut decryption = Decryption::default();
        let mut kept = Vec::with_capacity(tracks.len());
        for mut input in tracks.drain(..) {
            let Some(encrypted) = found.tracks.get(&input.name) else {
                kept.push(input);
                continue;
            };
            let codec = FrameCodec::from_name(&encrypted.codec);
            let ring = keys.and_then(|keys| ring_for(keys, encrypted.identity.as_deref()));
            match (codec, ring) {
                (Some(codec), Some(ring)) => {
                    let ring = ring.map_err(|e| TranscodeError::E2eeKeys(e.to_string()))?;
                    let decryptor = Arc::new(Mutex::new(TrackDecryptor::new(codec, ring, found.trailers.clone())));
                    input.filter = Some(filter(codec, decryptor.clone()));
                    decryption.tracks.push((input.name.clone(), decryptor));
                    kept.push(input);
                }
                _ => {
                    let why = if codec.is_none() {
                        format!("its codec ({}) is not one the transcoder decrypts", encrypted.codec)
                    } else {
                        "the job has no key for it".into()
                    };
                    let who = encrypted.identity.as_deref().unwrap_or("an unknown participant");
                    let problem = format!("{} (of {who}) is end-to-end encrypted and {why}", input.name);
                    if require_keys {
                        return Err(TranscodeError::E2eeKeys(format!("{problem}; the request requires keys for every encrypted track")));
                    }
                    tracing::warn!(%problem, "encrypted track left out");
                    decryption.left_out.push(format!("{problem}: left out (a placeholder where it would show)"));
                }
            }
        }
        *tracks = kept;
        Ok(decryption)
    }

    /// Counts from zero again: the tracks are about to be read once more from their start (an encoder
    /// fallback), and only that pass counts.
    pub fn restart_counts(&self) {
        for (_, decryptor) in &self.tracks {
            decryptor.lock().unwrap_or_else(|p| p.into_inner()).reset_stats();
        }
    }

    /// Logs each decrypted track's counts; returns one warning per track that had frames it could not
    /// decrypt, and per track left out.
    pub fn report(&self) -> Vec<String> {
        let mut warnings = self.left_out.clone();
        for (name, decryptor) in &self.tracks {
            let stats = decryptor.lock().unwrap_or_else(|p| p.into_inner()).stats().clone();
            tracing::info!(track = %name, decrypted = stats.decrypted, injected = stats.injected, failed = stats.failed, "decrypted track");
            if stats.failed > 0 {
                let total = stats.failed + stats.decrypted;
                let why = stats.first_failure.unwrap_or_default();
                warnings.push(format!("{name}: {} of {total} encrypted frames could not be decrypted and were dropped (first: {why})", stats.failed));
            }
        }
        warnings
    }
}

/// The key ring that applies to a sender: their own keys, else the room's shared ones.
fn ring_for(keys: &E2eeKeys, identity: Option<&str>) -> Option<Result<KeyRing, fleet_protocol::e2ee::InvalidE2ee>> {
    let own = identity.and_then(|identity| keys.participants.get(identity)).filter(|ring| !ring.is_empty());
    let ring = own.or((!keys.shared.is_empty()).then_some(&keys.shared))?;
    let salt = keys.ratchet_salt.as_deref().map_or(fleet_e2ee::kdf::DEFAULT_SALT, str::as_bytes);
    Some(KeyRing::new(ring, salt, keys.ratchet_window()))
}

/// The frame filter of a decrypted track. Encrypted H.264 is stored length-prefixed (exactly as it came,
/// start codes aside): it is decrypted as Annex-B and goes on length-prefixed.
fn filter(codec: FrameCodec, decryptor: Arc<Mutex<TrackDecryptor>>) -> FrameFilter {
    FrameFilter(Arc::new(move |stored: &[u8]| {
        let annex_b;
        let frame = if codec == FrameCodec::H264 {
            annex_b = fleet_pipelines::avc::length_prefixed_to_annex_b(stored)?;
            annex_b.as_slice()
        } else {
            stored
        };
        let decrypted = decryptor.lock().unwrap_or_else(|p| p.into_inner()).decrypt(frame);
        match decrypted {
            Decrypted::Frame(plain) if codec == FrameCodec::H264 => Some(length_prefixed(&plain)),
            Decrypted::Frame(plain) => Some(plain),
            Decrypted::Injected | Decrypted::Failed(_) => None,
        }
    }))
}

/// A decrypted Annex-B access unit (the encoder's start codes, three or four bytes) length-prefixed.
fn length_prefixed(annex_b: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(annex_b.len() + 16);
    for (at, len) in fleet_e2ee::frame::nal_units(annex_b) {
        out.extend_from_slice(&(len as u32).to_be_bytes());
        out.extend_from_slice(&annex_b[at..at + len]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_pipelines::segment_reader::SegmentFile;
    use fleet_protocol::e2ee::{E2eeKey, Kdf};

    const TIMELINE: &str = r#"{"wall_ms":1,"running_ns":0,"type":"e2ee_trailer","trailer":"VFJBSUxFUg=="}
{"wall_ms":1,"running_ns":0,"type":"participant_joined","participant":"alice","identity":"alice","name":"Alice"}
{"wall_ms":1,"running_ns":0,"type":"participant_joined","participant":"bob","identity":"bob","name":"Bob"}
{"wall_ms":1,"running_ns":0,"type":"track_published","participant":"alice","track":"TR_a","kind":"video","codec":"h264","source":"camera","encryption":"gcm"}
{"wall_ms":1,"running_ns":0,"type":"track_published","participant":"bob","track":"TR_b","kind":"audio","codec":"opus","source":"microphone","encryption":"gcm"}
{"wall_ms":1,"running_ns":0,"type":"track_published","participant":"bob","track":"TR_c","kind":"video","codec":"vp8","source":"camera"}"#;

    fn inputs() -> Vec<TrackInput> {
        ["alice/TR_a", "bob/TR_b", "bob/TR_c"].iter().map(|n| TrackInput::new(n.to_string(), vec![SegmentFile::whole("x".into(), 0)])).collect()
    }

    #[test]
    fn timelines_name_the_encrypted_tracks_and_the_trailer() {
        let mut found = TimelineE2ee::default();
        found.read(TIMELINE);
        assert_eq!(found.trailers, vec![b"TRAILER".to_vec()]);
        assert_eq!(found.tracks.len(), 2);
        assert_eq!(found.tracks["alice/TR_a"], EncryptedTrack { codec: "h264".into(), identity: Some("alice".into()) });
    }

    #[test]
    fn tracks_without_a_key_are_left_out_or_fail_the_job() {
        let mut found = TimelineE2ee::default();
        found.read(TIMELINE);
        let bob_only = E2eeKeys {
            participants: [("bob".to_string(), vec![E2eeKey { index: 0, passphrase: Some("b".into()), base64: None, kdf: Kdf::Pbkdf2 }])].into(),
            ..Default::default()
        };
        let mut tracks = inputs();
        let decryption = Decryption::attach(&mut tracks, &found, Some(&bob_only), false).unwrap();
        let names: Vec<_> = tracks.iter().map(|t| (t.name.as_str(), t.filter.is_some())).collect();
        assert_eq!(names, vec![("bob/TR_b", true), ("bob/TR_c", false)]);
        assert_eq!(decryption.report().len(), 1);
        assert!(decryption.report()[0].contains("alice/TR_a") && decryption.report()[0].contains("no key"), "{:?}", decryption.report());
        let refused = Decryption::attach(&mut inputs(), &found, Some(&bob_only), true).err().unwrap().to_string();
        assert!(refused.contains("alice/TR_a"), "{refused}");
        let mut tracks = inputs();
        Decryption::attach(&mut tracks, &found, None, false).unwrap();
        assert_eq!(tracks.len(), 1, "no keys at all: both encrypted tracks out");
    }

    #[test]
    fn decrypted_h264_is_length_prefixed_whatever_its_start_codes() {
        assert_eq!(length_prefixed(&[0, 0, 0, 1, 0x67, 5, 0, 0, 1, 0x65, 7]), vec![0, 0, 0, 2, 0x67, 5, 0, 0, 0, 2, 0x65, 7]);
    }
}
