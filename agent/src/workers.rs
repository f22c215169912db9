//! The workers: what observes the world and carries out the state machine's commands. Each
//! reports to the event loop through the input channel (the activation jobs through their end,
//! which the loop polls); none decides anything, and none reaches up into the runtime that
//! starts them.
//!
//! - [`activation`]: the activation jobs the event loop holds in flight;
//! - [`probes`]: the configured health probes;
//! - [`control`]: the long-poll, the heartbeat and the outbound drainer, over one client of the
//!   control plane;
//! - [`admin`]: the admin socket and the loopback metrics listener.

pub mod activation;
pub mod admin;
pub mod control;
pub mod probes;
