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
use fleet_protocol::{JobRecord, JobState, SafeId, Transition};
use serde::Deserialize;

const OPENAPI: &str = include_str!("openapi.json");

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
        .route("/healthz", get(|| async { Json(serde_json::json!({ "status": "ok" })) }))
        .route("/readyz", get(ready))
        // Authorised by the link's own signature (see `media`).
        .route("/media/{id}/{file}", get(crate::media::serve))
        .route("/v1/openapi.json", get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }));
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
struct KeyName(String);

async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    state.metrics.http_request(&route, response.status().as_u16(), started.elapsed());
    response
}

fn parse_id(raw: &str) -> Result<SafeId, ApiError> {
    SafeId::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid recording id: {e}")))
}

/// With an `Idempotency-Key`, the job's id is derived from it (and the API key's name): a retried POST
/// finds the job the first one made and answers it with 200 instead of starting a second recording.
async fn start_recording(
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

async fn get_recording(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<JobRecord>, ApiError> {
    let id = parse_id(&id)?;
    let (record, _) = state.bus.jobs().get(&id).await?.ok_or_else(|| ApiError::not_found(format!("recording {id} not found")))?;
    Ok(Json(record.for_clients()))
}

async fn stop_recording(State(state): State<AppState>, Path(id): Path<String>) -> Result<(StatusCode, Json<JobRecord>), ApiError> {
    let id = parse_id(&id)?;
    let record = jobs::stop(&state.bus, &id).await?;
    let status = if record.state == JobState::Aborted { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(record.for_clients())))
}

/// What follows is left out of the MP4 until the recording resumes (the capture goes on, so a resume
/// loses nothing). A recording paused longer than its `max_pause_s` ends.
async fn pause_recording(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<JobRecord>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(jobs::pause_or_resume(&state.bus, &id, Transition::Pause).await?.for_clients()))
}

async fn resume_recording(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<JobRecord>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(jobs::pause_or_resume(&state.bus, &id, Transition::Resume).await?.for_clients()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddStream {
    url: fleet_protocol::streams::StreamUrl,
}

/// Adds a live stream output to a streaming recording while it captures; 201 with the record (the new
/// stream last in its `streams`).
async fn add_stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<AddStream>,
) -> Result<(StatusCode, Json<JobRecord>), ApiError> {
    let id = parse_id(&id)?;
    let record = jobs::change_streams(&state.bus, &id, Transition::AddStream { url: body.url }).await?;
    Ok((StatusCode::CREATED, Json(record.for_clients())))
}

/// Stops one stream output; the recording and the other streams go on.
async fn remove_stream(State(state): State<AppState>, Path((id, stream)): Path<(String, String)>) -> Result<Json<JobRecord>, ApiError> {
    let id = parse_id(&id)?;
    let stream = SafeId::parse(stream).map_err(|e| ApiError::bad_request(format!("invalid stream id: {e}")))?;
    Ok(Json(jobs::change_streams(&state.bus, &id, Transition::RemoveStream { id: stream }).await?.for_clients()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    room: Option<String>,
    state: Option<String>,
    limit: Option<usize>,
    /// The `next` of the previous page.
    after: Option<String>,
}

async fn list_recordings(State(state): State<AppState>, ApiQuery(params): ApiQuery<ListParams>) -> Result<Json<serde_json::Value>, ApiError> {
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
    let records: Vec<JobRecord> = page.records.into_iter().map(JobRecord::for_clients).collect();
    let mut body = serde_json::json!({ "recordings": records });
    if let Some(next) = page.next {
        body["next"] = next.to_string().into();
    }
    Ok(Json(body))
}

async fn list_nodes(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let nodes = state.bus.list_nodes().await?;
    Ok(Json(serde_json::json!({ "nodes": nodes })))
}

async fn ready(State(state): State<AppState>) -> Response {
    if !state.bus.is_connected() {
        return ApiError::unavailable("not connected to NATS").into_response();
    }
    match state.bus.list_nodes().await {
        Ok(_) => Json(serde_json::json!({ "status": "ready" })).into_response(),
        Err(err) => ApiError::unavailable(format!("NATS not answering: {err}")).into_response(),
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
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
        let document: serde_json::Value = serde_json::from_str(super::OPENAPI).unwrap();
        let documented: BTreeSet<String> = document["paths"].as_object().unwrap().keys().cloned().collect();
        let served = served_paths();
        assert!(served.len() >= 15, "{served:?}");
        assert_eq!(served.difference(&documented).collect::<Vec<_>>(), Vec::<&String>::new(), "served but not in openapi.json");
        assert_eq!(documented.difference(&served).collect::<Vec<_>>(), Vec::<&String>::new(), "in openapi.json but not served");
    }
}
