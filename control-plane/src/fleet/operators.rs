//! Who may act, and the record of what they did.
//!
//! Every operator request carries a bearer token: the shared admin token (the principal
//! `admin`, which alone may add and revoke operators) or a named operator's own token (stored
//! hashed, compared in constant time, revocable at once). The audit log records every operator
//! action; an entry is durable before the answer to its action goes out.

use std::collections::BTreeMap;
use std::sync::RwLock;

use fleetnode_wire::{
    ADMIN_PRINCIPAL, AddOperator, AuditEntry, AuditLog, MAX_AUDIT_ENTRIES, OperatorName,
    OperatorRow, Secret,
};
use tracing::info;

use super::{Fleet, FleetError};
use crate::auth::{TokenHash, digests_equal, hash_token, hex, new_operator_token, parse_hash};
use crate::store::{AuditFilter, OperatorRecord};

/// Who a valid token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The shared admin token of `--admin-token-file`.
    Admin,
    /// A named operator.
    Operator(OperatorName),
}

impl Principal {
    /// The name the audit log gives it.
    pub fn name(&self) -> &str {
        match self {
            Self::Admin => ADMIN_PRINCIPAL,
            Self::Operator(name) => name.as_str(),
        }
    }

    /// Refuses anyone but the admin.
    fn admin_only(&self, what: &'static str) -> Result<(), FleetError> {
        match self {
            Self::Admin => Ok(()),
            Self::Operator(name) => Err(FleetError::AdminOnly {
                what,
                operator: name.clone(),
            }),
        }
    }
}

/// The named operators, as committed.
#[derive(Debug, Default)]
pub struct Operators {
    by_name: RwLock<BTreeMap<OperatorName, OperatorRecord>>,
}

impl Operators {
    /// The set of these records.
    pub fn load(records: Vec<OperatorRecord>) -> Self {
        Self {
            by_name: RwLock::new(records.into_iter().map(|r| (r.name.clone(), r)).collect()),
        }
    }

    /// Replaces the whole set with what the store holds (another replica changed it).
    pub fn replace(&self, records: Vec<OperatorRecord>) {
        *self.write() = records.into_iter().map(|r| (r.name.clone(), r)).collect();
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<OperatorName, OperatorRecord>> {
        // Every update is one insert; a panic cannot leave the map half changed.
        self.by_name.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<OperatorName, OperatorRecord>> {
        self.by_name.read().unwrap_or_else(|e| e.into_inner())
    }

    /// True while `name` is a known operator that is not revoked.
    pub fn is_active(&self, name: &OperatorName) -> bool {
        self.read()
            .get(name)
            .is_some_and(|record| record.revoked_at.is_none())
    }

    /// The operator whose token has this digest, unless revoked. Every record is compared, in
    /// constant time each.
    fn find(&self, digest: &TokenHash) -> Option<OperatorName> {
        let mut found = None;
        for record in self.read().values() {
            let matches =
                parse_hash(&record.token_sha256).is_some_and(|h| digests_equal(&h, digest));
            if matches && record.revoked_at.is_none() {
                found = Some(record.name.clone());
            }
        }
        found
    }
}

impl Fleet {
    /// The operator whose token has this digest, unless revoked.
    pub fn operator(&self, digest: &TokenHash) -> Option<OperatorName> {
        self.operators.find(digest)
    }

    /// Adds an operator (the admin only) and returns their token, shown once.
    pub async fn add_operator(
        &self,
        by: &Principal,
        request: AddOperator,
    ) -> Result<Secret, FleetError> {
        by.admin_only("adding an operator")?;
        if self.operators.read().contains_key(&request.name) {
            return Err(FleetError::OperatorExists(request.name));
        }
        let token = new_operator_token()
            .map_err(|e| FleetError::internal("generating a token failed", &e))?;
        let record = OperatorRecord {
            name: request.name.clone(),
            token_sha256: hex(&hash_token(&token)),
            added_at: self.now(),
            added_by: by.name().to_owned(),
            revoked_at: None,
        };
        self.store_operator(record).await?;
        info!(operator = %request.name, "operator added");
        Ok(Secret::new(&token))
    }

    /// Revokes an operator (the admin only): the token stops working at once; the name and
    /// the operator's entries in the audit log stay.
    pub async fn revoke_operator(
        &self,
        by: &Principal,
        name: &OperatorName,
    ) -> Result<(), FleetError> {
        by.admin_only("revoking an operator")?;
        let Some(mut record) = self.operators.read().get(name).cloned() else {
            return Err(FleetError::UnknownOperator(name.clone()));
        };
        if record.revoked_at.is_none() {
            record.revoked_at = Some(self.now());
            self.store_operator(record).await?;
            info!(operator = %name, "operator revoked");
        }
        Ok(())
    }

    /// Every operator, by name.
    pub fn operators(&self) -> Vec<OperatorRow> {
        self.operators
            .read()
            .values()
            .map(|r| OperatorRow {
                name: r.name.clone(),
                added_at: r.added_at,
                added_by: r.added_by.clone(),
                revoked_at: r.revoked_at,
            })
            .collect()
    }

    /// Appends an entry to the audit log (durably) and returns it with its number.
    pub async fn record_audit(&self, entry: AuditEntry) -> Result<AuditEntry, FleetError> {
        let entry = self.backend.append_audit(entry).await?;
        self.changed(super::ChangeKind::Audit);
        Ok(entry)
    }

    /// The newest audit entries that match, oldest first.
    pub async fn audit(&self, filter: AuditFilter) -> Result<AuditLog, FleetError> {
        let (entries, truncated) = self.backend.audit(filter, MAX_AUDIT_ENTRIES).await?;
        Ok(AuditLog { entries, truncated })
    }

    async fn store_operator(&self, record: OperatorRecord) -> Result<(), FleetError> {
        self.backend.put_operator(&record).await?;
        self.operators.write().insert(record.name.clone(), record);
        Ok(())
    }
}
