//! Token checks as LiveKit's server makes them, answered before the WebSocket upgrade with LiveKit's
//! status codes and plain-text reasons (LIVEKIT.md, "Endpoints and errors").

use axum::http::{HeaderMap, StatusCode};
use livekit_api::access_token::{AccessTokenError, Claims, TokenVerifier};

#[derive(Debug)]
pub struct Refusal {
    pub status: StatusCode,
    pub reason: String,
}

fn refuse(status: StatusCode, reason: impl Into<String>) -> Refusal {
    Refusal { status, reason: reason.into() }
}

/// The identity and grants of a client allowed to join `room`.
#[derive(Debug, Clone)]
pub struct Grant {
    pub identity: String,
    pub name: String,
    pub room: String,
    pub hidden: bool,
    pub can_subscribe: bool,
    pub claims: Claims,
}

/// The token from `Authorization: Bearer` first, else the `access_token` query parameter.
pub fn token_from(headers: &HeaderMap, query_token: Option<&str>) -> Option<String> {
    let header = headers.get("authorization").and_then(|v| v.to_str().ok());
    if let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) {
        return Some(token.trim().to_string());
    }
    query_token.map(str::to_string)
}

pub fn check(token: Option<&str>, api_key: &str, api_secret: &str) -> Result<Grant, Refusal> {
    let token = token.ok_or_else(|| refuse(StatusCode::UNAUTHORIZED, "no permissions to access the room"))?;
    let unverified = Claims::from_unverified(token).map_err(|e| refuse(StatusCode::UNAUTHORIZED, format!("invalid authorization token: {e}")))?;
    if unverified.iss != api_key {
        return Err(refuse(StatusCode::UNAUTHORIZED, "invalid API key"));
    }
    let claims = TokenVerifier::with_api_key(api_key, api_secret).verify(token).map_err(|e| {
        // The verifier wraps the JWT library's reason (bad signature, expired) in a generic message.
        let reason = match e {
            AccessTokenError::Encoding(inner) => inner.to_string(),
            other => other.to_string(),
        };
        refuse(StatusCode::UNAUTHORIZED, format!("invalid authorization token: {reason}"))
    })?;
    let video = &claims.video;
    if !video.room_join {
        return Err(refuse(StatusCode::UNAUTHORIZED, "permissions denied"));
    }
    if claims.sub.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "identity cannot be empty"));
    }
    if video.room.is_empty() {
        return Err(refuse(StatusCode::BAD_REQUEST, "room name cannot be empty"));
    }
    Ok(Grant {
        identity: claims.sub.clone(),
        name: claims.name.clone(),
        room: video.room.clone(),
        hidden: video.hidden,
        can_subscribe: video.can_subscribe(),
        claims,
    })
}
