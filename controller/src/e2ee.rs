//! End-to-end encrypted rooms at the front door: plaintext keys in a request are sealed to the
//! transcoders' public key before anything stores or forwards the request, so the job record, NATS and
//! every event only ever carry the sealed blob.

use crate::error::ApiError;
use fleet_e2ee::TranscoderPublicKey;
use fleet_protocol::JobRequest;

/// Replaces the request's plaintext keys with their sealed form. Refused (400) when keys come but this
/// controller has no transcoder public key to seal them to.
pub fn seal_request(request: &mut JobRequest, seal_to: Option<&TranscoderPublicKey>) -> Result<(), ApiError> {
    let Some(e2ee) = request.e2ee.as_mut() else { return Ok(()) };
    e2ee.validate().map_err(|e| ApiError::invalid(e.to_string()))?;
    let Some(keys) = e2ee.keys.take() else { return Ok(()) };
    let public = seal_to.ok_or_else(|| {
        ApiError::invalid(
            "e2ee: this controller cannot accept keys: no e2ee_public_key (the transcoders' key) is configured; send sealed_keys or configure it",
        )
    })?;
    let sealed = public.seal(&keys).map_err(|e| ApiError::unavailable(format!("e2ee: {e}")))?;
    e2ee.sealed_keys = Some(sealed);
    Ok(())
}

/// The configured transcoders' public key, checked at start-up.
pub fn public_key(configured: Option<&str>) -> anyhow::Result<Option<TranscoderPublicKey>> {
    configured.map(|text| TranscoderPublicKey::from_base64(text).map_err(|e| anyhow::anyhow!("controller.e2ee_public_key: {e}"))).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(json: &str) -> JobRequest {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn keys_are_sealed_or_refused_and_never_stored_in_the_clear() {
        let pair = fleet_e2ee::TranscoderKeyPair::generate();
        let mut with_keys = request(r#"{"room":"r","e2ee":{"keys":{"shared":[{"passphrase":"secret-passphrase"}]}}}"#);
        seal_request(&mut with_keys, Some(&pair.public())).unwrap();
        let stored = serde_json::to_string(&with_keys).unwrap();
        assert!(!stored.contains("secret-passphrase") && stored.contains("sealed_keys"), "{stored}");
        let sealed = with_keys.e2ee.as_ref().unwrap().sealed_keys.as_deref().unwrap();
        assert_eq!(pair.open(sealed).unwrap().shared[0].passphrase.as_deref(), Some("secret-passphrase"));

        let mut no_public_key = request(r#"{"room":"r","e2ee":{"keys":{"shared":[{"passphrase":"x"}]}}}"#);
        assert!(seal_request(&mut no_public_key, None).is_err());
        let mut pre_sealed = request(r#"{"room":"r","e2ee":{"sealed_keys":"c2VhbGVk"}}"#);
        seal_request(&mut pre_sealed, None).unwrap();
        let mut empty = request(r#"{"room":"r","e2ee":{}}"#);
        assert!(seal_request(&mut empty, Some(&pair.public())).is_err());
    }
}
