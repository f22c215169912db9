//! The hidden `crash-harness` subcommand: the real runtime (store, reducer, applier, activation
//! worker, recovery) on an in-memory host, fed a steady stream of inputs, printing the seq of
//! every event right after the transaction holding it committed. The crash test kills it with
//! SIGKILL at random moments and checks that every printed seq is in the store.

use std::io::Write as _;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_agent::config::Config;
use fleetnode_agent::input::Input;
use fleetnode_agent::runtime::agent::{self, Exit, Hooks};
use fleetnode_agent::testing::MemorySystem;
use fleetnode_state_machine::{
    Directive, DirectiveKind, Event, HealthOverrides, ProbeId, ProbeResult, Revision, StorePath,
};
use tokio_util::sync::CancellationToken;

const GENERATIONS: [&str; 2] = [
    "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-a",
    "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-b",
];

pub fn run(state_dir: &Path) -> ExitCode {
    let text = format!(
        "control_plane_url = \"https://cp.invalid\"\nhost_id = \"crash-test\"\ntoken_file = \"/nonexistent\"\nstate_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[health]\nsoak = \"1s\"\nsustained_failure = \"1h\"\n",
        state_dir.display()
    );
    let config = match Config::parse(&text) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("crash-harness: {e}");
            return ExitCode::FAILURE;
        }
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::FAILURE;
    };
    let Ok(first) = StorePath::parse(GENERATIONS[0]) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let system = Arc::new(MemorySystem::running(Some(first), "boot-1"));
        let hooks = Hooks {
            offline: true,
            on_commit: Some(Box::new(|events| {
                let mut out = std::io::stdout().lock();
                for event in events {
                    // The parent may be gone; nothing to do then.
                    let _ = writeln!(out, "{}", event.seq);
                }
                let _ = out.flush();
            })),
            ..Hooks::default()
        };
        let cancel = CancellationToken::new();
        let result = agent::run(config, system, cancel, hooks, |handles| {
            tokio::spawn(feed(handles));
        })
        .await;
        match result {
            Ok(Exit::Stopped | Exit::Restart(_)) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("crash-harness: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// Pause, resume, probe results and now and then a new directive, forever.
async fn feed(handles: agent::Handles) {
    let start = handles
        .published
        .snapshot
        .borrow()
        .desired_revision
        .map_or(0, |r| r.0);
    for round in 1u64.. {
        let epoch = handles.published.snapshot.borrow().probe_epoch;
        let mut inputs = vec![
            Event::PauseRequested,
            Event::ResumeRequested,
            Event::ProbeResult(ProbeResult {
                probe: ProbeId::control_plane(),
                epoch,
                passed: round % 3 != 0,
                detail: format!("round {round}"),
            }),
        ];
        if round % 20 == 0
            && let Ok(target) = StorePath::parse(GENERATIONS[(round / 20 % 2) as usize])
        {
            inputs.push(Event::DirectiveReceived(Directive {
                revision: Revision(start + round),
                kind: DirectiveKind::Activate {
                    target,
                    mode: None,
                    health: HealthOverrides::default(),
                },
            }));
        }
        for event in inputs {
            if handles.inputs.send(Input::Event(event)).await.is_err() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
