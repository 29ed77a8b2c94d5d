//! The dashboard in the browser: a static page and its script, served without a key (the page asks for
//! one and calls the API with it). A strict Content-Security-Policy: only this origin's script, styles and
//! API, no framing.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");
const ICON: &str = include_str!("dashboard/icon.svg");

const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/dashboard", get(page))
        .route("/dashboard/app.js", get(script))
        .route("/dashboard/style.css", get(style))
        .route("/dashboard/icon.svg", get(icon))
}

/// The dashboard in the browser (its script asks for an API key)
#[utoipa::path(get, path = "/dashboard", tag = "dashboard", operation_id = "dashboard",
    responses((status = 200, description = "The page", content_type = "text/html", body = String)))]
pub(crate) async fn page() -> impl IntoResponse {
    asset("text/html; charset=utf-8", INDEX)
}

/// The dashboard's script
#[utoipa::path(get, path = "/dashboard/app.js", tag = "dashboard", operation_id = "dashboardScript",
    responses((status = 200, description = "JavaScript", content_type = "text/javascript", body = String)))]
pub(crate) async fn script() -> impl IntoResponse {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// The dashboard's styles
#[utoipa::path(get, path = "/dashboard/style.css", tag = "dashboard", operation_id = "dashboardStyle",
    responses((status = 200, description = "CSS", content_type = "text/css", body = String)))]
pub(crate) async fn style() -> impl IntoResponse {
    asset("text/css; charset=utf-8", STYLE)
}

/// The dashboard's icon
#[utoipa::path(get, path = "/dashboard/icon.svg", tag = "dashboard", operation_id = "dashboardIcon",
    responses((status = 200, description = "SVG", content_type = "image/svg+xml", body = String)))]
pub(crate) async fn icon() -> impl IntoResponse {
    asset("image/svg+xml", ICON)
}

fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
}
