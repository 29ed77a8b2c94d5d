//! The keys one sender may use, by key index, each followed through its ratchets: a frame that does not
//! open with a key's current generation is tried with the next ones (up to the ratchet window), and the
//! generation that opens it becomes current, as LiveKit's receivers do.

use crate::kdf;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Nonce};
use fleet_protocol::e2ee::{E2eeKey, InvalidE2ee, Kdf, MAX_RATCHET_WINDOW};
use std::collections::BTreeMap;

/// One key index: its material's generations (derived on demand) and the one in use.
#[derive(Clone)]
struct RatchetedKey {
    kdf: Kdf,
    /// Material of generation 0, 1, ...
    materials: Vec<Vec<u8>>,
    /// Ciphers of the generations derived so far.
    ciphers: Vec<Aes128Gcm>,
    current: usize,
}

impl RatchetedKey {
    fn cipher(&mut self, generation: usize, salt: &[u8]) -> &Aes128Gcm {
        while self.ciphers.len() <= generation {
            let next = self.ciphers.len();
            if self.materials.len() <= next {
                let ratcheted = kdf::ratchet(self.kdf, &self.materials[next - 1], salt);
                self.materials.push(ratcheted);
            }
            let key = kdf::aes_key(self.kdf, &self.materials[next], salt);
            self.ciphers.push(Aes128Gcm::new(&key.into()));
        }
        &self.ciphers[generation]
    }
}

/// Why a frame did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenFailure {
    #[error("no key with index {0}")]
    NoKeyIndex(u8),
    #[error("key index {index} does not open it (ratchets tried: {tried})")]
    WrongKey { index: u8, tried: u32 },
}

/// A sender's keys.
#[derive(Clone)]
pub struct KeyRing {
    keys: BTreeMap<u8, RatchetedKey>,
    salt: Vec<u8>,
    ratchet_window: u32,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").field("indexes", &self.keys.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

impl KeyRing {
    pub fn new(keys: &[E2eeKey], salt: &[u8], ratchet_window: u32) -> Result<KeyRing, InvalidE2ee> {
        let mut ring = BTreeMap::new();
        for key in keys {
            let material = key.material()?;
            ring.insert(key.index, RatchetedKey { kdf: key.kdf, materials: vec![material], ciphers: Vec::new(), current: 0 });
        }
        // Every generation tried costs two key derivations: a window is never wider than the contract's.
        Ok(KeyRing { keys: ring, salt: salt.to_vec(), ratchet_window: ratchet_window.min(MAX_RATCHET_WINDOW) })
    }

    /// Opens `sealed` (ciphertext and tag) with the key `index`, ratcheting forward if need be. A frame
    /// of an earlier generation (a second pass over the same track) opens with the generations already
    /// derived, which cost nothing more.
    pub fn open(&mut self, index: u8, iv: &[u8; 12], aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, OpenFailure> {
        let salt = self.salt.clone();
        let window = self.ratchet_window;
        let key = self.keys.get_mut(&index).ok_or(OpenFailure::NoKeyIndex(index))?;
        let first = key.current;
        for generation in first..=first + window as usize {
            let payload = Payload { msg: sealed, aad };
            if let Ok(plain) = key.cipher(generation, &salt).decrypt(Nonce::from_slice(iv), payload) {
                key.current = generation;
                return Ok(plain);
            }
        }
        for generation in (0..first).rev() {
            let payload = Payload { msg: sealed, aad };
            if let Ok(plain) = key.ciphers[generation].decrypt(Nonce::from_slice(iv), payload) {
                return Ok(plain);
            }
        }
        Err(OpenFailure::WrongKey { index, tried: window })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encrypts as a sender with `material` ratcheted `generation` times would (for tests).
    pub fn seal_with(kdf: Kdf, material: &[u8], generation: usize, iv: &[u8; 12], aad: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut material = material.to_vec();
        for _ in 0..generation {
            material = kdf::ratchet(kdf, &material, kdf::DEFAULT_SALT);
        }
        let cipher = Aes128Gcm::new(&kdf::aes_key(kdf, &material, kdf::DEFAULT_SALT).into());
        cipher.encrypt(Nonce::from_slice(iv), Payload { msg: plain, aad }).unwrap()
    }

    fn key(index: u8, text: &str, kdf: Kdf) -> E2eeKey {
        E2eeKey { index, passphrase: Some(text.into()), base64: None, kdf }
    }

    #[test]
    fn opens_with_the_frames_key_index_and_follows_ratchets() {
        let iv = [7u8; 12];
        let mut ring = KeyRing::new(&[key(0, "zero", Kdf::Pbkdf2), key(3, "three", Kdf::Hkdf)], kdf::DEFAULT_SALT, 4).unwrap();
        let sealed = seal_with(Kdf::Pbkdf2, b"zero", 0, &iv, b"hdr", b"frame");
        assert_eq!(ring.open(0, &iv, b"hdr", &sealed).unwrap(), b"frame");
        assert!(ring.open(0, &iv, b"other header", &sealed).is_err(), "the header is authenticated");
        let sealed = seal_with(Kdf::Hkdf, b"three", 2, &iv, b"", b"later");
        assert_eq!(ring.open(3, &iv, b"", &sealed).unwrap(), b"later", "two ratchets on");
        assert_eq!(ring.open(1, &iv, b"", &sealed).unwrap_err(), OpenFailure::NoKeyIndex(1));
        let too_far = seal_with(Kdf::Pbkdf2, b"zero", 6, &iv, b"", b"x");
        assert_eq!(ring.open(0, &iv, b"", &too_far).unwrap_err(), OpenFailure::WrongKey { index: 0, tried: 4 });
        // A second pass from the start (another output of the same track) opens the earlier generation.
        let first = seal_with(Kdf::Hkdf, b"three", 0, &iv, b"", b"early");
        assert_eq!(ring.open(3, &iv, b"", &first).unwrap(), b"early");
        let wide = KeyRing::new(&[key(0, "zero", Kdf::Pbkdf2)], kdf::DEFAULT_SALT, u32::MAX).unwrap();
        assert_eq!(wide.ratchet_window, MAX_RATCHET_WINDOW, "a window from sealed keys is bounded too");
    }
}
