//! The activation jobs against a fake NixOS root: real commands and real detached units.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_fixtures::fakeroot::{Behaviour, FakeRoot};
use fleetnode_state_machine::{
    Command, Event, RealiseResult, StorePath, SwitchAction, SwitchEnd, SwitchExit, SwitchId,
    SwitchPurpose, SystemView, UnitState,
};
use tokio_util::sync::CancellationToken;

use super::InFlight;
use crate::metrics::Metrics;
use crate::status::Workers;
use crate::system::tests::{job, system_for};
use crate::system::{NixosSystem, System, unit_name};

/// Polls fast: these tests follow real processes, so time cannot be paused.
const POLL: Duration = Duration::from_millis(25);
/// A guard against a hanging test, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);

struct Harness {
    fake: FakeRoot,
    system: Arc<NixosSystem>,
    jobs: InFlight,
    old: StorePath,
    new: StorePath,
}

fn in_flight<S: System>(system: &Arc<S>) -> InFlight {
    let workers = Workers::new(Arc::new(Metrics::new()));
    InFlight::polling(system.clone(), workers, CancellationToken::new(), POLL)
}

impl Harness {
    fn new() -> Self {
        let fake = FakeRoot::new();
        let old = fake.add_closure("nixos-system-db-01-24.05");
        let new = fake.add_closure("nixos-system-db-01-24.11");
        fake.set_current(&old);
        let system = Arc::new(system_for(&fake));
        Self {
            jobs: in_flight(&system),
            fake,
            system,
            old,
            new,
        }
    }

    /// Stops every job (as at shutdown) and holds a new, empty set of jobs, as a new start
    /// would.
    async fn restart(&mut self) {
        self.jobs.shutdown(PATIENCE).await;
        self.jobs = in_flight(&self.system);
    }

    async fn send(&mut self, command: Command) {
        self.jobs.start(command);
    }

    async fn next_event(&mut self) -> Event {
        match tokio::time::timeout(PATIENCE, self.jobs.next()).await {
            Ok(event) => event,
            Err(_) => panic!("no event came"),
        }
    }

    async fn switch_finished(&mut self, expected: SwitchId) -> (SwitchEnd, SystemView) {
        match self.next_event().await {
            Event::SwitchFinished {
                switch,
                end,
                system,
            } if switch == expected => (end, system),
            other => panic!("expected the end of switch {expected}, got {other:?}"),
        }
    }

    /// Waits until the switch's unit runs its main process.
    async fn until_running(&self, switch: SwitchId) {
        let unit = unit_name(crate::system::tests::STREAM, switch);
        tokio::time::timeout(PATIENCE, async {
            loop {
                let props = self.fake.unit_properties(&unit).unwrap_or_default();
                if props.contains("SubState=running") {
                    return;
                }
                tokio::time::sleep(POLL).await;
            }
        })
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn realise_reports_its_result() {
    let mut h = Harness::new();
    h.send(Command::Realise {
        target: h.new.clone(),
    })
    .await;
    let missing = h.fake.missing_closure("nixos-system-missing");
    h.send(Command::Realise {
        target: missing.clone(),
    })
    .await;
    assert_eq!(
        h.next_event().await,
        Event::RealiseFinished {
            target: h.new.clone(),
            result: RealiseResult::Realised
        }
    );
    let Event::RealiseFinished {
        target,
        result: RealiseResult::Failed { message },
    } = h.next_event().await
    else {
        panic!("the missing closure was not reported as failed");
    };
    assert_eq!(target, missing);
    assert!(message.contains("no substituter"), "{message}");
}

#[tokio::test]
async fn a_completed_switch_reports_the_observed_system_and_keeps_its_unit_until_released() {
    let mut h = Harness::new();
    let job = job(&h.new, SwitchPurpose::Activate, SwitchAction::Test, false);
    h.send(Command::RunSwitch {
        switch: SwitchId(3),
        job,
    })
    .await;
    let (end, system) = h.switch_finished(SwitchId(3)).await;
    assert_eq!(code_of(&end), Some(0), "{end:?}");
    assert_eq!(system.current, Some(h.new.clone()));
    assert_eq!(system.booted, Some(h.old.clone()));
    assert_eq!(system.profile, Some(h.old.clone()));
    // The unit keeps its result until the state machine, with the result durable, asks for
    // its release.
    assert!(matches!(
        h.system.switch_state(SwitchId(3)).await.unwrap(),
        UnitState::Exited(SwitchExit { code: Some(0), .. })
    ));
    h.send(Command::ReleaseSwitch {
        switch: SwitchId(3),
    })
    .await;
    h.send(Command::Realise {
        target: h.new.clone(),
    })
    .await;
    h.next_event().await;
    assert_eq!(
        h.system.switch_state(SwitchId(3)).await.unwrap(),
        UnitState::Gone
    );
}

#[tokio::test]
async fn a_failed_switch_reports_exit_code_output_and_the_system() {
    let mut h = Harness::new();
    h.fake.behaviour(
        &h.new,
        Behaviour::Fail {
            exit_code: 2,
            output: "error: the activation script of /etc failed\n".to_owned(),
        },
    );
    let job = job(&h.new, SwitchPurpose::Activate, SwitchAction::Switch, true);
    h.send(Command::RunSwitch {
        switch: SwitchId(4),
        job,
    })
    .await;
    let (end, system) = h.switch_finished(SwitchId(4)).await;
    let SwitchEnd::Exited(SwitchExit { code, output_tail }) = end else {
        panic!("the switch did not run: {end:?}");
    };
    assert_eq!(code, Some(2));
    assert!(
        output_tail.contains("activation script of /etc failed"),
        "{output_tail}"
    );
    assert_eq!(system.current, Some(h.old.clone()));
    // The profile was set before the script ran (a `switch` job sets it first).
    assert_eq!(system.profile, Some(h.new.clone()));
}

#[tokio::test]
async fn exit_4_is_reported_as_it_is_with_the_switched_system() {
    let mut h = Harness::new();
    h.fake.behaviour(&h.new, Behaviour::PartialFailure);
    let job = job(&h.new, SwitchPurpose::Activate, SwitchAction::Test, false);
    h.send(Command::RunSwitch {
        switch: SwitchId(5),
        job,
    })
    .await;
    let (end, system) = h.switch_finished(SwitchId(5)).await;
    let SwitchEnd::Exited(SwitchExit { code, output_tail }) = end else {
        panic!("the switch did not run: {end:?}");
    };
    assert_eq!(
        code,
        Some(4),
        "the state machine judges exit 4, not the worker"
    );
    assert!(output_tail.contains("fake-broken.service"), "{output_tail}");
    assert_eq!(system.current, Some(h.new.clone()));
}

#[tokio::test]
async fn abort_stops_the_unit_and_reports_nothing() {
    let mut h = Harness::new();
    h.fake.behaviour(&h.new, Behaviour::Hang);
    let job = job(&h.new, SwitchPurpose::Activate, SwitchAction::Test, false);
    h.send(Command::RunSwitch {
        switch: SwitchId(6),
        job,
    })
    .await;
    h.until_running(SwitchId(6)).await;
    h.send(Command::AbortSwitch {
        switch: SwitchId(6),
    })
    .await;
    // A marker command: its event is the next one, so the aborted switch reported nothing.
    h.send(Command::Realise {
        target: h.old.clone(),
    })
    .await;
    assert!(matches!(
        h.next_event().await,
        Event::RealiseFinished { .. }
    ));
    assert_eq!(
        h.system.switch_state(SwitchId(6)).await.unwrap(),
        UnitState::Gone
    );
    assert_eq!(h.fake.current(), Some(h.old.clone()));
    assert_eq!(h.jobs.try_next(), None);
}

#[tokio::test]
async fn a_switch_that_cannot_launch_is_reported_failed() {
    let mut h = Harness::new();
    let absent = h.fake.missing_closure("nixos-system-absent");
    let job = job(&absent, SwitchPurpose::Activate, SwitchAction::Test, false);
    h.send(Command::RunSwitch {
        switch: SwitchId(7),
        job,
    })
    .await;
    let (end, system) = h.switch_finished(SwitchId(7)).await;
    let SwitchEnd::NotLaunched { error } = end else {
        panic!("a switch that never ran was reported as {end:?}");
    };
    assert!(error.contains("bin/switch-to-configuration"), "{error}");
    assert_eq!(system.current, Some(h.old.clone()));
}

#[tokio::test]
async fn a_vanished_unit_is_reported_as_vanished() {
    let mut h = Harness::new();
    h.send(Command::WatchSwitch {
        switch: SwitchId(8),
    })
    .await;
    let (end, _) = h.switch_finished(SwitchId(8)).await;
    assert_eq!(end, SwitchEnd::Vanished);
}

#[tokio::test]
async fn shutdown_leaves_the_switch_running_and_the_next_start_watches_it() {
    let mut h = Harness::new();
    h.fake
        .behaviour(&h.new, Behaviour::SucceedAfter(Duration::from_millis(1500)));
    let job = job(&h.new, SwitchPurpose::Activate, SwitchAction::Test, false);
    h.send(Command::RunSwitch {
        switch: SwitchId(9),
        job,
    })
    .await;
    h.until_running(SwitchId(9)).await;
    h.restart().await;
    assert_eq!(
        h.system.switch_state(SwitchId(9)).await.unwrap(),
        UnitState::Running
    );

    h.send(Command::WatchSwitch {
        switch: SwitchId(9),
    })
    .await;
    let (end, system) = h.switch_finished(SwitchId(9)).await;
    assert_eq!(code_of(&end), Some(0), "{end:?}");
    assert_eq!(system.current, Some(h.new.clone()));
    assert_eq!(h.jobs.try_next(), None);
}

#[tokio::test]
async fn watch_follows_a_unit_launched_before_the_agent_started() {
    let mut h = Harness::new();
    h.fake
        .behaviour(&h.new, Behaviour::SucceedAfter(Duration::from_millis(500)));
    let job = job(&h.new, SwitchPurpose::Activate, SwitchAction::Test, false);
    h.system.start_switch(SwitchId(10), &job).await.unwrap();
    h.send(Command::WatchSwitch {
        switch: SwitchId(10),
    })
    .await;
    let (end, _) = h.switch_finished(SwitchId(10)).await;
    assert_eq!(code_of(&end), Some(0), "{end:?}");
    // Watching launched nothing new.
    let launches = h
        .fake
        .command_log()
        .iter()
        .filter(|argv| argv[0] == "systemd-run")
        .count();
    assert_eq!(launches, 1);
}

#[tokio::test]
async fn reboot_asks_systemd() {
    let mut h = Harness::new();
    h.send(Command::Reboot).await;
    h.send(Command::Realise {
        target: h.old.clone(),
    })
    .await;
    h.next_event().await;
    assert!(h.fake.reboot_requested());
}

/// The exit code of a switch whose process ran.
fn code_of(end: &SwitchEnd) -> Option<i32> {
    match end {
        SwitchEnd::Exited(exit) => exit.code,
        SwitchEnd::Vanished | SwitchEnd::LockHeld | SwitchEnd::NotLaunched { .. } => {
            panic!("the switch did not run: {end:?}")
        }
    }
}

fn exited(code: i32, tail: &str) -> SwitchEnd {
    SwitchEnd::Exited(SwitchExit {
        code: Some(code),
        output_tail: tail.into(),
    })
}

#[tokio::test]
async fn a_held_switch_lock_launches_nothing_and_says_so() {
    let mut h = Harness::new();
    let path = h.fake.switch_lock_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let lock = std::fs::File::create(&path).unwrap();
    lock.lock().unwrap();
    let job = job(&h.new, SwitchPurpose::Activate, SwitchAction::Switch, true);
    h.send(Command::RunSwitch {
        switch: SwitchId(11),
        job: job.clone(),
    })
    .await;
    let (end, system) = h.switch_finished(SwitchId(11)).await;
    assert_eq!(end, SwitchEnd::LockHeld);
    // Nothing ran: not even the profile was set.
    assert_eq!(system.profile, Some(h.old.clone()));
    let launches = |h: &Harness| {
        h.fake
            .command_log()
            .iter()
            .filter(|argv| argv[0] == "systemd-run")
            .count()
    };
    assert_eq!(launches(&h), 0);
    // Once the lock is free the same switch launches (the state machine decides when).
    lock.unlock().unwrap();
    h.send(Command::ReleaseSwitch {
        switch: SwitchId(11),
    })
    .await;
    h.send(Command::RunSwitch {
        switch: SwitchId(11),
        job,
    })
    .await;
    let (end, system) = h.switch_finished(SwitchId(11)).await;
    assert_eq!(code_of(&end), Some(0), "{end:?}");
    assert_eq!(system.current, Some(h.new.clone()));
    assert_eq!(launches(&h), 1);
}

/// A backend whose switch loses the race for the switch lock, as when a manual
/// `nixos-rebuild` grabs it between the agent's check and the script's start. The race cannot
/// be staged deterministically with real processes, so this double scripts the unit's state.
#[derive(Default)]
struct LockRace {
    starts: std::sync::atomic::AtomicUsize,
}

impl System for LockRace {
    async fn observe(&self) -> Result<SystemView, crate::system::SystemError> {
        Ok(SystemView::default())
    }
    async fn boot_id(&self) -> Result<Option<String>, crate::system::SystemError> {
        Ok(None)
    }
    async fn realise(&self, _: &StorePath) -> RealiseResult {
        RealiseResult::Realised
    }
    async fn keep_generations(
        &self,
        _: &std::collections::BTreeSet<StorePath>,
    ) -> Result<(), crate::system::SystemError> {
        Ok(())
    }
    async fn start_switch(
        &self,
        _: SwitchId,
        _: &fleetnode_state_machine::SwitchJob,
    ) -> Result<crate::system::Launch, crate::system::SystemError> {
        self.starts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(crate::system::Launch::Started)
    }
    async fn switch_state(&self, _: SwitchId) -> Result<UnitState, crate::system::SystemError> {
        Ok(UnitState::Exited(SwitchExit {
            code: Some(1),
            output_tail: "Could not acquire lock\n".to_owned(),
        }))
    }
    async fn stop_switch(&self, _: SwitchId) -> Result<(), crate::system::SystemError> {
        Ok(())
    }
    async fn reboot(&self) -> Result<(), crate::system::SystemError> {
        Ok(())
    }
    async fn unit_active(&self, _: &str) -> Result<bool, crate::system::SystemError> {
        Ok(true)
    }
    async fn agent_upgrade(&self) -> Option<String> {
        None
    }
}

#[tokio::test(start_paused = true)]
async fn a_switch_that_lost_the_lock_race_is_reported_as_it_ended_and_not_relaunched_here() {
    let system = Arc::new(LockRace::default());
    let mut jobs = in_flight(&system);
    let closure =
        StorePath::parse("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-x").unwrap();
    let job = job(&closure, SwitchPurpose::Activate, SwitchAction::Test, false);
    jobs.start(Command::RunSwitch {
        switch: SwitchId(1),
        job,
    });
    let Event::SwitchFinished { end, .. } = jobs.next().await else {
        panic!("no switch result");
    };
    assert_eq!(end, exited(1, "Could not acquire lock\n"));
    // Deciding to launch it again is the state machine's job: the job launched it once.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(jobs.try_next(), None);
    assert!(jobs.is_idle());
    assert_eq!(system.starts.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn the_agent_upgrade_check_reports_what_the_system_says() {
    let mut h = Harness::new();
    h.send(Command::CheckAgentUpgrade).await;
    assert_eq!(
        h.next_event().await,
        Event::AgentUpgradeChecked { upgrade: None },
        "not a systemd service here, so no upgrade is ever seen"
    );
}

/// A backend that records what it was asked, in order, and whose roots take a minute to hold:
/// long enough to keep the steps after them waiting for their turn.
#[derive(Default)]
struct Recorder {
    asked: std::sync::Mutex<Vec<String>>,
}

impl Recorder {
    fn asked(&self) -> Vec<String> {
        self.asked.lock().unwrap().clone()
    }
    fn note(&self, what: String) {
        self.asked.lock().unwrap().push(what);
    }
}

impl System for Recorder {
    async fn observe(&self) -> Result<SystemView, crate::system::SystemError> {
        Ok(SystemView::default())
    }
    async fn boot_id(&self) -> Result<Option<String>, crate::system::SystemError> {
        Ok(None)
    }
    async fn realise(&self, _: &StorePath) -> RealiseResult {
        self.note("realise".into());
        RealiseResult::Realised
    }
    async fn keep_generations(
        &self,
        _: &std::collections::BTreeSet<StorePath>,
    ) -> Result<(), crate::system::SystemError> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        self.note("keep".into());
        Ok(())
    }
    async fn start_switch(
        &self,
        switch: SwitchId,
        _: &fleetnode_state_machine::SwitchJob,
    ) -> Result<crate::system::Launch, crate::system::SystemError> {
        self.note(format!("start {switch}"));
        Ok(crate::system::Launch::Started)
    }
    async fn switch_state(&self, _: SwitchId) -> Result<UnitState, crate::system::SystemError> {
        Ok(UnitState::Running)
    }
    async fn stop_switch(&self, switch: SwitchId) -> Result<(), crate::system::SystemError> {
        self.note(format!("stop {switch}"));
        Ok(())
    }
    async fn reboot(&self) -> Result<(), crate::system::SystemError> {
        Ok(())
    }
    async fn unit_active(&self, _: &str) -> Result<bool, crate::system::SystemError> {
        Ok(true)
    }
    async fn agent_upgrade(&self) -> Option<String> {
        None
    }
}

#[tokio::test(start_paused = true)]
async fn an_abort_cancels_a_switch_still_waiting_for_its_turn_and_it_never_launches() {
    let system = Arc::new(Recorder::default());
    let mut jobs = in_flight(&system);
    let closure =
        StorePath::parse("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-x").unwrap();
    jobs.start(Command::KeepGenerations {
        generations: [closure.clone()].into(),
    });
    jobs.start(Command::RunSwitch {
        switch: SwitchId(1),
        job: job(&closure, SwitchPurpose::Activate, SwitchAction::Test, false),
    });
    jobs.start(Command::AbortSwitch {
        switch: SwitchId(1),
    });
    jobs.start(Command::Realise {
        target: closure.clone(),
    });
    // The realise is the only job that reports: the aborted switch says nothing.
    assert!(matches!(
        tokio::time::timeout(PATIENCE * 10, jobs.next()).await,
        Ok(Event::RealiseFinished { .. })
    ));
    assert_eq!(jobs.try_next(), None);
    // The steps ran in the order of their commands, and the aborted switch never launched.
    assert_eq!(system.asked(), ["keep", "stop 1", "realise"]);
}

#[tokio::test(start_paused = true)]
async fn an_abort_stops_a_followed_switch_without_waiting_for_the_steps_before_it() {
    let system = Arc::new(Recorder::default());
    let mut jobs = in_flight(&system);
    let closure =
        StorePath::parse("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-x").unwrap();
    jobs.start(Command::RunSwitch {
        switch: SwitchId(2),
        job: job(&closure, SwitchPurpose::Activate, SwitchAction::Test, false),
    });
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(system.asked(), ["start 2"]);
    // Roots that take a minute, then the abort: the followed switch is cancelled at once, and
    // its unit's stop takes its turn after the roots.
    jobs.start(Command::KeepGenerations {
        generations: [closure.clone()].into(),
    });
    jobs.start(Command::AbortSwitch {
        switch: SwitchId(2),
    });
    jobs.start(Command::CheckAgentUpgrade);
    assert_eq!(
        tokio::time::timeout(PATIENCE, jobs.next()).await,
        Ok(Event::AgentUpgradeChecked { upgrade: None })
    );
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(jobs.try_next(), None);
    assert!(jobs.is_idle());
    assert_eq!(system.asked(), ["start 2", "keep", "stop 2"]);
}
