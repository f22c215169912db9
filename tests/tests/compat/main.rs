//! Compatibility across releases: the frozen examples of every released protocol minor
//! (`tests/compat/protocol-*/`) against the current code, a control plane written from the
//! first 1.0 documents against the current agent's heartbeat, the current control plane against
//! every frozen request over real HTTPS, and the latest release's binaries against the tree's
//! (built once per release commit and cached; see `fleetnode_tests::old_release`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod frozen;

mod accepted;
mod first_documents;
mod meaning;
mod releases;
mod self_upgrade;
mod skew;
