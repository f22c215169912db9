//! The NixOS backend: what the agent observes of the host and the commands it runs on it.
//!
//! [`System`] is the seam between the workers and the operating system; [`NixosSystem`] is the
//! real implementation. It reads `/run/current-system`, `/run/booted-system` and the system
//! profile (all under the configured root), realises closures with `nix-store`, checks the
//! signature of every path of a closure itself ([`signatures`]), and runs every switch in its
//! own transient systemd unit `fleetnode-activate-<stream>-<id>.service` through `systemd-run`,
//! never as a child of the agent: a switch that changes the agent's own unit makes systemd stop
//! the agent's cgroup, and a switch running in that cgroup would be killed half-way.
//!
//! # The switch unit
//! ```text
//! systemd-run --unit=fleetnode-activate-<stream>-<id>.service --description=...
//!     --property=Type=exec --property=RemainAfterExit=yes
//!     --property=StandardOutput=append:<state_dir>/switches/<id>.log
//!     [--property=ExecStartPre=<nix-env> -p <profile> --set <closure>]
//!     --setenv=PATH=<nix-env's directory>:<the agent's PATH>
//!     -- <root><closure>/bin/switch-to-configuration <test|switch|boot>
//! ```
//! - The job's own closure's script runs, never `/run/current-system`'s: that would
//!   re-activate the generation being left, a silent no-op of a rollback. The profile is set
//!   only when the job says so (a boot entry must not point at a generation before it proved
//!   healthy), directly with `nix-env` rather than through a wrapper whose flags change
//!   between releases.
//! - `RemainAfterExit=yes` and no `--collect`: systemd would otherwise unload a finished unit
//!   (a failed one too, with `--collect`) together with its exit status before the agent
//!   reads it. The agent releases the unit itself ([`System::stop_switch`]) once it has
//!   reported the result, so no finished unit lingers and no failed one keeps the host
//!   "degraded".
//! - Output goes to a file in the state directory so it survives an agent restart; the
//!   agent logs it line by line while following the unit and attaches its tail to failures.
//!   The newest [`SWITCH_LOGS_KEPT`] logs are kept.
//! - When another switch holds `/run/nixos/switch-to-configuration.lock` (a manual
//!   `nixos-rebuild`), [`System::start_switch`] does not start the unit (setting the profile
//!   meanwhile would point it at a generation no switch ran) and says so; when to try again
//!   is the state machine's decision.
//!
//! Paths on the host are resolved under `config.root`; store paths handed to nix commands stay
//! store paths. Nothing from the control plane ever reaches a shell: every command is an argv.

mod command;
mod nixos;
pub mod path_info;
mod realise;
pub mod show;
pub mod signatures;
mod unit;

#[cfg(test)]
mod gc_tests;
#[cfg(test)]
mod signature_tests;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod unit_tests;

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::path::PathBuf;

use fleetnode_state_machine::{
    RealiseResult, StorePath, SwitchId, SwitchJob, SystemView, UnitState,
};

pub use nixos::NixosSystem;
pub use unit::{SWITCH_LOGS_KEPT, unit_name};

/// The host, as the workers see it. Every method may be called concurrently.
pub trait System: Send + Sync + 'static {
    /// Tells the backend the event stream id of the agent's store (called once, when the
    /// store is open and before any switch is launched or followed): the NixOS backend names
    /// switch units after it, so a unit an older store left behind is never taken for this
    /// store's switch.
    fn bind_store(&self, _stream: u64) {}

    /// `/run/current-system`, `/run/booted-system` and the profile's target, read via symlinks
    /// under the configured root.
    fn observe(&self) -> impl Future<Output = Result<SystemView, SystemError>> + Send;

    /// This boot's id, which changes with every boot (the NixOS backend keeps it in
    /// `<root>/run/fleetnode/boot-id`, see [`nixos::BOOT_MARKER`]); `None` if unknown.
    fn boot_id(&self) -> impl Future<Output = Result<Option<String>, SystemError>> + Send;

    /// Realises `target` (`nix-store --realise`, holding a GC root on it under the state
    /// directory), checks that the realised path is the one asked for and, when signatures are
    /// required, that the closure is signed by a trusted key.
    fn realise(&self, target: &StorePath) -> impl Future<Output = RealiseResult> + Send;

    /// Holds a GC root on each of `generations` (under the state directory, registered with
    /// the Nix store as indirect roots) and releases every root it held on any other; a root
    /// already in place is left alone. Tries every generation and then reports those it could
    /// not root.
    fn keep_generations(
        &self,
        generations: &BTreeSet<StorePath>,
    ) -> impl Future<Output = Result<(), SystemError>> + Send;

    /// Launches `job` in the transient unit of `switch` (see the module docs), unless another
    /// switch holds the switch lock. Idempotent: when the unit already exists it is left alone,
    /// to be followed with [`System::switch_state`].
    fn start_switch(
        &self,
        switch: SwitchId,
        job: &SwitchJob,
    ) -> impl Future<Output = Result<Launch, SystemError>> + Send;

    /// The state of the switch's unit: running, exited (with its exit code and output tail) or
    /// gone. Also logs the output the switch printed since the last call.
    fn switch_state(
        &self,
        switch: SwitchId,
    ) -> impl Future<Output = Result<UnitState, SystemError>> + Send;

    /// Stops the switch's unit (killing its processes if it still runs) and clears its record,
    /// failed or not. A unit that is already gone is not an error.
    fn stop_switch(&self, switch: SwitchId)
    -> impl Future<Output = Result<(), SystemError>> + Send;

    /// Asks systemd to reboot the host (`systemctl reboot`).
    fn reboot(&self) -> impl Future<Output = Result<(), SystemError>> + Send;

    /// Whether a unit is active (`systemctl is-active`), for systemd probes.
    fn unit_active(&self, unit: &str) -> impl Future<Output = Result<bool, SystemError>> + Send;

    /// What differs between the running agent and the one the live generation carries (its
    /// unit file or its binary), when the agent runs as a systemd service; `None` otherwise.
    fn agent_upgrade(&self) -> impl Future<Output = Option<String>> + Send;
}

/// What [`System::start_switch`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// The switch's unit runs (or already ran): follow it.
    Started,
    /// Another switch holds the switch lock; nothing was started.
    LockHeld,
}

/// Why an operation on the host failed: which command or path, and why.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// A command could not be started at all.
    #[error(
        "cannot run {command}: {source}; check the [system] commands in the configuration and the service's PATH"
    )]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A command ran and failed.
    #[error("{command} failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// The end of what it printed on stderr.
        stderr: String,
    },
    /// A command succeeded but printed something that cannot be understood.
    #[error("{command} printed unexpected output ({why}): {output:?}")]
    UnexpectedOutput {
        /// The command line.
        command: String,
        /// What is wrong with it.
        why: String,
        /// The output, shortened.
        output: String,
    },
    /// A file or directory could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A system symlink does not lead to a store path.
    #[error("{path} points at {target:?}, which is not a system closure: {why}")]
    BadLink {
        /// The symlink.
        path: PathBuf,
        /// Where it points.
        target: String,
        /// What is wrong.
        why: String,
    },
    /// The closure to switch to has no executable `bin/switch-to-configuration`.
    #[error(
        "{path} is missing or not executable: the closure is not a NixOS system (was it realised?)"
    )]
    MissingScript {
        /// The script's path.
        path: PathBuf,
    },
    /// A program named without a directory is not on the agent's `PATH`.
    #[error("cannot find {program:?} on PATH; set an absolute path in the [system] configuration")]
    NotFound {
        /// The program.
        program: String,
    },
    /// The backend was used before the agent's store was bound to it.
    #[error("the NixOS backend was used before the agent's store was opened; this is a bug")]
    Unbound,
    /// A unit with the switch's name exists but was not launched by this store.
    #[error(
        "{unit} exists but was not launched by this agent's store (its description is {description:?}); \
         stop it with `systemctl stop {unit}` and `systemctl reset-failed {unit}`"
    )]
    ForeignUnit {
        /// The unit.
        unit: String,
        /// Its description.
        description: String,
    },
    /// A locally configured value cannot be placed in a systemd unit property.
    #[error(
        "{what} {value:?} cannot go into a systemd ExecStartPre= line: it must be absolute and free of blanks, quotes, '\\', '$' and '%'"
    )]
    UnsafeUnitArgument {
        /// Which value.
        what: &'static str,
        /// The value.
        value: String,
    },
}
