//! Conformance of the real agent with protocol v1 as `docs/protocol.md` states it: a small
//! control plane written from the document (not `fleetnode-cp`) scripts each rule the document
//! marks **(c)** and checks what the agent does. Waits have deadlines only as a safety net;
//! where a rule is about pacing the check is a lower bound on the spacing the server saw, which
//! a slow machine can only make larger.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod server;
mod world;

mod delivery;
mod frozen_answers;
mod polling;
mod versions;
