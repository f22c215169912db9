//! The agent API: desired state (long-poll), event ingestion, heartbeats.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::request::Parts;
use fleetnode_wire::{
    AgentStatus, DEFAULT_WAIT_SECS, DesiredAnswer, ErrorCode, EventAck, EventBatch, HeartbeatAck,
    HostId, MAX_WAIT_SECS,
};
use serde::Deserialize;
use tracing::{info, warn};

use super::app::{App, Ready};
use super::http::{ApiError, WireJson, bearer, decode_body};
use super::listen::PeerCertificates;
use crate::auth::{digests_equal, hash_token};
use crate::mirror::{Comparison, Refused};
use crate::registry::HostEntry;
use crate::store::{HeartbeatRecord, Write};
use crate::tls::certificate_names;

/// Seconds a client is asked to wait when its host has too many long-polls waiting.
const WAITERS_RETRY_SECS: u64 = 5;

/// Query of the desired-state long-poll.
#[derive(Debug, Deserialize)]
pub struct DesiredQuery {
    /// The revision the agent knows.
    known: Option<u64>,
    /// How long to wait for a change, in seconds.
    wait: Option<u64>,
}

/// `GET /v1/agent/hosts/{host}/desired?known=<rev>&wait=<secs>`.
pub async fn desired(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    query: Result<Query<DesiredQuery>, QueryRejection>,
    request: Request,
) -> Result<WireJson<DesiredAnswer>, ApiError> {
    let (parts, _) = request.into_parts();
    let ready = app.ready()?;
    let entry = authorize(&app, ready, &host, &parts)?;
    // The head's bytes (headers, URI) share the connection's read buffer: holding them through
    // the wait would keep that buffer from being reused, 8 KiB per waiting connection.
    drop(parts);
    let Query(query) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::Malformed,
            format!(
                "{}; expected ?known=<revision>&wait=<seconds>",
                e.body_text()
            ),
        )
    })?;
    let mut changes = entry.subscribe();
    let current = changes.borrow_and_update().clone();
    if query.known != Some(current.revision.0) {
        return Ok(WireJson(DesiredAnswer {
            changed: true,
            desired: current,
        }));
    }
    let wait = query.wait.unwrap_or(DEFAULT_WAIT_SECS).min(MAX_WAIT_SECS);
    if wait == 0 {
        return Ok(WireJson(DesiredAnswer {
            changed: false,
            desired: current,
        }));
    }
    let Some(_slot) = entry.try_wait(app.waiters_per_host) else {
        return Err(ApiError::rate_limited(
            format!(
                "host {host} already has {} long-polls waiting; retry later (is a second agent running with this host's token?)",
                app.waiters_per_host
            ),
            WAITERS_RETRY_SECS,
        ));
    };
    let _counted = Waiting::new(&app);
    let deadline = tokio::time::sleep(Duration::from_secs(wait));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                if entry.with_view(|v| v.record.revoked) {
                    return Err(revoked(&entry.id));
                }
                let desired = changes.borrow_and_update().clone();
                if query.known != Some(desired.revision.0) {
                    return Ok(WireJson(DesiredAnswer { changed: true, desired }));
                }
            }
            () = &mut deadline => break,
            () = app.shutdown.cancelled() => break,
        }
    }
    Ok(WireJson(DesiredAnswer {
        changed: false,
        desired: entry.desired(),
    }))
}

/// `POST /v1/agent/hosts/{host}/events`.
pub async fn events(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    request: Request,
) -> Result<WireJson<EventAck>, ApiError> {
    let (parts, body) = request.into_parts();
    let ready = app.ready()?;
    let entry = authorize(&app, ready, &host, &parts)?;
    let batch: EventBatch = decode_body(body).await?;
    let _write = entry.write.lock().await;
    let before = entry.with_view(|v| v.mirror.clone());
    let applied = before.apply(&batch).map_err(|refused| match refused {
        Refused::RetiredStream { .. } => ApiError::new(ErrorCode::Conflict, refused.to_string()),
        Refused::Resync { log_end, first, .. } => {
            info!(host = %entry.id, stream = batch.stream, first, log_end, "event batch does not fit the log; asking the agent for a snapshot");
            resync(log_end, refused.to_string())
        }
    })?;
    if applied.mirror != before {
        // Durable before the ack: the group this write joins is committed with fsync.
        let write = Write::Ingest {
            host: entry.id.clone(),
            stream: batch.stream,
            events: applied.stored.clone(),
            mirror: Box::new(applied.mirror.clone()),
        };
        ready
            .writer
            .write(write)
            .await
            .map_err(|e| ApiError::internal("storing events failed", &e))?;
        entry.update(|v| v.mirror = applied.mirror.clone());
        app.metrics.events_ingested(applied.stored.len());
        ready.rollouts.nudge();
    }
    let snapshots = applied
        .stored
        .iter()
        .filter(|e| matches!(e.report, fleetnode_wire::Report::Snapshot { .. }));
    for snapshot in snapshots {
        info!(host = %entry.id, seq = snapshot.seq, "the mirror restarted from the agent's snapshot");
    }
    if applied.new_stream {
        info!(host = %entry.id, stream = batch.stream, "host started a new event stream; mirror starts afresh");
    }
    for (seq, why) in &applied.diverged {
        warn!(host = %entry.id, seq, %why, "reported event does not fit the mirror; host flagged diverged");
    }
    Ok(WireJson(EventAck {
        acked_through: applied.acked_through,
    }))
}

/// `POST /v1/agent/hosts/{host}/heartbeat`.
pub async fn heartbeat(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    request: Request,
) -> Result<WireJson<HeartbeatAck>, ApiError> {
    let (parts, body) = request.into_parts();
    let ready = app.ready()?;
    let entry = authorize(&app, ready, &host, &parts)?;
    let heartbeat: AgentStatus = decode_body(body).await?;
    let _write = entry.write.lock().await;
    let (comparison, previous, resync_from) = entry.with_view(|v| {
        (
            v.mirror.compare(&heartbeat),
            v.heartbeat.as_ref().and_then(|h| h.divergence.clone()),
            v.mirror.needs_resync(&heartbeat),
        )
    });
    let divergence = match comparison {
        Comparison::NotComparable => previous.clone(),
        Comparison::Agrees => None,
        Comparison::Disagrees(why) => Some(why),
    };
    match (&previous, &divergence) {
        (None, Some(why)) => {
            warn!(host = %entry.id, %why, "heartbeat contradicts the mirror; host flagged diverged")
        }
        (Some(_), None) => info!(host = %entry.id, "heartbeat agrees with the mirror again"),
        (None, None) | (Some(_), Some(_)) => {}
    }
    let record = HeartbeatRecord {
        heartbeat,
        received_at: app.clock.now(),
        divergence,
    };
    let write = Write::Heartbeat {
        host: entry.id.clone(),
        record: Box::new(record.clone()),
    };
    ready
        .writer
        .write(write)
        .await
        .map_err(|e| ApiError::internal("storing the heartbeat failed", &e))?;
    entry.update(|v| v.heartbeat = Some(record));
    if let Some(log_end) = resync_from {
        info!(host = %entry.id, log_end, "heartbeat shows events this control plane does not hold; asking the agent for a snapshot");
        return Err(resync(
            log_end,
            format!(
                "this control plane holds the host's event stream only up to seq {log_end}; send a snapshot"
            ),
        ));
    }
    Ok(WireJson(HeartbeatAck {
        desired_revision: entry.desired().revision,
    }))
}

/// Authenticates a host for `{host}`: by its bearer token, and with mutual TLS by a client
/// certificate naming it. With mutual TLS a certificate alone is enough (an agent configured
/// with a client certificate and no token); a token sent along must still be the host's own.
fn authorize(
    app: &App,
    ready: &Ready,
    host: &str,
    parts: &Parts,
) -> Result<Arc<HostEntry>, ApiError> {
    if app.client_certs {
        check_certificate(parts, host)?;
    }
    let entry = HostId::parse(host).ok().and_then(|id| ready.hosts.get(&id));
    let entry = match bearer(&parts.headers) {
        Some(token) => {
            let hash = hash_token(token);
            let own = entry.filter(|e| e.with_view(|v| digests_equal(&v.token_hash, &hash)));
            match own {
                Some(entry) => entry,
                None => return Err(not_this_host(ready, &hash, host)),
            }
        }
        None if app.client_certs => entry.ok_or_else(|| {
            ApiError::new(
                ErrorCode::Unauthorized,
                format!(
                    "host {host} is not registered; an operator adds it with fleetnode-cp add-host"
                ),
            )
        })?,
        None => {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "missing host token: send Authorization: Bearer <the token printed by fleetnode-cp add-host>",
            ));
        }
    };
    if entry.with_view(|v| v.record.revoked) {
        return Err(revoked(&entry.id));
    }
    Ok(entry)
}

/// 403 when the token is another (active) host's, else 401.
fn not_this_host(ready: &Ready, hash: &crate::auth::TokenHash, host: &str) -> ApiError {
    let owner = ready
        .hosts
        .owner_of(hash)
        .and_then(|id| ready.hosts.get(&id));
    match owner {
        Some(owner) if !owner.with_view(|v| v.record.revoked) => ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "this token belongs to host {}, not {host}; an agent may only use its own host's paths",
                owner.id
            ),
        ),
        Some(_) | None => ApiError::new(
            ErrorCode::Unauthorized,
            format!(
                "the host token was refused for {host}; check the agent's token file against the one fleetnode-cp add-host wrote"
            ),
        ),
    }
}

/// 409 `resync_required`, with the log's end in `seq`.
fn resync(log_end: u64, message: String) -> ApiError {
    let mut error = ApiError::new(ErrorCode::ResyncRequired, message);
    error.0.seq = Some(log_end);
    error
}

fn revoked(host: &HostId) -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        format!("host {host} was revoked; an operator must add it again under a new id"),
    )
}

fn check_certificate(parts: &Parts, host: &str) -> Result<(), ApiError> {
    let first = parts
        .extensions
        .get::<PeerCertificates>()
        .and_then(|chain| chain.0.first().cloned());
    let Some(der) = first else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            format!(
                "a client certificate naming {host} is required (the server runs with --client-ca)"
            ),
        ));
    };
    if !certificate_names(&der, host) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("the client certificate does not name host {host} as its DNS name"),
        ));
    }
    Ok(())
}

/// Counts a waiting long-poll in the metrics for as long as it lives.
struct Waiting<'a> {
    app: &'a App,
}

impl<'a> Waiting<'a> {
    fn new(app: &'a App) -> Self {
        app.metrics.waiters().inc();
        Self { app }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.app.metrics.waiters().dec();
    }
}
