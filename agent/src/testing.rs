//! An in-memory [`System`] for tests and the crash harness: a host whose generations, switches
//! and reboots are data.
//!
//! Switches complete at once by default (exit 0, with the effect their job asks for: `test`
//! changes the live system, `switch` the live system and the profile, `boot` the profile);
//! [`MemorySystem::hold_switches`] keeps them running until [`MemorySystem::release`].
//! [`MemorySystem::fail_switch`] and [`MemorySystem::fail_realise`] inject failures.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use fleetnode_state_machine::{
    RealiseResult, StorePath, SwitchAction, SwitchId, SwitchJob, SystemView, UnitState,
};

use crate::system::{System, SystemError};

/// What the memory host did, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// A closure was realised.
    Realised(StorePath),
    /// A switch was launched.
    Started(SwitchId, SwitchJob),
    /// A switch's unit was stopped.
    Stopped(SwitchId),
    /// A reboot was asked for.
    Reboot,
}

#[derive(Debug, Default)]
struct Host {
    view: SystemView,
    boot_id: Option<String>,
    failing_realise: BTreeSet<StorePath>,
    failing_switch: BTreeMap<StorePath, i32>,
    hold: bool,
    switches: BTreeMap<SwitchId, (SwitchJob, UnitState)>,
    active_units: BTreeSet<String>,
    log: Vec<Operation>,
}

/// The in-memory host.
#[derive(Debug, Default)]
pub struct MemorySystem {
    host: Mutex<Host>,
}

impl MemorySystem {
    /// A host running `current` (committed: booted and profile too), with a boot id.
    pub fn running(current: Option<StorePath>, boot_id: &str) -> Self {
        let system = Self::default();
        {
            let mut host = system.lock();
            host.view = SystemView {
                current: current.clone(),
                booted: current.clone(),
                profile: current,
            };
            host.boot_id = Some(boot_id.to_owned());
        }
        system
    }

    fn lock(&self) -> MutexGuard<'_, Host> {
        // Every update is a few field assignments; a panic cannot leave them half done.
        self.host.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the host runs now.
    pub fn view(&self) -> SystemView {
        self.lock().view.clone()
    }

    /// Realising this closure fails.
    pub fn fail_realise(&self, target: StorePath) {
        self.lock().failing_realise.insert(target);
    }

    /// Switching to this closure exits with `exit_code` and changes nothing.
    pub fn fail_switch(&self, closure: StorePath, exit_code: i32) {
        self.lock().failing_switch.insert(closure, exit_code);
    }

    /// Keep new switches running until released.
    pub fn hold_switches(&self, hold: bool) {
        self.lock().hold = hold;
    }

    /// Finishes a held switch.
    pub fn release(&self, switch: SwitchId) {
        let mut host = self.lock();
        if let Some((job, _)) = host.switches.get(&switch).cloned() {
            let state = apply(&mut host, &job);
            host.switches.insert(switch, (job, state));
        }
    }

    /// Simulates a reboot: the host boots its profile, transient units are gone, a new boot id.
    pub fn reboot_host(&self, boot_id: &str) {
        let mut host = self.lock();
        let profile = host.view.profile.clone();
        host.view.current = profile.clone();
        host.view.booted = profile;
        host.switches.clear();
        host.boot_id = Some(boot_id.to_owned());
    }

    /// Marks a systemd unit active or not.
    pub fn set_unit_active(&self, unit: &str, active: bool) {
        let mut host = self.lock();
        if active {
            host.active_units.insert(unit.to_owned());
        } else {
            host.active_units.remove(unit);
        }
    }

    /// Everything the host was asked to do, in order.
    pub fn operations(&self) -> Vec<Operation> {
        self.lock().log.clone()
    }
}

/// Carries out a job on the memory host and says how its unit ended.
fn apply(host: &mut Host, job: &SwitchJob) -> UnitState {
    if let Some(code) = host.failing_switch.get(&job.closure) {
        return UnitState::Exited {
            exit_code: Some(*code),
            output_tail: format!("switch to {} failed", job.closure),
        };
    }
    if job.set_profile {
        host.view.profile = Some(job.closure.clone());
    }
    match job.action {
        SwitchAction::Test | SwitchAction::Switch => host.view.current = Some(job.closure.clone()),
        SwitchAction::Boot => {}
    }
    UnitState::Exited {
        exit_code: Some(0),
        output_tail: String::new(),
    }
}

impl System for MemorySystem {
    async fn observe(&self) -> Result<SystemView, SystemError> {
        Ok(self.lock().view.clone())
    }

    async fn boot_id(&self) -> Result<Option<String>, SystemError> {
        Ok(self.lock().boot_id.clone())
    }

    async fn realise(&self, target: &StorePath) -> RealiseResult {
        let mut host = self.lock();
        host.log.push(Operation::Realised(target.clone()));
        if host.failing_realise.contains(target) {
            RealiseResult::Failed {
                message: format!("{target} is not in any substituter"),
            }
        } else {
            RealiseResult::Realised
        }
    }

    async fn start_switch(&self, switch: SwitchId, job: &SwitchJob) -> Result<(), SystemError> {
        let mut host = self.lock();
        if host.switches.contains_key(&switch) {
            return Ok(());
        }
        host.log.push(Operation::Started(switch, job.clone()));
        let state = if host.hold {
            UnitState::Running
        } else {
            apply(&mut host, job)
        };
        host.switches.insert(switch, (job.clone(), state));
        Ok(())
    }

    async fn switch_state(&self, switch: SwitchId) -> Result<UnitState, SystemError> {
        Ok(self
            .lock()
            .switches
            .get(&switch)
            .map_or(UnitState::Gone, |(_, state)| state.clone()))
    }

    async fn stop_switch(&self, switch: SwitchId) -> Result<(), SystemError> {
        let mut host = self.lock();
        host.switches.remove(&switch);
        host.log.push(Operation::Stopped(switch));
        Ok(())
    }

    async fn reboot(&self) -> Result<(), SystemError> {
        self.lock().log.push(Operation::Reboot);
        Ok(())
    }

    async fn unit_active(&self, unit: &str) -> Result<bool, SystemError> {
        Ok(self.lock().active_units.contains(unit))
    }
}
