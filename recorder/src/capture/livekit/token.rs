//! The recorder's join token: hidden, flagged as a recorder, subscribe-only, one room, short-lived.

use super::error::CaptureError;
use livekit_api::access_token::{AccessToken, VideoGrants};
use std::time::Duration;

pub fn recorder_token(api_key: &str, api_secret: &str, room: &str, identity: &str, ttl: Duration) -> Result<String, CaptureError> {
    if api_key.is_empty() || api_secret.is_empty() {
        return Err(CaptureError::NoCredentials);
    }
    let grants = VideoGrants {
        room_join: true,
        room: room.to_string(),
        hidden: true,
        recorder: true,
        can_publish: Some(false),
        can_publish_data: Some(false),
        can_subscribe: Some(true),
        can_update_own_metadata: Some(false),
        ..Default::default()
    };
    AccessToken::with_api_key(api_key, api_secret)
        .with_identity(identity)
        .with_name("recorder")
        .with_grants(grants)
        .with_ttl(ttl)
        .to_jwt()
        .map_err(|e| CaptureError::Token(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use livekit_api::access_token::TokenVerifier;

    #[test]
    fn token_is_hidden_subscribe_only_and_room_scoped() {
        let token = recorder_token("key", "secret-secret-secret-secret-1234", "room-a", "rec-1", Duration::from_secs(60)).unwrap();
        let claims = TokenVerifier::with_api_key("key", "secret-secret-secret-secret-1234").verify(&token).unwrap();
        assert!(claims.video.hidden && claims.video.recorder && claims.video.room_join);
        assert_eq!(claims.video.room, "room-a");
        assert!(!claims.video.can_publish() && claims.video.can_subscribe());
        assert!(!claims.video.room_create && !claims.video.room_admin);
        assert!(claims.exp - claims.nbf <= 60);
    }
}
