//! Every reported transition as a log line that explains the decision.

use fleetnode_state_machine::{GapCause, OutboundEvent, Report, SwitchVerdict};
use tracing::{error, info, warn};

/// Logs one committed event: `seq`, `report` and the new `phase` as fields, and a sentence that
/// says what happened and why.
pub fn log_report(event: &OutboundEvent, phase: &'static str) {
    let seq = event.seq;
    let report = event.report.name();
    let text = describe(&event.report);
    match severity(&event.report) {
        Severity::Error => error!(seq, report, phase, "{text}"),
        Severity::Warn => warn!(seq, report, phase, "{text}"),
        Severity::Info => info!(seq, report, phase, "{text}"),
    }
}

enum Severity {
    Info,
    Warn,
    Error,
}

/// Failures a human should look at are errors; setbacks the agent handles itself are warnings.
fn severity(report: &Report) -> Severity {
    match report {
        Report::Failed { .. } => Severity::Error,
        Report::RollbackStarted { .. }
        | Report::Reverted { .. }
        | Report::RollbackRejected { .. }
        | Report::Superseded { .. }
        | Report::Gap { .. } => Severity::Warn,
        Report::SwitchEnded { verdict, .. } => match verdict {
            SwitchVerdict::Succeeded => Severity::Info,
            SwitchVerdict::SucceededWithWarnings { .. } | SwitchVerdict::Failed { .. } => {
                Severity::Warn
            }
        },
        Report::Recovered { .. }
        | Report::PolicyApplied { .. }
        | Report::DirectiveRecorded { .. }
        | Report::Paused
        | Report::Resumed
        | Report::AlreadyConverged { .. }
        | Report::WorkStarted { .. }
        | Report::Realised { .. }
        | Report::ActivationStarted { .. }
        | Report::SoakStarted { .. }
        | Report::DeferredUntilBoot { .. }
        | Report::ProbeObserved { .. }
        | Report::CommitStarted { .. }
        | Report::Converged { .. } => Severity::Info,
    }
}

fn or_nothing<T: std::fmt::Display>(value: &Option<T>) -> String {
    value
        .as_ref()
        .map_or_else(|| "nothing".to_owned(), ToString::to_string)
}

/// A sentence for a report.
pub fn describe(report: &Report) -> String {
    match report {
        Report::Recovered {
            system,
            boot_id,
            store_reset,
        } => {
            let mut text = format!(
                "agent started: the host runs {} (booted {}, profile {}), boot id {}",
                or_nothing(&system.current),
                or_nothing(&system.booted),
                or_nothing(&system.profile),
                or_nothing(boot_id)
            );
            if let Some(reset) = store_reset {
                text.push_str("; ");
                text.push_str(reset);
            }
            text
        }
        Report::PolicyApplied { .. } => {
            "the host's configuration changed and is now in force".into()
        }
        Report::DirectiveRecorded { directive } => {
            format!("directive {} recorded", directive.revision)
        }
        Report::Paused => "operator hold on: nothing new starts".into(),
        Report::Resumed => "operator hold lifted".into(),
        Report::AlreadyConverged { revision, target } => {
            format!("directive {revision}: {target} already runs and is committed; nothing to do")
        }
        Report::WorkStarted { work } => format!(
            "directive {}: putting {} in place ({}), rollback target {}",
            work.revision,
            work.target,
            work.mode,
            or_nothing(&work.previous)
        ),
        Report::Realised { target } => format!("{target} is realised"),
        Report::ActivationStarted { switch, job, .. } => format!(
            "switch {switch}: running {} {} in its own unit",
            job.closure,
            job.action.as_arg()
        ),
        Report::SwitchEnded {
            switch,
            verdict,
            system,
            ..
        } => match verdict {
            SwitchVerdict::Succeeded => format!(
                "switch {switch} succeeded; the host runs {}",
                or_nothing(&system.current)
            ),
            SwitchVerdict::SucceededWithWarnings { .. } => {
                format!("switch {switch} succeeded but some units failed; probes decide health")
            }
            SwitchVerdict::Failed { reason } => format!("switch {switch} failed: {reason}"),
        },
        Report::SoakStarted { epoch, until } => {
            format!("soaking with probe epoch {epoch} until {}", until.0)
        }
        Report::DeferredUntilBoot { reboot_requested } => {
            if *reboot_requested {
                "the boot entry points at the target; rebooting into it".into()
            } else {
                "the boot entry points at the target; waiting for the host to be rebooted".into()
            }
        }
        Report::ProbeObserved {
            probe,
            passed,
            detail,
            ..
        } => {
            let verdict = if *passed { "passes" } else { "fails" };
            format!("probe {probe} {verdict}: {detail}")
        }
        Report::CommitStarted { switch, job, .. } => format!(
            "soak passed: switch {switch} commits {} as profile and boot entry",
            job.closure
        ),
        Report::Converged { revision, target } => {
            format!("directive {revision} converged: {target} is committed and healthy")
        }
        Report::RollbackStarted { to, reason, .. } => {
            format!("rolling back to {to}: {reason}")
        }
        Report::Reverted { to, reason, .. } => format!("back on {to}: {reason}"),
        Report::Failed { reason, halted, .. } => {
            if *halted {
                format!("work halted by policy, host left as it is: {reason}")
            } else {
                format!("work failed: {reason}")
            }
        }
        Report::Superseded { revision, target } => {
            format!("directive {revision} ({target}) dropped for a newer one")
        }
        Report::RollbackRejected { revision, reason } => {
            format!("rollback directive {revision} rejected: {reason}")
        }
        Report::Gap { from_seq, cause } => match cause {
            GapCause::Compacted { dropped } => {
                format!("queue full: {dropped} probe observations from seq {from_seq} compacted")
            }
            GapCause::DeadLettered { code } => format!(
                "the control plane refused the event for good ({code}); kept as a dead letter"
            ),
        },
    }
}
