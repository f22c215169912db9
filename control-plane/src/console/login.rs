//! Signing in with an operator token or the admin token, and signing out.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use fleetnode_wire::UNAUTHENTICATED;
use serde::Deserialize;

use super::assets;
use super::guard::{ConsoleError, Signed, same_origin};
use super::record::{Named, record};
use super::session;
use super::view::render;
use crate::server::App;

/// The sign-in page.
#[derive(Template)]
#[template(path = "console/login.html")]
struct LoginPage<'a> {
    css: String,
    next: &'a str,
    notice: Option<&'static str>,
    error: Option<String>,
}

/// The query of the sign-in page.
#[derive(Debug, Default, Deserialize)]
pub struct LoginQuery {
    /// Where to go once signed in (a console path).
    #[serde(default)]
    next: Option<String>,
    /// Why the previous session ended.
    #[serde(default)]
    ended: Option<String>,
}

/// `GET /console/login`.
pub async fn form(Query(query): Query<LoginQuery>) -> Response {
    let notice = match query.ended.as_deref() {
        Some("revoked") => Some("Your operator token was revoked; your session ended."),
        Some("out") => Some("You are signed out."),
        Some(_) => Some("Your session ended; sign in again."),
        None => None,
    };
    let page = LoginPage {
        css: assets::css_path(),
        next: safe_next(query.next.as_deref()),
        notice,
        error: None,
    };
    render(&page).into_response()
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    /// An operator token or the admin token.
    token: String,
    /// Where to go next.
    #[serde(default)]
    next: Option<String>,
}

/// `POST /console/login`: a right token starts a session (and its cookie); a wrong one is
/// refused with 401, and both land in the audit log.
pub async fn submit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Form(login): Form<LoginForm>,
) -> Result<Response, ConsoleError> {
    same_origin(&app, &headers)?;
    app.fleet().map_err(|_| {
        ConsoleError::Unavailable(
            "the control plane is starting; sign in again in a moment".to_owned(),
        )
    })?;
    let next = safe_next(login.next.as_deref()).to_owned();
    let named = || Named {
        action: "console-login",
        subject: None,
        hosts: Vec::new(),
    };
    let Some(principal) = app.principal_of(login.token.trim()) else {
        let refused: Result<(), ConsoleError> = Err(ConsoleError::Unauthorized(String::new()));
        record(&app, UNAUTHENTICATED, named(), &refused).await;
        let page = LoginPage {
            css: assets::css_path(),
            next: &next,
            notice: None,
            error: Some("That token was refused: use an operator token from `fleetnode-cp add-operator` that is not revoked, or the server's admin token.".to_owned()),
        };
        return Ok((StatusCode::UNAUTHORIZED, render(&page)).into_response());
    };
    let who = principal.name().to_owned();
    let started = app
        .console
        .sessions
        .start(principal)
        .map_err(|e| ConsoleError::Unavailable(e.to_string()));
    record(&app, &who, named(), &started).await;
    let (id, _) = started?;
    let cookie = session::cookie(&id, app.console.sessions.lifetime());
    let mut response = Redirect::to(&next).into_response();
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// The sign-out form.
#[derive(Debug, Deserialize)]
pub struct LogoutForm {
    /// The session's CSRF token.
    #[serde(default)]
    csrf: Option<String>,
}

/// `POST /console/logout`: ends the session on the server and removes its cookie.
pub async fn logout(
    State(app): State<Arc<App>>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<LogoutForm>,
) -> Result<Response, ConsoleError> {
    signed.check_form(&app, &headers, form.csrf.as_deref())?;
    app.console.sessions.end(&signed.session.digest);
    let named = Named {
        action: "console-logout",
        subject: None,
        hosts: Vec::new(),
    };
    record(&app, signed.who(), named, &Ok::<(), ConsoleError>(())).await;
    let mut response = Redirect::to("/console/login?ended=out").into_response();
    if let Ok(value) = HeaderValue::from_str(&session::removal()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}

/// `next` if it is a console path, else the fleet page: a sign-in never sends the browser
/// to another site.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(path)
            if path.starts_with("/console/")
                && !path.starts_with("//")
                && !path.contains("\\")
                && path != "/console/login" =>
        {
            path
        }
        _ => "/console/",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_console_paths_are_followed_after_sign_in() {
        assert_eq!(
            safe_next(Some("/console/hosts/web-01")),
            "/console/hosts/web-01"
        );
        assert_eq!(safe_next(Some("https://evil.example/")), "/console/");
        assert_eq!(safe_next(Some("//evil.example/console/")), "/console/");
        assert_eq!(safe_next(Some("/console/\\evil")), "/console/");
        assert_eq!(safe_next(None), "/console/");
    }
}
