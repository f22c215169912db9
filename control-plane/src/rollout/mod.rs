//! Fleet rollouts: a release given to the fleet in waves, each wave converged and baked before
//! the next starts, halted when failures exceed the budget.
//!
//! The decisions are one pure function, [`step`], in the style of the host state machine: no
//! clock, no I/O, deadlines as data ([`next_deadline`]). [`plan::start`] checks a release and
//! plans its waves. The shell ([`driver`], [`service`]) observes the mirrored state of each
//! rollout's hosts through the registry, feeds it to `step`, and commits the new rollout with
//! the desired states its commands set in one store transaction before publishing them.
//! `docs/control-plane.md` ("Rollouts") is the operator's guide.

mod judge;
mod machine;
mod manifest;
mod operator;
pub mod plan;
pub mod window;

pub use machine::{
    Command, Deadline, Event, HostObservation, Observations, RolloutError, next_deadline, step,
};
pub use manifest::{ManifestError, parse_manifest};
pub use plan::{Registration, StartError};
