//! The runtime end to end: store, event loop, activation jobs and the control-plane workers
//! against a real local HTTP control plane, on an in-memory host.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{
    Directive, DirectiveKind, HealthOverrides, Millis, Report, Revision, StorePath, SwitchAction,
    SwitchPurpose,
};
use tokio_util::sync::CancellationToken;

use super::eventloop::Exit;
use crate::config::Config;
use crate::store::Store;
use crate::testing::{self, Handles, MemorySystem, Operation};
use crate::workers::control::testserver::TestServer;

const OLD: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-old";
const NEW: &str = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-new";

fn path(p: &str) -> StorePath {
    StorePath::parse(p).unwrap()
}

fn activate(revision: u64, target: &str) -> Directive {
    Directive {
        revision: Revision(revision),
        kind: DirectiveKind::Activate {
            target: path(target),
            mode: None,
            health: HealthOverrides {
                soak_ms: Some(Millis::from_secs(60)),
                ..HealthOverrides::default()
            },
        },
    }
}

struct Running {
    handles: Handles,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Exit>,
}

async fn start(config: &Config, system: &Arc<MemorySystem>) -> Running {
    let cancel = CancellationToken::new();
    let agent = testing::start(config.clone(), system.clone(), cancel.clone())
        .await
        .unwrap()
        .expect("the agent did not get ready");
    let handles = agent.handles();
    let task = tokio::spawn(agent.run(None));
    Running {
        handles,
        cancel,
        task,
    }
}

impl Running {
    async fn wait_for_phase(&mut self, phase: &str) {
        let mut status = self.handles.status.clone();
        tokio::time::timeout(
            Duration::from_secs(3600),
            status.wait_for(|s| s.phase.name() == phase),
        )
        .await
        .unwrap_or_else(|_| panic!("never reached {phase}"))
        .unwrap();
    }

    async fn stop(self) {
        self.cancel.cancel();
        assert_eq!(self.task.await.unwrap(), Exit::Stopped);
    }
}

fn config(server: &TestServer, dir: &std::path::Path) -> Config {
    let mut config = server.config(dir);
    config.admin_listen = "127.0.0.1:0".parse().unwrap();
    config.admin_socket = dir.join("admin.sock");
    config.heartbeat_interval = Millis::from_secs(30);
    config
}

/// Waits until the control plane holds every event the agent emitted.
async fn wait_delivered(server: &TestServer, running: &Running) {
    for _ in 0..600 {
        let last = running.handles.status.borrow().last_seq;
        if server.lock().acked_through >= last && last > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("events were not delivered");
}

#[tokio::test(start_paused = true)]
async fn a_directive_goes_through_activation_soak_and_commit() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&server, dir.path());
    let system = Arc::new(MemorySystem::running(Some(path(OLD)), "boot-1"));
    let mut running = start(&config, &system).await;
    server.set_desired(|d| d.directive = Some(activate(1, NEW)));
    running.wait_for_phase("converged").await;
    wait_delivered(&server, &running).await;

    // The host runs the target, committed, after exactly one activation and one commit.
    let view = system.view();
    assert_eq!(view.current, Some(path(NEW)));
    assert_eq!(view.profile, Some(path(NEW)));
    let started: Vec<_> = system
        .operations()
        .into_iter()
        .filter_map(|op| match op {
            Operation::Started(_, job) => Some((job.purpose, job.action, job.set_profile)),
            Operation::Realised(_) | Operation::Stopped(_) | Operation::Reboot => None,
        })
        .collect();
    assert_eq!(
        started,
        vec![
            (SwitchPurpose::Activate, SwitchAction::Test, false),
            (SwitchPurpose::Commit, SwitchAction::Boot, true),
        ]
    );
    // Every event reached the control plane, in order, without holes.
    {
        let r = server.lock();
        let seqs: Vec<u64> = r.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        let names: Vec<&str> = r.events.iter().map(|e| e.report.name()).collect();
        for expected in [
            "recovered",
            "directive-recorded",
            "work-started",
            "realised",
            "activation-started",
            "switch-ended",
            "soak-started",
            "probe-observed",
            "commit-started",
            "converged",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        assert!(matches!(
            r.events.last().unwrap().report,
            Report::Converged { .. }
        ));
        // Heartbeats carry the stream and the state.
        let hb = r.heartbeats.last().unwrap();
        assert_eq!(hb.agent_version, env!("CARGO_PKG_VERSION"));
        assert!(hb.workers.iter().any(|w| w.name == "drainer"));
    }
    // The acknowledged events left the local queue.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(running.handles.status.borrow().queue.depth, 0);
    running.stop().await;

    // The store reopens in the converged state.
    let opened = Store::open(&config.state_dir).unwrap();
    assert_eq!(opened.state.host.phase.name(), "converged");
    assert!(opened.reset.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_restart_during_a_switch_follows_the_running_unit_without_a_second_activation() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&server, dir.path());
    let system = Arc::new(MemorySystem::running(Some(path(OLD)), "boot-1"));
    system.hold_switches(true);
    let mut running = start(&config, &system).await;
    server.set_desired(|d| d.directive = Some(activate(1, NEW)));
    running.wait_for_phase("activating").await;
    running.stop().await;

    // The switch is still running when the agent comes back; it finishes meanwhile.
    let switch = system
        .operations()
        .iter()
        .find_map(|op| match op {
            Operation::Started(id, _) => Some(*id),
            Operation::Realised(_) | Operation::Stopped(_) | Operation::Reboot => None,
        })
        .unwrap();
    let mut running = start(&config, &system).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(running.handles.status.borrow().phase.name(), "activating");
    system.hold_switches(false);
    system.release(switch);
    running.wait_for_phase("converged").await;
    let activations = system
        .operations()
        .iter()
        .filter(
            |op| matches!(op, Operation::Started(_, job) if job.purpose == SwitchPurpose::Activate),
        )
        .count();
    assert_eq!(activations, 1, "the activation ran twice");
    wait_delivered(&server, &running).await;
    {
        let r = server.lock();
        let seqs: Vec<u64> = r.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        let recovered = r
            .events
            .iter()
            .filter(|e| e.report.name() == "recovered")
            .count();
        assert_eq!(recovered, 2);
    }
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_activation_rolls_back_and_the_agent_keeps_running() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&server, dir.path());
    let system = Arc::new(MemorySystem::running(Some(path(OLD)), "boot-1"));
    system.fail_switch(path(NEW), 1);
    // A store that knows OLD as known-good, so there is a rollback target.
    let mut running = start(&config, &system).await;
    server.set_desired(|d| d.directive = Some(activate(1, OLD)));
    running.wait_for_phase("converged").await;
    server.set_desired(|d| d.directive = Some(activate(2, NEW)));
    running.wait_for_phase("reverted").await;
    assert_eq!(system.view().current, Some(path(OLD)));
    let status = running.handles.status.borrow().clone();
    assert!(
        status
            .reason
            .as_ref()
            .unwrap()
            .to_string()
            .contains("exited with code 1")
    );
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_held_switch_lock_waits_and_the_switch_runs_once_it_is_free() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&server, dir.path());
    let system = Arc::new(MemorySystem::running(Some(path(OLD)), "boot-1"));
    system.hold_lock(true);
    let mut running = start(&config, &system).await;
    server.set_desired(|d| d.directive = Some(activate(1, NEW)));
    running.wait_for_phase("activating").await;
    // Another switch holds the lock for a minute: the activation waits, never fails.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(running.handles.status.borrow().phase.name(), "activating");
    let started = |system: &MemorySystem| {
        system
            .operations()
            .iter()
            .filter(|op| matches!(op, Operation::Started(..)))
            .count()
    };
    assert_eq!(started(&system), 0, "nothing ran while the lock was held");
    system.hold_lock(false);
    running.wait_for_phase("converged").await;
    assert_eq!(system.view().current, Some(path(NEW)));
    // The activation and the commit, each once.
    assert_eq!(started(&system), 2);
    running.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_committed_generation_with_a_new_agent_makes_the_agent_restart() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(&server, dir.path());
    let system = Arc::new(MemorySystem::running(Some(path(OLD)), "boot-1"));
    system.set_agent_upgrade(Some("the committed generation has a new agent binary"));
    let running = start(&config, &system).await;
    server.set_desired(|d| d.directive = Some(activate(1, NEW)));
    let exit = tokio::time::timeout(Duration::from_secs(3600), running.task)
        .await
        .expect("the agent did not restart")
        .unwrap();
    assert_eq!(
        exit,
        Exit::Restart("the committed generation has a new agent binary".into())
    );
    // It restarts only once the generation is committed and recorded as converged.
    let opened = Store::open(&config.state_dir).unwrap();
    assert_eq!(opened.state.host.phase.name(), "converged");
    assert_eq!(system.view().profile, Some(path(NEW)));
}
