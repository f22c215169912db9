//! The Debian root file system every real host boots: built once with `debootstrap`, kept as a
//! tarball in a cache directory, unpacked afresh for each host.
//!
//! The cache key is the recipe itself (suite, variant, package list), so changing the recipe
//! builds a new tarball. A cold cache costs one `debootstrap` (about a minute here); a warm
//! one an unpack (seconds). Concurrent tests build it once: the first takes a lock, the others
//! wait for it and then find the tarball.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::run_checked;
use crate::{HarnessError, Result};

/// The Debian release the hosts run: systemd 252, Nix 2.8.
pub const SUITE: &str = "bookworm";
/// Packages beyond debootstrap's `minbase`. `libdbi-perl` is listed because debootstrap does
/// not resolve it for `nix-bin`; `nix-setup-systemd` brings the daemon's units, the build
/// users and `/nix`; `busybox` serves each generation's HTTP endpoint.
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "nix-bin",
    "nix-setup-systemd",
    "libdbi-perl",
    "busybox",
];
/// Where the tarball is cached unless `FLEETNODE_REAL_HOST_CACHE` names another directory.
pub const DEFAULT_CACHE_DIR: &str = "/var/cache/fleetnode-tests";
/// The variable naming the cache directory.
pub const CACHE_VARIABLE: &str = "FLEETNODE_REAL_HOST_CACHE";
/// The variable naming the Debian mirror (default: the first one this machine's apt uses).
pub const MIRROR_VARIABLE: &str = "FLEETNODE_DEBIAN_MIRROR";
/// Programs the tier needs on the machine, with the Debian package that ships each.
pub const REQUIRED_PROGRAMS: &[(&str, &str)] = &[
    ("debootstrap", "debootstrap"),
    ("systemd-nspawn", "systemd-container"),
    ("nsenter", "util-linux"),
    ("tar", "tar"),
];

/// Fails with what is missing and how to get it, unless this process can run the tier.
pub fn check_prerequisites() -> Result<()> {
    let mut missing = Vec::new();
    if !rustix::process::geteuid().is_root() {
        missing.push("root (systemd-nspawn and debootstrap need it)".to_owned());
    }
    for (program, package) in REQUIRED_PROGRAMS {
        if find_program(program).is_none() {
            missing.push(format!("`{program}` (Debian package {package})"));
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    Err(HarnessError::Setup {
        what: "the real-host tier".into(),
        message: format!(
            "this machine lacks {}. Run the tier as root with `apt-get install debootstrap \
             systemd-container` done (bash .ci/run does both), or run only the fast tests: \
             cargo test --workspace --locked",
            missing.join(", ")
        ),
    })
}

/// The cached tarball, built first when it is missing.
pub fn cached_tarball() -> Result<PathBuf> {
    let dir = std::env::var_os(CACHE_VARIABLE)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR));
    std::fs::create_dir_all(&dir).map_err(HarnessError::io(format!("create {}", dir.display())))?;
    let tarball = dir.join(format!("rootfs-{SUITE}-{:016x}.tar", recipe_key()));
    let lock_path = dir.join("rootfs.lock");
    let lock = File::create(&lock_path)
        .map_err(HarnessError::io(format!("create {}", lock_path.display())))?;
    lock.lock()
        .map_err(HarnessError::io(format!("lock {}", lock_path.display())))?;
    if !tarball.exists() {
        build_tarball(&dir, &tarball)?;
    }
    Ok(tarball)
}

/// Unpacks `tarball` into the empty directory `into`.
pub fn unpack(tarball: &Path, into: &Path) -> Result<()> {
    let mut tar = Command::new("tar");
    tar.arg("--extract")
        .arg("--numeric-owner")
        .arg("--file")
        .arg(tarball)
        .arg("--directory")
        .arg(into);
    run_checked(&mut tar).map(drop)
}

fn build_tarball(dir: &Path, tarball: &Path) -> Result<()> {
    let mirror = mirror()?;
    let staging = tempfile::Builder::new()
        .prefix("rootfs-build-")
        .tempdir_in(dir)
        .map_err(HarnessError::io("create a directory for debootstrap"))?;
    let target = staging.path().join("root");
    eprintln!(
        "real-host: building the {SUITE} root file system with debootstrap from {mirror} \
         (once; cached in {})",
        tarball.display()
    );
    let mut debootstrap = Command::new("debootstrap");
    debootstrap
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(&target)
        .arg(&mirror);
    run_checked(&mut debootstrap)?;
    let partial = staging.path().join("rootfs.tar");
    let mut tar = Command::new("tar");
    tar.arg("--create")
        .arg("--numeric-owner")
        .arg("--file")
        .arg(&partial)
        .arg("--directory")
        .arg(&target)
        .arg(".");
    run_checked(&mut tar)?;
    std::fs::rename(&partial, tarball).map_err(HarnessError::io(format!(
        "move the root file system to {}",
        tarball.display()
    )))
}

/// The mirror: `FLEETNODE_DEBIAN_MIRROR`, else the first Debian archive this machine's apt
/// sources name (deb822 `URIs:` or one-line `deb` entries).
fn mirror() -> Result<String> {
    if let Some(mirror) = std::env::var_os(MIRROR_VARIABLE) {
        return Ok(mirror.to_string_lossy().into_owned());
    }
    let mut sources = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(entries) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut extra: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        extra.sort();
        sources.extend(extra);
    }
    for source in sources {
        let Ok(text) = std::fs::read_to_string(&source) else {
            continue;
        };
        for line in text.lines().map(str::trim) {
            let uri = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|word| word.contains("://"))
            } else {
                None
            };
            if let Some(uri) = uri.filter(|uri| uri.trim_end_matches('/').ends_with("/debian")) {
                return Ok(uri.to_owned());
            }
        }
    }
    Err(HarnessError::Setup {
        what: "debootstrap".into(),
        message: format!(
            "no Debian archive found in /etc/apt/sources.list(.d); set {MIRROR_VARIABLE} to one"
        ),
    })
}

/// FNV-1a over the recipe: a new recipe is a new tarball.
fn recipe_key() -> u64 {
    let recipe = format!("{SUITE}\0minbase\0{}", PACKAGES.join(","));
    recipe.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
