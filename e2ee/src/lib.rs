//! LiveKit's end-to-end encrypted media, from the receiving side, without I/O: keys derived as the
//! publishers' SDKs derive them ([`kdf`]), one encrypted frame taken apart per codec ([`frame`]), a key ring
//! that follows key indexes and ratchets ([`keyring`]), a track's decryptor with its counts ([`track`]),
//! and the keys sealed to the transcoders' X25519 key ([`sealed`]). Facts: `../shared/E2EE.md`.

pub mod frame;
pub mod kdf;
pub mod keyring;
pub mod sealed;
pub mod track;

pub use fleet_protocol::e2ee::{E2eeKey, E2eeKeys, Kdf};
pub use frame::FrameCodec;
pub use sealed::{OpenError, SealError, TranscoderKeyPair, TranscoderPublicKey};
pub use track::{Decrypted, TrackDecryptor, TrackStats};
