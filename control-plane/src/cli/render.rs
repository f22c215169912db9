//! Text output: aligned tables and the host detail.

use std::fmt::Write as _;

use fleetnode_state_machine::Phase;
use fleetnode_wire::{
    DesiredChanged, DesiredState, DirectiveKind, HostDetail, HostList, HostRow, StorePath,
    Timestamp,
};

use super::time::ago;

/// The host list as an aligned table.
pub fn host_table(list: &HostList, now: Timestamp) -> String {
    if list.hosts.is_empty() {
        return "no hosts; add one with `fleetnode-cp add-host <id>`\n".to_owned();
    }
    let mut rows = vec![[
        "HOST".to_owned(),
        "STATE".to_owned(),
        "CURRENT".to_owned(),
        "TARGET".to_owned(),
        "LAST SEEN".to_owned(),
        "FLAGS".to_owned(),
    ]];
    for host in &list.hosts {
        rows.push([
            host.id.to_string(),
            host.phase.to_string(),
            short(host.current.as_ref()),
            short(host.target.as_ref()),
            host.last_seen
                .map_or_else(|| "never".to_owned(), |t| ago(t, now)),
            flags(host),
        ]);
    }
    table(&rows)
}

/// One host in detail.
pub fn host_detail(detail: &HostDetail, now: Timestamp) -> String {
    let row = &detail.row;
    let host = &detail.mirror;
    let mut out = String::new();
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "{key:<12}{value}");
    };
    line("host", row.id.to_string());
    if !row.tags.is_empty() {
        line(
            "tags",
            row.tags
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    line("state", phase_text(&host.phase));
    let flags = flags(row);
    if !flags.is_empty() {
        line("flags", flags);
    }
    line(
        "last seen",
        row.last_seen
            .map_or_else(|| "never".to_owned(), |t| format!("{} ({t})", ago(t, now))),
    );
    line("current", full(host.system.current.as_ref()));
    line("booted", full(host.system.booted.as_ref()));
    line("profile", full(host.system.profile.as_ref()));
    line("desired", desired_text(&detail.desired));
    line(
        "handled",
        host.handled
            .map_or_else(|| "none".to_owned(), |r| r.to_string()),
    );
    for (i, good) in host.known_good.iter().rev().enumerate() {
        line(if i == 0 { "known good" } else { "" }, good.to_string());
    }
    for (i, (path, revision)) in host.quarantine.iter().enumerate() {
        line(
            if i == 0 { "quarantined" } else { "" },
            format!("{path} ({revision})"),
        );
    }
    if let Some(why) = &detail.divergence {
        line("DIVERGED", why.clone());
    }
    if let Some(hb) = &detail.last_heartbeat {
        line(
            "agent",
            format!(
                "{} (sent {}), events emitted through seq {}, mirrored through seq {}",
                hb.agent_version, hb.at, hb.last_seq, host.seq
            ),
        );
        line(
            "queue",
            format!(
                "{} events waiting ({} bytes), {} dead letters",
                hb.queue.depth, hb.queue.bytes, hb.queue.dead_letters
            ),
        );
        for (i, probe) in hb.probes.iter().enumerate() {
            let state = match probe.passing {
                Some(true) => "passing",
                Some(false) => "FAILING",
                None => "no result yet",
            };
            let mode = match probe.mode {
                fleetnode_wire::ProbeMode::Enforce => "enforce",
                fleetnode_wire::ProbeMode::Observe => "observe",
            };
            line(
                if i == 0 { "probes" } else { "" },
                format!("{} ({mode}): {state} {}", probe.probe, probe.detail),
            );
        }
    }
    out.push('\n');
    if detail.recent_events.is_empty() {
        out.push_str("no events reported yet\n");
        return out;
    }
    out.push_str("recent events\n");
    let mut rows = vec![["SEQ".to_owned(), "AT".to_owned(), "EVENT".to_owned()]];
    let mut tails = Vec::new();
    for event in &detail.recent_events {
        rows.push([
            event.seq.to_string(),
            event.at.to_string(),
            event.report.to_string(),
        ]);
        tails.push(event.report.output_tail().map(str::to_owned));
    }
    let rendered = table(&rows);
    for (i, text) in rendered.lines().enumerate() {
        let _ = writeln!(out, "  {text}");
        if let Some(Some(tail)) = i.checked_sub(1).and_then(|i| tails.get(i)) {
            for tail_line in tail.trim_end().lines() {
                let _ = writeln!(out, "      | {tail_line}");
            }
        }
    }
    out
}

/// The hosts a command changed.
pub fn changed(changed: &DesiredChanged, what: &str) -> String {
    if changed.hosts.is_empty() {
        return format!("nothing changed: the host is already {what}\n");
    }
    let mut out = String::new();
    for host in &changed.hosts {
        let _ = writeln!(
            out,
            "{}: {what}, desired revision {}",
            host.host, host.revision
        );
    }
    out
}

pub(super) fn table<const N: usize>(rows: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i + 1 == N {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<width$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn flags(row: &HostRow) -> String {
    let mut flags = Vec::new();
    if row.offline {
        flags.push("offline");
    }
    if row.diverged {
        flags.push("diverged");
    }
    if row.paused {
        flags.push("paused");
    }
    flags.join(",")
}

/// A store path shortened for a table: the first 7 hash characters and the name.
pub(super) fn short(path: Option<&StorePath>) -> String {
    path.map_or_else(|| "-".to_owned(), |path| format!("{path:#}"))
}

fn full(path: Option<&StorePath>) -> String {
    path.map_or_else(|| "-".to_owned(), ToString::to_string)
}

fn desired_text(desired: &DesiredState) -> String {
    let hold = if desired.paused { " [paused]" } else { "" };
    let Some(directive) = &desired.directive else {
        return format!("{}: no directive yet{hold}", desired.revision);
    };
    let what = match &directive.kind {
        DirectiveKind::Activate {
            target,
            mode,
            health,
        } => {
            let mut parts = Vec::new();
            if let Some(mode) = mode {
                parts.push(format!("mode {mode}"));
            }
            if let Some(soak) = health.soak_ms {
                parts.push(format!("soak {soak}"));
            }
            if let Some(sustained) = health.sustained_failure_ms {
                parts.push(format!("sustained failure {sustained}"));
            }
            if let Some(policy) = health.on_failure {
                parts.push(format!("on failure {}", policy_name(policy)));
            }
            let extra = if parts.is_empty() {
                String::new()
            } else {
                format!(" ({})", parts.join(", "))
            };
            format!("activate {target}{extra}")
        }
        DirectiveKind::Rollback { to: Some(to) } => format!("roll back to {to}"),
        DirectiveKind::Rollback { to: None } => "undo the latest deployment".to_owned(),
    };
    format!("{}: {what}{hold}", desired.revision)
}

fn policy_name(policy: fleetnode_wire::FailurePolicy) -> &'static str {
    match policy {
        fleetnode_wire::FailurePolicy::Rollback => "rollback",
        fleetnode_wire::FailurePolicy::Halt => "halt",
    }
}

fn phase_text(phase: &Phase) -> String {
    match phase {
        Phase::Idle => "idle (no directive carried out yet)".to_owned(),
        Phase::Realising(p) => format!("realising {} ({})", p.work.target, p.work.revision),
        Phase::Activating(p) => format!(
            "activating {} ({}, switch {})",
            p.work.target, p.work.revision, p.switch
        ),
        Phase::Soaking(p) => format!(
            "soaking {} ({}, until {})",
            p.work.target, p.work.revision, p.until
        ),
        Phase::Committing(p) => format!("committing {} ({})", p.work.target, p.work.revision),
        Phase::Deferred(p) => format!(
            "deferred until boot into {} ({})",
            p.work.target, p.work.revision
        ),
        Phase::RollingBack(p) => format!("rolling back to {}: {}", p.to, p.reason),
        Phase::Converged(p) => format!("converged on {} ({})", p.target, p.revision),
        Phase::Reverted(p) => format!("reverted to {}: {}", p.to, p.reason),
        Phase::Failed(p) => {
            let halted = if p.halted { " (halted by policy)" } else { "" };
            format!("failed{halted}: {}", p.reason)
        }
    }
}
