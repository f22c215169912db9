//! `step(rollout, event, now)`: every decision a rollout makes.
//!
//! Pure and deterministic: no clock, no I/O, no tokio. The shell observes the mirrored state of
//! the rollout's hosts ([`Observations`]), feeds it in with the operator's requests, and carries
//! out the [`Command`]s that come out, committing them with the new rollout in one transaction.
//! A `now` older than the latest one seen is treated as the latest, so deadlines never move
//! backwards. [`next_deadline`] says when the shell must look again, and why.

use std::collections::BTreeMap;

use fleetnode_state_machine::Phase;
use fleetnode_wire::{
    Directive, DirectiveKind, Ended, HostId, HostState, OnHalt, Progress, Revision, RollbackCause,
    RollbackOrder, Rollout, RolloutId, RolloutPhase, StorePath, Timestamp,
};

use super::judge;
use super::window::{self, Availability, Window};

/// What the control plane has of one host right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostObservation {
    /// The host was revoked.
    pub revoked: bool,
    /// The revision of the directive in force (its desired state's directive).
    pub directive: Option<Revision>,
    /// The revision the host's next desired state must carry.
    pub next_revision: Revision,
    /// The latest directive revision the host acted upon (from its mirror).
    pub handled: Option<Revision>,
    /// Its mirrored phase.
    pub phase: Phase,
    /// What it runs (from its mirror).
    pub current: Option<StorePath>,
    /// When its latest heartbeat arrived.
    pub last_seen: Option<Timestamp>,
    /// The maintenance windows of its tags: a wave gives it the release only inside one of
    /// them (none: at any time).
    pub windows: Vec<Window>,
}

/// Everything a rollout decides from: its hosts as the control plane has them now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observations {
    /// Every registered host of the rollout (a host missing here is not registered).
    pub hosts: BTreeMap<HostId, HostObservation>,
    /// Since when the control plane has been listening to heartbeats: a host cannot have been
    /// heard before that, so silence while the control plane was down never counts.
    pub watching_since: Timestamp,
}

/// An input of the rollout state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The rollout's hosts as the control plane mirrors them now (also the passing of time).
    Observed(Observations),
    /// The operator asked to hold the rollout: no new wave starts.
    PauseRequested,
    /// The operator asked to lift the hold.
    ResumeRequested,
    /// The operator asked to stop the rollout where it is.
    AbortRequested,
    /// The operator asked to send every host the rollout moved back to what it ran before.
    RollbackRequested,
    /// The operator gave one of the rollout's hosts a directive of their own (`set-target
    /// --force`): it leaves the rollout.
    HostTakenOut {
        /// The host.
        host: HostId,
        /// Why, for the record.
        why: String,
    },
}

/// What the shell must do: one command per host and decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Give the host this directive, as its desired state's next revision. The revision is the
    /// observed `next_revision`: if the host's desired state changed since the observation,
    /// the shell drops the whole decision and observes again.
    SetDirective {
        /// The host.
        host: HostId,
        /// The directive.
        directive: Directive,
    },
}

/// Why the rollout wants to be looked at again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deadline {
    /// The bake of the current wave ends.
    BakeEnds {
        /// The wave, from 0.
        wave: usize,
    },
    /// A host of the current wave reaches the offline deadline without a heartbeat.
    HostSilent {
        /// The host.
        host: HostId,
    },
    /// A maintenance window opens for a host of the current wave that waits for it.
    WindowOpens {
        /// The host.
        host: HostId,
    },
}

/// An operator request that does not apply to the rollout as it is. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RolloutError {
    /// Pause or abort of a rollout that is not running.
    #[error("rollout {id} is {phase}; only a running or paused rollout can be {what}")]
    NotActive {
        /// The rollout.
        id: RolloutId,
        /// Its phase.
        phase: &'static str,
        /// What was asked.
        what: &'static str,
    },
    /// Pause of a paused rollout, or resume of one that is not paused.
    #[error("rollout {id} is {phase}; nothing to {what}")]
    Nothing {
        /// The rollout.
        id: RolloutId,
        /// Its phase.
        phase: &'static str,
        /// What was asked.
        what: &'static str,
    },
    /// A second rollback.
    #[error(
        "rollout {id}'s hosts were already ordered back; `fleetnode-cp rollout status {id}` shows where each is"
    )]
    AlreadyRolledBack {
        /// The rollout.
        id: RolloutId,
    },
    /// A host the rollout does not own.
    #[error("host {host} is not part of running rollout {id}")]
    NotOwned {
        /// The rollout.
        id: RolloutId,
        /// The host.
        host: HostId,
    },
}

/// Applies one event to a rollout at time `now`; returns the new rollout and the commands to
/// carry out. On error the request is refused and the rollout stays as it was.
pub fn step(
    rollout: &Rollout,
    event: Event,
    now: Timestamp,
) -> Result<(Rollout, Vec<Command>), RolloutError> {
    let now = now.max(rollout.clock);
    let mut tx = Tx {
        rollout: rollout.clone(),
        commands: Vec::new(),
        now,
    };
    tx.rollout.clock = now;
    match event {
        Event::Observed(observations) => tx.observed(&observations),
        Event::PauseRequested => tx.pause()?,
        Event::ResumeRequested => tx.resume()?,
        Event::AbortRequested => tx.abort()?,
        Event::RollbackRequested => tx.rollback()?,
        Event::HostTakenOut { host, why } => tx.take_out(&host, why)?,
    }
    tx.end_waits();
    Ok((tx.rollout, tx.commands))
}

/// The next time the rollout must be observed even if nothing else happens, and why; `None`
/// when only a change of its hosts can move it.
pub fn next_deadline(
    rollout: &Rollout,
    observations: &Observations,
) -> Option<(Timestamp, Deadline)> {
    let mut candidates = Vec::new();
    if let RolloutPhase::Running(Progress {
        wave,
        baking_until: Some(until),
    }) = rollout.phase
    {
        candidates.push((until, Deadline::BakeEnds { wave }));
    }
    for (host, progress) in &rollout.hosts {
        if let Some(at) = progress.window_opens_at {
            candidates.push((at, Deadline::WindowOpens { host: host.clone() }));
        }
        if !judge::is_watched(rollout, progress) {
            continue;
        }
        let seen = observations.hosts.get(host).and_then(|o| o.last_seen);
        if let Some(at) = judge::silent_at(rollout, progress, seen, observations.watching_since) {
            candidates.push((at, Deadline::HostSilent { host: host.clone() }));
        }
    }
    candidates
        .into_iter()
        .filter(|(at, _)| *at > rollout.clock)
        .min_by(|a, b| a.0.cmp(&b.0))
}

/// A decision being built.
pub(super) struct Tx {
    pub(super) rollout: Rollout,
    pub(super) commands: Vec<Command>,
    pub(super) now: Timestamp,
}

impl Tx {
    fn observed(&mut self, observations: &Observations) {
        let newly_failed = judge::judge_hosts(self, observations);
        self.check_budget(newly_failed);
        self.advance(observations);
        judge::follow_rollbacks(self, observations);
    }

    /// Halts an active rollout whose failures exceed the budget.
    fn check_budget(&mut self, newly_failed: Vec<(HostId, String)>) {
        let failures = self.rollout.failures();
        if !self.rollout.is_active() || failures <= self.rollout.allowed_failures {
            return;
        }
        let cause = newly_failed.into_iter().next().map_or_else(
            || "failures exceed the budget".to_owned(),
            |(h, why)| format!("{h} {why}"),
        );
        self.rollout.phase = RolloutPhase::Halted(fleetnode_wire::Halted {
            wave: self.rollout.wave(),
            at: self.now,
            failures,
            cause,
        });
        match self.rollout.on_halt {
            OnHalt::Stop => {}
            OnHalt::Rollback => self.order_rollback(RollbackCause::Halt),
        }
    }

    /// Moves a running rollout as far as it can: gives the current wave the release, and once
    /// every host of it is at rest and the bake is over, goes on to the next wave.
    fn advance(&mut self, observations: &Observations) {
        loop {
            let RolloutPhase::Running(progress) = self.rollout.phase else {
                return;
            };
            self.assign_wave(progress.wave, observations);
            let wave = &self.rollout.waves[progress.wave];
            let settled = wave.hosts.iter().all(|host| {
                self.rollout
                    .hosts
                    .get(host)
                    .is_none_or(|p| judge::is_final(&p.state))
            });
            if !settled {
                return;
            }
            let bakes = !wave.hosts.is_empty() && self.rollout.bake_ms.0 > 0;
            match progress.baking_until {
                None if bakes => {
                    self.rollout.phase = RolloutPhase::Running(Progress {
                        wave: progress.wave,
                        baking_until: Some(self.now.plus(self.rollout.bake_ms)),
                    });
                    return;
                }
                Some(until) if self.now < until => return,
                None | Some(_) => {}
            }
            let next = progress.wave + 1;
            self.rollout.phase = if next == self.rollout.waves.len() {
                RolloutPhase::Completed(Ended {
                    wave: progress.wave,
                    at: self.now,
                })
            } else {
                RolloutPhase::Running(Progress {
                    wave: next,
                    baking_until: None,
                })
            };
        }
    }

    /// Gives every pending host of `wave` its closure of the release.
    fn assign_wave(&mut self, wave: usize, observations: &Observations) {
        let Rollout {
            waves,
            hosts,
            release,
            ..
        } = &mut self.rollout;
        for host in &waves[wave].hosts {
            let (Some(progress), Some(target)) = (hosts.get_mut(host), release.hosts.get(host))
            else {
                continue;
            };
            if progress.state != HostState::Pending {
                continue;
            }
            let observed = observations.hosts.get(host);
            if let Some(why) = judge::unreachable(observed) {
                progress.state = HostState::TakenOut { at: self.now, why };
                continue;
            }
            let Some(observed) = observed else { continue };
            if let Availability::Closed { opens_at } =
                window::availability(&observed.windows, self.now)
            {
                progress.window_opens_at = opens_at;
                continue;
            }
            progress.window_opens_at = None;
            let revision = observed.next_revision;
            progress.previous = observed.current.clone();
            progress.state = HostState::InFlight {
                revision,
                assigned_at: self.now,
            };
            self.commands.push(Command::SetDirective {
                host: host.clone(),
                directive: Directive {
                    revision,
                    kind: DirectiveKind::Activate {
                        target: target.clone(),
                        mode: release.mode,
                        health: release.health,
                    },
                },
            });
        }
    }

    /// Forgets the window waits of a rollout that no longer runs: no wave will give those
    /// hosts anything until it runs again, when the waits are worked out afresh.
    fn end_waits(&mut self) {
        if matches!(self.rollout.phase, RolloutPhase::Running(_)) {
            return;
        }
        for progress in self.rollout.hosts.values_mut() {
            progress.window_opens_at = None;
        }
    }

    /// Marks every host the rollout moved to be sent back where it was.
    pub(super) fn order_rollback(&mut self, by: RollbackCause) {
        self.rollout.rollback = Some(RollbackOrder { at: self.now, by });
        for progress in self.rollout.hosts.values_mut() {
            progress.rollback = judge::rollback_for(progress);
        }
    }
}
