//! The real agent takes the frozen desired-state answers of every released protocol version
//! (`tests/compat/protocol-*/control-plane/desired-answer*.json`), served as they were frozen
//! with that version's header, and acts on them as they meant.

use std::path::{Path, PathBuf};

use fleetnode_state_machine::{
    ActivationMode, DesiredState, Directive, DirectiveKind, FailurePolicy, Millis, Report,
};
use serde_json::Value;

use crate::world::World;

/// Every frozen desired answer, by file.
fn frozen_answers() -> Vec<(PathBuf, Value)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat");
    let mut found = Vec::new();
    for version in std::fs::read_dir(&root).unwrap() {
        let dir = version.unwrap().path().join("control-plane");
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        for file in files {
            let path = file.unwrap().path();
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            if stem.starts_with("desired-answer") {
                let value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                found.push((path, value));
            }
        }
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(found.len() >= 2, "frozen desired answers: {found:?}");
    found
}

/// The protocol version of a frozen file: `1.0` for `.../protocol-1.0/control-plane/x.json`.
fn version_of(path: &Path) -> &'static str {
    let dir = path
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .file_name()
        .unwrap();
    let version = dir
        .to_string_lossy()
        .trim_start_matches("protocol-")
        .to_owned();
    // The scripted server takes a &'static header; a test leaks these few bytes per version.
    Box::leak(version.into_boxed_str())
}

#[test]
fn the_agent_acts_on_every_frozen_desired_answer_as_it_meant() {
    for (path, answer) in frozen_answers() {
        let name = path.display().to_string();
        assert_eq!(answer["changed"], true, "{name}: a first answer");
        let desired: DesiredState = serde_json::from_value(answer["desired"].clone()).unwrap();
        let directive = desired.directive.clone().expect("a frozen directive");
        let mut w = World::start(|s| {
            s.version = Some(version_of(&path));
            s.desired = answer["desired"].clone();
        });
        // The agent records the directive as it was sent (same revision, kind and fields)...
        let recorded: Directive = w.wait_for(&format!("{name}: the directive recorded"), |s| {
            s.log.iter().find_map(|e| match &e.report {
                Report::DirectiveRecorded { directive } => Some(directive.clone()),
                _ => None,
            })
        });
        assert_eq!(recorded, directive, "{name}");
        // ...and does what it says.
        match &directive.kind {
            DirectiveKind::Activate {
                target,
                mode,
                health,
            } => {
                let work = w.wait_for(&format!("{name}: the work started"), |s| {
                    s.log.iter().find_map(|e| match &e.report {
                        Report::WorkStarted { work } => Some(work.clone()),
                        _ => None,
                    })
                });
                assert_eq!(&work.target, target, "{name}");
                assert_eq!(work.revision, directive.revision, "{name}");
                assert_eq!(Some(work.mode), *mode, "{name}");
                assert_eq!(Some(work.health.soak_ms), health.soak_ms, "{name}");
                assert_eq!(Some(work.health.on_failure), health.on_failure, "{name}");
                // The frozen 1.0 answer: five minutes of soak, test first, roll back on failure.
                if name.contains("protocol-1.0") {
                    assert_eq!(work.mode, ActivationMode::TestThenCommit, "{name}");
                    assert_eq!(work.health.soak_ms, Millis(300_000), "{name}");
                    assert_eq!(work.health.on_failure, FailurePolicy::Rollback, "{name}");
                }
            }
            DirectiveKind::Rollback { .. } => {
                // Held by the control plane: the agent pauses and starts nothing.
                assert!(
                    desired.paused,
                    "{name}: the frozen rollback answer is paused"
                );
                w.wait_for(&format!("{name}: paused"), |s| {
                    s.log
                        .iter()
                        .any(|e| matches!(e.report, Report::Paused))
                        .then_some(())
                });
                let s = w.server.lock();
                assert!(
                    !s.log.iter().any(|e| matches!(
                        e.report,
                        Report::RollbackStarted { .. } | Report::WorkStarted { .. }
                    )),
                    "{name}: acted while paused"
                );
            }
        }
    }
}
