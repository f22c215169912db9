//! What a fleet operation can refuse or fail with. Each variant says what was wrong and what to
//! do; `server/http.rs` maps every variant to its HTTP answer in one place.

use std::sync::Arc;

use fleetnode_wire::{HostId, OperatorName, RolloutId, Tag};

use super::rollouts::RequestError;
use crate::store::StoreError;

/// Why a fleet operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The store cannot be reached (the database is down or cut off): nothing was done.
    #[error("the control plane cannot reach its database ({0}); nothing was done, retry shortly")]
    Unavailable(String),
    /// The store is not open yet (the server is starting).
    #[error("the control plane is starting: its store {0} is not open yet; retry in a moment")]
    Starting(String),
    /// No host has this id.
    #[error("no host {0}; `fleetnode-cp hosts` lists the registered hosts")]
    UnknownHost(HostId),
    /// A host with this id exists already.
    #[error(
        "host {0} already exists (revoked hosts keep their id and history); choose another id or revoke-host the old one first"
    )]
    HostExists(HostId),
    /// The host was revoked; its desired state is frozen.
    #[error("host {0} is revoked; its desired state can no longer change")]
    HostRevoked(HostId),
    /// A selection named a revoked host explicitly.
    #[error("host {0} is revoked; leave it out of the selection")]
    RevokedInSelection(HostId),
    /// A tag selection matched no active host.
    #[error("no active host has tag {0}; nothing was changed")]
    NoHostWithTag(Tag),
    /// The fleet has no active host to select.
    #[error("no active hosts are registered; add hosts first")]
    NoActiveHosts,
    /// Hosts a running or paused rollout owns, named in a manual change without `force`.
    #[error(
        "{noun} {hosts} {verb} to {phase} rollout {rollout}; nothing was changed. Wait for it, `fleetnode-cp rollout abort {rollout}`, or pass --force to take the {noun} out of the rollout",
        noun = if hosts.contains(',') { "hosts" } else { "host" },
        verb = if hosts.contains(',') { "belong" } else { "belongs" }
    )]
    OwnedByRollout {
        /// The owned hosts of the first owning rollout, comma-separated.
        hosts: String,
        /// That rollout.
        rollout: RolloutId,
        /// Its phase's name.
        phase: &'static str,
    },
    /// An agent's credentials do not name the host it asked for.
    #[error("{0}")]
    Unauthenticated(String),
    /// A host's token used on another host's paths.
    #[error(
        "this token belongs to host {owner}, not {asked}; an agent may only use its own host's paths"
    )]
    OtherHostsToken {
        /// Whose token it is.
        owner: HostId,
        /// The host the request named.
        asked: String,
    },
    /// The host was revoked and may no longer talk to the control plane.
    #[error("host {0} was revoked; an operator must add it again under a new id")]
    AgentRevoked(HostId),
    /// Too many long-polls of one host wait at once.
    #[error(
        "host {host} already has {cap} long-polls waiting; retry later (is a second agent running with this host's token?)"
    )]
    TooManyWaiters {
        /// The host.
        host: HostId,
        /// The cap.
        cap: usize,
    },
    /// A batch of a stream the host has left behind.
    #[error("{0}")]
    RetiredStream(String),
    /// The control plane's log and the agent's disagree: the agent must send a snapshot.
    #[error("{message}")]
    ResyncRequired {
        /// Where this control plane's log of the host ends.
        log_end: u64,
        /// Why.
        message: String,
    },
    /// A valid token that may not do this.
    #[error("{what} needs the admin token; operator {operator} may not")]
    AdminOnly {
        /// What was asked.
        what: &'static str,
        /// Who asked.
        operator: OperatorName,
    },
    /// An operator with this name exists already.
    #[error(
        "operator {0} already exists (revoked operators keep their name, so the audit log stays unambiguous); choose another name"
    )]
    OperatorExists(OperatorName),
    /// No operator has this name.
    #[error("no operator {0}; `fleetnode-cp operators` lists them")]
    UnknownOperator(OperatorName),
    /// A rollout request was refused or failed.
    #[error(transparent)]
    Rollout(#[from] RequestError),
    /// The store failed; the detail is logged where it happened.
    #[error("{context}; the server log has the details")]
    Store {
        /// What was being done.
        context: &'static str,
        /// The store's error.
        source: Arc<StoreError>,
    },
    /// Something outside the store failed (a blocking task, the random source).
    #[error("{context}; the server log has the details")]
    Internal {
        /// What was being done.
        context: &'static str,
    },
}

impl FleetError {
    /// A store failure while doing `context`, logged here with its detail.
    pub fn store(context: &'static str, source: impl Into<Arc<StoreError>>) -> Self {
        let source = source.into();
        tracing::error!(error = %source, "{context}");
        Self::Store { context, source }
    }

    /// Any other internal failure while doing `context`, logged here with its detail.
    pub fn internal(context: &'static str, detail: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "{context}");
        Self::Internal { context }
    }
}
