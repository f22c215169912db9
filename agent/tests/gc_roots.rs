//! The generations a rollback depends on survive a garbage collection: the real runtime (store,
//! event loop, activation worker) on an in-memory host that models the collector, which deletes
//! every closure the agent does not root, as `nix-collect-garbage -d` does once the old profile
//! generations are gone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_agent::config::Config;
use fleetnode_agent::input::Input;
use fleetnode_agent::runtime::eventloop::Exit;
use fleetnode_agent::testing::{self, Handles, MemorySystem};
use fleetnode_state_machine::{
    ActivationMode, DesiredState, Directive, DirectiveKind, Event, HealthOverrides, ProbeId,
    ProbeResult, Revision, StorePath,
};
use fleetnode_wire::{AgentStatus, PhaseKind};
use tokio_util::sync::CancellationToken;

const OLD: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-gen-1";
const NEW: &str = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-gen-2";

fn path(text: &str) -> StorePath {
    StorePath::parse(text).unwrap()
}

async fn wait(handles: &Handles, what: &str, done: impl Fn(&AgentStatus) -> bool) {
    let mut status = handles.status.clone();
    tokio::time::timeout(Duration::from_secs(3600), status.wait_for(|s| done(s)))
        .await
        .unwrap_or_else(|_| panic!("never {what}: {:?}", handles.status.borrow()))
        .unwrap();
}

async fn send(handles: &Handles, event: Event) {
    handles.inputs.send(Input::Event(event)).await.unwrap();
}

fn directive(revision: u64, kind: DirectiveKind) -> Event {
    Event::DesiredObserved(DesiredState {
        revision: Revision(revision),
        directive: Some(Directive {
            revision: Revision(revision),
            kind,
        }),
        paused: false,
    })
}

#[tokio::test(start_paused = true)]
async fn a_rollback_after_a_garbage_collection_finds_its_generation() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "control_plane_url = \"https://cp.invalid\"\nhost_id = \"web-01\"\ntoken_file = \"/nonexistent\"\nstate_dir = \"{}\"\n[admin]\nmetrics = false\nsocket = \"{}\"\n[health]\nsoak = \"10s\"\nsustained_failure = \"1h\"\n",
        dir.path().join("state").display(),
        dir.path().join("admin.sock").display(),
    );
    let config = Config::parse(&text).unwrap();
    let system = Arc::new(MemorySystem::running(Some(path(OLD)), "boot-1"));
    let cancel = CancellationToken::new();
    let agent = testing::start_offline(config, system.clone(), cancel.clone())
        .await
        .unwrap()
        .unwrap();
    let handles = agent.handles();
    let task = tokio::spawn(agent.run(None));

    // The generation in place is rooted from the start.
    wait(&handles, "idle", |s| s.phase == PhaseKind::Idle).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(system.kept(), BTreeSet::from([path(OLD)]));

    // A switch-mode activation moves the profile: the old generation is now only a
    // known-good one, which an age-based collection would take.
    let activate = DirectiveKind::Activate {
        target: path(NEW),
        mode: Some(ActivationMode::Switch),
        health: HealthOverrides::default(),
    };
    send(&handles, directive(1, activate)).await;
    wait(&handles, "soaking", |s| s.phase == PhaseKind::Soaking).await;
    let epoch = handles.status.borrow().probe_epoch;
    let passed = ProbeResult {
        probe: ProbeId::control_plane(),
        epoch,
        passed: true,
        detail: "reachable".into(),
    };
    send(&handles, Event::ProbeResult(passed)).await;
    wait(&handles, "converged", |s| s.phase == PhaseKind::Converged).await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(system.kept(), BTreeSet::from([path(OLD), path(NEW)]));

    let collected = system.collect_garbage(&[path(OLD)]);
    assert!(collected.is_empty(), "the collector took {collected:?}");

    send(&handles, directive(2, DirectiveKind::Rollback { to: None })).await;
    wait(&handles, "back on the old generation", |s| {
        s.system.current == Some(path(OLD)) && s.phase != PhaseKind::RollingBack
    })
    .await;
    let status = handles.status.borrow().clone();
    assert_ne!(status.phase, PhaseKind::Failed, "{status:?}");
    assert_eq!(status.system.profile, Some(path(OLD)), "{status:?}");

    cancel.cancel();
    assert_eq!(task.await.unwrap(), Exit::Stopped);
}

#[tokio::test(start_paused = true)]
async fn without_a_root_the_collector_takes_the_generation_and_its_switch_fails() {
    use fleetnode_agent::system::{System, SystemError};
    use fleetnode_state_machine::{SwitchAction, SwitchId, SwitchJob, SwitchPurpose};
    let system = MemorySystem::running(Some(path(NEW)), "boot-1");
    system
        .keep_generations(&BTreeSet::from([path(NEW)]))
        .await
        .unwrap();
    assert_eq!(system.collect_garbage(&[path(OLD)]), vec![path(OLD)]);
    let job = SwitchJob {
        purpose: SwitchPurpose::Rollback,
        closure: path(OLD),
        action: SwitchAction::Switch,
        set_profile: true,
    };
    let refused = system.start_switch(SwitchId(1), &job).await;
    assert!(
        matches!(refused, Err(SystemError::MissingScript { .. })),
        "{refused:?}"
    );
}
