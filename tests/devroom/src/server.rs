//! The HTTP side: `/rtc` (v0) with its checks before the upgrade, `/rtc/validate`, and 404 on the v1
//! paths so clients fall back to v0 as they do with older LiveKit servers. Rooms are opened on first
//! join and run their script from then on.

use crate::auth;
use crate::clips::ClipSet;
use crate::room::{self, Room};
use crate::scenario::Scenario;
use crate::session::{self, ClientParams};
use axum::Router;
use axum::extract::{Query, State, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

pub struct Config {
    pub api_key: String,
    pub api_secret: String,
    pub scenario: Scenario,
    /// Address of the media sockets (and the only ICE candidate offered).
    pub rtc_ip: IpAddr,
}

pub struct Server {
    config: Config,
    clips: Arc<ClipSet>,
    rooms: Mutex<HashMap<String, Arc<Room>>>,
}

impl Server {
    pub fn new(config: Config, clips: ClipSet) -> Arc<Server> {
        Arc::new(Server { config, clips: Arc::new(clips), rooms: Mutex::new(HashMap::new()) })
    }

    pub fn router(self: &Arc<Server>) -> Router {
        Router::new()
            .route("/rtc", get(rtc))
            .route("/rtc/validate", get(validate))
            .route("/rtc/v1", get(not_found))
            .route("/rtc/v1/validate", get(not_found))
            .route("/devroom/rooms/{room}/close", post(close_room))
            .route("/devroom/rooms/{room}/drop-signalling", post(drop_signalling))
            .route("/devroom/rooms/{room}", get(room_state))
            .with_state(self.clone())
    }

    /// The open room of that name, opening it (and starting its script) when the scenario has it.
    fn open_room(&self, name: &str) -> Option<Arc<Room>> {
        let mut rooms = self.rooms.lock().expect("rooms");
        if let Some(room) = rooms.get(name).filter(|r| !r.is_closed()) {
            return Some(room.clone());
        }
        let script = self.config.scenario.rooms.iter().find(|r| r.name == name).cloned();
        if script.is_none() && !self.config.scenario.auto_create {
            return None;
        }
        let room = Room::new(name, script.as_ref().map(|s| s.loss_percent).unwrap_or(0.0));
        tracing::info!(room = name, sid = %room.sid, "room opened");
        if let Some(script) = script {
            room::run_script(room.clone(), script, self.clips.clone());
        }
        rooms.insert(name.to_string(), room.clone());
        Some(room)
    }

    fn find_room(&self, name: &str) -> Option<Arc<Room>> {
        self.rooms.lock().expect("rooms").get(name).cloned()
    }
}

fn refusal(status: StatusCode, reason: impl Into<String>) -> Response {
    (status, reason.into()).into_response()
}

async fn not_found() -> Response {
    refusal(StatusCode::NOT_FOUND, "404 page not found")
}

// The refusal is the response to send, built once; boxing it would buy nothing on this path.
#[allow(clippy::result_large_err)]
fn admit(server: &Server, headers: &HeaderMap, query: &HashMap<String, String>) -> Result<(auth::Grant, Arc<Room>), Response> {
    let token = auth::token_from(headers, query.get("access_token").map(String::as_str));
    let grant = auth::check(token.as_deref(), &server.config.api_key, &server.config.api_secret).map_err(|r| refusal(r.status, r.reason))?;
    let room = server.open_room(&grant.room).ok_or_else(|| refusal(StatusCode::NOT_FOUND, "requested room does not exist"))?;
    Ok((grant, room))
}

async fn validate(State(server): State<Arc<Server>>, headers: HeaderMap, Query(query): Query<HashMap<String, String>>) -> Response {
    match admit(&server, &headers, &query) {
        Ok(_) => (StatusCode::OK, "success").into_response(),
        Err(response) => response,
    }
}

async fn rtc(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let (grant, room) = match admit(&server, &headers, &query) {
        Ok(admitted) => admitted,
        Err(response) => return response,
    };
    if query.get("reconnect").is_some_and(|v| v == "1" || v == "true") {
        // Sessions are not kept across connections here: the client is told to join afresh, as
        // LiveKit tells a client whose participant it no longer knows.
        return upgrade.on_upgrade(session::refuse_resume).into_response();
    }
    let auto_subscribe = query.get("auto_subscribe").is_none_or(|v| v != "0" && v != "false");
    let params = ClientParams {
        grant,
        room,
        auto_subscribe,
        rtc_ip: server.config.rtc_ip,
        api_key: server.config.api_key.clone(),
        api_secret: server.config.api_secret.clone(),
    };
    upgrade.on_upgrade(move |socket| session::run(socket, params)).into_response()
}

async fn close_room(State(server): State<Arc<Server>>, axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match server.find_room(&name) {
        Some(room) => {
            room.close();
            (StatusCode::OK, "closed").into_response()
        }
        None => refusal(StatusCode::NOT_FOUND, "requested room does not exist"),
    }
}

async fn drop_signalling(State(server): State<Arc<Server>>, axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    match server.find_room(&name) {
        Some(room) => {
            room.drop_signalling();
            (StatusCode::OK, "dropped").into_response()
        }
        None => refusal(StatusCode::NOT_FOUND, "requested room does not exist"),
    }
}

/// The room as devroom sees it, for tests: participants, their tracks and the subscriber count.
async fn room_state(State(server): State<Arc<Server>>, axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    let Some(room) = server.find_room(&name) else { return refusal(StatusCode::NOT_FOUND, "requested room does not exist") };
    let participants: Vec<_> = room
        .participants()
        .into_iter()
        .map(|p| {
            serde_json::json!({
                "sid": p.sid, "identity": p.identity,
                "tracks": p.tracks.iter().map(|t| serde_json::json!({"sid": t.sid, "mime_type": t.mime_type, "muted": t.muted})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let body = serde_json::json!({ "sid": room.sid, "created_ms": room.created_ms, "closed": room.is_closed(), "subscribers": room.subscriber_count(), "participants": participants });
    axum::Json(body).into_response()
}
