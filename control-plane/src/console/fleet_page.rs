//! The fleet page: counts by phase, the hosts by generation, and a filtered page of hosts.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use fleetnode_state_machine::Phase;
use fleetnode_wire::{PhaseKind, Tag};
use serde::Deserialize;

use super::guard::{PageResult, Signed};
use super::svg::{self, Chart};
use super::view::{Chrome, HostLine, render};
use crate::fleet::{HostFilter, HostPage};
use crate::server::App;

/// Hosts in one page of the console's host list.
pub const PAGE_SIZE: usize = 100;

/// The fleet page.
#[derive(Template)]
#[template(path = "console/fleet.html")]
struct FleetPage {
    chrome: Chrome,
    hosts: usize,
    offline: usize,
    counts: Vec<(&'static str, usize)>,
    phases: Vec<&'static str>,
    tag: String,
    phase: String,
    text: String,
    problem: Option<String>,
    rows: Vec<HostLine>,
    next: Option<String>,
    first: Option<String>,
    generations: Chart,
}

/// The fleet page's query.
#[derive(Debug, Default, Deserialize)]
pub struct FleetQuery {
    /// Only hosts with this tag.
    #[serde(default)]
    tag: Option<String>,
    /// Only hosts in this phase.
    #[serde(default)]
    phase: Option<String>,
    /// Only hosts whose id, tags or closure contain this.
    #[serde(default)]
    q: Option<String>,
    /// Where the page starts (the last id of the previous page).
    #[serde(default)]
    after: Option<String>,
}

/// `GET /console/?tag=&phase=&q=&after=`.
pub async fn show(
    State(app): State<Arc<App>>,
    signed: Signed,
    Query(query): Query<FleetQuery>,
) -> PageResult {
    let fleet = app.fleet().map_err(|_| starting())?;
    let (filter, problem) = filter_of(&query);
    let page = HostPage {
        after: query.after.as_deref().filter(|a| !a.is_empty()),
        limit: PAGE_SIZE,
    };
    let list = fleet.find_hosts(&filter, page).await?;
    let ids: Vec<_> = list.hosts.iter().map(|r| r.id.clone()).collect();
    let depths = fleet.queue_depths(&ids);
    let now = fleet.now();
    let summary = fleet.summary().await?;
    let keep = |after: Option<&str>| link(&query, after);
    let page = FleetPage {
        chrome: Chrome::new(&signed, "fleet", "hosts"),
        hosts: summary.hosts,
        offline: summary.offline,
        counts: summary.by_phase.iter().map(|(k, v)| (*k, *v)).collect(),
        phases: Phase::KINDS.iter().map(|k| k.name()).collect(),
        tag: query.tag.clone().unwrap_or_default(),
        phase: query.phase.clone().unwrap_or_default(),
        text: query.q.clone().unwrap_or_default(),
        problem,
        rows: list
            .hosts
            .iter()
            .map(|row| HostLine::of(row, depths.get(&row.id).copied(), now))
            .collect(),
        next: list.next_cursor.as_deref().map(|c| keep(Some(c))),
        first: page.after.map(|_| keep(None)),
        generations: svg::generations(&summary),
    };
    Ok(render(&page))
}

/// The filter a query asks for, and what in it was not understood (that part is left out).
fn filter_of(query: &FleetQuery) -> (HostFilter, Option<String>) {
    let mut problems = Vec::new();
    let tag = match query
        .tag
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        None => None,
        Some(text) => Tag::parse(text)
            .map_err(|e| {
                problems.push(format!(
                    "tag {text:?} is not a tag ({e}); showing every tag"
                ))
            })
            .ok(),
    };
    let phase = match query.phase.as_deref().filter(|p| !p.is_empty()) {
        None => None,
        Some(text) => {
            let found = Phase::KINDS.iter().copied().find(|k| k.name() == text);
            if found.is_none() {
                problems.push(format!("{text:?} is not a phase; showing every phase"));
            }
            found
        }
    };
    let text = query
        .q
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let filter = HostFilter {
        tag,
        phase: phase.map(|p: PhaseKind| p),
        text,
    };
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    (filter, problem)
}

/// The fleet page's URL with the same filter, starting after `after`.
fn link(query: &FleetQuery, after: Option<&str>) -> String {
    let mut parts = Vec::new();
    let mut add = |name: &str, value: Option<&str>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            let encoded: String = url_encode(value);
            parts.push(format!("{name}={encoded}"));
        }
    };
    add("tag", query.tag.as_deref());
    add("phase", query.phase.as_deref());
    add("q", query.q.as_deref());
    add("after", after);
    if parts.is_empty() {
        "/console/".to_owned()
    } else {
        format!("/console/?{}", parts.join("&"))
    }
}

/// Percent-encodes everything but unreserved characters.
pub fn url_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// The refusal while the store is not open.
pub fn starting() -> super::guard::ConsoleError {
    super::guard::ConsoleError::Unavailable(
        "the control plane is starting: its store is not open yet; reload in a moment".to_owned(),
    )
}
