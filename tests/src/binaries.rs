//! Where the real binaries are.
//!
//! They are looked up, in order, in:
//! 1. `$FLEETNODE_BIN_DIR`, when set (and then only there);
//! 2. the directory of the running executable: `target/<profile>/` for `fleetnode-demo`, or
//!    the `bin/` directory a package installs `fleetnode-agent`, `fleetnode-cp` and
//!    `fleetnode-demo` into side by side;
//! 3. its parent when that directory is `deps/`: an integration test runs from
//!    `target/<profile>/deps/` and the binaries are one level up.
//!
//! `cargo test --workspace` builds every package's binaries before running the tests;
//! `cargo test -p fleetnode-tests` does not, so run `cargo build --workspace --bins` first.

use std::path::{Path, PathBuf};

use crate::{HarnessError, Result};

/// The agent's binary.
pub const AGENT: &str = "fleetnode-agent";
/// The control plane's binary.
pub const CONTROL_PLANE: &str = "fleetnode-cp";
/// Overrides where the binaries are looked up.
pub const BIN_DIR_VARIABLE: &str = "FLEETNODE_BIN_DIR";

/// The path of binary `name`, or an error saying how to build it.
pub fn locate(name: &'static str) -> Result<PathBuf> {
    let searched = search_dirs()?;
    searched
        .iter()
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
        .ok_or(HarnessError::MissingBinary { name, searched })
}

/// `explicit` when given (another release's binary, say), else [`locate`]`(name)`.
pub fn explicit_or_located(explicit: Option<PathBuf>, name: &'static str) -> Result<PathBuf> {
    explicit.map_or_else(|| locate(name), Ok)
}

fn search_dirs() -> Result<Vec<PathBuf>> {
    if let Some(dir) = std::env::var_os(BIN_DIR_VARIABLE) {
        return Ok(vec![PathBuf::from(dir)]);
    }
    let exe = std::env::current_exe().map_err(HarnessError::io("find the running executable"))?;
    let mut dirs = Vec::new();
    if let Some(dir) = exe.parent() {
        dirs.push(dir.to_owned());
        if dir.file_name().is_some_and(|name| name == "deps")
            && let Some(parent) = dir.parent()
        {
            dirs.push(parent.to_owned());
        }
    }
    Ok(dirs)
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_names_where_it_looked_and_how_to_build_it() {
        let error = locate("fleetnode-no-such-binary").unwrap_err();
        let message = error.to_string();
        assert!(message.contains("fleetnode-no-such-binary"), "{message}");
        assert!(
            message.contains("cargo build --workspace --bins"),
            "{message}"
        );
        let first = search_dirs().unwrap()[0].display().to_string();
        assert!(message.contains(&first), "{message}");
    }
}
