//! What agents do: authenticate as their host, wait for its desired state, report events and
//! send heartbeats.

use std::sync::Arc;
use std::time::Duration;

use fleetnode_wire::{
    AgentStatus, DesiredAnswer, EventAck, EventBatch, HeartbeatAck, HostId, Report,
};
use tracing::{info, warn};

use super::registry::HostEntry;
use super::{Fleet, FleetError};
use crate::auth::{digests_equal, hash_token};
use crate::mirror::Refused;

/// How an agent proved who it is.
#[derive(Debug, Clone, Copy)]
pub enum Credentials<'a> {
    /// A bearer token (and, with mutual TLS, a client certificate already checked to name
    /// the host).
    Token(&'a str),
    /// A client certificate naming the host, checked by the server, and no token.
    Certificate,
    /// Nothing.
    None,
}

impl Fleet {
    /// The host `host` names, if the credentials are its own and it is not revoked.
    pub fn authorize_host(
        &self,
        host: &str,
        credentials: Credentials<'_>,
    ) -> Result<Arc<HostEntry>, FleetError> {
        let entry = HostId::parse(host).ok().and_then(|id| self.hosts.get(&id));
        let entry = match credentials {
            Credentials::Token(token) => {
                let hash = hash_token(token);
                let own = entry.filter(|e| e.with_view(|v| digests_equal(&v.token_hash, &hash)));
                match own {
                    Some(entry) => entry,
                    None => return Err(self.not_this_host(&hash, host)),
                }
            }
            Credentials::Certificate => entry.ok_or_else(|| {
                FleetError::Unauthenticated(format!(
                    "host {host} is not registered; an operator adds it with fleetnode-cp add-host"
                ))
            })?,
            Credentials::None => {
                return Err(FleetError::Unauthenticated(
                    "missing host token: send Authorization: Bearer <the token printed by fleetnode-cp add-host>".to_owned(),
                ));
            }
        };
        if entry.is_revoked() {
            return Err(FleetError::AgentRevoked(entry.id.clone()));
        }
        Ok(entry)
    }

    /// The host's desired state once it differs from revision `known`, or as it is after
    /// `wait` (or when the server stops). A revoked host's wait ends with a refusal.
    pub async fn await_desired(
        &self,
        entry: &Arc<HostEntry>,
        known: Option<u64>,
        wait: Duration,
    ) -> Result<DesiredAnswer, FleetError> {
        let mut changes = entry.subscribe();
        let current = changes.borrow_and_update().clone();
        if known != Some(current.revision.0) {
            return Ok(DesiredAnswer {
                changed: true,
                desired: current,
            });
        }
        if wait.is_zero() {
            return Ok(DesiredAnswer {
                changed: false,
                desired: current,
            });
        }
        let cap = self.settings.waiters_per_host;
        let Some(_slot) = entry.try_wait(cap) else {
            return Err(FleetError::TooManyWaiters {
                host: entry.id.clone(),
                cap,
            });
        };
        let _counted = Waiting::new(self);
        let deadline = tokio::time::sleep(wait);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    if entry.is_revoked() {
                        return Err(FleetError::AgentRevoked(entry.id.clone()));
                    }
                    let desired = changes.borrow_and_update().clone();
                    if known != Some(desired.revision.0) {
                        return Ok(DesiredAnswer { changed: true, desired });
                    }
                }
                () = &mut deadline => break,
                () = self.settings.shutdown.cancelled() => break,
            }
        }
        // A change published as the wait ran out is still a change: `changed` says whether
        // the revision answered differs from the one the agent knows.
        let desired = entry.desired();
        Ok(DesiredAnswer {
            changed: known != Some(desired.revision.0),
            desired,
        })
    }

    /// Takes a batch of a host's events: what fits the mirror is applied and committed (with
    /// the mirror it produces, durable before the ack), and the ack says how far the log goes.
    pub async fn ingest(
        &self,
        entry: &HostEntry,
        batch: EventBatch,
    ) -> Result<EventAck, FleetError> {
        let _gate = self.gate.read().await;
        let _write = entry.write.lock().await;
        let before = entry.with_view(|v| v.mirror.clone());
        let applied = self
            .backend
            .ingest(&entry.id, &batch, &before)
            .await?
            .map_err(|refused| match refused {
                Refused::RetiredStream { .. } => FleetError::RetiredStream(refused.to_string()),
                Refused::Resync { log_end, first, .. } => {
                    info!(host = %entry.id, stream = batch.stream, first, log_end, "event batch does not fit the log; asking the agent for a snapshot");
                    FleetError::ResyncRequired {
                        log_end,
                        message: refused.to_string(),
                    }
                }
            })?;
        if applied.mirror != before {
            entry.update(|v| v.mirror = applied.mirror.clone());
            self.settings.metrics.events_ingested(applied.stored.len());
            self.rollouts.nudge();
            self.changed(super::ChangeKind::Hosts);
        }
        for snapshot in applied
            .stored
            .iter()
            .filter(|e| matches!(e.report, Report::Snapshot { .. }))
        {
            info!(host = %entry.id, seq = snapshot.seq, "the mirror restarted from the agent's snapshot");
        }
        if applied.new_stream {
            info!(host = %entry.id, stream = batch.stream, "host started a new event stream; mirror starts afresh");
        }
        for (seq, why) in &applied.diverged {
            warn!(host = %entry.id, seq, %why, "reported event does not fit the mirror; host flagged diverged");
        }
        Ok(EventAck {
            acked_through: applied.acked_through,
        })
    }

    /// Takes a host's heartbeat: it is compared with the mirror (a contradiction flags the host
    /// diverged) and kept as the host's last sign of life. A heartbeat showing events this
    /// control plane does not hold asks the agent for a snapshot.
    pub async fn heartbeat(
        &self,
        entry: &HostEntry,
        heartbeat: AgentStatus,
    ) -> Result<HeartbeatAck, FleetError> {
        let _gate = self.gate.read().await;
        let _write = entry.write.lock().await;
        let (mirror, previous) = entry.with_view(|v| (v.mirror.clone(), v.heartbeat.clone()));
        let judged = self
            .backend
            .heartbeat(
                &entry.id,
                heartbeat,
                self.now(),
                (&mirror, previous.as_ref()),
            )
            .await?;
        match (&judged.previous, &judged.record.divergence) {
            (None, Some(why)) => {
                warn!(host = %entry.id, %why, "heartbeat contradicts the mirror; host flagged diverged")
            }
            (Some(_), None) => info!(host = %entry.id, "heartbeat agrees with the mirror again"),
            (None, None) | (Some(_), Some(_)) => {}
        }
        entry.update(|v| v.heartbeat = Some(judged.record));
        let resync_from = judged.resync_from;
        if let Some(log_end) = resync_from {
            info!(host = %entry.id, log_end, "heartbeat shows events this control plane does not hold; asking the agent for a snapshot");
            return Err(FleetError::ResyncRequired {
                log_end,
                message: format!(
                    "this control plane holds the host's event stream only up to seq {log_end}; send a snapshot"
                ),
            });
        }
        Ok(HeartbeatAck {
            desired_revision: entry.desired().revision,
        })
    }

    /// 403 when the token is another (active) host's, else 401.
    fn not_this_host(&self, hash: &crate::auth::TokenHash, host: &str) -> FleetError {
        let owner = self.hosts.owner_of(hash).and_then(|id| self.hosts.get(&id));
        match owner {
            Some(owner) if !owner.is_revoked() => FleetError::OtherHostsToken {
                owner: owner.id.clone(),
                asked: host.to_owned(),
            },
            Some(_) | None => FleetError::Unauthenticated(format!(
                "the host token was refused for {host}; check the agent's token file against the one fleetnode-cp add-host wrote"
            )),
        }
    }
}

/// Counts a waiting long-poll in the metrics for as long as it lives.
struct Waiting<'a> {
    fleet: &'a Fleet,
}

impl<'a> Waiting<'a> {
    fn new(fleet: &'a Fleet) -> Self {
        fleet.settings.metrics.waiters().inc();
        Self { fleet }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.fleet.settings.metrics.waiters().dec();
    }
}
