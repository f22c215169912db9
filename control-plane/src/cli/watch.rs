//! `rollout status --watch`: the rollout's table redrawn in place about once a second on a
//! terminal; elsewhere (a pipe, a CI log) one plain line per change; with `--json` one compact
//! JSON document per change. It rides through a control plane restart, and stops once nothing
//! the rollout started still moves: exit 0 when it completed with every host converged,
//! non-zero otherwise, so a CI job can gate on it.

use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

use fleetnode_wire::{
    HostRollback, RollbackCause, Rollout, RolloutId, RolloutPhase, RolloutStatus,
};
use reqwest::Method;

use super::client::{CliError, Client};
use super::rollout::path;
use super::rollout_view;
use crate::clock::{Clock, SystemClock};

/// How often the rollout is read again.
const REFRESH: Duration = Duration::from_secs(1);
/// Width assumed when the terminal's cannot be read.
const FALLBACK_COLUMNS: usize = 100;

/// Follows a rollout until it is settled.
pub async fn follow(client: &Client, id: RolloutId, json: bool) -> Result<(), CliError> {
    let terminal = !json && std::io::stdout().is_terminal();
    let mut last: Option<RolloutStatus> = None;
    let mut drawn = 0usize;
    let mut outage = false;
    loop {
        let answer: Result<RolloutStatus, CliError> =
            client.call(Method::GET, &path(id, ""), None).await;
        match answer {
            Ok(status) => {
                if outage {
                    eprintln!("fleetnode-cp: the control plane answers again");
                    outage = false;
                }
                let now = SystemClock.now();
                if json {
                    if last.as_ref() != Some(&status) {
                        println!("{}", serde_json::to_string(&status).unwrap_or_default());
                    }
                } else if terminal {
                    drawn = redraw(drawn, &rollout_view::status(&status, now));
                } else {
                    for line in rollout_view::changes(last.as_ref(), &status, now) {
                        println!("{line}");
                    }
                }
                if status.rollout.is_settled() {
                    return outcome(&status.rollout);
                }
                last = Some(status);
            }
            Err(error) if passing(&error) => {
                if !outage {
                    eprintln!("fleetnode-cp: {error}; still watching, trying again every second");
                    outage = true;
                }
            }
            Err(error) => return Err(error),
        }
        tokio::time::sleep(REFRESH).await;
    }
}

/// A failure that goes away by itself: the server is restarting or briefly unreachable.
fn passing(error: &CliError) -> bool {
    match error {
        CliError::Unreachable { .. } => true,
        CliError::Api { status, .. } => *status == 503,
        CliError::Usage(_)
        | CliError::AdminTokenRefused { .. }
        | CliError::BadAnswer { .. }
        | CliError::Ended(_) => false,
    }
}

/// Replaces the previous drawing (`previous` lines) with `text`, every line cut to the
/// terminal's width so none wraps and the next redraw knows how far up to go.
fn redraw(previous: usize, text: &str) -> usize {
    let columns = rustix::termios::tcgetwinsize(std::io::stdout())
        .ok()
        .map(|size| usize::from(size.ws_col))
        .filter(|columns| *columns > 0)
        .unwrap_or(FALLBACK_COLUMNS);
    let mut out = std::io::stdout().lock();
    let mut frame = String::new();
    if previous > 0 {
        // Up to the first line of the previous drawing, then clear to the end of the screen.
        frame.push_str(&format!("\x1b[{previous}A\r\x1b[J"));
    }
    let mut lines = 0;
    for line in text.lines() {
        let cut: String = line.chars().take(columns.saturating_sub(1)).collect();
        frame.push_str(&cut);
        frame.push('\n');
        lines += 1;
    }
    let _ = out.write_all(frame.as_bytes());
    let _ = out.flush();
    lines
}

/// How the watch ends: success only for a rollout that completed with every one of its hosts
/// converged and was not rolled back.
fn outcome(rollout: &Rollout) -> Result<(), CliError> {
    let id = rollout.id;
    let counts = rollout.counts();
    let back = match &rollout.rollback {
        None => String::new(),
        Some(order) => {
            let by = match order.by {
                RollbackCause::Halt => "the halt",
                RollbackCause::Operator => "the operator",
            };
            let failed = rollout
                .hosts
                .values()
                .filter(|p| matches!(p.rollback, Some(HostRollback::Failed { .. })))
                .count();
            format!(
                "; its hosts were ordered back by {by}: {} back, {failed} failed to go back",
                counts.rolled_back
            )
        }
    };
    let all_converged = usize::try_from(counts.converged).is_ok_and(|n| n == rollout.hosts.len());
    match &rollout.phase {
        RolloutPhase::Completed(_) if rollout.rollback.is_none() && all_converged => Ok(()),
        RolloutPhase::Completed(_) if rollout.rollback.is_none() => Err(CliError::Ended(format!(
            "rollout {id} completed, but only {} of its {} hosts converged: {} failed within the budget, {} taken out",
            counts.converged,
            rollout.hosts.len(),
            counts.failed,
            counts.taken_out
        ))),
        RolloutPhase::Completed(_) => Err(CliError::Ended(format!("rollout {id} completed{back}"))),
        RolloutPhase::Halted(h) => Err(CliError::Ended(format!(
            "rollout {id} halted in wave {}: {}{back}",
            h.wave + 1,
            h.cause
        ))),
        RolloutPhase::Aborted(e) => Err(CliError::Ended(format!(
            "rollout {id} was aborted in wave {}{back}",
            e.wave + 1
        ))),
        RolloutPhase::Running(_) | RolloutPhase::Paused(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use fleetnode_wire::{
        Ended, FailureBudget, FailureKind, HostId, HostState, Millis, OnHalt, ReleaseManifest,
        Revision, StartRollout, StorePath, Timestamp, WaveSpec,
    };

    use super::*;
    use crate::rollout::{Registration, plan};

    /// A completed rollout of three hosts, each in the state given.
    fn completed(states: [HostState; 3]) -> Rollout {
        let ids: Vec<HostId> = (1..=3)
            .map(|n| HostId::parse(&format!("web-0{n}")).unwrap())
            .collect();
        let release = ReleaseManifest {
            hosts: ids
                .iter()
                .map(|id| {
                    let path = format!("/nix/store/{}-nixos-system-{id}", "a".repeat(32));
                    (id.clone(), StorePath::parse(&path).unwrap())
                })
                .collect(),
            mode: None,
            health: Default::default(),
        };
        let request = StartRollout {
            release,
            waves: vec![WaveSpec::Percent { percent: 100 }],
            bake_ms: Millis(0),
            max_failures: FailureBudget::default(),
            on_halt: OnHalt::Stop,
            offline_deadline_ms: Millis(60_000),
        };
        let registered: BTreeMap<HostId, Registration> = ids
            .iter()
            .map(|id| {
                (
                    id.clone(),
                    Registration {
                        tags: Vec::new(),
                        revoked: false,
                    },
                )
            })
            .collect();
        let now = Timestamp(1_000);
        let mut rollout =
            plan::start(&request, RolloutId(7), &registered, &BTreeMap::new(), now).unwrap();
        for (progress, state) in rollout.hosts.values_mut().zip(states) {
            progress.state = state;
        }
        rollout.phase = RolloutPhase::Completed(Ended { wave: 0, at: now });
        rollout
    }

    fn converged() -> HostState {
        HostState::Converged {
            revision: Revision(1),
            assigned_at: Timestamp(1),
            at: Timestamp(2),
        }
    }

    #[test]
    fn only_a_rollout_whose_every_host_converged_is_a_success() {
        assert!(outcome(&completed([converged(), converged(), converged()])).is_ok());

        let failed = HostState::Failed {
            revision: Revision(1),
            assigned_at: Timestamp(1),
            at: Timestamp(2),
            kind: FailureKind::Failed,
            detail: "switch failed".into(),
        };
        let taken = HostState::TakenOut {
            at: Timestamp(2),
            why: "revoked".into(),
        };
        let error = outcome(&completed([converged(), failed, taken])).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("only 1 of its 3 hosts converged")
                && message.contains("1 failed within the budget")
                && message.contains("1 taken out"),
            "{message}"
        );
    }
}
