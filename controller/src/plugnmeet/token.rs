//! The NATS login token plugnmeet-server's auth callout accepts from a recorder: an HS256 JWT signed with
//! plugNmeet's API secret, `iss` = API key, `sub` = `user_id` = recorder id, `name` = the recorder marker,
//! valid for 5 minutes (a fresh one is made for every connection attempt).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const RECORDER_NAME: &str = "PLUGNMEET_RECORDER_AUTH";
pub const TOKEN_TTL_S: u64 = 300;

pub fn recorder_token(api_key: &str, api_secret: &str, recorder_id: &str, now_s: u64) -> String {
    let header = serde_json::json!({ "alg": "HS256", "typ": "JWT" });
    let claims = serde_json::json!({
        "iss": api_key,
        "sub": recorder_id,
        "nbf": now_s,
        "exp": now_s + TOKEN_TTL_S,
        "name": RECORDER_NAME,
        "user_id": recorder_id,
    });
    let signing_input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut mac = Hmac::<Sha256>::new_from_slice(api_secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_carries_the_recorder_claims_and_verifies() {
        let token = recorder_token("key", "secret", "fleet", 1_000);
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["iss"], "key");
        assert_eq!(claims["sub"], "fleet");
        assert_eq!(claims["user_id"], "fleet");
        assert_eq!(claims["name"], RECORDER_NAME);
        assert_eq!(claims["exp"], 1_300);
        // The signature is HMAC-SHA256 over "<header>.<claims>" with the secret, as any HS256 verifier checks.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"secret").unwrap();
        mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
        mac.verify_slice(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()).unwrap();
        assert_ne!(token, recorder_token("key", "other", "fleet", 1_000));
    }
}
