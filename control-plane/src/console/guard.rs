//! What stands in front of every console page and action: a live session whose principal is
//! still in good standing ([`Signed`]), and for every state-changing request the session's
//! CSRF token and the console's own origin ([`Signed::check_form`], [`same_origin`]). A
//! refusal is a [`ConsoleError`], rendered as a page that says what to do.

use std::sync::Arc;

use askama::Template;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};

use super::session::{self, Session, texts_equal};
use crate::fleet::{FleetError, Principal};
use crate::server::{ApiError, App};

/// A request of a signed-in session whose principal may still act.
pub struct Signed {
    /// The session.
    pub session: Session,
}

impl Signed {
    /// The name the audit log gives the principal.
    pub fn who(&self) -> &str {
        self.session.principal.name()
    }

    /// Refuses a state-changing request unless it comes from the console's own origin and
    /// carries this session's CSRF token.
    pub fn check_form(
        &self,
        app: &App,
        headers: &HeaderMap,
        csrf: Option<&str>,
    ) -> Result<(), ConsoleError> {
        same_origin(app, headers)?;
        match csrf {
            Some(token) if texts_equal(token, &self.session.csrf) => Ok(()),
            Some(_) => Err(ConsoleError::Forbidden(
                "the form's CSRF token does not belong to this session (it is from an older sign-in or another page); reload the page and submit it again".to_owned(),
            )),
            None => Err(ConsoleError::Forbidden(
                "the form carries no CSRF token; submit the console's own form from its page".to_owned(),
            )),
        }
    }
}

impl FromRequestParts<Arc<App>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, Response> {
        let id = parts
            .headers
            .get(header::COOKIE)
            .and_then(|v| v.to_str().ok())
            .and_then(session::id_in);
        let Some(session) = id.and_then(|id| app.console.sessions.find(id)) else {
            return Err(not_signed_in(parts, None));
        };
        if !in_standing(app, &session) {
            app.console.sessions.end(&session.digest);
            return Err(not_signed_in(
                parts,
                Some("your operator token was revoked; your session ended"),
            ));
        }
        Ok(Self { session })
    }
}

/// True while the session's principal may act: the admin always, an operator until revoked.
pub fn in_standing(app: &App, session: &Session) -> bool {
    match &session.principal {
        Principal::Admin => true,
        Principal::Operator(name) => app.fleet().is_ok_and(|fleet| fleet.operator_active(name)),
    }
}

/// Refuses a request that does not come from the console's own origin: its `Origin` must be
/// this server's (scheme and `Host`), or, without one (or with `null`), `Sec-Fetch-Site` must
/// say `same-origin`. A request with neither is refused: every browser sends one on a form
/// post. A `Sec-Fetch-Site` other than `same-origin` is refused whatever the `Origin`.
pub fn same_origin(app: &App, headers: &HeaderMap) -> Result<(), ConsoleError> {
    let text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let site = text(header::HeaderName::from_static("sec-fetch-site"));
    if let Some(site) = site
        && site != "same-origin"
    {
        return Err(ConsoleError::Forbidden(format!(
            "the request came from another site (Sec-Fetch-Site: {site}); the console takes actions only from its own pages"
        )));
    }
    // A browser sends `Origin: null` on a form post from a page whose referrer policy is
    // `no-referrer` (the console's own): then `Sec-Fetch-Site` decides.
    let Some(origin) = text(header::ORIGIN).filter(|origin| *origin != "null") else {
        return match site {
            Some(_) => Ok(()),
            None => Err(ConsoleError::Forbidden(
                "the request names no origin (neither Origin nor Sec-Fetch-Site); the console takes actions only from its own pages in a browser".to_owned(),
            )),
        };
    };
    let scheme = if app.console.plain_http {
        "http"
    } else {
        "https"
    };
    let expected = text(header::HOST).map(|host| format!("{scheme}://{host}"));
    if expected.as_deref() == Some(origin) {
        return Ok(());
    }
    Err(ConsoleError::Forbidden(format!(
        "the request came from {origin}, not from this console ({}); the console takes actions only from its own pages",
        expected.as_deref().unwrap_or("no Host header")
    )))
}

/// Where a request without a session goes: the sign-in page (then back), or 401 for the live
/// stream, whose page then reloads into the sign-in page.
fn not_signed_in(parts: &Parts, why: Option<&str>) -> Response {
    if parts.uri.path() == "/console/events" {
        return (StatusCode::UNAUTHORIZED, "sign in again\n").into_response();
    }
    let next: String = form_urlencoded_component(parts.uri.path());
    let mut to = format!("/console/login?next={next}");
    if why.is_some() {
        to.push_str("&ended=revoked");
    }
    Redirect::to(&to).into_response()
}

/// A path as a query value: only the characters a console path holds pass unchanged.
fn form_urlencoded_component(path: &str) -> String {
    path.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Why a console request was refused, rendered as a page.
#[derive(Debug, Clone)]
pub enum ConsoleError {
    /// A fleet operation refused or failed, as the API would answer it.
    Fleet(ApiError),
    /// Not from the console's own pages, or without the session's CSRF token.
    Forbidden(String),
    /// A sign-in with a token that is not valid.
    Unauthorized(String),
    /// The request itself was wrong (a malformed form or path).
    Invalid(String),
    /// The server cannot take it now.
    Unavailable(String),
}

impl From<FleetError> for ConsoleError {
    fn from(error: FleetError) -> Self {
        Self::Fleet(ApiError::from(error))
    }
}

/// The error page.
#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    status: u16,
    message: &'a str,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            Self::Fleet(api) => {
                let status = StatusCode::from_u16(api.0.code.status())
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                (status, api.0.message)
            }
            Self::Forbidden(message) => (StatusCode::FORBIDDEN, message),
            Self::Unauthorized(message) => (StatusCode::UNAUTHORIZED, message),
            Self::Invalid(message) => (StatusCode::BAD_REQUEST, message),
            Self::Unavailable(message) => (StatusCode::SERVICE_UNAVAILABLE, message),
        };
        let page = ErrorPage {
            status: status.as_u16(),
            message: &message,
        };
        (status, super::view::render(&page)).into_response()
    }
}

impl ConsoleError {
    /// The HTTP status and the audit log's outcome of this refusal.
    pub fn outcome(&self) -> (u16, String) {
        match self {
            Self::Fleet(api) => (api.0.code.status(), api.0.code.as_str().to_owned()),
            Self::Forbidden(_) => (403, "forbidden".to_owned()),
            Self::Unauthorized(_) => (401, "unauthorized".to_owned()),
            Self::Invalid(_) => (400, "invalid".to_owned()),
            Self::Unavailable(_) => (503, "unavailable".to_owned()),
        }
    }
}

/// A rendered page, or the error page when rendering failed.
pub type PageResult = Result<Html<String>, ConsoleError>;
