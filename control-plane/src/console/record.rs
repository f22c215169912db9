//! Console actions in the audit log: the same entries the API's actions make (the same action
//! names, the hosts and the subject they named, the answer's status and outcome), under the
//! signed-in principal's name.

use fleetnode_wire::{AuditEntry, HostId};
use tracing::{error, info};

use super::guard::ConsoleError;
use crate::server::App;

/// What an action named, for its audit entry.
pub struct Named {
    /// The audit name of the action (`rollback`, `rollout-abort`, `console-login`, ...).
    pub action: &'static str,
    /// What it named besides hosts (`rollout 3`).
    pub subject: Option<String>,
    /// The hosts it named or changed.
    pub hosts: Vec<HostId>,
}

/// Appends the entry of an action by `who` that ended with `result` (durably, before the
/// answer goes out); a failure to record is logged, as the API's recording does.
pub async fn record<T>(app: &App, who: &str, named: Named, result: &Result<T, ConsoleError>) {
    let Ok(fleet) = app.fleet() else {
        return;
    };
    let (status, outcome) = match result {
        Ok(_) => (200, "ok".to_owned()),
        Err(error) => error.outcome(),
    };
    let mut hosts = named.hosts;
    hosts.sort();
    hosts.dedup();
    let entry = AuditEntry {
        seq: 0,
        at: app.settings.clock.now(),
        who: who.to_owned(),
        action: named.action.to_owned(),
        subject: named.subject,
        hosts,
        status,
        outcome,
    };
    match fleet.record_audit(entry).await {
        Ok(entry) => info!(seq = entry.seq, who = %entry.who, action = %entry.action,
            outcome = %entry.outcome, "console action recorded"),
        Err(e) => {
            error!(error = %e, action = named.action, "cannot record a console action in the audit log");
        }
    }
}
