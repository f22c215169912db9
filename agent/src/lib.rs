//! The fleetnode agent.
//!
//! Workers (probes, long-poll, heartbeat, outbound drainer, admin listener) observe the world
//! and send [`input::Input`]s into one bounded channel. One event loop ([`runtime::eventloop`])
//! is the only caller of [`fleetnode_state_machine::step`]: it persists the new state and the
//! new outbound events in one durable transaction, and only then carries out the state
//! machine's commands, holding the activation work in flight itself
//! ([`workers::activation`]).

pub mod backoff;
pub mod cli;
pub mod clock;
pub mod config;
pub mod input;
pub mod logging;
pub mod metrics;
pub mod runtime;
pub mod secrets;
pub mod selfupdate;
pub mod status;
pub mod store;
pub mod system;
pub mod systemd;
#[cfg(feature = "testing")]
pub mod testing;
#[cfg(test)]
mod testlog;
pub mod workers;
