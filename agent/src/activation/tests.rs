//! The activation worker against a fake NixOS root: real commands and real detached units.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_fixtures::fakeroot::{Behaviour, FakeRoot};
use fleetnode_state_machine::{
    Event, RealiseResult, StorePath, SwitchAction, SwitchId, SwitchOutcome, SwitchPurpose,
    UnitState,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{ACTIVATION_CHANNEL_CAPACITY, ActivationCommand, run_polling};
use crate::input::{Input, WorkerError};
use crate::system::tests::{job, system_for};
use crate::system::{NixosSystem, System, unit_name};

/// Polls fast: these tests follow real processes, so time cannot be paused.
const POLL: Duration = Duration::from_millis(25);
/// A guard against a hanging test, not a timing assertion.
const PATIENCE: Duration = Duration::from_secs(30);

/// What a stopped worker hands back: its receiver and its result.
type Stopped = (mpsc::Receiver<ActivationCommand>, Result<(), WorkerError>);

struct Harness {
    fake: FakeRoot,
    system: Arc<NixosSystem>,
    commands: mpsc::Sender<ActivationCommand>,
    inputs: mpsc::Receiver<Input>,
    worker: Option<(CancellationToken, JoinHandle<Stopped>)>,
    input_sender: mpsc::Sender<Input>,
    old: StorePath,
    new: StorePath,
}

impl Harness {
    fn new() -> Self {
        let fake = FakeRoot::new();
        let old = fake.add_closure("nixos-system-db-01-24.05");
        let new = fake.add_closure("nixos-system-db-01-24.11");
        fake.set_current(&old);
        let system = Arc::new(system_for(&fake));
        let (commands, receiver) = mpsc::channel(ACTIVATION_CHANNEL_CAPACITY);
        let (input_sender, inputs) = mpsc::channel(16);
        let mut harness = Self {
            fake,
            system,
            commands,
            inputs,
            worker: None,
            input_sender,
            old,
            new,
        };
        harness.start(receiver);
        harness
    }

    /// Starts a worker on `receiver`; it hands the receiver back when it stops.
    fn start(&mut self, mut receiver: mpsc::Receiver<ActivationCommand>) {
        let cancel = CancellationToken::new();
        let system = self.system.clone();
        let inputs = self.input_sender.clone();
        let token = cancel.clone();
        let handle = tokio::spawn(async move {
            let result = run_polling(system, &mut receiver, inputs, token, POLL).await;
            (receiver, result)
        });
        self.worker = Some((cancel, handle));
    }

    /// Stops the worker gracefully and returns its receiver.
    async fn stop(&mut self) -> mpsc::Receiver<ActivationCommand> {
        let (cancel, handle) = self.worker.take().unwrap();
        cancel.cancel();
        let (receiver, result) = handle.await.unwrap();
        result.unwrap();
        receiver
    }

    async fn send(&self, command: ActivationCommand) {
        self.commands.send(command).await.unwrap();
    }

    async fn next_event(&mut self) -> Event {
        match tokio::time::timeout(PATIENCE, self.inputs.recv()).await {
            Ok(Some(Input::Event(event))) => event,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    async fn switch_finished(&mut self, expected: SwitchId) -> SwitchOutcome {
        match self.next_event().await {
            Event::SwitchFinished { switch, outcome } if switch == expected => outcome,
            other => panic!("expected the end of switch {expected}, got {other:?}"),
        }
    }

    /// Waits until the switch's unit runs its main process.
    async fn until_running(&self, switch: SwitchId) {
        let unit = unit_name(switch);
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
    h.send(ActivationCommand::Realise {
        target: h.new.clone(),
    })
    .await;
    let missing = h.fake.missing_closure("nixos-system-missing");
    h.send(ActivationCommand::Realise {
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
    h.send(ActivationCommand::Run {
        switch: SwitchId(3),
        job,
    })
    .await;
    let SwitchOutcome::Completed { system } = h.switch_finished(SwitchId(3)).await else {
        panic!("the switch did not complete");
    };
    assert_eq!(system.current, Some(h.new.clone()));
    assert_eq!(system.booted, Some(h.old.clone()));
    assert_eq!(system.profile, Some(h.old.clone()));
    // The unit keeps its result until the state machine, with the result durable, asks for
    // its release.
    assert!(matches!(
        h.system.switch_state(SwitchId(3)).await.unwrap(),
        UnitState::Exited {
            exit_code: Some(0),
            ..
        }
    ));
    h.send(ActivationCommand::Release {
        switch: SwitchId(3),
    })
    .await;
    h.send(ActivationCommand::Realise {
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
    h.send(ActivationCommand::Run {
        switch: SwitchId(4),
        job,
    })
    .await;
    let SwitchOutcome::Failed {
        exit_code,
        output_tail,
        system,
    } = h.switch_finished(SwitchId(4)).await
    else {
        panic!("the failure was reported as success");
    };
    assert_eq!(exit_code, Some(2));
    assert!(
        output_tail.contains("activation script of /etc failed"),
        "{output_tail}"
    );
    assert_eq!(system.current, Some(h.old.clone()));
    // The profile was set before the script ran (a `switch` job sets it first).
    assert_eq!(system.profile, Some(h.new.clone()));
}

#[tokio::test]
async fn exit_4_is_a_failure_that_shows_the_switched_system() {
    let mut h = Harness::new();
    h.fake.behaviour(&h.new, Behaviour::PartialFailure);
    let job = job(&h.new, SwitchPurpose::Activate, SwitchAction::Test, false);
    h.send(ActivationCommand::Run {
        switch: SwitchId(5),
        job,
    })
    .await;
    let SwitchOutcome::Failed {
        exit_code,
        output_tail,
        system,
    } = h.switch_finished(SwitchId(5)).await
    else {
        panic!("exit 4 was reported as success");
    };
    assert_eq!(exit_code, Some(4));
    assert!(output_tail.contains("fake-broken.service"), "{output_tail}");
    assert_eq!(system.current, Some(h.new.clone()));
}

#[tokio::test]
async fn abort_stops_the_unit_and_reports_nothing() {
    let mut h = Harness::new();
    h.fake.behaviour(&h.new, Behaviour::Hang);
    let job = job(&h.new, SwitchPurpose::Activate, SwitchAction::Test, false);
    h.send(ActivationCommand::Run {
        switch: SwitchId(6),
        job,
    })
    .await;
    h.until_running(SwitchId(6)).await;
    h.send(ActivationCommand::Abort {
        switch: SwitchId(6),
    })
    .await;
    // A marker command: its event is the next one, so the aborted switch reported nothing.
    h.send(ActivationCommand::Realise {
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
    assert!(h.inputs.try_recv().is_err());
}

#[tokio::test]
async fn a_switch_that_cannot_launch_is_reported_failed() {
    let mut h = Harness::new();
    let absent = h.fake.missing_closure("nixos-system-absent");
    let job = job(&absent, SwitchPurpose::Activate, SwitchAction::Test, false);
    h.send(ActivationCommand::Run {
        switch: SwitchId(7),
        job,
    })
    .await;
    let SwitchOutcome::Failed {
        exit_code,
        output_tail,
        system,
    } = h.switch_finished(SwitchId(7)).await
    else {
        panic!("a switch that never ran was reported as success");
    };
    assert_eq!(exit_code, None);
    assert!(
        output_tail.contains("cannot launch the switch"),
        "{output_tail}"
    );
    assert_eq!(system.current, Some(h.old.clone()));
}

#[tokio::test]
async fn a_vanished_unit_is_reported_failed_without_exit_code() {
    let mut h = Harness::new();
    h.send(ActivationCommand::Watch {
        switch: SwitchId(8),
    })
    .await;
    let SwitchOutcome::Failed {
        exit_code,
        output_tail,
        ..
    } = h.switch_finished(SwitchId(8)).await
    else {
        panic!("a vanished unit was reported as success");
    };
    assert_eq!(exit_code, None);
    assert!(output_tail.contains("vanished"), "{output_tail}");
}

#[tokio::test]
async fn shutdown_leaves_the_switch_running_and_a_restarted_worker_watches_it() {
    let mut h = Harness::new();
    h.fake
        .behaviour(&h.new, Behaviour::SucceedAfter(Duration::from_millis(1500)));
    let job = job(&h.new, SwitchPurpose::Activate, SwitchAction::Test, false);
    h.send(ActivationCommand::Run {
        switch: SwitchId(9),
        job,
    })
    .await;
    h.until_running(SwitchId(9)).await;
    let receiver = h.stop().await;
    assert_eq!(
        h.system.switch_state(SwitchId(9)).await.unwrap(),
        UnitState::Running
    );

    // Commands queued while no worker runs are kept in the borrowed receiver.
    h.send(ActivationCommand::Watch {
        switch: SwitchId(9),
    })
    .await;
    h.send(ActivationCommand::Realise {
        target: h.new.clone(),
    })
    .await;
    h.start(receiver);
    let SwitchOutcome::Completed { system } = h.switch_finished(SwitchId(9)).await else {
        panic!("the watched switch did not complete");
    };
    assert_eq!(system.current, Some(h.new.clone()));
    assert!(matches!(
        h.next_event().await,
        Event::RealiseFinished { .. }
    ));
}

#[tokio::test]
async fn watch_follows_a_unit_launched_before_the_worker() {
    let mut h = Harness::new();
    h.fake
        .behaviour(&h.new, Behaviour::SucceedAfter(Duration::from_millis(500)));
    let job = job(&h.new, SwitchPurpose::Activate, SwitchAction::Test, false);
    h.system.start_switch(SwitchId(10), &job).await.unwrap();
    h.send(ActivationCommand::Watch {
        switch: SwitchId(10),
    })
    .await;
    assert!(matches!(
        h.switch_finished(SwitchId(10)).await,
        SwitchOutcome::Completed { .. }
    ));
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
    h.send(ActivationCommand::Reboot).await;
    h.send(ActivationCommand::Realise {
        target: h.old.clone(),
    })
    .await;
    h.next_event().await;
    assert!(h.fake.reboot_requested());
    let _ = h.stop().await;
}

/// A backend whose first switch loses the race for the switch lock, as when a manual
/// `nixos-rebuild` grabs it between the agent's check and the script's start. The race cannot
/// be staged deterministically with real processes, so this double scripts the unit's states.
#[derive(Default)]
struct LockRace {
    calls: std::sync::Mutex<Vec<&'static str>>,
}

impl LockRace {
    fn record(&self, call: &'static str) -> usize {
        let mut calls = self.calls.lock().unwrap();
        calls.push(call);
        calls.iter().filter(|c| **c == call).count()
    }
}

impl System for LockRace {
    async fn observe(
        &self,
    ) -> Result<fleetnode_state_machine::SystemView, crate::system::SystemError> {
        Ok(Default::default())
    }
    async fn boot_id(&self) -> Result<Option<String>, crate::system::SystemError> {
        Ok(None)
    }
    async fn realise(&self, _: &StorePath) -> RealiseResult {
        RealiseResult::Realised
    }
    async fn start_switch(
        &self,
        _: SwitchId,
        _: &fleetnode_state_machine::SwitchJob,
    ) -> Result<(), crate::system::SystemError> {
        self.record("start");
        Ok(())
    }
    async fn switch_state(&self, _: SwitchId) -> Result<UnitState, crate::system::SystemError> {
        let starts = self
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| **c == "start")
            .count();
        self.record("state");
        Ok(UnitState::Exited {
            exit_code: Some(if starts == 1 { 1 } else { 0 }),
            output_tail: if starts == 1 {
                "Could not acquire lock\n".to_owned()
            } else {
                String::new()
            },
        })
    }
    async fn stop_switch(&self, _: SwitchId) -> Result<(), crate::system::SystemError> {
        self.record("stop");
        Ok(())
    }
    async fn reboot(&self) -> Result<(), crate::system::SystemError> {
        Ok(())
    }
    async fn unit_active(&self, _: &str) -> Result<bool, crate::system::SystemError> {
        Ok(true)
    }
}

#[tokio::test(start_paused = true)]
async fn a_switch_that_lost_the_lock_race_is_started_again_not_failed() {
    let system = Arc::new(LockRace::default());
    let (commands, mut receiver) = mpsc::channel(ACTIVATION_CHANNEL_CAPACITY);
    let (inputs, mut events) = mpsc::channel(4);
    let cancel = CancellationToken::new();
    let worker = {
        let system = system.clone();
        let cancel = cancel.clone();
        tokio::spawn(async move { run_polling(system, &mut receiver, inputs, cancel, POLL).await })
    };
    let closure =
        StorePath::parse("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-x").unwrap();
    let job = job(&closure, SwitchPurpose::Activate, SwitchAction::Test, false);
    commands
        .send(ActivationCommand::Run {
            switch: SwitchId(1),
            job,
        })
        .await
        .unwrap();
    let Some(Input::Event(Event::SwitchFinished { outcome, .. })) = events.recv().await else {
        panic!("no switch result");
    };
    assert!(
        matches!(outcome, SwitchOutcome::Completed { .. }),
        "{outcome:?}"
    );
    cancel.cancel();
    worker.await.unwrap().unwrap();
    let calls = system.calls.lock().unwrap().clone();
    // The lost race is released and launched again; the finished unit stays for `Release`.
    assert_eq!(calls, ["start", "state", "stop", "start", "state"]);
}
