//! The pure per-host state machine of fleetnode.
//!
//! One function, [`step`], makes every decision: `step(state, event, now)` returns the next
//! state, the facts to report ([`OutboundEvent`]s with gap-free seqs) and the [`Command`]s for
//! the shell, apart. It reads no clock and does no I/O.
//!
//! The mirrored part of the state ([`Host`]) changes only through reported facts
//! ([`evolve()`]); the control plane applies the same facts with [`mirror::apply`], which is
//! what makes its mirror exact by construction. The outbound queue's gaps are made here too
//! ([`queue`]). `docs/state-machine.md` has the states, events and transitions.

// Matches over the machine's enums list every variant, so a new variant is a compile-time
// question everywhere it matters.
#![warn(clippy::wildcard_enum_match_arm)]

mod command;
mod error;
mod event;
mod evolve;
mod machine;
pub mod mirror;
mod phase;
mod policy;
pub mod queue;
mod reason;
mod report;
#[cfg(feature = "schema")]
pub mod schema;
mod state;
mod time;
mod types;

pub use command::{Command, SwitchAction, SwitchJob, SwitchPurpose};
pub use error::{Bug, MirrorError, PeerFault, StaleInput, TransitionError};
pub use event::{Event, Observation, ProbeResult, RealiseResult, SwitchEnd, SwitchExit, UnitState};
pub use evolve::{EvolveError, evolve, record_probe};
pub use machine::{EXIT_UNITS_FAILED, LOCK_CONTENTION, SWITCH_LOCK_RETRY, Step, step, timeout};
pub use policy::{
    ActivationMode, DesiredState, Directive, DirectiveKind, FailurePolicy, HealthOverrides,
    HealthPolicy, LocalPolicy, ProbeMode,
};
pub use reason::{MESSAGE_CAP, OUTPUT_TAIL_CAP, Reason, cap_head, cap_tail};
pub use report::{
    Concern, GapCause, OutboundEvent, RejectReason, Report, ReportClass, ResyncCause, SwitchVerdict,
};
pub use state::{
    Activating, Committing, Converged, DeadlineKind, Deferred, Failed, Host, KNOWN_GOOD_CAP, Phase,
    PhaseKind, ProbeBook, ProbeRecord, QUARANTINE_CAP, Realising, Relaunch, Reverted, RollingBack,
    Soaking, State, SystemView, Work,
};
pub use time::{Millis, Timestamp};
pub use types::{
    MAX_LABEL_LEN, ProbeId, Revision, STORE_DIR, StorePath, SwitchId, ValueError, check_label,
};
