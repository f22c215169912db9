//! Reports as sentences: what happened and why, for the agent's log and the operator CLI.

use std::fmt;

use super::{GapCause, Report, ResyncCause, SwitchVerdict};
use crate::types::StorePath;

/// A path in the form the report is written in (whole, or short with `{:#}`).
struct P<'a>(&'a StorePath, bool);

impl fmt::Display for P<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 {
            write!(f, "{:#}", self.0)
        } else {
            write!(f, "{}", self.0)
        }
    }
}

/// `path`, or "nothing".
struct Or<'a>(&'a Option<StorePath>, bool);

impl fmt::Display for Or<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, "{}", P(path, self.1)),
            None => f.write_str("nothing"),
        }
    }
}

impl fmt::Display for Report {
    /// The report as a sentence; with `{:#}`, store paths are shortened (see [`StorePath`]).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let short = f.alternate();
        let p = |path| P(path, short);
        let or = |path| Or(path, short);
        match self {
            Self::Recovered {
                system,
                boot_id,
                store_reset,
            } => {
                write!(
                    f,
                    "agent started: the host runs {} (booted {}, profile {}), boot id {}",
                    or(&system.current),
                    or(&system.booted),
                    or(&system.profile),
                    boot_id.as_deref().unwrap_or("unknown")
                )?;
                match store_reset {
                    Some(reset) => write!(f, "; {reset}"),
                    None => Ok(()),
                }
            }
            Self::PolicyApplied { .. } => {
                f.write_str("the host's configuration changed and is now in force")
            }
            Self::DirectiveRecorded { directive } => {
                write!(f, "directive {} recorded", directive.revision)
            }
            Self::Paused => f.write_str("operator hold on: nothing new starts"),
            Self::Resumed => f.write_str("operator hold lifted"),
            Self::AlreadyConverged { revision, target } => write!(
                f,
                "directive {revision}: {} already runs and is committed; nothing to do",
                p(target)
            ),
            Self::WorkStarted { work } => write!(
                f,
                "directive {}: putting {} in place ({}), rollback target {}",
                work.revision,
                p(&work.target),
                work.mode,
                or(&work.previous)
            ),
            Self::Realised { target } => write!(f, "{} is realised", p(target)),
            Self::ActivationStarted { switch, job, .. } => write!(
                f,
                "switch {switch}: running {} {} in its own unit",
                p(&job.closure),
                job.action.as_arg()
            ),
            Self::SwitchEnded {
                switch,
                purpose,
                verdict,
                system,
            } => {
                let purpose = purpose.as_str();
                match verdict {
                    SwitchVerdict::Succeeded => write!(
                        f,
                        "{purpose} switch {switch} succeeded; the host runs {}",
                        or(&system.current)
                    ),
                    SwitchVerdict::SucceededWithWarnings { .. } => write!(
                        f,
                        "{purpose} switch {switch} succeeded but some units failed; probes decide health"
                    ),
                    SwitchVerdict::Failed { reason } => {
                        write!(f, "{purpose} switch {switch} failed: {reason}")
                    }
                }
            }
            Self::SoakStarted { epoch, until } => {
                write!(f, "soaking with probe epoch {epoch} until {until}")
            }
            Self::DeferredUntilBoot { reboot_requested } => f.write_str(if *reboot_requested {
                "the boot entry points at the target; rebooting into it"
            } else {
                "the boot entry points at the target; waiting for the host to be rebooted"
            }),
            Self::ProbeObserved {
                probe,
                passed,
                detail,
                ..
            } => {
                let verdict = if *passed { "passes" } else { "fails" };
                write!(f, "probe {probe} {verdict}: {detail}")
            }
            Self::CommitStarted { switch, job, .. } => write!(
                f,
                "soak passed: switch {switch} commits {} as profile and boot entry",
                p(&job.closure)
            ),
            Self::Converged { revision, target } => write!(
                f,
                "directive {revision} converged: {} is committed and healthy",
                p(target)
            ),
            Self::RollbackStarted { to, reason, .. } => {
                write!(f, "rolling back to {}: {reason}", p(to))
            }
            Self::Reverted { to, reason, .. } => write!(f, "back on {}: {reason}", p(to)),
            Self::Failed { reason, halted, .. } => {
                if *halted {
                    write!(f, "work halted by policy, host left as it is: {reason}")
                } else {
                    write!(f, "work failed: {reason}")
                }
            }
            Self::Superseded { revision, target } => {
                write!(
                    f,
                    "directive {revision} ({}) dropped for a newer one",
                    p(target)
                )
            }
            Self::RollbackRejected { revision, reason } => {
                write!(f, "rollback directive {revision} rejected: {reason}")
            }
            Self::Snapshot { host, cause, .. } => {
                let why = match cause {
                    ResyncCause::ControlPlaneLog { log_end } => format!(
                        "the control plane's log of this stream ends at seq {log_end}, before events the agent no longer holds"
                    ),
                    ResyncCause::AckBeyondAgent { acked } => format!(
                        "the control plane acknowledged seq {acked}, beyond every event the agent has"
                    ),
                    ResyncCause::DeadLettered { seq } => {
                        format!("the control plane refused the event at seq {seq} for good")
                    }
                };
                write!(
                    f,
                    "snapshot of the host ({}, running {}) for the control plane to restart its mirror from: {why}",
                    host.phase,
                    or(&host.system.current)
                )
            }
            Self::Gap { from_seq, cause } => match cause {
                GapCause::Compacted { dropped } => write!(
                    f,
                    "queue full: {dropped} probe observations from seq {from_seq} compacted"
                ),
                GapCause::DeadLettered { code } => write!(
                    f,
                    "the control plane refused the event at seq {from_seq} for good ({code}); the agent keeps it as a dead letter"
                ),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::SwitchPurpose;
    use crate::reason::Reason;
    use crate::state::SystemView;
    use crate::types::SwitchId;

    #[test]
    fn a_failed_switch_says_which_switch_why_and_what_it_was_for() {
        let report = Report::SwitchEnded {
            switch: SwitchId(7),
            purpose: SwitchPurpose::Rollback,
            system: SystemView::default(),
            verdict: SwitchVerdict::Failed {
                reason: Reason::SwitchFailed {
                    exit_code: Some(1),
                    output_tail: "boom".into(),
                },
            },
        };
        let text = report.to_string();
        assert!(text.starts_with("rollback switch 7 failed: "), "{text}");
        assert!(text.contains("code 1"), "{text}");
        assert_eq!(report.output_tail(), Some("boom"));
    }

    #[test]
    fn the_alternate_form_shortens_store_paths() {
        let target = crate::StorePath::parse(
            "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web-01",
        )
        .unwrap();
        let report = Report::Realised { target };
        assert_eq!(
            report.to_string(),
            "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web-01 is realised"
        );
        assert_eq!(
            format!("{report:#}"),
            "0123456…-nixos-system-web-01 is realised"
        );
    }

    #[test]
    fn missing_systems_read_as_nothing() {
        let report = Report::Recovered {
            system: SystemView::default(),
            boot_id: None,
            store_reset: Some("the store was unreadable".into()),
        };
        assert_eq!(
            report.to_string(),
            "agent started: the host runs nothing (booted nothing, profile nothing), boot id unknown; the store was unreadable"
        );
    }
}
