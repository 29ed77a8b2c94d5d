//! From key material to an AES-128 key, and the ratchet, as LiveKit's SDKs do it: PBKDF2-HMAC-SHA256
//! (100 000 iterations) or HKDF-SHA256 (info: 128 zero bytes), salted with the ratchet salt.

use fleet_protocol::e2ee::Kdf;
use sha2::Sha256;

/// LiveKit's default ratchet salt.
pub const DEFAULT_SALT: &[u8] = b"LKFrameEncryptionKey";
const PBKDF2_ITERATIONS: u32 = 100_000;
const HKDF_INFO: [u8; 128] = [0; 128];

/// Derives `out.len()` bytes from `material`.
fn derive(kdf: Kdf, material: &[u8], salt: &[u8], out: &mut [u8]) {
    match kdf {
        Kdf::Pbkdf2 => pbkdf2::pbkdf2_hmac::<Sha256>(material, salt, PBKDF2_ITERATIONS, out),
        Kdf::Hkdf => hkdf::Hkdf::<Sha256>::new(Some(salt), material).expand(&HKDF_INFO, out).expect("16 or 32 bytes is a valid HKDF length"),
    }
}

/// The AES-128-GCM key of `material`.
pub fn aes_key(kdf: Kdf, material: &[u8], salt: &[u8]) -> [u8; 16] {
    let mut key = [0u8; 16];
    derive(kdf, material, salt, &mut key);
    key
}

/// The material one ratchet step after `material` (256 bits, the same KDF).
pub fn ratchet(kdf: Kdf, material: &[u8], salt: &[u8]) -> Vec<u8> {
    let mut next = vec![0u8; 32];
    derive(kdf, material, salt, &mut next);
    next
}
