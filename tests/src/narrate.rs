//! Human-readable lines for the events an agent reports, as the demo and failure reports show
//! them: the agent's decisions in its own words (the reasons are the state machine's own
//! `Display`).

use fleetnode_state_machine::{
    Directive, DirectiveKind, OutboundEvent, Report, StorePath, SwitchJob, SwitchVerdict,
    SystemView,
};

/// One line describing `event`: its seq, its type and what it says.
pub fn describe(event: &OutboundEvent) -> String {
    format!(
        "#{:<3} {:<19} {}",
        event.seq,
        event.report.name(),
        details(&event.report)
    )
}

/// A store path shortened to its hash prefix and name, as `fleetnode-cp hosts` prints it.
pub fn short(path: &StorePath) -> String {
    let base = path.as_str().trim_start_matches("/nix/store/");
    match base.split_once('-') {
        Some((hash, name)) => format!("{}…-{name}", &hash[..hash.len().min(7)]),
        None => base.to_owned(),
    }
}

/// [`short`] for an optional path.
pub fn short_or_none(path: Option<&StorePath>) -> String {
    path.map_or_else(|| "nothing".to_owned(), short)
}

fn details(report: &Report) -> String {
    match report {
        Report::Recovered { system, .. } => format!("agent started; {}", view(system)),
        Report::PolicyApplied { policy } => format!(
            "local policy: {} by default, soak {}, sustained failure {}",
            policy.default_mode, policy.health.soak_ms, policy.health.sustained_failure_ms
        ),
        Report::DirectiveRecorded { directive } => directive_text(directive),
        Report::Paused => "on hold: directives are recorded, nothing new starts".to_owned(),
        Report::Resumed => "hold lifted".to_owned(),
        Report::AlreadyConverged { revision, target } => {
            format!("{revision}: {} already runs, committed", short(target))
        }
        Report::WorkStarted { work } => format!(
            "{}: put {} in place ({}, soak {}); rollback target {}",
            work.revision,
            short(&work.target),
            work.mode,
            work.health.soak_ms,
            short_or_none(work.previous.as_ref())
        ),
        Report::Realised { target } => format!("{} is in the store", short(target)),
        Report::ActivationStarted { switch, job, .. } => {
            format!("switch {switch}: {}", job_text(job))
        }
        Report::SwitchEnded {
            switch,
            system,
            verdict,
        } => format!(
            "switch {switch}: {}; {}",
            verdict_text(verdict),
            view(system)
        ),
        Report::SoakStarted { epoch, .. } => {
            format!("the target runs; watching the probes (epoch {epoch})")
        }
        Report::DeferredUntilBoot { reboot_requested } => {
            format!("waiting for the boot into the target (reboot requested: {reboot_requested})")
        }
        Report::ProbeObserved {
            probe,
            passed,
            detail,
            ..
        } => format!(
            "probe {probe} {}: {detail}",
            if *passed { "passes" } else { "FAILS" }
        ),
        Report::CommitStarted { switch, job, .. } => {
            format!("soak passed; switch {switch}: {}", job_text(job))
        }
        Report::Converged { revision, target } => {
            format!("{revision}: {} runs, committed and healthy", short(target))
        }
        Report::RollbackStarted {
            switch,
            job,
            reason,
            ..
        } => format!("because {reason}; switch {switch}: {}", job_text(job)),
        Report::Reverted { to, reason, .. } => {
            format!("{} runs again, because {reason}", short(to))
        }
        Report::Failed { reason, .. } => format!("needs a human: {reason}"),
        Report::Superseded { revision, target } => {
            format!(
                "{revision} ({}) dropped for a newer directive",
                short(target)
            )
        }
        Report::RollbackRejected { revision, reason } => format!("{revision}: {reason}"),
        Report::Gap { from_seq, cause } => format!("events from #{from_seq} missing: {cause:?}"),
    }
}

fn directive_text(directive: &Directive) -> String {
    match &directive.kind {
        DirectiveKind::Activate { target, mode, .. } => format!(
            "{}: activate {}{}",
            directive.revision,
            short(target),
            mode.map(|m| format!(" ({m})")).unwrap_or_default()
        ),
        DirectiveKind::Rollback { to } => format!(
            "{}: roll back{}",
            directive.revision,
            to.as_ref()
                .map(|to| format!(" to {}", short(to)))
                .unwrap_or_else(|| " the latest deployment".to_owned())
        ),
    }
}

fn job_text(job: &SwitchJob) -> String {
    format!(
        "{}{}/bin/switch-to-configuration {}",
        if job.set_profile {
            "nix-env --set, then "
        } else {
            ""
        },
        short(&job.closure),
        job.action.as_arg()
    )
}

fn verdict_text(verdict: &SwitchVerdict) -> String {
    match verdict {
        SwitchVerdict::Succeeded => "succeeded".to_owned(),
        SwitchVerdict::SucceededWithWarnings { .. } => {
            "switched, but some units failed to start".to_owned()
        }
        SwitchVerdict::Failed { reason } => format!("failed: {reason}"),
    }
}

fn view(system: &SystemView) -> String {
    format!(
        "current {}, boot entry {}",
        short_or_none(system.current.as_ref()),
        short_or_none(system.profile.as_ref())
    )
}
