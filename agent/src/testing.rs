//! Test seams, built only with the `testing` feature: an in-memory [`System`] (a host whose
//! generations, switches and reboots are data), the handles tests drive a running agent with,
//! and a way to start an agent without a control plane.
//!
//! Switches complete at once by default (exit 0, with the effect their job asks for: `test`
//! changes the live system, `switch` the live system and the profile, `boot` the profile);
//! [`MemorySystem::hold_switches`] keeps them running until [`MemorySystem::release`].
//! [`MemorySystem::fail_switch`] and [`MemorySystem::fail_realise`] inject failures;
//! [`MemorySystem::hold_lock`] stands for another switch holding the switch lock.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, MutexGuard};

use std::sync::Arc;

use fleetnode_state_machine::{
    RealiseResult, StorePath, SwitchAction, SwitchExit, SwitchId, SwitchJob, SystemView, UnitState,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::input::Input;
use crate::metrics::Metrics;
use crate::runtime::agent::{Agent, Connect, RunError};
pub use crate::runtime::eventloop::Exit;
use crate::status::{StatusWatch, Workers};
use crate::system::{Launch, System, SystemError};

/// What tests drive and watch a running agent with.
#[derive(Debug, Clone)]
pub struct Handles {
    /// The event loop's inputs.
    pub inputs: mpsc::Sender<Input>,
    /// The status the event loop publishes.
    pub status: StatusWatch,
    /// Worker statuses.
    pub workers: Workers,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Starts an agent that talks to its control plane; `None` when `cancel` fired first.
pub async fn start<S: System>(
    config: Config,
    system: Arc<S>,
    cancel: CancellationToken,
) -> Result<Option<Agent>, RunError> {
    Agent::start(config, system, cancel, Connect::ControlPlane).await
}

/// Starts an agent with no control-plane workers at all (no long-poll, delivery or heartbeat).
pub async fn start_offline<S: System>(
    config: Config,
    system: Arc<S>,
    cancel: CancellationToken,
) -> Result<Option<Agent>, RunError> {
    Agent::start(config, system, cancel, Connect::Offline).await
}

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
    lock_held: bool,
    agent_upgrade: Option<String>,
    switches: BTreeMap<SwitchId, (SwitchJob, UnitState)>,
    active_units: BTreeSet<String>,
    log: Vec<Operation>,
    /// The generations rooted by `keep_generations`.
    kept: BTreeSet<StorePath>,
    /// The closure the realise's own root holds.
    realise_root: Option<StorePath>,
    /// Closures a garbage collection deleted.
    collected: BTreeSet<StorePath>,
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

    /// The generations the agent holds GC roots on.
    pub fn kept(&self) -> BTreeSet<StorePath> {
        self.lock().kept.clone()
    }

    /// A garbage collection after `nix-collect-garbage -d` removed every old profile
    /// generation: each of `closures` goes unless the agent roots it (a kept generation, or
    /// the closure its realise holds). Switching to a collected closure fails as it would on
    /// a host: its script is missing. Realising it again brings it back.
    pub fn collect_garbage(&self, closures: &[StorePath]) -> Vec<StorePath> {
        let mut host = self.lock();
        let gone: Vec<StorePath> = closures
            .iter()
            .filter(|c| !host.kept.contains(*c) && host.realise_root.as_ref() != Some(*c))
            .cloned()
            .collect();
        host.collected.extend(gone.iter().cloned());
        gone
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

    /// Another switch holds the switch lock (`true`) or released it.
    pub fn hold_lock(&self, held: bool) {
        self.lock().lock_held = held;
    }

    /// The live generation carries another agent than the running one, in these words.
    pub fn set_agent_upgrade(&self, upgrade: Option<&str>) {
        self.lock().agent_upgrade = upgrade.map(str::to_owned);
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
        return UnitState::Exited(SwitchExit {
            code: Some(*code),
            output_tail: format!("switch to {} failed", job.closure),
        });
    }
    if job.set_profile {
        host.view.profile = Some(job.closure.clone());
    }
    match job.action {
        SwitchAction::Test | SwitchAction::Switch => host.view.current = Some(job.closure.clone()),
        SwitchAction::Boot => {}
    }
    UnitState::Exited(SwitchExit {
        code: Some(0),
        output_tail: String::new(),
    })
}

impl System for MemorySystem {
    async fn observe(&self) -> Result<SystemView, SystemError> {
        Ok(self.lock().view.clone())
    }

    async fn boot_id(&self) -> Result<Option<String>, SystemError> {
        Ok(self.lock().boot_id.clone())
    }

    async fn keep_generations(&self, generations: &BTreeSet<StorePath>) -> Result<(), SystemError> {
        self.lock().kept = generations.clone();
        Ok(())
    }

    async fn realise(&self, target: &StorePath) -> RealiseResult {
        let mut host = self.lock();
        host.log.push(Operation::Realised(target.clone()));
        host.realise_root = Some(target.clone());
        host.collected.remove(target);
        if host.failing_realise.contains(target) {
            RealiseResult::Failed {
                message: format!("{target} is not in any substituter"),
            }
        } else {
            RealiseResult::Realised
        }
    }

    async fn start_switch(&self, switch: SwitchId, job: &SwitchJob) -> Result<Launch, SystemError> {
        let mut host = self.lock();
        if host.switches.contains_key(&switch) {
            return Ok(Launch::Started);
        }
        if host.lock_held {
            return Ok(Launch::LockHeld);
        }
        if host.collected.contains(&job.closure) {
            return Err(SystemError::MissingScript {
                path: std::path::Path::new(job.closure.as_str())
                    .join("bin/switch-to-configuration"),
            });
        }
        host.log.push(Operation::Started(switch, job.clone()));
        let state = if host.hold {
            UnitState::Running
        } else {
            apply(&mut host, job)
        };
        host.switches.insert(switch, (job.clone(), state));
        Ok(Launch::Started)
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

    async fn agent_upgrade(&self) -> Option<String> {
        self.lock().agent_upgrade.clone()
    }
}
