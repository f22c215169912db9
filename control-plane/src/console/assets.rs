//! The console's style sheet and script, part of the binary, served under a path that names
//! their content's digest: a new build's files get new paths, so browsers may keep them
//! forever.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::auth::hex;

const CSS: &str = include_str!("../../assets/console/console.css");
const JS: &str = include_str!("../../assets/console/console.js");

/// The first 12 hex digits of the SHA-256 of both files.
static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut digest = Sha256::new();
    digest.update(CSS.as_bytes());
    digest.update(JS.as_bytes());
    let full = hex(&digest.finalize());
    full[..12].to_owned()
});

/// The path of the style sheet.
pub fn css_path() -> String {
    format!("/console/assets/{}/console.css", *VERSION)
}

/// The path of the script.
pub fn js_path() -> String {
    format!("/console/assets/{}/console.js", *VERSION)
}

/// `GET /console/assets/{version}/{file}`: the file of this build; any other version is 404
/// (a page of an older build reloads and asks for the new one).
pub async fn serve(Path((version, file)): Path<(String, String)>) -> Response {
    if version != *VERSION {
        return (StatusCode::NOT_FOUND, "no such asset version\n").into_response();
    }
    let (body, kind) = match file.as_str() {
        "console.css" => (CSS, "text/css; charset=utf-8"),
        "console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(kind)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        body,
    )
        .into_response()
}
