//! What every page shares: the frame around it (who is signed in, the sign-out form, the
//! assets), rendering, and the short forms people read (store paths, ages).

use askama::Template;
use axum::response::Html;
use fleetnode_wire::{HostRow, StorePath, Timestamp};
use tracing::error;

use super::assets;
use super::guard::Signed;
use crate::cli::time::ago;

/// The frame of a signed-in page.
pub struct Chrome {
    /// Who is signed in.
    pub who: String,
    /// The session's CSRF token, for the page's forms.
    pub csrf: String,
    /// The style sheet's path.
    pub css: String,
    /// The script's path.
    pub js: String,
    /// The kinds of change the page follows live, space-separated ("" for none).
    pub topics: &'static str,
    /// The navigation entry to mark as current.
    pub nav: &'static str,
}

impl Chrome {
    /// The frame for `signed`'s page in section `nav`, following `topics`.
    pub fn new(signed: &Signed, nav: &'static str, topics: &'static str) -> Self {
        Self {
            who: signed.who().to_owned(),
            csrf: signed.session.csrf.clone(),
            css: assets::css_path(),
            js: assets::js_path(),
            topics,
            nav,
        }
    }
}

/// A rendered template; a template that fails to render (a bug: every value is plain data)
/// gives a short page saying so, and the log has the details.
pub fn render<T: Template>(page: &T) -> Html<String> {
    match page.render() {
        Ok(html) => Html(html),
        Err(e) => {
            error!(error = %e, "a console page failed to render");
            Html("<!doctype html><title>error</title><p>This page failed to render; the server log has the details.</p>".to_owned())
        }
    }
}

/// A closure in the short form (`0123456…-nixos-system-web-01`), "-" for none.
pub fn short(path: Option<&StorePath>) -> String {
    path.map_or_else(|| "-".to_owned(), |p| format!("{p:#}"))
}

/// A closure in full, "" for none.
pub fn full(path: Option<&StorePath>) -> String {
    path.map_or_else(String::new, ToString::to_string)
}

/// "12s ago", or "never".
pub fn age(then: Option<Timestamp>, now: Timestamp) -> String {
    then.map_or_else(|| "never".to_owned(), |then| ago(then, now))
}

/// One host's line as pages show it.
pub struct HostLine {
    /// Its id.
    pub id: String,
    /// Its tags.
    pub tags: Vec<String>,
    /// The mirrored phase.
    pub phase: &'static str,
    /// Running closure, short and full.
    pub current: String,
    /// See `current`.
    pub current_full: String,
    /// Desired closure, short and full.
    pub target: String,
    /// See `target`.
    pub target_full: String,
    /// "ok", "offline", "diverged" or "paused".
    pub health: &'static str,
    /// Last heartbeat's age.
    pub seen: String,
    /// Outbound queue depth, "-" when unknown.
    pub queue: String,
}

impl HostLine {
    /// The line of `row`, with its queue depth if known.
    pub fn of(row: &HostRow, queue: Option<u64>, now: Timestamp) -> Self {
        let health = if row.offline {
            "offline"
        } else if row.diverged {
            "diverged"
        } else if row.paused {
            "paused"
        } else {
            "ok"
        };
        Self {
            id: row.id.to_string(),
            tags: row.tags.iter().map(ToString::to_string).collect(),
            phase: row.phase.name(),
            current: short(row.current.as_ref()),
            current_full: full(row.current.as_ref()),
            target: short(row.target.as_ref()),
            target_full: full(row.target.as_ref()),
            health,
            seen: age(row.last_seen, now),
            queue: queue.map_or_else(|| "-".to_owned(), |q| q.to_string()),
        }
    }
}
