//! HTTP handlers. Small on purpose: each validates its input, talks to the job store or the queue, and
//! answers JSON. Authentication and request metrics are middleware.

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiQuery};
use crate::job_index::{Cursor, Filter};
use crate::jobs;
use crate::metrics::QueueDepth;
pub use crate::state::AppState;
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use fleet_protocol::job::JobRequest;
use fleet_protocol::node::NodeInfo;
use fleet_protocol::{JobRecord, JobState, SafeId, Transition};
use serde::{Deserialize, Serialize};

pub fn router(state: AppState) -> Router {
    let mut protected = Router::new()
        .route("/v1/recordings", post(start_recording).get(list_recordings))
        .route("/v1/recordings/{id}", get(get_recording))
        .route("/v1/recordings/{id}/stop", post(stop_recording))
        .route("/v1/recordings/{id}/pause", post(pause_recording))
        .route("/v1/recordings/{id}/resume", post(resume_recording))
        .route("/v1/recordings/{id}/streams", post(add_stream))
        .route("/v1/recordings/{id}/streams/{stream}", axum::routing::delete(remove_stream))
        .route("/v1/recordings/{id}/media/{file}", get(crate::media::link))
        .route("/v1/nodes", get(list_nodes));
    let mut public = Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        // Authorised by the link's own signature (see `media`).
        .route("/media/{id}/{file}", get(crate::media::serve))
        .route("/v1/openapi.json", get(openapi));
    if state.config.auth.public_metrics {
        public = public.route("/metrics", get(metrics));
    } else {
        protected = protected.route("/metrics", get(metrics));
    }
    let protected = protected.route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    Router::new()
        .merge(protected)
        .merge(public)
        // Authorised by LiveKit access tokens, not API keys.
        .merge(crate::egress::routes())
        .merge(crate::auto_record::routes())
        .merge(crate::dashboard::routes())
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not take that method")
        })
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(middleware::from_fn_with_state(state.clone(), count_requests))
        .with_state(state)
}

async fn require_key(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    match state.keys.check(request.headers()) {
        Ok(name) => {
            request.extensions_mut().insert(KeyName(name));
            next.run(request).await
        }
        Err(err) => err.into_response(),
    }
}

/// The name of the API key a request was made with.
#[derive(Debug, Clone)]
pub(crate) struct KeyName(String);

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state.metrics.http_request(&route, response.status().as_u16(), started.elapsed());
    response
}

/// The `id` path parameter, for the document (handlers take the raw text and answer 400 themselves).
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub(crate) struct RecordingId {
    /// The recording's id.
    id: SafeId,
}

fn parse_id(raw: &str) -> Result<SafeId, ApiError> {
    SafeId::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid recording id: {e}")))
}

/// Start a recording
///
/// With an `Idempotency-Key` header, a retried request finds the job the first one made (per API key) and
/// answers it with 200 and `Idempotent-Replayed: true`; the retry's body is not looked at.
#[utoipa::path(post, path = "/v1/recordings", tag = "recordings", operation_id = "startRecording",
    security(("bearer" = [])),
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[!-~]+$",
        description = "names this start: the same key (with the same API key) never starts a second recording")),
    request_body = JobRequest,
    responses(
        (status = 200, description = "The job an earlier request with this Idempotency-Key made", body = JobRecord,
            headers(("Idempotent-Replayed" = String, description = "`true`"))),
        (status = 201, description = "Queued", body = JobRecord),
        (status = 400, response = crate::openapi::BadRequest),
        (status = 413, response = crate::openapi::TooLarge),
        (status = 415, response = crate::openapi::NotJson),
        (status = 422, response = crate::openapi::Invalid),
    ))]
pub(crate) async fn start_recording(
    State(state): State<AppState>,
    Extension(KeyName(key_name)): Extension<KeyName>,
    headers: HeaderMap,
    ApiJson(mut request): ApiJson<JobRequest>,
) -> Result<Response, ApiError> {
    let idempotent_id = headers.get(IDEMPOTENCY_KEY).map(|value| jobs::idempotent_id(&key_name, value.as_bytes())).transpose()?;
    if request.webhook_url.is_some() && state.config.webhooks.secret.is_empty() {
        return Err(ApiError::invalid("webhook_url given, but this controller has no webhook signing secret configured"));
    }
    crate::e2ee::seal_request(&mut request, state.e2ee_seal.as_ref())?;
    let defaults = jobs::Defaults::of(&state.config);
    let created = match &idempotent_id {
        Some(id) => jobs::create_with_id(&state.bus, id.clone(), request, None, defaults).await,
        None => jobs::create(&state.bus, request, None, "rec", defaults).await,
    };
    match (created, idempotent_id) {
        (Ok(record), _) => {
            state.metrics.recording_created();
            Ok((StatusCode::CREATED, Json(record.for_clients())).into_response())
        }
        (Err(err), Some(id)) if err.is_conflict() => {
            let (record, _) = state.bus.jobs().get(&id).await?.ok_or_else(|| ApiError::unavailable("the job of this Idempotency-Key is gone"))?;
            Ok((StatusCode::OK, [(IDEMPOTENT_REPLAYED, "true")], Json(record.for_clients())).into_response())
        }
        (Err(err), _) => Err(err),
    }
}

const IDEMPOTENCY_KEY: &str = "idempotency-key";
const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Get one recording
#[utoipa::path(get, path = "/v1/recordings/{id}", tag = "recordings", operation_id = "getRecording",
    security(("bearer" = [])), params(RecordingId),
    responses((status = 200, description = "The job record", body = JobRecord), (status = 400, response = crate::openapi::BadRequest), (status = 404, response = crate::openapi::NotFound)))]
pub(crate) async fn get_recording(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<JobRecord>, ApiError> {
    let id = parse_id(&id)?;
    let (record, _) = state.bus.jobs().get(&id).await?.ok_or_else(|| ApiError::not_found(format!("recording {id} not found")))?;
    Ok(Json(record.for_clients()))
}

/// Stop a recording
///
/// A job no recorder has picked yet becomes `aborted` (200). A running one is asked to stop (202); it then
/// finalizes and transcodes. A job past capture gives 409.
#[utoipa::path(post, path = "/v1/recordings/{id}/stop", tag = "recordings", operation_id = "stopRecording",
    security(("bearer" = [])), params(RecordingId),
    responses(
        (status = 200, description = "Aborted before capture", body = JobRecord),
        (status = 202, description = "Stop requested", body = JobRecord),
        (status = 400, response = crate::openapi::BadRequest), (status = 404, response = crate::openapi::NotFound), (status = 409, response = crate::openapi::Conflict),
    ))]
pub(crate) async fn stop_recording(State(state): State<AppState>, Path(id): Path<String>) -> Result<(StatusCode, Json<JobRecord>), ApiError> {
    let id = parse_id(&id)?;
    let record = jobs::stop(&state.bus, &id).await?;
    let status = if record.state == JobState::Aborted { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(record.for_clients())))
}

/// Pause a recording
///
/// What follows is left out of the MP4 (clean cuts, audio and video) until the recording resumes; the
/// capture goes on meanwhile, so a resume loses nothing. Pausing a paused recording changes nothing. A
/// pause longer than the request's `max_pause_s` ends the recording (`end_reason` `pause_limit`). 409
/// once the recording is stopping or past capture.
#[utoipa::path(post, path = "/v1/recordings/{id}/pause", tag = "recordings", operation_id = "pauseRecording",
    security(("bearer" = [])), params(RecordingId),
    responses((status = 200, description = "The record, with its pauses", body = JobRecord),
        (status = 400, response = crate::openapi::BadRequest), (status = 404, response = crate::openapi::NotFound), (status = 409, response = crate::openapi::Conflict)))]
pub(crate) async fn pause_recording(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<JobRecord>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(jobs::pause_or_resume(&state.bus, &id, Transition::Pause).await?.for_clients()))
}

/// Resume a paused recording
///
/// Closes the open pause; resuming a recording that is not paused changes nothing. 409 once the recording
/// is stopping or past capture.
#[utoipa::path(post, path = "/v1/recordings/{id}/resume", tag = "recordings", operation_id = "resumeRecording",
    security(("bearer" = [])), params(RecordingId),
    responses((status = 200, description = "The record, with its pauses", body = JobRecord),
        (status = 400, response = crate::openapi::BadRequest), (status = 404, response = crate::openapi::NotFound), (status = 409, response = crate::openapi::Conflict)))]
pub(crate) async fn resume_recording(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<JobRecord>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(jobs::pause_or_resume(&state.bus, &id, Transition::Resume).await?.for_clients()))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddStream {
    url: fleet_protocol::streams::StreamUrl,
}

/// Add a live stream output
///
/// Starts pushing the room's live composite to one more RTMP URL while the recording captures. Only a
/// recording created with `outputs.rtmp` streams. The answer lists the stream last in `streams`, its URL's
/// stream key hidden. 409 when the recording does not stream, is past capture, or has 8 streams already.
#[utoipa::path(post, path = "/v1/recordings/{id}/streams", tag = "streams", operation_id = "addStream",
    security(("bearer" = [])), params(RecordingId), request_body = AddStream,
    responses((status = 201, description = "The record with the new stream", body = JobRecord),
        (status = 400, response = crate::openapi::BadRequest), (status = 404, response = crate::openapi::NotFound), (status = 409, response = crate::openapi::Conflict),
        (status = 413, response = crate::openapi::TooLarge), (status = 415, response = crate::openapi::NotJson), (status = 422, response = crate::openapi::Invalid)))]
pub(crate) async fn add_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AddStream>,
) -> Result<(StatusCode, Json<JobRecord>), ApiError> {
    let id = parse_id(&id)?;
    let record = jobs::change_streams(&state.bus, &id, Transition::AddStream { url: body.url }).await?;
    Ok((StatusCode::CREATED, Json(record.for_clients())))
}

/// Stop one live stream output
///
/// The stream ends at its server (state `removed`); the recording and the other streams go on. A
/// stream-only recording whose last stream is removed ends (`end_reason` `streams_ended`).
#[utoipa::path(delete, path = "/v1/recordings/{id}/streams/{stream}", tag = "streams", operation_id = "removeStream",
    security(("bearer" = [])),
    params(RecordingId, ("stream" = SafeId, Path, description = "the stream's id (`rtmp1`…)")),
    responses((status = 200, description = "The record", body = JobRecord),
        (status = 400, response = crate::openapi::BadRequest), (status = 404, response = crate::openapi::NotFound), (status = 409, response = crate::openapi::Conflict)))]
pub(crate) async fn remove_stream(State(state): State<AppState>, Path((id, stream)): Path<(String, String)>) -> Result<Json<JobRecord>, ApiError> {
    let id = parse_id(&id)?;
    let stream = SafeId::parse(stream).map_err(|e| ApiError::bad_request(format!("invalid stream id: {e}")))?;
    Ok(Json(jobs::change_streams(&state.bus, &id, Transition::RemoveStream { id: stream }).await?.for_clients()))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListParams {
    /// Only this room's recordings.
    #[param(max_length = 128)]
    room: Option<String>,
    /// Only recordings in this state.
    #[param(value_type = Option<JobState>)]
    state: Option<String>,
    /// Most records on the page (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next` of the previous page: the listing goes on after it.
    #[param(max_length = 100, pattern = "^[0-9]+\\.[A-Za-z0-9][A-Za-z0-9_-]*$")]
    after: Option<String>,
}

/// One page of recordings, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct RecordingPage {
    recordings: Vec<JobRecord>,
    /// Present when there may be more: pass it as `after` for the next page.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<String>,
}

/// List recordings, newest first
#[utoipa::path(get, path = "/v1/recordings", tag = "recordings", operation_id = "listRecordings",
    security(("bearer" = [])), params(ListParams),
    responses((status = 200, description = "A page of recordings", body = RecordingPage), (status = 400, response = crate::openapi::BadRequest)))]
pub(crate) async fn list_recordings(State(state): State<AppState>, ApiQuery(params): ApiQuery<ListParams>) -> Result<Json<RecordingPage>, ApiError> {
    let wanted_state = match params.state.as_deref() {
        Some(s) => Some(JobState::parse(s).ok_or_else(|| ApiError::bad_request(format!("unknown state {s:?}")))?),
        None => None,
    };
    if let Some(room) = &params.room
        && (room.chars().count() > fleet_protocol::job::MAX_ROOM_NAME_LEN || room.chars().any(char::is_control))
    {
        return Err(ApiError::bad_request(format!(
            "room must be at most {} characters without control characters",
            fleet_protocol::job::MAX_ROOM_NAME_LEN
        )));
    }
    let limit = params.limit.unwrap_or(100);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let after: Option<Cursor> = match params.after {
        Some(after) => Some(after.parse().map_err(|e| ApiError::bad_request(format!("after: {e}")))?),
        None => None,
    };
    let filter = Filter { room: params.room, state: wanted_state, unfinished: false };
    let page = state.index.page(&state.bus, &filter, after.as_ref(), limit).await?;
    let recordings = page.records.into_iter().map(JobRecord::for_clients).collect();
    Ok(Json(RecordingPage { recordings, next: page.next.map(|next| next.to_string()) }))
}

/// The node registry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct NodeList {
    nodes: Vec<NodeInfo>,
}

/// Live recorder and transcoder nodes
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", operation_id = "listNodes", security(("bearer" = [])),
    responses((status = 200, description = "Every node heartbeating into the registry", body = NodeList)))]
pub(crate) async fn list_nodes(State(state): State<AppState>) -> Result<Json<NodeList>, ApiError> {
    Ok(Json(NodeList { nodes: state.bus.list_nodes().await? }))
}

/// What the probes answer when all is well.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Health {
    /// `ok` (alive) or `ready`.
    status: &'static str,
}

/// Liveness
#[utoipa::path(get, path = "/healthz", tag = "operations", operation_id = "health",
    responses((status = 200, description = "Alive", body = Health)))]
pub(crate) async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness (NATS reachable)
#[utoipa::path(get, path = "/readyz", tag = "operations", operation_id = "ready",
    responses((status = 200, description = "Ready", body = Health), (status = 503, response = crate::openapi::Unavailable)))]
pub(crate) async fn ready(State(state): State<AppState>) -> Response {
    if !state.bus.is_connected() {
        return ApiError::unavailable("not connected to NATS").into_response();
    }
    match state.bus.list_nodes().await {
        Ok(_) => Json(Health { status: "ready" }).into_response(),
        Err(err) => ApiError::unavailable(format!("NATS not answering: {err}")).into_response(),
    }
}

/// This document
#[utoipa::path(get, path = "/v1/openapi.json", tag = "operations", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object)))]
pub(crate) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::json()).into_response()
}

/// Prometheus metrics
///
/// In the OpenMetrics text format. Public (no key) when `auth.public_metrics` is set.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics", security(("bearer" = [])),
    responses((status = 200, description = "The controller's metrics", content_type = "application/openmetrics-text", body = String)))]
pub(crate) async fn metrics(State(state): State<AppState>) -> Response {
    let nodes = state.bus.list_nodes().await.unwrap_or_default();
    let mut by_role = std::collections::BTreeMap::<String, usize>::new();
    for node in &nodes {
        *by_role.entry(format!("{:?}", node.role).to_lowercase()).or_default() += 1;
    }
    let running = nodes.iter().map(|n| n.running_jobs.len()).sum();
    let bus = &state.bus;
    let consumers = [bus.record_consumer(), bus.transcode_consumer(), bus.transcode_gpu_consumer(), bus.transcode_files_consumer()];
    let mut queues = Vec::new();
    for consumer in consumers {
        // A queue NATS does not answer for is left out of this scrape, not reported empty.
        if let Ok(info) = consumer.get_info().await {
            queues.push(QueueDepth {
                stream: info.stream_name.clone(),
                consumer: info.name.clone(),
                pending: info.num_pending,
                in_progress: info.num_ack_pending as u64,
            });
        }
    }
    let by_role: Vec<(String, usize)> = by_role.into_iter().collect();
    let text = state.metrics.render(&by_role, running, bus.is_connected(), &queues);
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text).into_response()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The paths the controller's routers serve, read from their sources (an axum router does not list
    /// its routes): the path of every route call in the files that build them.
    fn served_paths() -> BTreeSet<String> {
        let sources = [include_str!("api.rs"), include_str!("egress/mod.rs"), include_str!("auto_record/mod.rs"), include_str!("dashboard.rs")];
        let marker = concat!(".route", "(\"");
        sources.iter().flat_map(|source| source.split(marker).skip(1).map(|rest| rest.split('"').next().unwrap_or_default().to_string())).collect()
    }

    #[test]
    fn every_served_route_is_documented_and_every_documented_one_served() {
        let document = crate::openapi::document();
        let documented: BTreeSet<String> = document.paths.paths.keys().cloned().collect();
        let served = served_paths();
        assert!(served.len() >= 15, "{served:?}");
        assert_eq!(served.difference(&documented).collect::<Vec<_>>(), Vec::<&String>::new(), "served but not documented");
        assert_eq!(documented.difference(&served).collect::<Vec<_>>(), Vec::<&String>::new(), "documented but not served");
    }
}
