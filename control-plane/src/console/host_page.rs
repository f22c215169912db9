//! One host: its mirrored state, the desired-state history with who changed it, the event
//! timeline, probe results, a failed switch's output, and the actions on it.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use fleetnode_wire::{
    AgentStatus, AuditEntry, Directive, DirectiveKind, HostId, OutboundEvent, StorePath,
};

use super::guard::{ConsoleError, PageResult, Signed};
use super::view::{Chrome, age, full, render, short};
use crate::server::App;
use crate::store::{AuditFilter, DesiredRecord};

/// The host page.
#[derive(Template)]
#[template(path = "console/host.html")]
struct HostPage {
    chrome: Chrome,
    id: String,
    tags: Vec<String>,
    phase: &'static str,
    reason: Option<String>,
    health: &'static str,
    divergence: Option<String>,
    paused: bool,
    revoked: bool,
    current: String,
    current_full: String,
    booted: String,
    profile: String,
    desired: String,
    rollback_to: String,
    seen: String,
    agent: String,
    queue: String,
    output_tail: Option<String>,
    probes: Vec<ProbeLine>,
    history: Vec<HistoryLine>,
    events: Vec<EventLine>,
}

struct ProbeLine {
    name: String,
    mode: String,
    result: &'static str,
    detail: String,
}

struct HistoryLine {
    revision: u64,
    at: String,
    cause: String,
    what: String,
    by: String,
}

struct EventLine {
    seq: u64,
    at: String,
    text: String,
}

/// `GET /console/hosts/{host}`.
pub async fn show(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path(host): Path<String>,
) -> PageResult {
    let fleet = app.fleet().map_err(|_| super::fleet_page::starting())?;
    let id = parse_host(&host)?;
    let detail = fleet.host_detail(&id).await?;
    let history = fleet.desired_history(&id).await?;
    let audit = fleet
        .audit(AuditFilter {
            host: Some(id.clone()),
            ..AuditFilter::default()
        })
        .await?;
    let now = fleet.now();
    let row = &detail.row;
    let mirror = &detail.mirror;
    let heartbeat = detail.last_heartbeat.as_ref();
    let output_tail = detail
        .recent_events
        .iter()
        .rev()
        .find_map(|e| e.report.output_tail().map(str::to_owned))
        .or_else(|| {
            mirror
                .phase
                .reason()
                .and_then(|r| r.output_tail())
                .map(str::to_owned)
        });
    let page = HostPage {
        chrome: Chrome::new(&signed, "fleet", "hosts"),
        id: row.id.to_string(),
        tags: row.tags.iter().map(ToString::to_string).collect(),
        phase: row.phase.name(),
        reason: mirror.phase.reason().map(ToString::to_string),
        health: super::view::HostLine::of(row, None, now).health,
        divergence: detail.divergence.clone(),
        paused: row.paused,
        revoked: row.revoked,
        current: short(mirror.system.current.as_ref()),
        current_full: full(mirror.system.current.as_ref()),
        booted: full(mirror.system.booted.as_ref()),
        profile: full(mirror.system.profile.as_ref()),
        desired: describe(detail.desired.directive.as_ref(), detail.desired.paused),
        rollback_to: rollback_target(undo_target(&detail.mirror).as_ref()),
        seen: age(row.last_seen, now),
        agent: heartbeat.map_or_else(|| "-".to_owned(), |h| h.agent_version.clone()),
        queue: heartbeat.map_or_else(|| "-".to_owned(), |h| h.queue.depth.to_string()),
        output_tail,
        probes: heartbeat.map(probe_lines).unwrap_or_default(),
        history: history_lines(&history, &audit.entries),
        events: event_lines(&detail.recent_events),
    };
    Ok(render(&page))
}

/// The latest heartbeat's probe results.
fn probe_lines(heartbeat: &AgentStatus) -> Vec<ProbeLine> {
    heartbeat
        .probes
        .iter()
        .map(|p| ProbeLine {
            name: p.probe.to_string(),
            mode: format!("{:?}", p.mode).to_lowercase(),
            result: match p.passing {
                Some(true) => "passing",
                Some(false) => "failing",
                None => "no result yet",
            },
            detail: p.detail.clone(),
        })
        .collect()
}

/// The events, newest first.
fn event_lines(events: &[OutboundEvent]) -> Vec<EventLine> {
    events
        .iter()
        .rev()
        .map(|e| EventLine {
            seq: e.seq,
            at: e.at.to_string(),
            text: e.report.to_string(),
        })
        .collect()
}

/// A host id from a console path.
pub fn parse_host(text: &str) -> Result<HostId, ConsoleError> {
    HostId::parse(text)
        .map_err(|e| ConsoleError::Invalid(format!("{text:?} is not a host id: {e}")))
}

/// What a desired state asks of the host, in words.
pub fn describe(directive: Option<&Directive>, paused: bool) -> String {
    let hold = if paused { " (paused)" } else { "" };
    let Some(directive) = directive else {
        return format!("no directive yet{hold}");
    };
    let what = match &directive.kind {
        DirectiveKind::Activate { target, .. } => format!("run {target:#}"),
        DirectiveKind::Rollback { to: Some(to) } => format!("roll back to {to:#}"),
        DirectiveKind::Rollback { to: None } => "roll back its latest deployment".to_owned(),
    };
    format!("{}: {what}{hold}", directive.revision)
}

/// Where the console sends a host it rolls back, as the mirror knows it: where its latest work
/// started, or else its newest known-good generation; never the generation it runs (that
/// would change nothing).
pub fn undo_target(mirror: &fleetnode_state_machine::Host) -> Option<StorePath> {
    let running = mirror.system.current.as_ref();
    mirror
        .undo_to
        .clone()
        .filter(|to| Some(to) != running)
        .or_else(|| {
            mirror
                .known_good
                .iter()
                .rev()
                .find(|g| Some(*g) != mirror.system.current.as_ref())
                .cloned()
        })
}

/// The rollback target in words.
pub fn rollback_target(to: Option<&StorePath>) -> String {
    to.as_ref().map_or_else(
        || "the generation before its latest deployment, as its agent knows it (no known-good generation other than the running one is mirrored)".to_owned(),
        |to| format!("{to}"),
    )
}

/// The history, newest first, each operator change paired with the audit entry that made it
/// (the first entry of the same action on this host at or after the change); a rollout's
/// change names the rollout.
fn history_lines(history: &[DesiredRecord], audit: &[AuditEntry]) -> Vec<HistoryLine> {
    let mut used = vec![false; audit.len()];
    let mut lines: Vec<HistoryLine> = history
        .iter()
        .map(|record| {
            let by = if record.cause.starts_with("rollout ") {
                record.cause.clone()
            } else {
                let found = audit.iter().enumerate().find(|(i, e)| {
                    !used[*i]
                        && e.action == record.cause
                        && e.outcome == "ok"
                        && e.at >= record.set_at
                });
                match found {
                    Some((i, entry)) => {
                        used[i] = true;
                        entry.who.clone()
                    }
                    None => "-".to_owned(),
                }
            };
            HistoryLine {
                revision: record.desired.revision.0,
                at: record.set_at.to_string(),
                cause: record.cause.clone(),
                what: describe(record.desired.directive.as_ref(), record.desired.paused),
                by,
            }
        })
        .collect();
    lines.reverse();
    lines
}
