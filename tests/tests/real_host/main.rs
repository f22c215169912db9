//! The real-host tier: the agent as a real `fleetnode-agent.service` on systemd 252 as PID 1,
//! with Debian's Nix 2.8, in a `systemd-nspawn` container per scenario (see
//! `fleetnode_tests::real_host`). Each scenario asserts the events the control plane recorded
//! and the host's real state: the system links, the profile, the boot entry, the generation's
//! running service, and that no `fleetnode-activate-*` unit is left behind.
//!
//! Run it alone with
//!
//! ```text
//! cargo test -p fleetnode-tests --features real-host --test real_host --locked
//! ```
//!
//! as root, with `debootstrap` and `systemd-container` installed. Without them every scenario
//! fails and says what is missing; it never skips.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

mod admin;
mod failures;
mod gc;
mod modes;
mod reboots;
mod restarts;
mod rollback;
mod signatures;
mod units;
