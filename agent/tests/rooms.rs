//! The agent's rooms: the workers (activation, probes, the control-plane workers and the admin
//! surfaces) use the status, the metrics, the store's reader and the input channel, which live
//! below the runtime, and never reach up into `src/runtime/`: the runtime starts the workers,
//! not the other way round. This reads the sources, so a new upward import fails here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

/// The workers' sources, relative to the crate.
const WORKERS: [&str; 2] = ["src/workers.rs", "src/workers"];

fn sources(path: &Path, found: &mut Vec<PathBuf>) {
    if path.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        entries.sort();
        for entry in entries {
            sources(&entry, found);
        }
    } else if path.extension().is_some_and(|ext| ext == "rs") {
        found.push(path.to_owned());
    }
}

/// The lines of `text` that name the runtime module as a path (comments aside).
fn runtime_paths(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .filter(|line| {
            line.contains("crate::runtime")
                || line.contains("fleetnode_agent::runtime")
                || line.contains("super::runtime")
        })
        .map(str::to_owned)
        .collect()
}

#[test]
fn no_worker_imports_the_runtime() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    for worker in WORKERS {
        let path = root.join(worker);
        assert!(
            path.exists(),
            "{} is gone; update this list",
            path.display()
        );
        sources(&path, &mut files);
    }
    assert!(files.len() > 10, "too few sources found: {files:?}");
    let mut upward = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a readable source");
        for line in runtime_paths(&text) {
            upward.push(format!("{}: {}", file.display(), line.trim()));
        }
    }
    assert!(
        upward.is_empty(),
        "workers reach up into src/runtime/ (move what they need below it, as the status is):\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_check_sees_an_upward_import() {
    let text = "//! crate::runtime in a comment is fine\nuse crate::runtime::eventloop::Exit;\n";
    assert_eq!(
        runtime_paths(text),
        vec!["use crate::runtime::eventloop::Exit;".to_owned()]
    );
}
