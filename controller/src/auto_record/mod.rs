//! Auto-record: livekit-server's webhooks (signed as LiveKit signs them: a JWT of the server's API key
//! with the body's SHA-256) start a recording when a room matching a rule starts, and stop it when the
//! room finishes, as LiveKit's auto egress and plugNmeet's auto-record do. Configured in
//! `[controller.auto_record]`; served at `POST /livekit/webhook`.
//!
//! One job per room session: its id derives from the room's sid, so a redelivered `room_started` finds the
//! job it already made, and `room_finished` knows which job to stop.

use crate::state::AppState;
pub mod config;

use crate::error::ApiError;
use crate::jobs;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use config::request_for;
pub use config::{AutoRecordConfig, AutoRecordRule};
use fleet_protocol::SafeId;
use fleet_protocol::job::Origin;
use livekit_api::access_token::TokenVerifier;
use livekit_api::webhooks::WebhookReceiver;

/// The job of one room session (`auto_<room sid>`).
fn job_id(room_sid: &str) -> Result<SafeId, ApiError> {
    SafeId::parse(format!("auto_{room_sid}")).map_err(|e| ApiError::invalid(format!("room sid {room_sid:?}: {e}")))
}

pub fn routes() -> Router<AppState> {
    Router::new().route("/livekit/webhook", post(receive))
}

/// livekit-server's webhooks, for auto-recording rooms
///
/// With `[controller.auto_record]`: a room matching a rule starts recording on `room_started` and stops on
/// `room_finished`. Authorised by the `Authorization` header livekit-server signs (a JWT over the body's
/// SHA-256) with the key of `[controller.auto_record]`.
#[utoipa::path(post, path = "/livekit/webhook", tag = "livekit", operation_id = "livekitWebhook",
    request_body(description = "livekit-server's WebhookEvent", content((Object = "application/webhook+json"))),
    responses(
        (status = 200, description = "Taken (a recording started or stopped, or nothing to do)"),
        (status = 400, description = "The body is not UTF-8 text (axum's plain-text rejection)", content_type = "text/plain", body = String),
        (status = 401, description = "Unsigned, wrongly signed or stale", body = crate::error::ErrorBody),
        (status = 404, description = "Auto-recording is not enabled", body = crate::error::ErrorBody),
        (status = 422, description = "The room's rule makes an invalid recording request", body = crate::error::ErrorBody),
        (status = 503, response = crate::openapi::Unavailable),
    ))]
pub(crate) async fn receive(State(state): State<AppState>, headers: HeaderMap, body: String) -> Result<StatusCode, ApiError> {
    let config = &state.config.auto_record;
    if !config.enabled {
        return Err(ApiError::not_found("auto-record is not enabled on this controller (controller.auto_record.enabled)"));
    }
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let receiver = WebhookReceiver::new(TokenVerifier::with_api_key(&config.api_key, &config.api_secret));
    let event = receiver.receive(&body, auth).map_err(|e| ApiError::unauthorized(format!("webhook not signed by the LiveKit key: {e}")))?;
    let Some(room) = event.room else { return Ok(StatusCode::OK) };
    match event.event.as_str() {
        "room_started" => {
            let Some(rule) = config.rule_for(&room.name, &room.metadata) else {
                tracing::debug!(room = %room.name, "room started; no auto-record rule matches");
                return Ok(StatusCode::OK);
            };
            let request = request_for(rule, &room.name).map_err(|e| ApiError::invalid(e.to_string()))?;
            let origin = Origin::AutoRecord { room_sid: room.sid.clone() };
            match jobs::create_with_id(&state.bus, job_id(&room.sid)?, request, Some(origin), jobs::Defaults::of(&state.config)).await {
                Ok(record) => tracing::info!(job_id = %record.id, room = %room.name, "auto-record: recording the room"),
                Err(err) if err.is_conflict() => tracing::info!(room = %room.name, "auto-record: the room is recorded already"),
                Err(err) => return Err(err),
            }
        }
        "room_finished" => match jobs::stop(&state.bus, &job_id(&room.sid)?).await {
            Ok(record) => tracing::info!(job_id = %record.id, room = %room.name, "auto-record: the room finished; recording stops"),
            Err(err) => tracing::debug!(room = %room.name, reason = %err.message, "auto-record: nothing to stop"),
        },
        _ => {}
    }
    Ok(StatusCode::OK)
}
