//! Keys sealed to the transcoders: an X25519 sealed box (libsodium's `crypto_box_seal`: an ephemeral key
//! pair per message, XSalsa20-Poly1305) of the keys' JSON, base64. Anyone with the public key can seal
//! (the controller, or a client that never shows the controller its keys); only a holder of the private
//! key (the transcoder nodes) can open.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use crypto_box::aead::OsRng;
use fleet_protocol::e2ee::E2eeKeys;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the transcoders' public key is not 32 bytes of base64")]
    PublicKey,
    #[error("sealing the keys failed")]
    Seal,
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the transcoder's private key is not 32 bytes of base64")]
    PrivateKey,
    #[error("the sealed keys are not base64")]
    Encoding,
    #[error("the sealed keys do not open with this transcoder's key (sealed to another key pair, or damaged)")]
    Open,
    #[error("the sealed keys are not a key set")]
    Contents,
}

/// The public half, which seals.
#[derive(Clone, PartialEq, Eq)]
pub struct TranscoderPublicKey(crypto_box::PublicKey);

impl std::fmt::Debug for TranscoderPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TranscoderPublicKey({})", self.to_base64())
    }
}

impl TranscoderPublicKey {
    pub fn from_base64(text: &str) -> Result<Self, SealError> {
        let bytes: [u8; 32] = STANDARD.decode(text.trim()).ok().and_then(|b| b.try_into().ok()).ok_or(SealError::PublicKey)?;
        Ok(TranscoderPublicKey(crypto_box::PublicKey::from(bytes)))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_bytes())
    }

    pub fn seal(&self, keys: &E2eeKeys) -> Result<String, SealError> {
        let plain = serde_json::to_vec(keys).map_err(|_| SealError::Seal)?;
        let sealed = self.0.seal(&mut OsRng, &plain).map_err(|_| SealError::Seal)?;
        Ok(STANDARD.encode(sealed))
    }
}

/// The private half, held by transcoder nodes only.
pub struct TranscoderKeyPair(crypto_box::SecretKey);

impl std::fmt::Debug for TranscoderKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TranscoderKeyPair(public {})", self.public().to_base64())
    }
}

impl TranscoderKeyPair {
    pub fn generate() -> Self {
        TranscoderKeyPair(crypto_box::SecretKey::generate(&mut OsRng))
    }

    /// From the private key's base64 (as [`TranscoderKeyPair::private_base64`] writes it).
    pub fn from_base64(text: &str) -> Result<Self, OpenError> {
        let bytes: [u8; 32] = STANDARD.decode(text.trim()).ok().and_then(|b| b.try_into().ok()).ok_or(OpenError::PrivateKey)?;
        Ok(TranscoderKeyPair(crypto_box::SecretKey::from(bytes)))
    }

    pub fn private_base64(&self) -> String {
        STANDARD.encode(self.0.to_bytes())
    }

    pub fn public(&self) -> TranscoderPublicKey {
        TranscoderPublicKey(self.0.public_key())
    }

    pub fn open(&self, sealed: &str) -> Result<E2eeKeys, OpenError> {
        let bytes = STANDARD.decode(sealed.trim()).map_err(|_| OpenError::Encoding)?;
        let plain = self.0.unseal(&bytes).map_err(|_| OpenError::Open)?;
        serde_json::from_slice(&plain).map_err(|_| OpenError::Contents)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleet_protocol::e2ee::{E2eeKey, Kdf};

    #[test]
    fn sealed_keys_open_with_the_pair_only_and_hide_the_material() {
        let pair = TranscoderKeyPair::generate();
        let keys = E2eeKeys {
            shared: vec![E2eeKey { index: 0, passphrase: Some("plain-room-key".into()), base64: None, kdf: Kdf::Pbkdf2 }],
            ..Default::default()
        };
        let public = TranscoderPublicKey::from_base64(&pair.public().to_base64()).unwrap();
        let sealed = public.seal(&keys).unwrap();
        assert!(!String::from_utf8_lossy(&STANDARD.decode(&sealed).unwrap()).contains("plain-room-key"));
        assert_eq!(TranscoderKeyPair::from_base64(&pair.private_base64()).unwrap().open(&sealed).unwrap(), keys);
        assert!(matches!(TranscoderKeyPair::generate().open(&sealed), Err(OpenError::Open)));
        assert!(!format!("{pair:?}").contains(&pair.private_base64()));
        assert!(TranscoderPublicKey::from_base64("c2hvcnQ=").is_err());
    }
}
