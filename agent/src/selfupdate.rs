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
//!
//! Paths inside a generation are resolved as the host sees them: an absolute link target (such
//! as `/nix/store/…`) is read under the configured root, so an agent given another root (a test
//! root, a mounted image) compares the binaries of that root, not of the machine it runs on.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Most symbolic links followed while resolving one path (the kernel's own limit).
const MAX_LINK_HOPS: usize = 40;

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
            unit: resolve_in_root(root, Path::new(UNIT_PATH)),
            exe: std::fs::canonicalize("/proc/self/exe").ok(),
        }
    }

    /// Why the agent should restart now, if it should.
    pub fn changed(&self) -> Option<String> {
        let unit = resolve_in_root(&self.root, Path::new(UNIT_PATH));
        if let (Some(before), Some(now)) = (&self.unit, &unit)
            && before != now
        {
            return Some(format!(
                "the committed generation has a new fleetnode-agent.service ({} instead of {})",
                now.display(),
                before.display()
            ));
        }
        let binary = resolve_in_root(&self.root, Path::new(BINARY_PATH));
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

/// Where `path` (relative to `root`) leads once every symbolic link is followed the way the host
/// sees it: an absolute target starts again at `root`, and `..` never leaves it. `None` when a
/// part is missing or the links loop.
fn resolve_in_root(root: &Path, path: &Path) -> Option<PathBuf> {
    let mut resolved = root.to_owned();
    let mut pending: VecDeque<OsString> = parts(path).collect();
    let mut hops = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            if resolved != root {
                resolved.pop();
            }
            continue;
        }
        let next = resolved.join(&part);
        let meta = std::fs::symlink_metadata(&next).ok()?;
        if !meta.file_type().is_symlink() {
            resolved = next;
            continue;
        }
        hops += 1;
        if hops > MAX_LINK_HOPS {
            return None;
        }
        let target = std::fs::read_link(&next).ok()?;
        if target.is_absolute() {
            resolved = root.to_owned();
        }
        for (i, part) in parts(&target).enumerate() {
            pending.insert(i, part);
        }
    }
    Some(resolved)
}

/// The normal and `..` parts of `path` (its root and `.` parts left out).
fn parts(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.components().filter_map(|c| match c {
        Component::Normal(part) => Some(part.to_owned()),
        Component::ParentDir => Some(OsString::from("..")),
        Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
    })
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
        // As on a host: the link names the generation by its absolute path on the host.
        std::os::unix::fs::symlink("/gen-a", &link).unwrap();
        let running = Running::capture(root.path());
        assert_eq!(running.changed(), None);
        std::fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("/gen-b", &link).unwrap();
        let why = running.changed().unwrap();
        assert!(why.contains("fleetnode-agent.service"), "{why}");
    }

    #[test]
    fn missing_paths_count_as_unchanged() {
        let root = tempfile::tempdir().unwrap();
        let running = Running::capture(root.path());
        assert_eq!(running.changed(), None);
    }

    #[test]
    fn absolute_links_resolve_under_the_root_and_dot_dot_stays_inside_it() {
        let root = tempfile::tempdir().unwrap();
        let store = root.path().join("nix/store/aaa-agent/bin");
        std::fs::create_dir_all(&store).unwrap();
        std::fs::write(store.join("fleetnode-agent"), "agent").unwrap();
        let generation = root.path().join("nix/store/bbb-system/sw/bin");
        std::fs::create_dir_all(&generation).unwrap();
        std::os::unix::fs::symlink(
            "/nix/store/aaa-agent/bin/fleetnode-agent",
            generation.join("fleetnode-agent"),
        )
        .unwrap();
        std::fs::create_dir_all(root.path().join("run")).unwrap();
        std::os::unix::fs::symlink(
            "/nix/store/bbb-system",
            root.path().join("run/current-system"),
        )
        .unwrap();
        assert_eq!(
            resolve_in_root(root.path(), Path::new(BINARY_PATH)),
            Some(store.join("fleetnode-agent"))
        );
        std::os::unix::fs::symlink("../../../../..", root.path().join("run/up")).unwrap();
        assert_eq!(
            resolve_in_root(root.path(), Path::new("run/up/nix")),
            Some(root.path().join("nix"))
        );
        assert_eq!(resolve_in_root(root.path(), Path::new("run/missing")), None);
    }
}
