//! [`NixosSystem`]: the real backend, and what it observes of the host.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use fleetnode_state_machine::{
    RealiseResult, STORE_DIR, StorePath, SwitchId, SwitchJob, SystemView, UnitState,
};

use super::{Launch, System, SystemError};
use crate::config::SystemConfig;
use crate::selfupdate;

/// The boot marker: `/run` is a fresh tmpfs on every boot, on metal, in VMs and in containers.
pub const BOOT_MARKER: &str = "/run/fleetnode/boot-id";
/// Symlinks followed at most when resolving the profile (it is two deep on NixOS).
const MAX_LINK_HOPS: usize = 16;

/// The NixOS backend, configured by `[system]`.
#[derive(Debug)]
pub struct NixosSystem {
    pub(super) config: SystemConfig,
    pub(super) state_dir: PathBuf,
    /// Bytes of each followed switch's output already written to the log.
    pub(super) logged: Mutex<BTreeMap<SwitchId, u64>>,
    /// The agent's own unit and binary as they were at start-up, when it runs as a service.
    running: Option<selfupdate::Running>,
    /// The event stream id of the agent's store, part of every switch unit's name.
    stream: OnceLock<u64>,
}

impl NixosSystem {
    /// A backend for the host described by `config`, keeping its GC root and switch logs under
    /// `state_dir`.
    pub fn new(config: SystemConfig, state_dir: PathBuf) -> Self {
        let running = selfupdate::Running::capture_if_service(&config.root);
        Self {
            config,
            state_dir,
            logged: Mutex::new(BTreeMap::new()),
            running,
            stream: OnceLock::new(),
        }
    }

    /// The store's event stream id, once [`System::bind_store`] gave it.
    pub(super) fn stream(&self) -> Result<u64, SystemError> {
        self.stream.get().copied().ok_or(SystemError::Unbound)
    }

    /// Where an absolute host path lives under the configured root.
    pub(super) fn host_path(&self, absolute: &Path) -> PathBuf {
        let relative: PathBuf = absolute
            .components()
            .filter(|c| !matches!(c, Component::RootDir | Component::Prefix(_)))
            .collect();
        self.config.root.join(relative)
    }

    /// The system profile's path on the host.
    pub(super) fn profile_path(&self) -> PathBuf {
        self.host_path(&self.config.profile)
    }

    async fn observe_links(&self) -> Result<SystemView, SystemError> {
        Ok(SystemView {
            current: self
                .resolve_store_link(&self.host_path(Path::new("/run/current-system")))
                .await?,
            booted: self
                .resolve_store_link(&self.host_path(Path::new("/run/booted-system")))
                .await?,
            profile: self.resolve_store_link(&self.profile_path()).await?,
        })
    }

    /// Follows `link` (and the links it points at, under the root) to a store path. `None`
    /// when the first link does not exist.
    async fn resolve_store_link(&self, link: &Path) -> Result<Option<StorePath>, SystemError> {
        let mut current = link.to_owned();
        for hop in 0..MAX_LINK_HOPS {
            let target = match tokio::fs::read_link(&current).await {
                Ok(target) => target,
                Err(e) if hop == 0 && e.kind() == io::ErrorKind::NotFound => return Ok(None),
                // A later hop that is missing or not a symlink: the chain ends outside the store.
                Err(e)
                    if hop > 0
                        && matches!(
                            e.kind(),
                            io::ErrorKind::NotFound | io::ErrorKind::InvalidInput
                        ) =>
                {
                    return Err(SystemError::BadLink {
                        path: link.to_owned(),
                        target: current.display().to_string(),
                        why: "the link chain ends outside the Nix store".to_owned(),
                    });
                }
                Err(source) => {
                    return Err(SystemError::Io {
                        path: current,
                        source,
                    });
                }
            };
            let text = target.to_string_lossy();
            if text.starts_with(STORE_DIR) {
                return StorePath::parse(&text)
                    .map(Some)
                    .map_err(|e| SystemError::BadLink {
                        path: link.to_owned(),
                        target: text.into_owned(),
                        why: e.to_string(),
                    });
            }
            current = if target.is_absolute() {
                self.host_path(&target)
            } else {
                match current.parent() {
                    Some(parent) => parent.join(&target),
                    None => target,
                }
            };
        }
        Err(SystemError::BadLink {
            path: link.to_owned(),
            target: current.display().to_string(),
            why: format!("more than {MAX_LINK_HOPS} symlinks deep"),
        })
    }

    /// This boot's id: the marker under `/run` (which every boot empties), created with a
    /// random id by the first agent start of a boot. The kernel's
    /// `/proc/sys/kernel/random/boot_id` is not used: in a container, the per-container value
    /// is hidden from a unit with `ProtectKernelTunables=` or `ProtectControlGroups=` and the
    /// machine's own, which no container reboot changes, shows through.
    async fn read_boot_id(&self) -> Result<String, SystemError> {
        let marker = self.host_path(Path::new(BOOT_MARKER));
        tokio::task::spawn_blocking(move || boot_marker(&marker))
            .await
            .map_err(|e| SystemError::Io {
                path: PathBuf::from(BOOT_MARKER),
                source: io::Error::other(e.to_string()),
            })?
    }
}

/// Reads the boot marker at `marker`, creating it first when this boot has none.
fn boot_marker(marker: &Path) -> Result<String, SystemError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| SystemError::Io { path, source }
    };
    match std::fs::read_to_string(marker) {
        Ok(text) if !text.trim().is_empty() => return Ok(text.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(marker)(e)),
    }
    let dir = marker.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| io_error(marker)(io::Error::other(e.to_string())))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // Written aside and linked into place, so a crash never leaves a torn marker and a marker
    // that appeared meanwhile wins.
    let partial = dir.join(format!(".boot-id.{}", std::process::id()));
    std::fs::write(&partial, format!("{id}\n")).map_err(io_error(&partial))?;
    let linked = std::fs::hard_link(&partial, marker);
    let _ = std::fs::remove_file(&partial);
    match linked {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => std::fs::read_to_string(marker)
            .map(|text| text.trim().to_owned())
            .map_err(io_error(marker)),
        Err(e) => Err(io_error(marker)(e)),
    }
}

impl System for NixosSystem {
    fn bind_store(&self, stream: u64) {
        if self.stream.set(stream).is_err() && self.stream.get() != Some(&stream) {
            tracing::error!(
                stream,
                "the backend is already bound to another store; keeping it"
            );
        }
    }

    async fn observe(&self) -> Result<SystemView, SystemError> {
        self.observe_links().await
    }

    async fn boot_id(&self) -> Result<Option<String>, SystemError> {
        self.read_boot_id().await.map(Some)
    }

    async fn realise(&self, target: &StorePath) -> RealiseResult {
        self.realise_closure(target).await
    }

    async fn keep_generations(&self, generations: &BTreeSet<StorePath>) -> Result<(), SystemError> {
        self.keep_roots(generations).await
    }

    async fn start_switch(&self, switch: SwitchId, job: &SwitchJob) -> Result<Launch, SystemError> {
        self.launch_switch(switch, job).await
    }

    async fn switch_state(&self, switch: SwitchId) -> Result<UnitState, SystemError> {
        self.unit_state(switch).await
    }

    async fn stop_switch(&self, switch: SwitchId) -> Result<(), SystemError> {
        self.release_unit(switch).await
    }

    async fn reboot(&self) -> Result<(), SystemError> {
        self.request_reboot().await
    }

    async fn unit_active(&self, unit: &str) -> Result<bool, SystemError> {
        self.is_active(unit).await
    }

    async fn agent_upgrade(&self) -> Option<String> {
        self.running.as_ref().and_then(selfupdate::Running::changed)
    }
}
