//! End-to-end scenarios: the real `fleetnode-cp` and `fleetnode-agent` binaries over real TLS,
//! the agent's real NixOS backend on a fake root. One test binary, so libtest runs the
//! scenarios in parallel (each has its own directories, ports, control plane and agent); raise
//! the parallelism with `-- --test-threads N`.
//!
//! Every scenario asserts on states reached, never on timing; the waits' deadlines are only a
//! safety net.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod rollout_common;

mod activation_failure;
mod browser;
mod console;
mod control_plane_down;
mod control_plane_rollback;
mod happy_path;
mod haproxy;
mod kill_agent_mid_switch;
mod pause;
mod postgres_faults;
mod probe_failure;
mod replica_failover;
mod resync;
mod rollout_halt;
mod rollout_offline;
mod rollout_on_halt_rollback;
mod rollout_restart;
mod rollout_waves;
mod secrets;
