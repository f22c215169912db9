//! The operator's requests on a rollout: pause, resume, abort, roll back, approve a wave, take
//! a host out.

use fleetnode_wire::{
    Ended, HostId, HostState, PausedProgress, Progress, RollbackCause, RolloutPhase,
};

use super::machine::{RolloutError, Tx};

impl Tx {
    pub(super) fn pause(&mut self) -> Result<(), RolloutError> {
        match self.rollout.phase {
            RolloutPhase::Running(p) => {
                self.rollout.phase = RolloutPhase::Paused(PausedProgress {
                    wave: p.wave,
                    baking_until: p.baking_until,
                    since: self.now,
                });
                Ok(())
            }
            RolloutPhase::Paused(_) => Err(self.nothing("pause")),
            RolloutPhase::Halted(_) | RolloutPhase::Completed(_) | RolloutPhase::Aborted(_) => {
                Err(self.not_active("paused"))
            }
        }
    }

    pub(super) fn resume(&mut self) -> Result<(), RolloutError> {
        match self.rollout.phase {
            RolloutPhase::Paused(p) => {
                self.rollout.phase = RolloutPhase::Running(Progress {
                    wave: p.wave,
                    baking_until: p.baking_until,
                });
                Ok(())
            }
            RolloutPhase::Running(_)
            | RolloutPhase::Halted(_)
            | RolloutPhase::Completed(_)
            | RolloutPhase::Aborted(_) => Err(self.nothing("resume")),
        }
    }

    pub(super) fn abort(&mut self) -> Result<(), RolloutError> {
        if !self.rollout.is_active() {
            return Err(self.not_active("aborted"));
        }
        self.rollout.phase = RolloutPhase::Aborted(Ended {
            wave: self.rollout.wave(),
            at: self.now,
        });
        Ok(())
    }

    pub(super) fn rollback(&mut self) -> Result<(), RolloutError> {
        if self.rollout.rollback.is_some() {
            return Err(RolloutError::AlreadyRolledBack {
                id: self.rollout.id,
            });
        }
        if self.rollout.is_active() {
            self.abort()?;
        }
        self.order_rollback(RollbackCause::Operator);
        Ok(())
    }

    /// Lets the wave the running rollout waits on start; refused when it waits for none.
    pub(super) fn approve(&mut self) -> Result<(), RolloutError> {
        match self.rollout.phase {
            RolloutPhase::Running(p) if self.rollout.awaiting_approval.is_some() => {
                self.rollout.approved_wave = Some(p.wave);
                self.rollout.awaiting_approval = None;
                Ok(())
            }
            _ => Err(RolloutError::NotAwaitingApproval {
                id: self.rollout.id,
                phase: self.rollout.phase.name(),
            }),
        }
    }

    pub(super) fn take_out(&mut self, host: &HostId, why: String) -> Result<(), RolloutError> {
        if !self.rollout.owns(host) {
            return Err(RolloutError::NotOwned {
                id: self.rollout.id,
                host: host.clone(),
            });
        }
        if let Some(progress) = self.rollout.hosts.get_mut(host) {
            progress.state = HostState::TakenOut { at: self.now, why };
            progress.rollback = None;
        }
        Ok(())
    }

    fn not_active(&self, what: &'static str) -> RolloutError {
        RolloutError::NotActive {
            id: self.rollout.id,
            phase: self.rollout.phase.name(),
            what,
        }
    }

    fn nothing(&self, what: &'static str) -> RolloutError {
        RolloutError::Nothing {
            id: self.rollout.id,
            phase: self.rollout.phase.name(),
            what,
        }
    }
}
