//! Restarting into a new version of the agent.
//!
//! The NixOS module keeps systemd from restarting the agent during a switch (a switch must not
//! kill the agent that follows it). So after a generation is committed, the agent checks
//! whether that generation changed its own unit file or binary; if it did, the agent exits
//! cleanly and `Restart=always` starts the new definition. This module observes; the state
//! machine decides (see `Command::CheckAgentUpgrade`).
//!
//! The rule, kept simple and safe:
//! - only when running as a systemd service (`INVOCATION_ID` is set);
//! - at start, remember where `<root>/run/current-system/etc/systemd/system/fleetnode-agent.service`
//!   and the running executable (`/proc/self/exe`) resolve to;
//! - after each convergence (the state machine asks), restart when the unit file now resolves
//!   elsewhere, or when
//!   `<root>/run/current-system/sw/bin/fleetnode-agent` exists and resolves to another binary
//!   than the one running. A path that cannot be resolved counts as unchanged.

use std::path::{Path, PathBuf};

/// The agent's unit inside a system generation.
pub const UNIT_PATH: &str = "run/current-system/etc/systemd/system/fleetnode-agent.service";
/// The agent's binary inside a system generation (when it is in `environment.systemPackages`).
pub const BINARY_PATH: &str = "run/current-system/sw/bin/fleetnode-agent";

/// What the agent started with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Running {
    root: PathBuf,
    unit: Option<PathBuf>,
    exe: Option<PathBuf>,
}

impl Running {
    /// Records the running unit and binary under `root`.
    pub fn capture(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            unit: std::fs::canonicalize(root.join(UNIT_PATH)).ok(),
            exe: std::fs::canonicalize("/proc/self/exe").ok(),
        }
    }

    /// Why the agent should restart now, if it should.
    pub fn changed(&self) -> Option<String> {
        let unit = std::fs::canonicalize(self.root.join(UNIT_PATH)).ok();
        if let (Some(before), Some(now)) = (&self.unit, &unit)
            && before != now
        {
            return Some(format!(
                "the committed generation has a new fleetnode-agent.service ({} instead of {})",
                now.display(),
                before.display()
            ));
        }
        let binary = std::fs::canonicalize(self.root.join(BINARY_PATH)).ok();
        if let (Some(running), Some(now)) = (&self.exe, &binary)
            && running != now
        {
            return Some(format!(
                "the committed generation has a new agent binary ({} instead of {})",
                now.display(),
                running.display()
            ));
        }
        None
    }
}

impl Running {
    /// [`Running::capture`] when the agent runs as a systemd service (`INVOCATION_ID` is set):
    /// otherwise nobody would start the new version after the agent exits.
    pub fn capture_if_service(root: &Path) -> Option<Self> {
        std::env::var_os("INVOCATION_ID")?;
        Some(Self::capture(root))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_unit_in_the_committed_generation_asks_for_a_restart() {
        let root = tempfile::tempdir().unwrap();
        let gen_a = root.path().join("gen-a");
        let gen_b = root.path().join("gen-b");
        for generation in [&gen_a, &gen_b] {
            let dir = generation.join("etc/systemd/system");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(
                dir.join("fleetnode-agent.service"),
                generation.to_str().unwrap(),
            )
            .unwrap();
        }
        std::fs::create_dir_all(root.path().join("run")).unwrap();
        let link = root.path().join("run/current-system");
        std::os::unix::fs::symlink(&gen_a, &link).unwrap();
        let running = Running::capture(root.path());
        assert_eq!(running.changed(), None);
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(&gen_b, &link).unwrap();
        let why = running.changed().unwrap();
        assert!(why.contains("fleetnode-agent.service"), "{why}");
    }

    #[test]
    fn missing_paths_count_as_unchanged() {
        let root = tempfile::tempdir().unwrap();
        let running = Running::capture(root.path());
        assert_eq!(running.changed(), None);
    }
}
