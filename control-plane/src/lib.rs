//! The reference fleetnode control plane: assigns generations to hosts, mirrors each host's
//! state from the events its agent reports (by running the shared state machine), and serves
//! its operators.
//!
//! [`fleet`] owns every operation on the fleet (hosts, desired states, events, heartbeats,
//! rollouts, operators) over the [`store`]; [`server`] is the HTTPS server whose handlers call
//! it (agent API, operator API, metrics); [`cli`] is the `fleetnode-cp` command line, which runs
//! the server or talks to one. `docs/control-plane.md`
//! is the operator's guide, `docs/protocol.md` the API.

pub mod auth;
pub mod cli;
pub mod clock;
pub mod console;
pub mod fleet;
pub mod metrics;
pub mod mirror;
pub mod rollout;
pub mod server;
pub mod store;
pub mod tls;

pub use clock::{Clock, ManualClock, SystemClock};
pub use server::{RunningServer, ServeError, ServerOptions, Transport, start};
