//! The rollouts: the list, and one rollout with its waves, progress, each host's state, the
//! failure budget, why it halted, and the actions on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use fleetnode_wire::{
    HostId, HostRollback, HostRow, HostState, RollbackCause, Rollout, RolloutPhase, Timestamp,
};

use super::actions::parse_rollout;
use super::guard::{PageResult, Signed};
use super::svg::{self, Chart};
use super::view::{Chrome, render, short};
use crate::cli::time::ago;
use crate::server::App;

/// The rollout list.
#[derive(Template)]
#[template(path = "console/rollouts.html")]
struct ListPage {
    chrome: Chrome,
    rollouts: Vec<ListLine>,
}

struct ListLine {
    id: u64,
    phase: String,
    wave: String,
    converged: u64,
    hosts: u64,
    budget: String,
    started: String,
}

/// One rollout.
#[derive(Template)]
#[template(path = "console/rollout.html")]
struct RolloutPage {
    chrome: Chrome,
    id: u64,
    phase: &'static str,
    summary: String,
    halted: Option<String>,
    failed: u64,
    allowed: u64,
    over_budget: bool,
    actions: Vec<(&'static str, &'static str)>,
    progress: Chart,
    convergence: Chart,
    hosts: Vec<HostLine>,
}

struct HostLine {
    id: String,
    wave: usize,
    state: &'static str,
    detail: String,
    phase: String,
    running: String,
}

/// `GET /console/rollouts`.
pub async fn list(State(app): State<Arc<App>>, signed: Signed) -> PageResult {
    let fleet = app.fleet().map_err(|_| super::fleet_page::starting())?;
    let now = fleet.now();
    let list = fleet.rollout_list().await?;
    let rollouts = list
        .rollouts
        .iter()
        .map(|r| {
            let c = &r.counts;
            ListLine {
                id: r.id.0,
                phase: r.phase.clone(),
                wave: format!("{} of {}", (r.wave + 1).min(r.waves), r.waves),
                converged: c.converged,
                hosts: c.pending + c.in_flight + c.converged + c.failed + c.taken_out,
                budget: format!("{} of {}", c.failed, r.allowed_failures),
                started: ago(r.created_at, now),
            }
        })
        .collect();
    let page = ListPage {
        chrome: Chrome::new(&signed, "rollouts", "rollouts"),
        rollouts,
    };
    Ok(render(&page))
}

/// `GET /console/rollouts/{id}`.
pub async fn show(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path(id): Path<String>,
) -> PageResult {
    let fleet = app.fleet().map_err(|_| super::fleet_page::starting())?;
    let id = parse_rollout(&id)?;
    let status = fleet.rollout(id).await?;
    let rollout = &status.rollout;
    let now = fleet.now();
    let counts = rollout.counts();
    let rows: BTreeMap<&HostId, &HostRow> = status.hosts.iter().map(|r| (&r.id, r)).collect();
    let hosts = rollout
        .hosts
        .iter()
        .map(|(host, progress)| {
            let (mut state, mut detail) = state_of(&progress.state, now);
            if let Some(opens) = progress.window_opens_at {
                state = "waiting-for-window";
                detail = format!("its maintenance window opens {opens}");
            }
            if rollout.is_settled() {
                detail = format!("{}; {detail}", progress.outcome(false));
            }
            detail.push_str(&way_back(progress.rollback.as_ref()));
            let row = rows.get(host);
            HostLine {
                id: host.to_string(),
                wave: progress.wave + 1,
                state,
                detail,
                phase: row.map_or_else(|| "-".to_owned(), |r| r.phase.name().to_owned()),
                running: short(row.and_then(|r| r.current.as_ref())),
            }
        })
        .collect();
    let page = RolloutPage {
        chrome: Chrome::new(&signed, "rollouts", "rollouts hosts"),
        id: id.0,
        phase: rollout.phase.name(),
        summary: summary(rollout, now),
        halted: match &rollout.phase {
            RolloutPhase::Halted(h) => Some(format!(
                "halted in wave {} {} with {} failed: {}",
                h.wave + 1,
                ago(h.at, now),
                h.failures,
                h.cause
            )),
            _ => None,
        },
        failed: counts.failed,
        allowed: rollout.allowed_failures,
        over_budget: counts.failed > rollout.allowed_failures,
        actions: actions(rollout),
        progress: svg::rollout_progress(rollout),
        convergence: svg::convergence(rollout),
        hosts,
    };
    Ok(render(&page))
}

/// What the rollout is doing, in one line.
fn summary(rollout: &Rollout, now: Timestamp) -> String {
    let waves = rollout.waves.len();
    let at = match &rollout.phase {
        RolloutPhase::Running(p) if rollout.awaiting_approval.is_some() => format!(
            "wave {} of {waves} waits for an operator's approval since {}",
            p.wave + 1,
            rollout
                .awaiting_approval
                .map_or_else(String::new, |at| ago(at, now))
        ),
        RolloutPhase::Running(p) => match p.baking_until {
            Some(until) if until > now => format!(
                "wave {} of {waves} baking for {}s more",
                p.wave + 1,
                (until.0 - now.0) / 1000
            ),
            _ => format!("wave {} of {waves} rolling out", p.wave + 1),
        },
        RolloutPhase::Paused(p) => format!(
            "paused at wave {} of {waves} {}",
            p.wave + 1,
            ago(p.since, now)
        ),
        RolloutPhase::Halted(h) => format!("halted at wave {} of {waves}", h.wave + 1),
        RolloutPhase::Completed(e) => format!("completed {}", ago(e.at, now)),
        RolloutPhase::Aborted(e) => format!(
            "aborted at wave {} of {waves} {}",
            e.wave + 1,
            ago(e.at, now)
        ),
    };
    let back = rollout.rollback.as_ref().map_or_else(String::new, |order| {
        let counts = rollout.counts();
        let by = match order.by {
            RollbackCause::Halt => "by the halt",
            RollbackCause::Operator => "by an operator",
        };
        format!(
            "; hosts ordered back {by} {}: {} back, {} on the way",
            ago(order.at, now),
            counts.rolled_back,
            counts.rolling_back
        )
    });
    format!(
        "{at}; {} hosts; started {}; on halt: {}{back}",
        rollout.hosts.len(),
        ago(rollout.created_at, now),
        rollout.on_halt
    )
}

/// A host's way back, when the rollout's hosts were ordered back.
fn way_back(rollback: Option<&HostRollback>) -> String {
    match rollback {
        None => String::new(),
        Some(HostRollback::Wanted { .. }) => "; to be sent back".to_owned(),
        Some(HostRollback::Sent { revision, .. }) => format!("; sent back ({revision})"),
        Some(HostRollback::Done { .. }) => "; back where it was".to_owned(),
        Some(HostRollback::Skipped { why }) => format!("; not sent back: {why}"),
        Some(HostRollback::Failed { why, .. }) => format!("; the way back failed: {why}"),
    }
}

/// The actions a rollout in this phase takes (path segment, label).
fn actions(rollout: &Rollout) -> Vec<(&'static str, &'static str)> {
    match rollout.phase {
        RolloutPhase::Running(_) if rollout.awaiting_approval.is_some() => vec![
            ("approve", "Approve the wave…"),
            ("pause", "Pause…"),
            ("abort", "Abort…"),
            ("rollback", "Roll back…"),
        ],
        RolloutPhase::Running(_) => vec![
            ("pause", "Pause…"),
            ("abort", "Abort…"),
            ("rollback", "Roll back…"),
        ],
        RolloutPhase::Paused(_) => vec![
            ("resume", "Resume…"),
            ("abort", "Abort…"),
            ("rollback", "Roll back…"),
        ],
        RolloutPhase::Halted(_) | RolloutPhase::Completed(_) | RolloutPhase::Aborted(_) => {
            vec![("rollback", "Roll back…")]
        }
    }
}

/// A host's state in the rollout and its detail.
fn state_of(state: &HostState, now: Timestamp) -> (&'static str, String) {
    match state {
        HostState::Pending => ("pending", String::new()),
        HostState::InFlight {
            revision,
            assigned_at,
        } => (
            "in-flight",
            format!("revision {revision}, given {}", ago(*assigned_at, now)),
        ),
        HostState::Converged {
            at, assigned_at, ..
        } => (
            "converged",
            format!("in {}s", at.0.saturating_sub(assigned_at.0) / 1000),
        ),
        HostState::Failed { kind, detail, .. } => {
            ("failed", format!("{kind:?}: {detail}").to_lowercase_first())
        }
        HostState::TakenOut { why, .. } => ("taken-out", why.clone()),
    }
}

/// Lower-cases the first character (a `Debug` variant name leads the sentence).
trait LowerFirst {
    fn to_lowercase_first(self) -> String;
}

impl LowerFirst for String {
    fn to_lowercase_first(self) -> String {
        let mut chars = self.chars();
        match chars.next() {
            Some(first) => first.to_lowercase().chain(chars).collect(),
            None => self,
        }
    }
}
