//! The chat page at `/`: three static files built into the binary (no build step, no CDN),
//! served with a strict Content-Security-Policy. The page talks only to this server's
//! OpenAI routes; it carries no secret (the API key, when one is set, is typed into the
//! page by its user), so it is served without the key check.

use axum::http::{header, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::Shared;

const INDEX_HTML: &str = include_str!("../webui/index.html");
const APP_JS: &str = include_str!("../webui/app.js");
const STYLE_CSS: &str = include_str!("../webui/style.css");

/// Only this origin's own files and API; no inline script or style, no frames, no forms
/// posted anywhere, no plugins. `img-src data:` is for the empty favicon.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/index.html", get(|| async { page("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/webui/app.js", get(|| async { page("text/javascript; charset=utf-8", APP_JS) }))
        .route("/webui/style.css", get(|| async { page("text/css; charset=utf-8", STYLE_CSS) }))
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (HeaderName::from_static("cross-origin-opener-policy"), HeaderValue::from_static("same-origin")),
    ];
    (headers, body).into_response()
}
