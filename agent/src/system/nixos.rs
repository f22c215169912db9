//! [`NixosSystem`]: the real backend, and what it observes of the host.

use std::collections::BTreeMap;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use fleetnode_state_machine::{
    RealiseResult, STORE_DIR, StorePath, SwitchId, SwitchJob, SystemView, UnitState,
};

use super::{Launch, System, SystemError};
use crate::config::SystemConfig;
use crate::selfupdate;

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
        }
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

    async fn read_boot_id(&self) -> Option<String> {
        let path = self.host_path(Path::new("/proc/sys/kernel/random/boot_id"));
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => Some(text.trim().to_owned()).filter(|id| !id.is_empty()),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the boot id");
                None
            }
        }
    }
}

impl System for NixosSystem {
    async fn observe(&self) -> Result<SystemView, SystemError> {
        self.observe_links().await
    }

    async fn boot_id(&self) -> Result<Option<String>, SystemError> {
        Ok(self.read_boot_id().await)
    }

    async fn realise(&self, target: &StorePath) -> RealiseResult {
        self.realise_closure(target).await
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
