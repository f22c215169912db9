//! The operator's web console, served by `fleetnode-cp serve` on the API's own listener and
//! TLS under `/console/`.
//!
//! Server-rendered pages (compile-time templates, HTML-escaped by default) over the same fleet
//! operations the JSON API and the CLI call: an action taken in the console is the CLI's
//! action, recorded in the audit log under the signed-in operator's name. The contract:
//! - a session starts from an operator token or the admin token ([`session`]); only the
//!   digest of its random id is kept, in this process; the operator's standing is checked on
//!   every request, so a revoked operator's sessions end at once;
//! - every state-changing request carries its session's CSRF token and comes from the
//!   console's own origin ([`guard`]);
//! - every answer carries a strict `Content-Security-Policy` and the other security headers
//!   ([`headers`]); the CSS and the one small script are part of the binary ([`assets`]);
//! - pages follow the fleet live over Server-Sent Events ([`live`]): small "what changed"
//!   notices, after which the page reads itself again.
//!
//! `docs/console.md` is the operator's guide.

mod actions;
mod assets;
mod audit_page;
mod fleet_page;
mod guard;
mod headers;
mod host_page;
mod live;
mod login;
mod record;
mod rollout_pages;
mod session;
mod start_page;
mod svg;
mod view;

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::Router;
use axum::middleware::from_fn;
use axum::response::Redirect;
use axum::routing::{get, post};

use crate::server::App;

pub use session::Sessions;

/// Default of `--console-session-lifetime`: a working day.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(8 * 3600);

/// Most console pages following the fleet live at once over this server (each holds one
/// connection and a few hundred bytes); beyond, the stream is refused with 503 and the page
/// works without live updates until it reconnects.
pub const MAX_LIVE_STREAMS: usize = 256;

/// The console's state in the server.
pub struct Console {
    /// The signed-in sessions.
    pub sessions: Sessions,
    /// Live streams open now.
    live_streams: AtomicUsize,
    /// The server speaks plain HTTP (loopback demos): the page origin is `http://`.
    plain_http: bool,
}

impl Console {
    /// The console of a server whose sessions last `lifetime`.
    pub fn new(lifetime: Duration, clock: Arc<dyn crate::clock::Clock>, plain_http: bool) -> Self {
        Self {
            sessions: Sessions::new(lifetime, clock),
            live_streams: AtomicUsize::new(0),
            plain_http,
        }
    }
}

/// The console's routes, each answer stamped with the security headers.
pub fn router() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/console/") }))
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(fleet_page::show))
        .route("/console/login", get(login::form).post(login::submit))
        .route("/console/logout", post(login::logout))
        .route("/console/hosts/{host}", get(host_page::show))
        .route(
            "/console/hosts/{host}/{action}",
            get(actions::confirm_host).post(actions::act_on_host),
        )
        .route("/console/rollouts", get(rollout_pages::list))
        .route("/console/rollouts/{id}", get(rollout_pages::show))
        .route(
            "/console/rollouts/{id}/{action}",
            get(actions::confirm_rollout).post(actions::act_on_rollout),
        )
        .route(
            "/console/start",
            get(start_page::form).post(start_page::preview),
        )
        .route("/console/start/confirm", post(start_page::confirm))
        .route("/console/audit", get(audit_page::show))
        .route("/console/events", get(live::events))
        .route("/console/assets/{version}/{file}", get(assets::serve))
        .layer(from_fn(headers::secure))
}
