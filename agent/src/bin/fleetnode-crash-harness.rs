//! The crash test's harness (feature `testing`): the real runtime (store, event loop,
//! activation jobs, recovery) on an in-memory host, fed a steady stream of inputs, printing
//! the seq of the latest event once the transaction holding it committed. The crash test kills
//! it with SIGKILL at random moments and checks that every printed seq is in the store.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_agent::config::Config;
use fleetnode_agent::input::Input;
use fleetnode_agent::runtime::eventloop::Exit;
use fleetnode_agent::testing::{self, Handles, MemorySystem};
use fleetnode_state_machine::{
    DesiredState, Directive, DirectiveKind, Event, HealthOverrides, ProbeId, ProbeResult, Revision,
    StorePath,
};
use tokio_util::sync::CancellationToken;

const GENERATIONS: [&str; 2] = [
    "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-a",
    "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-nixos-system-b",
];

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let (Some(flag), Some(dir), None) = (args.next(), args.next(), args.next()) else {
        eprintln!("usage: fleetnode-crash-harness --state-dir DIR");
        return ExitCode::from(2);
    };
    if flag != "--state-dir" {
        eprintln!("usage: fleetnode-crash-harness --state-dir DIR");
        return ExitCode::from(2);
    }
    run(&PathBuf::from(dir))
}

fn run(state_dir: &Path) -> ExitCode {
    let text = format!(
        "control_plane_url = \"https://cp.invalid\"\nhost_id = \"crash-test\"\ntoken_file = \"/nonexistent\"\nstate_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\nsocket = \"{}\"\n[health]\nsoak = \"1s\"\nsustained_failure = \"1h\"\n",
        state_dir.display(),
        state_dir.join("admin.sock").display()
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
        let cancel = CancellationToken::new();
        let agent = match testing::start_offline(config, system, cancel).await {
            Ok(Some(agent)) => agent,
            Ok(None) => return ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("crash-harness: {e}");
                return ExitCode::FAILURE;
            }
        };
        let handles = agent.handles();
        tokio::spawn(print_commits(handles.clone()));
        tokio::spawn(feed(handles));
        match agent.run(None).await {
            Exit::Stopped | Exit::Restart(_) => ExitCode::SUCCESS,
        }
    })
}

/// Prints the seq of the latest event every time the published status moves on: the status is
/// published only after the transaction that holds its events committed.
async fn print_commits(handles: Handles) {
    let mut status = handles.status;
    loop {
        let seq = status.borrow_and_update().last_seq;
        {
            let mut out = std::io::stdout().lock();
            // The parent may be gone; nothing to do then.
            let _ = writeln!(out, "{seq}");
            let _ = out.flush();
        }
        if status.changed().await.is_err() {
            return;
        }
    }
}

/// Pause, resume, probe results and now and then a new directive, forever.
async fn feed(handles: Handles) {
    let start = handles.status.borrow().desired_revision.map_or(0, |r| r.0);
    for round in 1u64.. {
        let epoch = handles.status.borrow().probe_epoch;
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
            let revision = Revision(start + round);
            inputs.push(Event::DesiredObserved(DesiredState {
                revision,
                directive: Some(Directive {
                    revision,
                    kind: DirectiveKind::Activate {
                        target,
                        mode: None,
                        health: HealthOverrides::default(),
                    },
                }),
                paused: false,
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
