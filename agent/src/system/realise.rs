//! Realising a closure: `nix-store --realise` with a GC root, then the signature check; and
//! the GC roots of the generations a rollback may need.
//!
//! Every root is a symlink under `<state_dir>/gcroots/` that `nix-store --realise <path>
//! --add-root <link> --indirect` makes; nix-daemon registers it under
//! `/nix/var/nix/gcroots/auto`, so the collector keeps the path while the link points at it.
//! Removing the link releases the path (the collector ignores an indirect root whose link is
//! gone). `gcroots/target` is the closure being worked on; `gcroots/kept/<hash>-<name>` is one
//! per generation of [`fleetnode_state_machine::State::generations_kept`].

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use fleetnode_state_machine::{MESSAGE_CAP, RealiseResult, StorePath, cap_tail};

use super::command::Argv;
use super::path_info;
use super::signatures::{TrustedKey, verify_closure};
use super::{NixosSystem, SystemError};

impl NixosSystem {
    /// The GC root that keeps the closure being worked on alive; each realise replaces it.
    pub(super) fn gc_root(&self) -> PathBuf {
        self.state_dir.join("gcroots").join("target")
    }

    /// The directory of the roots of the generations kept.
    fn kept_dir(&self) -> PathBuf {
        self.state_dir.join("gcroots").join("kept")
    }

    /// Roots exactly `generations` under [`Self::kept_dir`]: removes the links of every other
    /// generation, then adds the missing ones, one `nix-store --realise --add-root` each.
    pub(super) async fn keep_roots(
        &self,
        generations: &BTreeSet<StorePath>,
    ) -> Result<(), SystemError> {
        let dir = self.kept_dir();
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| SystemError::Io { path, source }
        };
        tokio::fs::create_dir_all(&dir).await.map_err(io(&dir))?;
        let wanted: BTreeSet<&str> = generations.iter().map(|p| p.name_with_hash()).collect();
        let mut entries = tokio::fs::read_dir(&dir).await.map_err(io(&dir))?;
        while let Some(entry) = entries.next_entry().await.map_err(io(&dir))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !wanted.contains(name.as_str()) {
                tokio::fs::remove_file(entry.path())
                    .await
                    .map_err(io(&entry.path()))?;
                tracing::info!(root = %entry.path().display(), "generation released");
            }
        }
        let mut failed = Vec::new();
        for generation in generations {
            let link = dir.join(generation.name_with_hash());
            if let Ok(target) = tokio::fs::read_link(&link).await
                && target == Path::new(generation.as_str())
            {
                continue;
            }
            match self.add_root(generation, &link).await {
                Ok(()) => tracing::info!(closure = %generation, "generation kept"),
                Err(message) => failed.push(message),
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        Err(SystemError::CommandFailed {
            command: format!("{} --realise ... --add-root", self.config.nix_store),
            status: format!(
                "{} of {} generations not rooted",
                failed.len(),
                generations.len()
            ),
            stderr: failed.join("; "),
        })
    }

    /// `nix-store --realise <path> --add-root <link> --indirect`.
    async fn add_root(&self, path: &StorePath, link: &Path) -> Result<(), String> {
        let argv = Argv::new(&self.config.nix_store)
            .arg("--realise")
            .arg(path.as_str())
            .arg("--add-root")
            .arg(link)
            .arg("--indirect");
        let finished = argv.run(true).await.map_err(|e| e.to_string())?;
        if finished.status.success() {
            Ok(())
        } else {
            Err(finished.failure(&argv.display()).to_string())
        }
    }

    /// The `nix` command: next to `nix-store` when that is a path, else found on `PATH`.
    fn nix_command(&self) -> String {
        let nix_store = Path::new(&self.config.nix_store);
        match nix_store.parent() {
            Some(dir) if self.config.nix_store.contains('/') => {
                dir.join("nix").display().to_string()
            }
            Some(_) | None => "nix".to_owned(),
        }
    }

    pub(super) async fn realise_closure(&self, target: &StorePath) -> RealiseResult {
        match self.try_realise(target).await {
            Ok(()) => {
                tracing::info!(closure = %target, "closure realised");
                RealiseResult::Realised
            }
            Err(message) => {
                tracing::warn!(closure = %target, %message, "cannot realise the closure");
                RealiseResult::Failed {
                    message: cap_tail(&message, MESSAGE_CAP),
                }
            }
        }
    }

    async fn try_realise(&self, target: &StorePath) -> Result<(), String> {
        let gc_root = self.gc_root();
        if let Some(dir) = gc_root.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        }
        let argv = Argv::new(&self.config.nix_store)
            .arg("--realise")
            .arg(target.as_str())
            .arg("--add-root")
            .arg(&gc_root)
            .arg("--indirect");
        let finished = argv.run(true).await.map_err(|e| e.to_string())?;
        if !finished.status.success() {
            return Err(finished.failure(&argv.display()).to_string());
        }
        let realised = self.realised_path(&finished.stdout, &gc_root).await?;
        if &realised != target {
            return Err(format!(
                "nix-store realised {realised} when {target} was asked for; refusing to use it"
            ));
        }
        if self.config.require_signatures {
            self.verify_signatures(target).await?;
        }
        Ok(())
    }

    /// The store path `nix-store --realise` produced: it prints the GC root it made (whose
    /// target is the path) or, without a root, the path itself.
    async fn realised_path(&self, stdout: &str, gc_root: &Path) -> Result<StorePath, String> {
        let mut lines = stdout.lines().filter(|line| !line.trim().is_empty());
        let (Some(line), None) = (lines.next(), lines.next()) else {
            return Err(format!(
                "nix-store --realise printed {stdout:?}; expected exactly one path"
            ));
        };
        let line = line.trim();
        if Path::new(line) != gc_root {
            return StorePath::parse(line).map_err(|e| format!("nix-store --realise: {e}"));
        }
        let target = tokio::fs::read_link(gc_root)
            .await
            .map_err(|e| format!("cannot read the GC root {}: {e}", gc_root.display()))?;
        StorePath::parse(&target.to_string_lossy())
            .map_err(|e| format!("the GC root {} points at {e}", gc_root.display()))
    }

    /// Refuses a closure any of whose paths lacks a valid signature by a trusted key, checked
    /// here path by path (see [`super::signatures`]).
    async fn verify_signatures(&self, target: &StorePath) -> Result<(), String> {
        let trusted = self
            .config
            .trusted_public_keys
            .iter()
            .map(|key| TrustedKey::parse(key))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("system.trusted_public_keys: {e}"))?;
        let argv = Argv::new(self.nix_command())
            .arg("--extra-experimental-features")
            .arg("nix-command")
            .arg("path-info")
            .arg("--json")
            .arg("--recursive")
            .arg(target.as_str());
        let finished = argv.run(false).await.map_err(|e| e.to_string())?;
        if !finished.status.success() {
            return Err(finished.failure(&argv.display()).to_string());
        }
        let infos = path_info::parse(&finished.stdout)
            .map_err(|e| format!("{} printed what cannot be checked: {e}", argv.display()))?;
        let names: Vec<&str> = trusted.iter().map(|key| key.name.as_str()).collect();
        verify_closure(target, &infos, &trusted).map_err(|why| {
            format!(
                "closure {target} is not signed by a trusted key (trusted: {}): {why}",
                names.join(", ")
            )
        })?;
        tracing::info!(closure = %target, paths = infos.len(), "every path is signed by a trusted key");
        Ok(())
    }
}
