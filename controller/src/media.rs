//! Links to a finished recording's files (its MP4 and poster) that a player or a browser opens without
//! an API key, for a short while. With S3 storage the link is the store's own presigned URL; with local
//! storage the controller serves the file at `/media/...` (ranges included, so players can seek), the
//! link signed with a key this process draws at start (links die with their expiry or the process).

use crate::error::ApiError;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fleet_protocol::{JobRecord, SafeId};
use fleet_runtime::storage::{ReaderAccess, Storage};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::Duration;
use tower::ServiceExt;

/// How long a link works.
pub const LINK_TTL: Duration = Duration::from_secs(15 * 60);

pub struct MediaLinks {
    /// None: the controller could not open the storage, and links are refused (503).
    storage: Option<Storage>,
    key: [u8; 32],
}

impl MediaLinks {
    pub fn new(storage: Option<Storage>) -> Self {
        Self { storage, key: rand::random() }
    }
}

/// A recording's file that has a link: `mp4` (the recording) or `poster` (its JPEG).
#[derive(Debug, Clone, Copy, PartialEq, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
pub enum MediaFile {
    Mp4,
    Poster,
}

impl MediaFile {
    fn name(self) -> &'static str {
        match self {
            MediaFile::Mp4 => "mp4",
            MediaFile::Poster => "poster",
        }
    }

    /// Its storage key, once the recording has it.
    fn key(self, record: &JobRecord) -> Option<String> {
        let output = record.output.as_ref()?;
        match self {
            MediaFile::Mp4 => Some(output.key.clone()),
            MediaFile::Poster => output.poster.as_ref().map(|p| p.key.clone()),
        }
    }
}

/// A link that opens a file without an API key until it expires.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Link {
    /// Absolute (S3), or a path on this controller's origin (local storage).
    pub url: String,
    pub expires_at_ms: u64,
}

/// The signature of a local-storage link: what it opens and until when.
pub fn signature(key: &[u8; 32], id: &SafeId, file: MediaFile, expires_at_ms: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(format!("{id}/{}/{expires_at_ms}", file.name()).as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether a local-storage link is one this process made and has not expired at `now_ms`.
pub fn is_valid(key: &[u8; 32], id: &SafeId, file: MediaFile, expires_at_ms: u64, given: &str, now_ms: u64) -> bool {
    let expected = signature(key, id, file, expires_at_ms);
    now_ms <= expires_at_ms && subtle::ConstantTimeEq::ct_eq(expected.as_bytes(), given.as_bytes()).into()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

async fn file_of(state: &AppState, id: &SafeId, file: MediaFile) -> Result<ReaderAccess, ApiError> {
    let (record, _) = state.bus.jobs().get(id).await?.ok_or_else(|| ApiError::not_found(format!("recording {id} not found")))?;
    let key = file.key(&record).ok_or_else(|| ApiError::not_found(format!("recording {id} has no {} (yet)", file.name())))?;
    let storage = state.media.storage.as_ref().ok_or_else(|| ApiError::unavailable("this controller cannot open the recordings' storage"))?;
    storage.reader_access(&key, LINK_TTL).await.map_err(|e| ApiError::unavailable(format!("storage: {e}")))
}

/// A short-lived link to a finished recording's MP4 or poster
///
/// A URL that opens the file without an API key for 15 minutes: the store's presigned URL with S3 storage,
/// or a signed path on this controller (`/media/...`) with local storage.
#[utoipa::path(get, path = "/v1/recordings/{id}/media/{file}", tag = "recordings", operation_id = "getMediaLink",
    security(("bearer" = [])),
    params(crate::api::RecordingId, ("file" = MediaFile, Path)),
    responses((status = 200, description = "The link", body = Link),
        (status = 400, response = crate::openapi::BadRequest), (status = 404, response = crate::openapi::NotFound)))]
pub async fn link(State(state): State<AppState>, Path((id, file)): Path<(String, String)>) -> Result<Json<Link>, ApiError> {
    let id = SafeId::parse(&id).map_err(|e| ApiError::bad_request(format!("invalid recording id: {e}")))?;
    let file = parse_file(&file)?;
    let expires_at_ms = now_ms() + LINK_TTL.as_millis() as u64;
    let url = match file_of(&state, &id, file).await? {
        ReaderAccess::Url(url) => url,
        ReaderAccess::File(_) => {
            let signature = signature(&state.media.key, &id, file, expires_at_ms);
            format!("/media/{id}/{}?expires={expires_at_ms}&signature={signature}", file.name())
        }
    };
    Ok(Json(Link { url, expires_at_ms }))
}

fn parse_file(raw: &str) -> Result<MediaFile, ApiError> {
    match raw {
        "mp4" => Ok(MediaFile::Mp4),
        "poster" => Ok(MediaFile::Poster),
        _ => Err(ApiError::not_found(format!("no file {raw:?}: mp4 or poster"))),
    }
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Signed {
    /// When the link stops working (ms since the epoch).
    expires: u64,
    /// The link's signature.
    signature: String,
}

/// A local-storage recording's file, for the holder of a link
///
/// Served with local storage only, authorised by the link's signature (from `getMediaLink`), not an API
/// key. Answers ranges, so players seek.
#[utoipa::path(get, path = "/media/{id}/{file}", tag = "recordings", operation_id = "getMedia",
    params(crate::api::RecordingId, ("file" = MediaFile, Path), Signed),
    responses(
        (status = 200, description = "The file", content(("video/mp4"), ("image/jpeg"))),
        (status = 206, description = "A range of the file", content(("video/mp4"), ("image/jpeg"))),
        (status = 400, description = "`expires` or `signature` missing or malformed (axum's plain-text rejection)", content_type = "text/plain", body = String),
        (status = 403, description = "The link is not valid or has expired", body = crate::error::ErrorBody),
        (status = 404, response = crate::openapi::NotFound),
        (status = 416, description = "The range is not in the file"),
        (status = 503, response = crate::openapi::Unavailable),
    ))]
pub async fn serve(
    State(state): State<AppState>,
    Path((id, file)): Path<(String, String)>,
    Query(signed): Query<Signed>,
    request: Request,
) -> Response {
    let forbidden = || ApiError::new(StatusCode::FORBIDDEN, "forbidden", "the link is not valid or has expired").into_response();
    let (Ok(id), Ok(file)) = (SafeId::parse(&id), parse_file(&file)) else { return forbidden() };
    if !is_valid(&state.media.key, &id, file, signed.expires, &signed.signature, now_ms()) {
        return forbidden();
    }
    match file_of(&state, &id, file).await {
        Ok(ReaderAccess::File(path)) => match tower_http::services::ServeFile::new(path).oneshot(request).await {
            Ok(response) => response.into_response(),
            Err(never) => match never {},
        },
        Ok(ReaderAccess::Url(_)) => forbidden(),
        Err(err) => err.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_opens_its_own_file_until_it_expires() {
        let (key, id) = ([7u8; 32], SafeId::parse("rec_1").unwrap());
        let signed = signature(&key, &id, MediaFile::Mp4, 1_000);
        assert!(is_valid(&key, &id, MediaFile::Mp4, 1_000, &signed, 999));
        assert!(is_valid(&key, &id, MediaFile::Mp4, 1_000, &signed, 1_000));
        assert!(!is_valid(&key, &id, MediaFile::Mp4, 1_000, &signed, 1_001), "expired");
        assert!(!is_valid(&key, &id, MediaFile::Poster, 1_000, &signed, 999), "another file");
        assert!(!is_valid(&key, &SafeId::parse("rec_2").unwrap(), MediaFile::Mp4, 1_000, &signed, 999), "another recording");
        assert!(!is_valid(&key, &id, MediaFile::Mp4, 2_000, &signed, 999), "a later expiry");
        assert!(!is_valid(&[8u8; 32], &id, MediaFile::Mp4, 1_000, &signed, 999), "another process's key");
    }

    #[test]
    fn only_the_mp4_and_the_poster_have_links() {
        assert_eq!(parse_file("mp4").unwrap(), MediaFile::Mp4);
        assert_eq!(parse_file("poster").unwrap(), MediaFile::Poster);
        assert_eq!(parse_file("../x").unwrap_err().status, StatusCode::NOT_FOUND);
    }
}
