//! Rollouts for people: the status table with its progress bar, the rollout list, and the
//! one-line changes `rollout status --watch` prints when its output is not a terminal.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use fleetnode_wire::{
    HostCounts, HostId, HostProgress, HostRollback, HostRow, HostState, RollbackCause, Rollout,
    RolloutList, RolloutPhase, RolloutStatus, Timestamp, WaveSpec,
};

use super::render::{short, table};
use super::time::{ago, ahead};

/// Width of the progress bar, in characters.
const BAR_WIDTH: usize = 40;

/// A rollout: what it is doing, the budget, a progress bar, and one line per host by wave.
pub fn status(status: &RolloutStatus, now: Timestamp) -> String {
    let rollout = &status.rollout;
    let rows: BTreeMap<&HostId, &HostRow> = status.hosts.iter().map(|r| (&r.id, r)).collect();
    let counts = rollout.counts();
    let mut out = String::new();
    let _ = writeln!(out, "rollout {}: {}", rollout.id, phase_line(rollout, now));
    let waves: Vec<String> = rollout.waves.iter().map(|w| w.spec.to_string()).collect();
    let _ = writeln!(
        out,
        "  {} hosts in waves {}; bake {}; offline after {} without a heartbeat",
        rollout.hosts.len(),
        waves.join(", "),
        rollout.bake_ms,
        rollout.offline_deadline_ms
    );
    let _ = writeln!(
        out,
        "  failures {} of {} allowed; on halt: {}; started {}",
        counts.failed,
        rollout.allowed_failures,
        rollout.on_halt,
        ago(rollout.created_at, now)
    );
    if let Some(order) = &rollout.rollback {
        let by = match order.by {
            RollbackCause::Halt => "by the halt",
            RollbackCause::Operator => "by the operator",
        };
        let _ = writeln!(
            out,
            "  hosts ordered back {by} {}: {} back, {} on the way",
            ago(order.at, now),
            counts.rolled_back,
            counts.rolling_back
        );
    }
    let _ = writeln!(out, "  {}  {}", bar(&counts), summary(&counts));
    out.push('\n');
    let mut lines = vec![[
        "WAVE".to_owned(),
        "HOST".to_owned(),
        "ROLLOUT".to_owned(),
        "NOW".to_owned(),
        "CLOSURE".to_owned(),
        "SINCE".to_owned(),
        "NOTE".to_owned(),
    ]];
    for (index, wave) in rollout.waves.iter().enumerate() {
        let label = match &wave.spec {
            WaveSpec::Count { count: 1 } => format!("{} (1 host)", index + 1),
            WaveSpec::Count { count } => format!("{} ({count} hosts)", index + 1),
            WaveSpec::Percent { .. } | WaveSpec::Tag { .. } => {
                format!("{} ({})", index + 1, wave.spec)
            }
        };
        if wave.hosts.is_empty() {
            let mut line: [String; 7] = Default::default();
            line[0] = label.clone();
            line[1] = "(no host left)".to_owned();
            lines.push(line);
        }
        for host in &wave.hosts {
            let Some(progress) = rollout.hosts.get(host) else {
                continue;
            };
            lines.push([
                label.clone(),
                host.to_string(),
                state_text(progress),
                live_text(rows.get(host).copied()),
                short(rollout.release.closure(host)),
                since(progress, now),
                note(progress, now),
            ]);
        }
    }
    for line in table(&lines).lines() {
        let _ = writeln!(out, "  {line}");
    }
    out
}

/// The rollout list as a table.
pub fn list(list: &RolloutList, now: Timestamp) -> String {
    if list.rollouts.is_empty() {
        return "no rollouts yet; start one with `fleetnode-cp rollout start MANIFEST`\n"
            .to_owned();
    }
    let mut rows = vec![[
        "ID".to_owned(),
        "PHASE".to_owned(),
        "WAVE".to_owned(),
        "PROGRESS".to_owned(),
        "FAILED".to_owned(),
        "STARTED".to_owned(),
    ]];
    for summary in &list.rollouts {
        let counts = &summary.counts;
        rows.push([
            summary.id.to_string(),
            summary.phase.clone(),
            format!("{}/{}", summary.wave + 1, summary.waves),
            format!("{}/{} converged", counts.converged, total(counts)),
            format!("{} of {} allowed", counts.failed, summary.allowed_failures),
            ago(summary.created_at, now),
        ]);
    }
    table(&rows)
}

/// What changed between two looks at a rollout, one line each, for a log or a pipe.
pub fn changes(
    before: Option<&RolloutStatus>,
    after: &RolloutStatus,
    now: Timestamp,
) -> Vec<String> {
    let stamp = now.to_string();
    let rollout = &after.rollout;
    let Some(before) = before else {
        return status(after, now).lines().map(str::to_owned).collect();
    };
    let mut lines = Vec::new();
    if before.rollout.phase != rollout.phase || before.rollout.rollback != rollout.rollback {
        lines.push(format!(
            "[{stamp}] rollout {}: {}",
            rollout.id,
            phase_line(rollout, now)
        ));
    }
    let old_rows: BTreeMap<&HostId, &HostRow> = before.hosts.iter().map(|r| (&r.id, r)).collect();
    for row in &after.hosts {
        let (Some(progress), old) = (
            rollout.hosts.get(&row.id),
            before.rollout.hosts.get(&row.id),
        ) else {
            continue;
        };
        let moved = old != Some(progress);
        let live = old_rows
            .get(&row.id)
            .is_none_or(|r| r.phase != row.phase || r.offline != row.offline);
        if moved || live {
            let note = note(progress, now);
            let note = if note.is_empty() {
                note
            } else {
                format!("; {note}")
            };
            lines.push(format!(
                "[{stamp}] {} (wave {}): {}, now {}{note}",
                row.id,
                progress.wave + 1,
                state_text(progress),
                live_text(Some(row))
            ));
        }
    }
    lines
}

/// One line saying where the rollout is.
pub fn phase_line(rollout: &Rollout, now: Timestamp) -> String {
    let of = |wave: usize| format!("wave {} of {}", wave + 1, rollout.waves.len());
    match &rollout.phase {
        RolloutPhase::Running(p) => match p.baking_until {
            None => match window_wait(rollout, p.wave) {
                Some((hosts, opens)) => format!(
                    "running, {} rolling out; {hosts} waiting for a maintenance window, the next opens {opens} ({})",
                    of(p.wave),
                    ahead(opens, now)
                ),
                None => format!("running, {} rolling out", of(p.wave)),
            },
            Some(until) => format!(
                "running, {} converged; baking until {until} ({}s left)",
                of(p.wave),
                until.since(now).0.div_ceil(1000)
            ),
        },
        RolloutPhase::Paused(p) => format!("paused in {} since {}", of(p.wave), ago(p.since, now)),
        RolloutPhase::Halted(h) => format!(
            "HALTED in {}: {} (failures {} > {} allowed); no further host gets the release",
            of(h.wave),
            h.cause,
            h.failures,
            rollout.allowed_failures
        ),
        RolloutPhase::Completed(e) => format!("completed {}", ago(e.at, now)),
        RolloutPhase::Aborted(e) => format!("aborted in {} {}", of(e.wave), ago(e.at, now)),
    }
}

fn bar(counts: &HostCounts) -> String {
    let hosts = total(counts).max(1);
    let mut cells = String::with_capacity(BAR_WIDTH + 2);
    cells.push('[');
    let parts = [
        (counts.converged, '#'),
        (counts.failed, 'x'),
        (counts.in_flight, '>'),
        (counts.taken_out, '-'),
    ];
    let mut used = 0;
    for (count, mark) in parts {
        let width =
            usize::try_from(count).unwrap_or(0) * BAR_WIDTH / usize::try_from(hosts).unwrap_or(1);
        let width = if count > 0 { width.max(1) } else { 0 }.min(BAR_WIDTH - used);
        cells.extend(std::iter::repeat_n(mark, width));
        used += width;
    }
    cells.extend(std::iter::repeat_n('.', BAR_WIDTH - used));
    cells.push(']');
    cells
}

fn summary(counts: &HostCounts) -> String {
    let mut parts = vec![format!("{}/{} converged", counts.converged, total(counts))];
    for (count, what) in [
        (counts.in_flight, "in flight"),
        (counts.failed, "failed"),
        (counts.pending, "pending"),
        (counts.taken_out, "taken out"),
    ] {
        if count > 0 {
            parts.push(format!("{count} {what}"));
        }
    }
    parts.join(", ")
}

fn total(counts: &HostCounts) -> u64 {
    counts.pending + counts.in_flight + counts.converged + counts.failed + counts.taken_out
}

/// How many hosts of `wave` wait for a maintenance window, and the earliest opening.
fn window_wait(rollout: &Rollout, wave: usize) -> Option<(usize, Timestamp)> {
    let opens: Vec<Timestamp> = rollout
        .hosts
        .values()
        .filter(|p| p.wave == wave && p.state == HostState::Pending)
        .filter_map(|p| p.window_opens_at)
        .collect();
    let first = opens.iter().min()?;
    Some((opens.len(), *first))
}

fn state_text(progress: &HostProgress) -> String {
    let base = match (&progress.state, progress.window_opens_at) {
        (HostState::Failed { kind, .. }, _) => format!("FAILED ({})", kind.name()),
        (HostState::Pending, Some(_)) => "waiting for window".to_owned(),
        (other, _) => other.name().to_owned(),
    };
    match &progress.rollback {
        Some(HostRollback::Wanted { .. } | HostRollback::Sent { .. }) => {
            format!("{base}, rolling back")
        }
        Some(HostRollback::Done { .. }) => format!("{base}, rolled back"),
        Some(HostRollback::Failed { .. }) => format!("{base}, ROLLBACK FAILED"),
        Some(HostRollback::Skipped { .. }) | None => base,
    }
}

fn live_text(row: Option<&HostRow>) -> String {
    match row {
        Some(row) if row.offline => format!("{} (offline)", row.phase.name()),
        Some(row) => row.phase.name().to_owned(),
        None => "-".to_owned(),
    }
}

fn since(progress: &HostProgress, now: Timestamp) -> String {
    let at = match &progress.state {
        HostState::InFlight { assigned_at, .. } => Some(*assigned_at),
        HostState::Converged { at, .. }
        | HostState::Failed { at, .. }
        | HostState::TakenOut { at, .. } => Some(*at),
        HostState::Pending => None,
    };
    at.map_or_else(|| "-".to_owned(), |at| ago(at, now))
}

fn note(progress: &HostProgress, now: Timestamp) -> String {
    let state = match &progress.state {
        HostState::Failed { detail, .. } => detail.clone(),
        HostState::TakenOut { why, .. } => why.clone(),
        HostState::Pending => progress.window_opens_at.map_or_else(String::new, |at| {
            format!("its window opens {at} ({})", ahead(at, now))
        }),
        HostState::InFlight { .. } | HostState::Converged { .. } => String::new(),
    };
    let back = match &progress.rollback {
        Some(HostRollback::Skipped { why } | HostRollback::Failed { why, .. }) => why.clone(),
        Some(HostRollback::Wanted { .. } | HostRollback::Sent { .. })
        | Some(HostRollback::Done { .. })
        | None => String::new(),
    };
    match (state.is_empty(), back.is_empty()) {
        (true, _) => back,
        (false, true) => state,
        (false, false) => format!("{state}; rollback: {back}"),
    }
}
