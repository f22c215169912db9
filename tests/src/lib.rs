//! End-to-end harness for fleetnode: the real `fleetnode-cp` and `fleetnode-agent` binaries as
//! child processes, talking real HTTPS on loopback, with the agent's real NixOS backend acting on
//! a fake NixOS root ([`fleetnode_fixtures::fakeroot::FakeRoot`]).
//!
//! A [`Harness`] is one small world: a work directory (certificates, admin token, the control
//! plane's redb store, the agent's configuration, every log), a control plane on a free loopback
//! port, one registered host and its agent on a fake root that runs generation 1. Operators act
//! through the real `fleetnode-cp` command line ([`Harness::cp`]); the state of the host is read
//! back with `fleetnode-cp host <id> --json` and waited for with deadlines that are only a safety
//! net ([`Harness::wait_for`]): nothing here measures or asserts time.
//!
//! A [`Fleet`] is the same for several hosts, each its own agent on its own fake root, for
//! rollouts. [`replicas::Replicas`] is one host whose agent lists several control-plane
//! addresses, served in turn by control planes sharing one store; [`balanced::Balanced`] puts
//! Debian's `haproxy` in front of such control planes, with agents on mutual TLS behind it.
//!
//! Every child process is killed when its handle is dropped, so a failing test leaves nothing
//! running behind it. When a wait fails, the error carries the last state seen and the tails of
//! both logs.
//!
//! The binaries are found next to the running executable (see [`binaries`]); `cargo test
//! --workspace` builds them, otherwise run `cargo build --workspace --bins` first.

pub mod agent;
pub mod balanced;
pub mod binaries;
pub mod browser;
pub mod control_plane;
pub mod error;
pub mod fleet;
pub mod haproxy;
pub mod harness;
pub mod load;
pub mod narrate;
pub mod old_release;
pub mod process;
pub mod proxy;
pub mod real_host;
pub mod release;
pub mod replicas;
pub mod tls_server;

pub use error::HarnessError;
pub use fleet::{Fleet, FleetOptions};
pub use harness::{DEFAULT_DEADLINE, Harness, Health, Options};
pub use release::{Release, Shape};

/// The harness's result type.
pub type Result<T, E = HarnessError> = std::result::Result<T, E>;
