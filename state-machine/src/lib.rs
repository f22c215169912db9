//! The pure per-host state machine of fleetnode.
//!
//! One function, [`step`], makes every decision: `step(state, event, now)` returns the next
//! state and the effects to carry out. It reads no clock and does no I/O, so the agent runs it
//! over what it observes and the control plane runs it over the events the agent reports
//! ([`Event::Reported`]) to mirror each host exactly.
//!
//! Facts the control plane must know are reported as [`OutboundEvent`]s with gap-free seqs; the
//! mirrored part of the state ([`Host`]) changes only through them ([`evolve`]), which is what
//! makes the mirror exact by construction. `docs/state-machine.md` has the states, events and
//! transitions.

// Matches over the machine's enums list every variant, so a new variant is a compile-time
// question everywhere it matters.
#![warn(clippy::wildcard_enum_match_arm)]

mod effect;
mod error;
mod event;
mod evolve;
mod machine;
mod policy;
mod reason;
mod report;
mod state;
mod types;

pub use effect::{Effect, SwitchAction, SwitchJob, SwitchPurpose};
pub use error::TransitionError;
pub use event::{Event, Observation, ProbeResult, RealiseResult, SwitchOutcome, UnitState};
pub use evolve::{EvolveError, evolve, record_probe};
pub use machine::step;
pub use policy::{
    ActivationMode, Directive, DirectiveKind, FailurePolicy, HealthOverrides, HealthPolicy,
    LocalPolicy, ProbeMode,
};
pub use reason::{MESSAGE_CAP, OUTPUT_TAIL_CAP, Reason, cap_head, cap_tail};
pub use report::{GapCause, OutboundEvent, RejectReason, Report, SwitchVerdict};
pub use state::{
    Activating, Committing, Converged, DeadlineKind, Deferred, Failed, Host, KNOWN_GOOD_CAP, Phase,
    ProbeBook, ProbeRecord, QUARANTINE_CAP, Realising, Reverted, RollingBack, Soaking, State,
    SystemView, Work,
};
pub use types::{
    MAX_LABEL_LEN, Millis, ProbeId, Revision, STORE_DIR, StorePath, SwitchId, Timestamp,
    ValueError, check_label,
};
