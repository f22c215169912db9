//! Operator accountability in protocol v1: named operators, each with a token of their own,
//! and the audit log of every operator action.

use fleetnode_state_machine::{Timestamp, ValueError, check_label};
use serde::{Deserialize, Serialize};

use crate::error::WireError;
use crate::ids::{HostId, Secret};
use crate::validate::cap_len;
use crate::{MAX_SELECTOR_HOSTS, MAX_SHORT_TEXT, Validate};

/// Most audit entries in one answer (the newest are kept); about 300 bytes each, so at most
/// about 600 KiB, under the body cap.
pub const MAX_AUDIT_ENTRIES: usize = 2_000;
/// Most operators in one listing.
pub const MAX_OPERATORS: usize = 1_000;
/// Who the shared admin token acts as in the audit log.
pub const ADMIN_PRINCIPAL: &str = "admin";
/// Who a request without a valid token is in the audit log.
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// An operator's name: a DNS label, like a host id (`alice`, `ci-deploy`); `admin` is the
/// shared admin token's and cannot be taken.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OperatorName(String);

impl OperatorName {
    /// Parses and validates a name.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        check_label("operator name", input)?;
        Ok(Self(input.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OperatorName {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<OperatorName> for String {
    fn from(value: OperatorName) -> Self {
        value.0
    }
}

impl std::fmt::Display for OperatorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Body of `POST /v1/admin/operators`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddOperator {
    /// The new operator.
    pub name: OperatorName,
}

/// Answer to adding an operator: their token, shown this once (the server keeps only a hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorAdded {
    /// The operator.
    pub name: OperatorName,
    /// Their bearer token.
    pub token: Secret,
}

/// One operator, as `GET /v1/admin/operators` lists them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorRow {
    /// The name.
    pub name: OperatorName,
    /// When they were added (server clock).
    pub added_at: Timestamp,
    /// Who added them.
    pub added_by: String,
    /// When their token was revoked.
    #[serde(default)]
    pub revoked_at: Option<Timestamp>,
}

/// Answer of `GET /v1/admin/operators`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperatorList {
    /// Every operator, revoked ones included, by name.
    pub operators: Vec<OperatorRow>,
}

/// One operator action, as the audit log keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its place in the log, from 1.
    pub seq: u64,
    /// When the control plane answered it (server clock).
    pub at: Timestamp,
    /// Who: an operator's name, [`ADMIN_PRINCIPAL`] or [`UNAUTHENTICATED`].
    pub who: String,
    /// What: the command (`set-target`, `rollout-abort`, `add-operator`, ...).
    pub action: String,
    /// What it named besides hosts: a rollout (`rollout 3`) or an operator (`operator alice`).
    #[serde(default)]
    pub subject: Option<String>,
    /// The hosts it named or changed.
    #[serde(default)]
    pub hosts: Vec<HostId>,
    /// The HTTP status of the answer.
    pub status: u16,
    /// `ok`, or the error code of a refusal (`unauthorized`, `not-found`, `conflict`, ...).
    pub outcome: String,
}

/// Answer of `GET /v1/admin/audit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditLog {
    /// The matching entries, oldest first (the newest [`MAX_AUDIT_ENTRIES`]).
    pub entries: Vec<AuditEntry>,
    /// True when older matching entries were left out.
    #[serde(default)]
    pub truncated: bool,
}

impl Validate for AddOperator {
    fn validate(&self) -> Result<(), WireError> {
        if self.name.as_str() == ADMIN_PRINCIPAL || self.name.as_str() == UNAUTHENTICATED {
            return Err(crate::validate::invalid(
                "name",
                format!(
                    "{} names the shared admin token in the audit log; choose another name",
                    self.name
                ),
            ));
        }
        Ok(())
    }
}

impl Validate for OperatorAdded {
    fn validate(&self) -> Result<(), WireError> {
        cap_len("token", self.token.expose().len(), MAX_SHORT_TEXT)
    }
}

impl Validate for OperatorList {
    fn validate(&self) -> Result<(), WireError> {
        cap_len("operators", self.operators.len(), MAX_OPERATORS)?;
        for row in &self.operators {
            cap_len("operators.added_by", row.added_by.len(), MAX_SHORT_TEXT)?;
        }
        Ok(())
    }
}

impl Validate for AuditLog {
    fn validate(&self) -> Result<(), WireError> {
        cap_len("entries", self.entries.len(), MAX_AUDIT_ENTRIES)?;
        for entry in &self.entries {
            cap_len("entries.who", entry.who.len(), MAX_SHORT_TEXT)?;
            cap_len("entries.action", entry.action.len(), MAX_SHORT_TEXT)?;
            cap_len("entries.outcome", entry.outcome.len(), MAX_SHORT_TEXT)?;
            cap_len(
                "entries.subject",
                entry.subject.as_ref().map_or(0, String::len),
                MAX_SHORT_TEXT,
            )?;
            cap_len("entries.hosts", entry.hosts.len(), MAX_SELECTOR_HOSTS)?;
        }
        Ok(())
    }
}
