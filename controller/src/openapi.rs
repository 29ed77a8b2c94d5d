//! The API's OpenAPI document, generated from the handlers' annotations and the protocol's types, so what
//! is documented is what is served. The answers every operation behind an API key shares (401, 403, and
//! 503 while NATS is away) are added here once, not on each handler.

use crate::error::ErrorBody;
use std::sync::OnceLock;
use utoipa::OpenApi;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "LiveKit recorder fleet controller",
        description = "Start and stop server-side recordings of LiveKit rooms; inspect jobs and nodes. Every error of the fleet's own routes is JSON: `{\"error\": {\"code\", \"message\"}}`; a method a route does not take answers 405 the same way."
    ),
    paths(
        crate::api::start_recording,
        crate::api::list_recordings,
        crate::api::get_recording,
        crate::api::stop_recording,
        crate::api::pause_recording,
        crate::api::resume_recording,
        crate::api::add_stream,
        crate::api::remove_stream,
        crate::media::link,
        crate::media::serve,
        crate::api::list_nodes,
        crate::api::health,
        crate::api::ready,
        crate::api::metrics,
        crate::api::openapi,
        crate::egress::call,
        crate::auto_record::receive,
        crate::dashboard::page,
        crate::dashboard::script,
        crate::dashboard::style,
        crate::dashboard::icon,
    ),
    components(
        schemas(ErrorBody, crate::media::MediaFile),
        responses(BadRequest, Unauthorized, Forbidden, NotFound, Conflict, TooLarge, NotJson, Invalid, Unavailable)
    ),
    modifiers(&KeyedOperations, &OptionalParameters)
)]
struct ApiDoc;

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served (made once).
pub fn json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| document().to_pretty_json().expect("the document serializes"))
}

/// Schema `name` of `document` as a standalone JSON Schema (2020-12) with every object closed: a
/// property the document does not list fails validation. What a strict client checks answers with (the
/// tests do, on the records a real fleet writes).
pub fn strict_schema(document: &serde_json::Value, name: &str) -> serde_json::Value {
    let mut components = document["components"].clone();
    close_objects(&mut components);
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": components,
    })
}

fn close_objects(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            map.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

/// Declares the API-key scheme and gives every operation that requires it the answers a key check and a
/// lost NATS connection make.
struct KeyedOperations;

impl utoipa::Modify for KeyedOperations {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let scheme = Http::builder()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("An API key (`auth.keys`); the `X-API-Key` header is accepted too."))
            .build();
        openapi.components.get_or_insert_with(Default::default).add_security_scheme("bearer", SecurityScheme::Http(scheme));
        for operation in operations(openapi).filter(|operation| operation.security.as_ref().is_some_and(|s| !s.is_empty())) {
            for (status, name) in [("401", "Unauthorized"), ("403", "Forbidden"), ("503", "Unavailable")] {
                operation.responses.responses.entry(status.into()).or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
            }
        }
    }
}

/// An optional parameter is absent when not given, never `null`: its schema says the type alone.
struct OptionalParameters;

impl utoipa::Modify for OptionalParameters {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{Schema, SchemaType, Type};
        use utoipa::openapi::{Required, path::Parameter};
        for parameter in operations(openapi).flat_map(|operation| operation.parameters.iter_mut().flatten()) {
            let RefOr::T(Parameter { required: Required::False, schema: Some(RefOr::T(Schema::Object(object))), .. }) = parameter else {
                continue;
            };
            if let SchemaType::Array(types) = &object.schema_type {
                let mut types: Vec<Type> = types.iter().filter(|t| **t != Type::Null).cloned().collect();
                if types.len() == 1 {
                    object.schema_type = SchemaType::Type(types.remove(0));
                }
            }
        }
    }
}

/// Every operation of the document.
fn operations(openapi: &mut utoipa::openapi::OpenApi) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    openapi
        .paths
        .paths
        .values_mut()
        .flat_map(|item| [&mut item.get, &mut item.post, &mut item.put, &mut item.delete, &mut item.patch].into_iter().flatten())
}

fn error_response(description: &str) -> Response {
    let content = ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build();
    ResponseBuilder::new().description(description).content("application/json", content).build()
}

/// Reusable error answers, each a component the operations refer to.
macro_rules! error_responses {
    ($($name:ident: $description:literal,)*) => {
        $(
            pub(crate) struct $name;

            impl<'r> utoipa::ToResponse<'r> for $name {
                fn response() -> (&'r str, RefOr<Response>) {
                    (stringify!($name), RefOr::T(error_response($description)))
                }
            }
        )*
    };
}

error_responses! {
    BadRequest: "Malformed: an invalid id, query or JSON",
    Unauthorized: "No API key (answered with `WWW-Authenticate: Bearer`)",
    Forbidden: "The API key is not valid",
    NotFound: "No such recording (or file)",
    Conflict: "The recording's state does not allow it",
    TooLarge: "The body is larger than `max_body_bytes`",
    NotJson: "The body is not sent as `application/json`",
    Invalid: "Well-formed JSON that is not a valid request; the message says why",
    Unavailable: "NATS (or the storage) cannot be reached; retry later",
}

#[cfg(test)]
mod tests {
    use fleet_protocol::JobRecord;
    use fleet_protocol::node::NodeInfo;
    use serde_json::{Value, json};

    /// A validator of one of the document's schemas, strict: nothing a record carries goes undocumented.
    fn strict(schema_name: &str) -> jsonschema::Validator {
        let document: Value = serde_json::from_str(super::json()).unwrap();
        jsonschema::validator_for(&super::strict_schema(&document, schema_name)).unwrap()
    }

    fn errors(validator: &jsonschema::Validator, value: &Value) -> Vec<String> {
        validator.iter_errors(value).map(|e| format!("{} at {}", e, e.instance_path())).collect()
    }

    /// Every property the schema lists is in `value`, so the sample exercises the whole schema.
    fn assert_all_properties(schema_name: &str, value: &Value) {
        let document: Value = serde_json::from_str(super::json()).unwrap();
        let listed = document["components"]["schemas"][schema_name]["properties"].as_object().unwrap();
        let missing: Vec<&String> = listed.keys().filter(|name| value.get(name.as_str()).is_none()).collect();
        assert!(missing.is_empty(), "{schema_name}: the sample lacks {missing:?}");
    }

    /// A record with every field the fleet may write, as clients get it.
    fn full_record() -> Value {
        let stored = json!({
            "id": "rec_full",
            "request": {
                "room": "standup", "source": { "type": "test", "participants": 3 }, "layout": "single",
                "participant": "alice", "video_preset": { "width": 640, "height": 360, "fps": 25, "video_kbps": 800 },
                "audio_only": false, "gpu": "require", "audio_per_participant": true, "max_duration_s": 600,
                "max_pause_s": 60, "wait_for_room_s": 5, "webhook_url": "https://hooks.example/fleet",
                "metadata": { "ticket": 7 }, "filepath": "standup/rec_full.mp4",
                "e2ee": { "sealed_keys": "c2VhbGVk", "require_keys": true },
                "branding": { "title": "Standup", "background": "#102030", "highlight": "none", "names": false,
                              "font": "Sans Bold", "logo": "acme", "tile_gap": 4 },
                "outputs": { "file": true, "rtmp": ["rtmp://live.example/app/secret-key"],
                             "hls": { "segment_s": 4, "live_window": 5 }, "images": { "interval_s": 5, "width": 320, "height": 180 } },
                "redundancy": 2
            },
            "desired": "stop", "state": "complete", "end_reason": "api_stop", "error": "an earlier attempt failed",
            "sessions": [{ "id": "s1", "node": "rec-a", "started_at_ms": 1000, "ended_at_ms": 61000, "segments": 7,
                           "end_reason": "recorder_lost", "writing": true, "replica": 1 }],
            "output": { "key": "standup/rec_full.mp4", "location": "s3://b/standup/rec_full.mp4", "manifest_key": "rec_full/manifest.json",
                        "size_bytes": 1234, "duration_s": 60.0, "video_codec": "h264", "audio_codec": "aac", "sha256": "ab",
                        "participant_audio": [{ "participant": "alice", "key": "k.m4a", "location": "s3://b/k.m4a", "size_bytes": 9 }],
                        "poster": { "key": "p.jpg", "location": "s3://b/p.jpg", "size_bytes": 5, "at_s": 3.0 } },
            "progress": { "percent": 100.0, "speed": 2.5, "node": "tx-a" },
            "warnings": ["segment 3 readable only in part"],
            "record_attempts": 2, "transcode_attempts": 1,
            "chunks": { "chunk_ns": 10000000000u64, "count": 6, "done": [0, 1, 2], "joining": ["tx-a", 62000], "open": true },
            "origin": { "door": "plugnmeet", "recording_id": "r1", "room_sid": "RM_1", "room_table_id": 4, "recorder_id": "node_01" },
            "files": { "inputs": ["a.mkv"], "output": "a.mp4" },
            "created_at_ms": 900, "updated_at_ms": 63000,
            "state_log": [{ "seq": 1, "state": "queued", "at_ms": 900 }, { "seq": 2, "state": "starting", "at_ms": 950, "node": "rec-a" }],
            "recent_requests": [{ "id": "req1", "applied": { "applied": "session_opened", "session": "s1" } }, { "id": "req2", "applied": { "applied": "finalized" } }],
            "pauses": [{ "from_ms": 2000, "until_ms": 3000 }, { "from_ms": 5000 }],
            "streams": [{ "id": "rtmp1", "url": "rtmp://live.example/app/secret-key", "state": "retrying", "retries": 2,
                          "last_error": "connection refused", "added_at_ms": 900, "live_at_ms": 1500 }],
            "hls": { "playlist": "h/playlist.m3u8", "live_playlist": "h/live.m3u8", "playlist_location": "s3://b/h/playlist.m3u8",
                     "live_playlist_location": "s3://b/h/live.m3u8", "segments": 3, "duration_ms": 12000, "bytes": 100,
                     "started_at_ms": 1000, "ended_at_ms": 61000 },
            "images": { "prefix": "i/img", "location": "s3://b/i/", "count": 12, "first_at_ms": 1000, "last_at_ms": 60000 }
        });
        let record: JobRecord = serde_json::from_value(stored).expect("the sample is a record");
        serde_json::to_value(record.for_clients()).unwrap()
    }

    #[test]
    fn a_full_record_validates_with_nothing_undocumented() {
        let record = full_record();
        for (schema, value) in [
            ("JobRecord", &record),
            ("JobRequest", &record["request"]),
            ("OutputInfo", &record["output"]),
            ("CaptureSession", &record["sessions"][0]),
            ("StreamOutput", &record["streams"][0]),
            ("HlsProgress", &record["hls"]),
            ("ImagesProgress", &record["images"]),
            ("ChunkPlan", &record["chunks"]),
            ("Branding", &record["request"]["branding"]),
        ] {
            assert_all_properties(schema, value);
        }
        let validator = strict("JobRecord");
        assert_eq!(errors(&validator, &record), Vec::<String>::new());
        let page = json!({ "recordings": [record], "next": "900.rec_full" });
        assert_eq!(errors(&strict("RecordingPage"), &page), Vec::<String>::new());
    }

    #[test]
    fn what_the_document_does_not_say_fails() {
        let validator = strict("JobRecord");
        let mut extra = full_record();
        extra["surprise"] = json!(1);
        assert!(!errors(&validator, &extra).is_empty(), "an undocumented field");
        let mut nested = full_record();
        nested["output"]["poster"]["surprise"] = json!(1);
        assert!(!errors(&validator, &nested).is_empty(), "an undocumented nested field");
        let mut state = full_record();
        state["state"] = json!("flying");
        assert!(!errors(&validator, &state).is_empty(), "an unknown state");
        let mut stream_key = full_record();
        stream_key["request"]["outputs"]["rtmp"] = json!(["rtmp://h/app/key"]);
        stream_key["request"]["e2ee"]["keys"] = json!({ "shared": [{ "passphrase": "p" }] });
        assert!(errors(&validator, &stream_key).is_empty(), "write-only fields are still documented");
        assert!(full_record()["request"]["outputs"].get("rtmp").is_none() && full_record()["request"]["e2ee"].get("keys").is_none());
    }

    #[test]
    fn a_full_request_and_a_full_node_validate() {
        let request = json!({
            "room": "r", "video_preset": "1080p30",
            "e2ee": { "keys": { "shared": [{ "index": 1, "passphrase": "p", "kdf": "hkdf" }],
                                "participants": { "alice": [{ "base64": "AAEC" }] }, "ratchet_window": 8, "ratchet_salt": "salt" } },
            "outputs": { "file": false, "rtmp": ["rtmps://live.example:443/app/key"] }
        });
        serde_json::from_value::<fleet_protocol::JobRequest>(request.clone()).expect("the sample is a request");
        assert_eq!(errors(&strict("JobRequest"), &request), Vec::<String>::new());
        assert!(!errors(&strict("JobRequest"), &json!({ "room": "r", "video_preset": "4k" })).is_empty());
        let node = NodeInfo {
            id: "rec-a".into(),
            role: fleet_protocol::node::NodeRole::Recorder,
            mode: "recorder-only".into(),
            version: "0.1.0".into(),
            slots: 4,
            running_jobs: vec!["rec_1".into()],
            cpu_load: 0.5,
            cores: 2,
            encoders: vec!["x264enc".into()],
            draining: true,
            spool_bytes: 1024,
            holding: Some("spool full".into()),
            started_at_ms: 1,
            updated_at_ms: 2,
        };
        let nodes = json!({ "nodes": [node] });
        assert_all_properties("NodeInfo", &nodes["nodes"][0]);
        assert_eq!(errors(&strict("NodeList"), &nodes), Vec::<String>::new());
    }

    /// Every reference in the document names a component it has.
    #[test]
    fn every_reference_resolves() {
        fn refs(value: &Value, found: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(target)) = map.get("$ref") {
                        found.push(target.clone());
                    }
                    map.values().for_each(|v| refs(v, found));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
                _ => {}
            }
        }
        let document: Value = serde_json::from_str(super::json()).unwrap();
        let mut found = Vec::new();
        refs(&document, &mut found);
        assert!(found.len() > 50, "{found:?}");
        let dangling: Vec<&String> =
            found.iter().filter(|target| target.strip_prefix('#').is_none_or(|pointer| document.pointer(pointer).is_none())).collect();
        assert!(dangling.is_empty(), "references to nothing: {dangling:?}");
    }

    /// docs/openapi.json is the served document, for readers of the repository.
    #[test]
    fn the_document_in_docs_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.json");
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed.trim_end() == super::json(),
            "docs/openapi.json is not the served document: run `cargo run -q -p fleet-controller --bin controller -- openapi > docs/openapi.json`"
        );
    }
}
