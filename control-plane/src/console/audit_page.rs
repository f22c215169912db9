//! The audit log, filtered by who, host and time.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use fleetnode_wire::{HostId, Millis, Timestamp};
use serde::Deserialize;

use super::guard::{ConsoleError, PageResult, Signed};
use super::view::{Chrome, render};
use crate::server::App;
use crate::store::AuditFilter;

/// The audit page.
#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    chrome: Chrome,
    who: String,
    host: String,
    within: String,
    truncated: bool,
    entries: Vec<Line>,
}

struct Line {
    seq: u64,
    at: String,
    who: String,
    action: String,
    subject: String,
    hosts: String,
    outcome: String,
}

/// The audit page's query.
#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    /// Only this principal's entries.
    #[serde(default)]
    who: Option<String>,
    /// Only entries naming this host.
    #[serde(default)]
    host: Option<String>,
    /// Only entries of the last span (`30m`, `2h`, `7d`).
    #[serde(default)]
    within: Option<String>,
}

/// `GET /console/audit?who=&host=&within=`: the newest matching entries, newest first.
pub async fn show(
    State(app): State<Arc<App>>,
    signed: Signed,
    Query(query): Query<AuditQuery>,
) -> PageResult {
    let fleet = app.fleet().map_err(|_| super::fleet_page::starting())?;
    let text = |v: &Option<String>| {
        v.as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
    };
    let host = match text(&query.host) {
        Some(h) => Some(
            HostId::parse(&h)
                .map_err(|e| ConsoleError::Invalid(format!("{h:?} is not a host id: {e}")))?,
        ),
        None => None,
    };
    let since = match text(&query.within) {
        Some(span) => {
            let span = Millis::parse(&span)
                .map_err(|e| ConsoleError::Invalid(format!("{span:?}: {e}")))?;
            Some(Timestamp(fleet.now().0.saturating_sub(span.0)))
        }
        None => None,
    };
    let log = fleet
        .audit(AuditFilter {
            host,
            since,
            who: text(&query.who),
        })
        .await?;
    let entries = log
        .entries
        .iter()
        .rev()
        .map(|e| Line {
            seq: e.seq,
            at: e.at.to_string(),
            who: e.who.clone(),
            action: e.action.clone(),
            subject: e.subject.clone().unwrap_or_default(),
            hosts: e
                .hosts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            outcome: e.outcome.clone(),
        })
        .collect();
    let page = AuditPage {
        chrome: Chrome::new(&signed, "audit", "audit"),
        who: query.who.unwrap_or_default(),
        host: query.host.unwrap_or_default(),
        within: query.within.unwrap_or_default(),
        truncated: log.truncated,
        entries,
    };
    Ok(render(&page))
}
