//! LiveKit Egress-compatible API: the Twirp routes of `livekit.Egress` that map onto the fleet, so
//! LiveKit's server SDKs (`EgressClient`, `LiveKitAPI.egress`) drive recordings unchanged. Requests come
//! as protobuf or JSON, authorised by a LiveKit access token (HS256 with the LiveKit API key/secret)
//! carrying the `roomRecord` grant; answers use the request's encoding, errors are Twirp JSON.
//!
//! Served: StartRoomCompositeEgress, StartParticipantEgress (file and/or RTMP stream outputs), ListEgress,
//! UpdateStream, StopEgress. Refused with a Twirp `unimplemented` and the reason: StartTrackCompositeEgress,
//! StartTrackEgress, StartWebEgress, UpdateLayout, and options the fleet cannot honour (see `convert`).

pub mod config;
pub mod convert;
pub mod twirp;
pub mod webhooks;

use crate::job_index::{Filter, Page};
use crate::jobs;
use crate::state::AppState;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use fleet_protocol::{JobRecord, SafeId};
use livekit_api::access_token::TokenVerifier;
use livekit_protocol as lk;
use prost::Message;
use serde::Serialize;
use serde::de::DeserializeOwned;
use twirp::TwirpError;

pub fn routes() -> Router<AppState> {
    Router::new().route("/twirp/livekit.Egress/{method}", post(call))
}

/// How the caller encoded its request; the answer uses the same.
#[derive(Clone, Copy)]
enum Encoding {
    Protobuf,
    Json,
}

/// LiveKit's Egress API (Twirp)
///
/// `StartRoomCompositeEgress`, `StartParticipantEgress`, `UpdateStream`, `ListEgress` and `StopEgress`,
/// with protobuf or JSON bodies, answered as livekit-server's own egress service answers them
/// (`EgressInfo`, or `ListEgressResponse`, in the request's encoding). `StartTrackCompositeEgress`,
/// `StartTrackEgress`, `StartWebEgress` and `UpdateLayout` answer `unimplemented`. Authorised by a LiveKit
/// access token (Bearer) with the `roomRecord` grant, signed with the key of `[controller.egress]`, not by
/// the fleet's API keys.
#[utoipa::path(post, path = "/twirp/livekit.Egress/{method}", tag = "livekit", operation_id = "egressTwirp",
    params(("method" = String, Path, description = "the Twirp method",
        pattern = "^(StartRoomCompositeEgress|StartParticipantEgress|StartTrackCompositeEgress|StartTrackEgress|StartWebEgress|UpdateLayout|UpdateStream|ListEgress|StopEgress)$")),
    request_body(description = "The method's request message (livekit_egress.proto)",
        content((Vec<u8> = "application/protobuf"), (Object = "application/json"))),
    responses(
        (status = 200, description = "The method's answer, in the request's encoding", content((Vec<u8> = "application/protobuf"), (Object = "application/json"))),
        (status = 400, description = "Malformed request", body = twirp::TwirpErrorBody),
        (status = 401, description = "No or invalid access token", body = twirp::TwirpErrorBody),
        (status = 404, description = "No such method or egress, or the Egress API is off", body = twirp::TwirpErrorBody),
        (status = 412, description = "The egress is past the point the request needs", body = twirp::TwirpErrorBody),
        (status = 501, description = "A method the fleet does not implement", body = twirp::TwirpErrorBody),
        (status = 503, description = "NATS unavailable", body = twirp::TwirpErrorBody),
    ))]
pub(crate) async fn call(State(state): State<AppState>, Path(method): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let encoding = match headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(|v| v.split(';').next().unwrap_or("").trim()) {
        Some("application/protobuf") => Encoding::Protobuf,
        Some("application/json") => Encoding::Json,
        other => return TwirpError::bad_route(format!("content-type {other:?}: use application/protobuf or application/json")).into_response(),
    };
    let config = &state.config.egress;
    if !config.enabled {
        return TwirpError::bad_route("the Egress API is not enabled on this controller (controller.egress.enabled)").into_response();
    }
    if let Err(err) = authorize(&headers, &config.api_key, &config.api_secret) {
        return err.into_response();
    }
    let result = match method.as_str() {
        "StartRoomCompositeEgress" => match decode::<lk::RoomCompositeEgressRequest>(encoding, &body) {
            Ok(request) => {
                start(&state, convert::room_composite(&request), lk::egress_info::Request::RoomComposite(request)).await.map(|i| encode(encoding, &i))
            }
            Err(err) => Err(err),
        },
        "StartParticipantEgress" => match decode::<lk::ParticipantEgressRequest>(encoding, &body) {
            Ok(request) => {
                start(&state, convert::participant(&request), lk::egress_info::Request::Participant(request)).await.map(|i| encode(encoding, &i))
            }
            Err(err) => Err(err),
        },
        "ListEgress" => match decode::<lk::ListEgressRequest>(encoding, &body) {
            Ok(request) => list(&state, &request).await.map(|r| encode(encoding, &r)),
            Err(err) => Err(err),
        },
        "StopEgress" => match decode::<lk::StopEgressRequest>(encoding, &body) {
            Ok(request) => stop(&state, &request.egress_id).await.map(|i| encode(encoding, &i)),
            Err(err) => Err(err),
        },
        "StartTrackCompositeEgress" | "StartTrackEgress" => Err(TwirpError::unimplemented(
            "track egress is not supported: the fleet records whole rooms (StartRoomCompositeEgress) or one participant (StartParticipantEgress)",
        )),
        "StartWebEgress" => Err(TwirpError::unimplemented("web egress is not supported: the fleet renders no web pages")),
        "UpdateLayout" => Err(TwirpError::unimplemented("the layout is chosen when the recording starts and cannot change while it runs")),
        "UpdateStream" => match decode::<lk::UpdateStreamRequest>(encoding, &body) {
            Ok(request) => update_stream(&state, &request).await.map(|i| encode(encoding, &i)),
            Err(err) => Err(err),
        },
        other => Err(TwirpError::bad_route(format!("no method {other:?} in livekit.Egress"))),
    };
    match result {
        Ok(response) => response,
        Err(err) => {
            tracing::info!(method, code = err.code, msg = %err.msg, "egress request refused");
            err.into_response()
        }
    }
}

/// A LiveKit access token with the `roomRecord` grant, signed with the configured key and secret.
fn authorize(headers: &HeaderMap, api_key: &str, api_secret: &str) -> Result<(), TwirpError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| TwirpError::unauthenticated("missing Authorization: Bearer <LiveKit access token>"))?;
    let claims = TokenVerifier::with_api_key(api_key, api_secret).verify(token).map_err(|e| {
        tracing::debug!(err = %e, "egress token refused");
        TwirpError::unauthenticated("invalid access token: not signed with this server's LiveKit API key and secret, or expired")
    })?;
    if !claims.video.room_record {
        return Err(TwirpError::unauthenticated("the access token lacks the roomRecord grant"));
    }
    Ok(())
}

/// The Egress API has no field for end-to-end encryption keys; one sent anyway would be ignored and the
/// recording hold ciphertext only. Said plainly instead.
fn refuse_e2ee_fields(body: &[u8]) -> Result<(), TwirpError> {
    const E2EE_FIELDS: [&str; 5] = ["e2ee", "encryption", "encryption_key", "e2ee_key", "shared_key"];
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice::<serde_json::Value>(body) else { return Ok(()) };
    match fields.keys().find(|k| E2EE_FIELDS.contains(&k.as_str())) {
        Some(field) => Err(TwirpError::invalid_argument(format!(
            "{field}: the Egress API carries no end-to-end encryption keys; record an encrypted room with POST /v1/recordings and its e2ee field"
        ))),
        None => Ok(()),
    }
}

fn decode<T: Message + Default + DeserializeOwned>(encoding: Encoding, body: &[u8]) -> Result<T, TwirpError> {
    match encoding {
        Encoding::Protobuf => T::decode(body).map_err(|e| TwirpError::malformed(format!("request is not valid protobuf: {e}"))),
        Encoding::Json => {
            refuse_e2ee_fields(body)?;
            serde_json::from_slice(body).map_err(|e| TwirpError::malformed(format!("request is not valid JSON: {e}")))
        }
    }
}

fn encode<T: Message + Serialize>(encoding: Encoding, message: &T) -> Response {
    match encoding {
        Encoding::Protobuf => ([(header::CONTENT_TYPE, "application/protobuf")], message.encode_to_vec()).into_response(),
        Encoding::Json => {
            ([(header::CONTENT_TYPE, "application/json")], serde_json::to_vec(message).expect("protobuf messages serialize")).into_response()
        }
    }
}

async fn start(
    state: &AppState,
    job: Result<fleet_protocol::JobRequest, TwirpError>,
    request: lk::egress_info::Request,
) -> Result<lk::EgressInfo, TwirpError> {
    let record = jobs::create(&state.bus, job?, Some(convert::origin_of(request)), "EG", jobs::Defaults::of(&state.config)).await?;
    state.metrics.recording_created();
    Ok(convert::egress_info(&record))
}

async fn list(state: &AppState, request: &lk::ListEgressRequest) -> Result<lk::ListEgressResponse, TwirpError> {
    let after = match request.page_token.as_ref().filter(|t| !t.token.is_empty()) {
        Some(token) => Some(token.token.parse().map_err(|e| TwirpError::invalid_argument(format!("page_token: {e}")))?),
        None => None,
    };
    let records = if request.egress_id.is_empty() {
        let filter = Filter { room: (!request.room_name.is_empty()).then(|| request.room_name.clone()), state: None, unfinished: request.active };
        state.index.page(&state.bus, &filter, after.as_ref(), EGRESS_PAGE).await.map_err(|e| TwirpError::unavailable(e.to_string()))?
    } else {
        let id = SafeId::parse(&request.egress_id).map_err(|e| TwirpError::invalid_argument(format!("egress_id: {e}")))?;
        let record = state.bus.jobs().get(&id).await.map_err(|e| TwirpError::unavailable(e.to_string()))?.map(|(record, _)| record);
        let wanted =
            |r: &JobRecord| (request.room_name.is_empty() || r.request.room == request.room_name) && (!request.active || !r.state.is_terminal());
        Page { records: record.into_iter().filter(wanted).collect(), next: None }
    };
    Ok(lk::ListEgressResponse {
        items: records.records.iter().map(convert::egress_info).collect(),
        next_page_token: records.next.map(|next| lk::TokenPagination { token: next.to_string() }),
    })
}

/// Egress clients that ignore page tokens see everything up to this many.
const EGRESS_PAGE: usize = 1000;

async fn stop(state: &AppState, egress_id: &str) -> Result<lk::EgressInfo, TwirpError> {
    let id = SafeId::parse(egress_id).map_err(|e| TwirpError::invalid_argument(format!("egress_id: {e}")))?;
    match state.bus.jobs().get(&id).await {
        Ok(Some(_)) => {}
        Ok(None) => return Err(TwirpError::not_found("egress does not exist")),
        Err(err) => return Err(TwirpError::unavailable(err.to_string())),
    }
    let record = jobs::stop(&state.bus, &id).await?;
    Ok(convert::egress_info(&record))
}

/// Adds and removes RTMP URLs of a streaming egress while it runs.
async fn update_stream(state: &AppState, request: &lk::UpdateStreamRequest) -> Result<lk::EgressInfo, TwirpError> {
    let id = SafeId::parse(&request.egress_id).map_err(|e| TwirpError::invalid_argument(format!("egress_id: {e}")))?;
    let mut record = match state.bus.jobs().get(&id).await {
        Ok(Some((record, _))) => record,
        Ok(None) => return Err(TwirpError::not_found("egress does not exist")),
        Err(err) => return Err(TwirpError::unavailable(err.to_string())),
    };
    for url in &request.add_output_urls {
        let url = fleet_protocol::streams::StreamUrl::parse(url).map_err(|e| TwirpError::invalid_argument(format!("add_output_urls: {e}")))?;
        record = jobs::change_streams(&state.bus, &id, fleet_protocol::Transition::AddStream { url }).await?;
    }
    for url in &request.remove_output_urls {
        let Some(stream) = record.streams.iter().find(|s| s.state.is_wanted() && &s.url == url) else {
            return Err(TwirpError::invalid_argument("remove_output_urls: the egress streams to no such URL"));
        };
        let transition = fleet_protocol::Transition::RemoveStream { id: stream.id.clone() };
        record = jobs::change_streams(&state.bus, &id, transition).await?;
    }
    Ok(convert::egress_info(&record))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn e2ee_fields_are_refused_with_the_way_to_record_an_encrypted_room() {
        let refused = refuse_e2ee_fields(br#"{"room_name":"r","e2ee":{"shared_key":"k"}}"#).unwrap_err();
        assert!(format!("{refused:?}").contains("/v1/recordings"), "{refused:?}");
        assert!(!format!("{refused:?}").contains("\"k\""), "the key is not echoed");
        assert!(refuse_e2ee_fields(br#"{"room_name":"r","layout":"grid"}"#).is_ok());
        assert!(refuse_e2ee_fields(b"not json").is_ok(), "left to the decoder's own error");
    }
}
