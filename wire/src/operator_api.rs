//! The operator's side of protocol v1: hosts, targets, rollbacks, holds and what the control
//! plane knows of each host.

use fleetnode_state_machine::{
    ActivationMode, DesiredState, HealthOverrides, Host, OutboundEvent, PhaseKind, Revision,
    StorePath, Timestamp,
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::agent_api::AgentStatus;
use crate::ids::{HostId, Secret, Tag};

/// Body of `POST /v1/admin/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AddHost {
    /// The new host's id.
    pub id: HostId,
    /// Its tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// Answer to adding a host: its token, shown this once (the server keeps only a hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostAdded {
    /// The host.
    pub id: HostId,
    /// Its bearer token.
    pub token: Secret,
}

/// Which hosts an operator command applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "by", rename_all = "kebab-case")]
pub enum Selector {
    /// These hosts.
    Hosts {
        /// Their ids.
        hosts: Vec<HostId>,
    },
    /// Every host with this tag.
    Tag {
        /// The tag.
        tag: Tag,
    },
    /// Every host that is not revoked.
    All,
}

/// Body of `POST /v1/admin/targets`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SetTarget {
    /// Which hosts.
    pub selector: Selector,
    /// The closure to run.
    pub target: StorePath,
    /// How to activate it; each host's default when absent.
    #[serde(default)]
    pub mode: Option<ActivationMode>,
    /// Health overrides.
    #[serde(default)]
    pub health: HealthOverrides,
}

/// One host's new desired revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostRevision {
    /// The host.
    pub host: HostId,
    /// Its desired revision now.
    pub revision: Revision,
}

/// Answer to an operator command that changed desired states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct DesiredChanged {
    /// Every host that changed.
    pub hosts: Vec<HostRevision>,
}

/// Body of `POST /v1/admin/hosts/{host}/rollback`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct RollbackRequest {
    /// The generation to go back to (a known-good one); when absent, the host undoes its latest
    /// deployment (see `docs/protocol.md`).
    #[serde(default)]
    pub to: Option<StorePath>,
}

/// One line of the host list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostRow {
    /// The host.
    pub id: HostId,
    /// Its tags.
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// The mirrored phase.
    pub phase: PhaseKind,
    /// The live system, as last reported.
    #[serde(default)]
    pub current: Option<StorePath>,
    /// The target of the desired state.
    #[serde(default)]
    pub target: Option<StorePath>,
    /// Desired revision.
    pub desired_revision: Revision,
    /// Last heartbeat, on the server's clock (milliseconds since the Unix epoch).
    #[serde(default)]
    pub last_seen: Option<Timestamp>,
    /// No heartbeat for three intervals.
    pub offline: bool,
    /// The heartbeat disagrees with the mirror.
    pub diverged: bool,
    /// Operator hold.
    pub paused: bool,
    /// The host was revoked: its token no longer works; its history is kept.
    #[serde(default)]
    pub revoked: bool,
}

/// Answer to `GET /v1/admin/hosts?cursor=<cursor>&limit=<n>`: one page of hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostList {
    /// Hosts by id, at most the page's limit ([`MAX_HOST_PAGE`] at most).
    pub hosts: Vec<HostRow>,
    /// Where the next page starts (pass it as `cursor`); absent on the last page. Opaque to
    /// clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Most hosts in one page of the host list: a row is at most about 2.7 KiB (an id, 32 tags of
/// 63 bytes, two store paths), so a full page of the largest rows stays under the 1 MiB body
/// cap; typical rows are a few hundred bytes.
pub const MAX_HOST_PAGE: usize = 256;

/// Answer to `GET /v1/admin/hosts/{host}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostDetail {
    /// The summary line.
    pub row: HostRow,
    /// The desired state.
    pub desired: DesiredState,
    /// The mirrored state, built from the host's events by the shared state machine.
    pub mirror: Host,
    /// Why the host is flagged diverged, if it is.
    #[serde(default)]
    pub divergence: Option<String>,
    /// The status the latest heartbeat carried.
    #[serde(default)]
    pub last_heartbeat: Option<AgentStatus>,
    /// The most recent events, oldest first.
    #[serde(default)]
    pub recent_events: Vec<OutboundEvent>,
}
