//! The switch's transient unit: launching it, reading its state, releasing it; the switch lock;
//! `systemctl` for reboots and probes.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::{File, TryLockError};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetnode_state_machine::{
    OUTPUT_TAIL_CAP, SwitchExit, SwitchId, SwitchJob, UnitState, cap_tail,
};

use super::command::{Argv, is_executable, resolve_program};
use super::show::{self, SHOWN, UnitView};
use super::{Launch, NixosSystem, SystemError};

/// Switch output logs kept in `<state_dir>/switches/` (older ones are deleted when a switch
/// starts). At most a few MiB: switch output is a few KiB to a few hundred KiB.
pub const SWITCH_LOGS_KEPT: usize = 20;
/// How long systemd waits for a stopped switch to exit after SIGTERM before it sends SIGKILL
/// (the unit's `TimeoutStopSec=`; systemd's default is 90 s). switch-to-configuration stops
/// cleanly within a few seconds when it stops at all.
pub const SWITCH_STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the agent waits for `systemctl stop` before it kills the unit itself: a unit
/// launched without [`SWITCH_STOP_TIMEOUT`] (by an older agent) would otherwise block it 90 s.
const STOP_WAIT: Duration = Duration::from_secs(15);
/// How many times `systemctl show` is tried before its failure counts, and the pause before
/// the n-th retry (n times this): about 5 s in all, longer than a `daemon-reexec` takes.
const SHOW_ATTEMPTS: u32 = 7;
const SHOW_RETRY: Duration = Duration::from_millis(250);
/// The lock every `switch-to-configuration` takes.
const SWITCH_LOCK: &str = "/run/nixos/switch-to-configuration.lock";
/// `PATH` for the switch when the agent has none.
const DEFAULT_PATH: &str = "/run/current-system/sw/bin";

/// The transient unit a switch runs in: the store's event stream id is part of the name, since
/// switch ids start again in a new store and a unit left by an older store must never pass for
/// this store's switch.
pub fn unit_name(stream: u64, switch: SwitchId) -> String {
    format!("fleetnode-activate-{stream:016x}-{switch}.service")
}

/// The start of the description of the unit of `switch` in `stream`; a loaded unit is followed
/// as this switch only when its description starts so.
fn description_prefix(stream: u64, switch: SwitchId) -> String {
    format!("fleetnode switch {switch} of store {stream:016x}:")
}

impl NixosSystem {
    fn switch_log(&self, switch: SwitchId) -> PathBuf {
        self.state_dir
            .join("switches")
            .join(format!("{switch}.log"))
    }

    pub(super) async fn launch_switch(
        &self,
        switch: SwitchId,
        job: &SwitchJob,
    ) -> Result<Launch, SystemError> {
        let script = self
            .host_path(Path::new(job.closure.as_str()))
            .join("bin/switch-to-configuration");
        if !is_executable(&script) {
            return Err(SystemError::MissingScript { path: script });
        }
        let pre = if job.set_profile {
            Some(self.set_profile_command(job)?)
        } else {
            None
        };
        let stream = self.stream()?;
        let unit = unit_name(stream, switch);
        let shown = self.show(&unit).await?;
        if shown.get("LoadState").map(String::as_str) == Some("loaded") {
            let description = shown
                .get("Description")
                .map(String::as_str)
                .unwrap_or_default();
            if !description.starts_with(&description_prefix(stream, switch)) {
                return Err(SystemError::ForeignUnit {
                    unit,
                    description: description.to_owned(),
                });
            }
            tracing::info!(%switch, %unit, "the switch's unit already exists; following it");
            return Ok(Launch::Started);
        }
        if self.switch_lock_held() {
            return Ok(Launch::LockHeld);
        }
        let log = self.prepare_log(switch).await?;
        let mut path = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
        if let Some((nix_env, _)) = &pre
            && let Some(dir) = nix_env.parent()
        {
            let mut with_dir = OsString::from(dir);
            with_dir.push(":");
            with_dir.push(&path);
            path = with_dir;
        }
        let mut setenv = OsString::from("--setenv=PATH=");
        setenv.push(&path);
        let mut output = OsString::from("--property=StandardOutput=append:");
        output.push(&log);
        let mut argv = Argv::new(&self.config.systemd_run)
            .arg(format!("--unit={unit}"))
            .arg(format!(
                "--description={} {} of {}",
                description_prefix(stream, switch),
                job.action.as_arg(),
                job.closure.name()
            ))
            .arg("--property=Type=exec")
            .arg("--property=RemainAfterExit=yes")
            .arg(format!(
                "--property=TimeoutStopSec={}s",
                SWITCH_STOP_TIMEOUT.as_secs()
            ))
            .arg(output);
        if let Some((_, line)) = pre {
            argv = argv.arg(line);
        }
        argv = argv
            .arg(setenv)
            .arg("--")
            .arg(&script)
            .arg(job.action.as_arg());
        tracing::info!(%switch, %unit, closure = %job.closure, action = job.action.as_arg(),
            set_profile = job.set_profile, "launching the switch");
        let finished = argv.run(false).await?;
        if finished.status.success() {
            return Ok(Launch::Started);
        }
        // A unit that failed to start still carries its result: let the caller read it.
        let shown = self.show(&unit).await?;
        if shown.get("LoadState").map(String::as_str) == Some("loaded") {
            return Ok(Launch::Started);
        }
        Err(finished.failure(&argv.display()))
    }

    /// `--property=ExecStartPre=<nix-env> -p <profile> --set <closure>`, with the nix-env path.
    fn set_profile_command(&self, job: &SwitchJob) -> Result<(PathBuf, OsString), SystemError> {
        let nix_env = resolve_program(&self.config.nix_env)?;
        let profile = self.profile_path();
        for (what, value) in [
            ("nix-env path", &nix_env),
            ("system profile path", &profile),
        ] {
            let text = value.to_string_lossy();
            let unsafe_char = |c: char| c.is_whitespace() || "\"'\\$%;".contains(c);
            if !value.is_absolute() || text.contains(unsafe_char) {
                return Err(SystemError::UnsafeUnitArgument {
                    what,
                    value: text.into_owned(),
                });
            }
        }
        let line = format!(
            "--property=ExecStartPre={} -p {} --set {}",
            nix_env.display(),
            profile.display(),
            job.closure
        );
        Ok((nix_env, line.into()))
    }

    /// Creates the log directory, drops a stale log of this switch and prunes old ones.
    async fn prepare_log(&self, switch: SwitchId) -> Result<PathBuf, SystemError> {
        let log = self.switch_log(switch);
        let dir = self.state_dir.join("switches");
        let io_error = |path: &Path| {
            let path = path.to_owned();
            move |source| SystemError::Io { path, source }
        };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_error(&dir))?;
        match tokio::fs::remove_file(&log).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(io_error(&log)(e)),
            Ok(()) | Err(_) => {}
        }
        let mut logs = Vec::new();
        let mut entries = tokio::fs::read_dir(&dir).await.map_err(io_error(&dir))?;
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name
                .strip_suffix(".log")
                .and_then(|id| id.parse::<u64>().ok())
            {
                logs.push((id, entry.path()));
            }
        }
        logs.sort();
        let excess = (logs.len() + 1).saturating_sub(SWITCH_LOGS_KEPT);
        for (_, old) in logs.into_iter().take(excess) {
            if let Err(e) = tokio::fs::remove_file(&old).await {
                tracing::warn!(path = %old.display(), error = %e, "cannot remove an old switch log");
            }
        }
        Ok(log)
    }

    /// Whether another switch (a manual `nixos-rebuild`) holds the switch lock now. A lock
    /// that cannot be checked counts as free: `switch-to-configuration` takes it itself and
    /// refuses to run when it cannot.
    fn switch_lock_held(&self) -> bool {
        let path = self.host_path(Path::new(SWITCH_LOCK));
        match lock_is_held(&path) {
            Ok(held) => {
                if held {
                    tracing::debug!(lock = %path.display(), "another switch holds the switch lock");
                }
                held
            }
            Err(e) => {
                tracing::warn!(lock = %path.display(), error = %e,
                    "cannot check the switch lock; starting anyway");
                false
            }
        }
    }

    pub(super) async fn unit_state(&self, switch: SwitchId) -> Result<UnitState, SystemError> {
        let shown = self.show(&unit_name(self.stream()?, switch)).await?;
        let view = show::view(&shown);
        self.log_new_output(switch, !view.is_running()).await;
        match view {
            UnitView::Gone => Ok(UnitState::Gone),
            UnitView::Running => Ok(UnitState::Running),
            UnitView::Exited { code, note } => {
                let mut output_tail = self.output_tail(switch).await;
                if let Some(note) = note {
                    output_tail.push('\n');
                    output_tail.push_str(&note);
                }
                Ok(UnitState::Exited(SwitchExit { code, output_tail }))
            }
        }
    }

    pub(super) async fn release_unit(&self, switch: SwitchId) -> Result<(), SystemError> {
        let unit = unit_name(self.stream()?, switch);
        let argv = Argv::new(&self.config.systemctl).arg("stop").arg(&unit);
        // Dropping the run on timeout kills the waiting systemctl, not the stop job.
        match tokio::time::timeout(STOP_WAIT, argv.run(false)).await {
            // systemctl exits 5 for a unit that is not loaded: already gone.
            Ok(finished) => {
                let finished = finished?;
                if !finished.status.success() && finished.status.code() != Some(5) {
                    return Err(finished.failure(&argv.display()));
                }
            }
            Err(_) => self.kill_unit(&unit).await?,
        }
        if self
            .show(&unit)
            .await?
            .get("ActiveState")
            .map(String::as_str)
            == Some("failed")
        {
            let argv = Argv::new(&self.config.systemctl)
                .arg("reset-failed")
                .arg(&unit);
            let finished = argv.run(false).await?;
            if !finished.status.success() {
                return Err(finished.failure(&argv.display()));
            }
        }
        if let Ok(mut logged) = self.logged.lock() {
            logged.remove(&switch);
        }
        Ok(())
    }

    /// `systemctl kill --signal=SIGKILL`, then waits until the unit has no process left.
    async fn kill_unit(&self, unit: &str) -> Result<(), SystemError> {
        tracing::warn!(%unit, wait = ?STOP_WAIT,
            "the switch's unit did not stop in time; killing its processes");
        let argv = Argv::new(&self.config.systemctl)
            .arg("kill")
            .arg("--signal=SIGKILL")
            .arg(unit);
        let finished = argv.run(false).await?;
        // systemctl kill exits 1 for a unit that is not loaded (any more): nothing to kill.
        if !finished.status.success()
            && self.show(unit).await?.get("LoadState").map(String::as_str) == Some("loaded")
        {
            return Err(finished.failure(&argv.display()));
        }
        for _ in 0..STOP_WAIT.as_secs() * 10 {
            let shown = self.show(unit).await?;
            let state = shown.get("ActiveState").map(String::as_str);
            if !matches!(state, Some("deactivating" | "active" | "activating")) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(SystemError::CommandFailed {
            command: argv.display(),
            status: "the unit still runs".to_owned(),
            stderr: String::new(),
        })
    }

    pub(super) async fn request_reboot(&self) -> Result<(), SystemError> {
        let argv = Argv::new(&self.config.systemctl).arg("reboot");
        let finished = argv.run(false).await?;
        if finished.status.success() {
            Ok(())
        } else {
            Err(finished.failure(&argv.display()))
        }
    }

    pub(super) async fn is_active(&self, unit: &str) -> Result<bool, SystemError> {
        let argv = Argv::new(&self.config.systemctl)
            .arg("is-active")
            .arg("--")
            .arg(unit);
        let finished = argv.run(false).await?;
        if finished.status.success() {
            return Ok(true);
        }
        // Non-zero with a state printed ("inactive", "failed", ...) is an answer; without one,
        // systemctl itself failed (no bus, ...).
        if finished.stdout.trim().is_empty() {
            return Err(finished.failure(&argv.display()));
        }
        Ok(false)
    }

    /// `systemctl show <unit> --property=...` as a map. `show` answers for any unit name, so
    /// a failure is systemctl losing PID 1 (during `systemctl daemon-reexec` it fails with
    /// "Message recipient disconnected"): it is tried again, [`SHOW_ATTEMPTS`] times in all.
    async fn show(&self, unit: &str) -> Result<BTreeMap<String, String>, SystemError> {
        let argv = Argv::new(&self.config.systemctl)
            .arg("show")
            .arg(unit)
            .arg(format!("--property={SHOWN}"));
        let mut attempt = 1;
        let finished = loop {
            let finished = argv.run(false).await?;
            if finished.status.success() || attempt == SHOW_ATTEMPTS {
                break finished;
            }
            tracing::info!(%unit, attempt, stderr = finished.stderr.trim(),
                "systemctl show failed; trying again");
            tokio::time::sleep(SHOW_RETRY * attempt).await;
            attempt += 1;
        };
        if !finished.status.success() {
            return Err(finished.failure(&argv.display()));
        }
        show::parse(&finished.stdout).map_err(|why| SystemError::UnexpectedOutput {
            command: argv.display(),
            why: why.to_owned(),
            output: cap_tail(&finished.stdout, 200),
        })
    }

    async fn output_tail(&self, switch: SwitchId) -> String {
        let log = self.switch_log(switch);
        let read = tokio::task::spawn_blocking(move || read_from(&log, None)).await;
        match read {
            Ok(Ok((bytes, _))) => cap_tail(&String::from_utf8_lossy(&bytes), OUTPUT_TAIL_CAP),
            Ok(Err(_)) | Err(_) => String::new(),
        }
    }

    /// Logs the switch's output printed since the last call, line by line; with `finished`,
    /// also a last line without a newline.
    async fn log_new_output(&self, switch: SwitchId, finished: bool) {
        let offset = self
            .logged
            .lock()
            .map(|logged| logged.get(&switch).copied().unwrap_or(0))
            .unwrap_or(0);
        let log = self.switch_log(switch);
        let read = tokio::task::spawn_blocking(move || read_from(&log, Some(offset))).await;
        let Ok(Ok((bytes, start))) = read else {
            return;
        };
        let complete = if finished {
            bytes.len()
        } else {
            bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1)
        };
        for line in String::from_utf8_lossy(&bytes[..complete]).lines() {
            tracing::info!(%switch, "switch: {line}");
        }
        if let Ok(mut logged) = self.logged.lock() {
            logged.insert(switch, start + complete as u64);
        }
    }
}

/// Reads `path` from `offset` to its end (the last [`OUTPUT_TAIL_CAP`] bytes when `None`, at
/// most the last MiB either way), returning the bytes and the offset they start at.
fn read_from(path: &Path, offset: Option<u64>) -> io::Result<(Vec<u8>, u64)> {
    const MAX_READ: u64 = 1 << 20;
    let mut file = File::open(path)?;
    let end = file.metadata()?.len();
    let start = offset.unwrap_or_else(|| end.saturating_sub(OUTPUT_TAIL_CAP as u64));
    let start = start.max(end.saturating_sub(MAX_READ)).min(end);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::new();
    file.take(end - start).read_to_end(&mut bytes)?;
    Ok((bytes, start))
}

/// Whether someone holds the switch lock (an absent lock file is a free lock).
fn lock_is_held(path: &Path) -> io::Result<bool> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match file.try_lock() {
        Ok(()) => {
            file.unlock()?;
            Ok(false)
        }
        Err(TryLockError::WouldBlock) => Ok(true),
        Err(TryLockError::Error(e)) => Err(e),
    }
}
