//! What the event loop records of each transition besides the store: a log line per reported
//! fact that says what happened and why (the report's own sentence), and the metrics.

use fleetnode_state_machine::{
    Concern, OutboundEvent, Phase, Report, SwitchVerdict, TransitionError,
};
use fleetnode_wire::AgentStatus;
use tracing::{debug, error, info, warn};

use crate::metrics::Metrics;

/// Logs one committed event: `seq`, `report` and the new `phase` as fields, and the report's
/// sentence as the message.
pub fn log_report(event: &OutboundEvent, phase: &'static str) {
    let seq = event.seq;
    let report = event.report.name();
    let text = &event.report;
    // Failures are for a person to look at; setbacks the agent handles itself are warnings.
    match event.report.concern() {
        Concern::Failure => error!(seq, report, phase, "{text}"),
        Concern::Setback => warn!(seq, report, phase, "{text}"),
        Concern::Routine => info!(seq, report, phase, "{text}"),
    }
}

/// Logs and counts the inputs the state machine refused, as loudly as whose fault they are. The
/// control plane repeats a refused answer with every long-poll, so a peer's fault is warned about
/// once until it changes (each refusal is still counted).
#[derive(Debug, Default)]
pub struct Refusals {
    /// The peer's fault warned about last.
    last_peer: Option<String>,
}

impl Refusals {
    /// Records one refusal.
    pub fn record(&mut self, metrics: &Metrics, error: &TransitionError) {
        let kind = error.code();
        metrics
            .refused_inputs
            .get_or_create(&[("kind", kind.to_owned())])
            .inc();
        match error {
            TransitionError::Stale(_) => debug!(kind, error = %error, "stale input ignored"),
            TransitionError::Peer(_) => {
                let text = error.to_string();
                if self.last_peer.as_deref() == Some(text.as_str()) {
                    debug!(kind, error = %error, "the control plane repeats what was refused");
                } else {
                    warn!(kind, error = %error, "the control plane sent something impossible; ignored");
                    self.last_peer = Some(text);
                }
            }
            TransitionError::Bug(_) => {
                error!(kind, error = %error, "input refused: the agent contradicts itself")
            }
        }
    }
}

/// Counts transitions, switch outcomes and rollbacks of one step that began in `before`.
pub fn count(metrics: &Metrics, before: &Phase, events: &[OutboundEvent]) {
    let mut rollback_started = false;
    for event in events {
        let name = event.report.name().to_owned();
        metrics.transitions.get_or_create(&[("report", name)]).inc();
        if let Report::SwitchEnded {
            purpose, verdict, ..
        } = &event.report
        {
            let outcome = match verdict {
                SwitchVerdict::Succeeded => "succeeded",
                SwitchVerdict::SucceededWithWarnings { .. } => "succeeded-with-warnings",
                SwitchVerdict::Failed { .. } => "failed",
            };
            metrics
                .switches
                .get_or_create(&[
                    ("purpose", purpose.as_str().to_owned()),
                    ("outcome", outcome.to_owned()),
                ])
                .inc();
        }
        // A revert that ends a rollback counted when the rollback started; one without (found
        // done after a reboot) counts when it is reported.
        let rollback = if let Report::RollbackStarted { reason, .. } = &event.report {
            rollback_started = true;
            Some(reason)
        } else if let Report::Reverted { reason, .. } = &event.report
            && !rollback_started
            && !matches!(before, Phase::RollingBack(_))
        {
            Some(reason)
        } else {
            None
        };
        if let Some(reason) = rollback {
            metrics
                .rollbacks
                .get_or_create(&[("reason", reason.code().to_owned())])
                .inc();
        }
    }
}

/// Sets the gauges that mirror a status: phase, hold, queue and probes.
pub fn export(metrics: &Metrics, status: &AgentStatus) {
    metrics.set_phase(status.phase);
    metrics.paused.set(i64::from(status.paused));
    metrics.export_queue(&status.queue, status.at);
    for probe in &status.probes {
        let value = match probe.passing {
            Some(true) => 1,
            Some(false) => 0,
            None => -1,
        };
        metrics
            .probe_status
            .get_or_create(&[("probe", probe.probe.to_string())])
            .set(value);
    }
}

#[cfg(test)]
mod tests {
    use fleetnode_state_machine::{PeerFault, Revision, StaleInput, SwitchId};

    use super::*;

    #[test]
    fn a_repeated_refusal_of_the_control_plane_is_warned_about_once_and_counted_each_time() {
        let (logs, _guard) = crate::testlog::Logs::capture();
        let metrics = Metrics::new();
        let mut refusals = Refusals::default();
        let stale = |got| {
            TransitionError::from(PeerFault::StaleDirective {
                got: Revision(got),
                recorded: Revision(5),
            })
        };
        for _ in 0..3 {
            refusals.record(&metrics, &stale(3));
        }
        refusals.record(&metrics, &stale(4));
        refusals.record(
            &metrics,
            &StaleInput::UnknownSwitch {
                got: SwitchId(1),
                running: None,
            }
            .into(),
        );
        let warned = logs.lines_with("the control plane sent something impossible");
        assert_eq!(warned.len(), 2, "{}", logs.text());
        assert!(warned[0].contains("directive r3"), "{}", warned[0]);
        assert!(warned[1].contains("directive r4"), "{}", warned[1]);
        let text = metrics.render();
        assert!(
            text.contains("fleetnode_agent_refused_inputs_total{kind=\"stale-directive\"} 4"),
            "{text}"
        );
    }
}
