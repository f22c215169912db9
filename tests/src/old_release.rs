//! The binaries of the latest release, for the tests that run it against the tree under test.
//!
//! `tests/compat/releases.toml` names every release and its commit; the last one is the latest.
//! [`binaries`] builds that commit's `fleetnode-agent` and `fleetnode-cp` (debug, only those two
//! binaries) from a `git worktree` of it, once per commit, into a cache directory outside the
//! repository, and hands back their paths; later runs find them there. The cache:
//!
//! - `$FLEETNODE_RELEASE_CACHE` when set, else `/var/cache/fleetnode-releases` (as root),
//!   else `~/.cache/fleetnode-releases`;
//! - `<cache>/<commit>/bin/` holds the two binaries, written last, so a build that was
//!   interrupted is built again;
//! - `<cache>/target/` is the cargo target directory of every release build (the next
//!   release's build reuses its compiled dependencies);
//! - `<cache>/lock` serialises builds between test processes (and the tests of one process).
//!
//! A commit missing from the clone (a shallow clone, or a release not fetched) is a clear error
//! that says how to fetch it; nothing is built then.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;

use crate::binaries::{AGENT, CONTROL_PLANE};
use crate::{HarnessError, Result};

/// Overrides where release builds are cached.
pub const CACHE_VARIABLE: &str = "FLEETNODE_RELEASE_CACHE";
/// Where release builds are cached unless [`CACHE_VARIABLE`] says otherwise.
pub const DEFAULT_CACHE: &str = "/var/cache/fleetnode-releases";

/// One release, as `tests/compat/releases.toml` records it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReleaseRecord {
    /// The crates' version in that release.
    pub version: String,
    /// The release's commit (full hash).
    pub commit: String,
    /// The protocol version it speaks, `<major>.<minor>`.
    pub protocol: String,
}

#[derive(Debug, Deserialize)]
struct Releases {
    release: Vec<ReleaseRecord>,
}

/// The two binaries of a release.
#[derive(Debug, Clone)]
pub struct ReleaseBinaries {
    /// The release they were built from.
    pub release: ReleaseRecord,
    /// Its `fleetnode-agent`.
    pub agent: PathBuf,
    /// Its `fleetnode-cp`.
    pub control_plane: PathBuf,
}

/// The repository's root (the workspace this crate belongs to).
pub fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// Every release, oldest first, from `tests/compat/releases.toml`.
pub fn releases() -> Result<Vec<ReleaseRecord>> {
    let file = repository().join("tests/compat/releases.toml");
    let text = std::fs::read_to_string(&file)
        .map_err(HarnessError::io(format!("read {}", file.display())))?;
    let releases: Releases = toml::from_str(&text).map_err(|e| HarnessError::Setup {
        what: format!("the release list {}", file.display()),
        message: e.to_string(),
    })?;
    Ok(releases.release)
}

/// The latest release.
pub fn latest() -> Result<ReleaseRecord> {
    releases()?.pop().ok_or_else(|| HarnessError::Setup {
        what: "the latest release".into(),
        message: "tests/compat/releases.toml lists no release".into(),
    })
}

/// The latest release's binaries, built on first use and cached.
pub fn binaries() -> Result<ReleaseBinaries> {
    let release = latest()?;
    build_cached(&repository(), &cache_dir(), release)
}

/// `$FLEETNODE_RELEASE_CACHE`; else [`DEFAULT_CACHE`] when it can be created (as root);
/// else `~/.cache/fleetnode-releases` for a user without root.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(CACHE_VARIABLE) {
        return PathBuf::from(dir);
    }
    let system = PathBuf::from(DEFAULT_CACHE);
    if std::fs::create_dir_all(&system).is_ok() {
        return system;
    }
    match std::env::var_os("HOME") {
        Some(home) => Path::new(&home).join(".cache/fleetnode-releases"),
        None => system,
    }
}

/// Builds `release` from `repo` into `cache` unless it is there already.
pub fn build_cached(repo: &Path, cache: &Path, release: ReleaseRecord) -> Result<ReleaseBinaries> {
    let bin = cache.join(&release.commit).join("bin");
    let found = ReleaseBinaries {
        agent: bin.join(AGENT),
        control_plane: bin.join(CONTROL_PLANE),
        release,
    };
    if found.agent.is_file() && found.control_plane.is_file() {
        return Ok(found);
    }
    std::fs::create_dir_all(cache).map_err(HarnessError::io(format!(
        "create the release cache {} (set {CACHE_VARIABLE} to a writable directory outside \
         the repository)",
        cache.display()
    )))?;
    let lock = std::fs::File::create(cache.join("lock"))
        .map_err(HarnessError::io(format!("create {}/lock", cache.display())))?;
    lock.lock()
        .map_err(HarnessError::io(format!("lock {}/lock", cache.display())))?;
    // Another process (or test) may have built it while this one waited for the lock.
    if found.agent.is_file() && found.control_plane.is_file() {
        return Ok(found);
    }
    require_commit(repo, &found.release)?;
    let source = cache.join(format!("source-{}", found.release.commit));
    if source.exists() {
        // Left by a build that was interrupted.
        let _ = git(repo, &["worktree", "remove", "--force", &path_arg(&source)]);
        let _ = std::fs::remove_dir_all(&source);
        let _ = git(repo, &["worktree", "prune"]);
    }
    git(
        repo,
        &[
            "worktree",
            "add",
            "--detach",
            &path_arg(&source),
            &found.release.commit,
        ],
    )?;
    let built = build(&source, &cache.join("target"), &bin);
    // The worktree is only needed for the build; the clone forgets it either way.
    let _ = git(repo, &["worktree", "remove", "--force", &path_arg(&source)]);
    let _ = git(repo, &["worktree", "prune"]);
    built?;
    Ok(found)
}

fn require_commit(repo: &Path, release: &ReleaseRecord) -> Result<()> {
    let object = format!("{}^{{commit}}", release.commit);
    if git(repo, &["cat-file", "-e", &object]).is_ok() {
        return Ok(());
    }
    Err(HarnessError::Setup {
        what: format!(
            "the latest release {} ({})",
            release.version, release.commit
        ),
        message: format!(
            "its commit is not in the clone at {} (a shallow clone, or a release not fetched); \
             fetch it with `git fetch --unshallow` or `git fetch origin {}`, then run the \
             test again",
            repo.display(),
            release.commit
        ),
    })
}

/// `cargo build` of the two binaries in `source`, copied into `bin` when both are built.
fn build(source: &Path, target: &Path, bin: &Path) -> Result<()> {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command
        .current_dir(source)
        .env("CARGO_TARGET_DIR", target)
        // No debug information: the binaries are run, never debugged, and link faster.
        .env("CARGO_PROFILE_DEV_DEBUG", "0")
        .args(["build", "--locked", "--package", "fleetnode-agent"])
        .args(["--package", "fleetnode-control-plane"])
        .args(["--bin", AGENT, "--bin", CONTROL_PLANE]);
    run(
        command,
        &format!("build the release in {}", source.display()),
    )?;
    std::fs::create_dir_all(bin).map_err(HarnessError::io(format!("create {}", bin.display())))?;
    for name in [CONTROL_PLANE, AGENT] {
        let from = target.join("debug").join(name);
        // The agent goes last: its presence says the cache entry is complete.
        let partial = bin.join(format!(".{name}.partial"));
        std::fs::copy(&from, &partial)
            .and_then(|_| std::fs::rename(&partial, bin.join(name)))
            .map_err(HarnessError::io(format!(
                "copy {} into {}",
                from.display(),
                bin.display()
            )))?;
    }
    Ok(())
}

fn git(repo: &Path, args: &[&str]) -> Result<String> {
    let mut command = Command::new("git");
    command.arg("-C").arg(repo).args(args);
    run(command, "run git")
}

fn run(mut command: Command, what: &str) -> Result<String> {
    let shown = format!("{command:?}");
    let output = command
        .output()
        .map_err(HarnessError::io(what.to_owned()))?;
    if !output.status.success() {
        return Err(HarnessError::Command {
            command: shown,
            status: output.status.to_string(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn path_arg(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_release_is_the_last_one_listed_and_names_a_full_commit() {
        let all = releases().unwrap();
        let latest = latest().unwrap();
        assert_eq!(all.last(), Some(&latest));
        assert_eq!(latest.commit.len(), 40, "{latest:?}");
        assert!(
            latest.commit.chars().all(|c| c.is_ascii_hexdigit()),
            "{latest:?}"
        );
    }

    #[test]
    fn a_commit_missing_from_the_clone_is_a_clear_error_and_builds_nothing() {
        let cache = tempfile::tempdir().unwrap();
        let release = ReleaseRecord {
            version: "9.9.9".into(),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            protocol: "1.0".into(),
        };
        let error = build_cached(&repository(), cache.path(), release).unwrap_err();
        let message = error.to_string();
        assert!(
            message.contains("0123456789abcdef0123456789abcdef01234567"),
            "{message}"
        );
        assert!(message.contains("not in the clone"), "{message}");
        assert!(message.contains("git fetch"), "{message}");
        assert!(!cache.path().join("target").exists(), "{message}");
    }
}
