//! The agent API: desired state (long-poll), event ingestion, heartbeats. Each handler checks
//! the agent's credentials, parses, calls one fleet operation and encodes its answer.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::request::Parts;
use fleetnode_wire::{
    AgentStatus, DEFAULT_WAIT_SECS, DesiredAnswer, ErrorCode, EventAck, EventBatch, HeartbeatAck,
    MAX_WAIT_SECS,
};
use serde::Deserialize;

use super::app::App;
use super::http::{ApiError, WireJson, bearer, decode_body};
use super::listen::PeerCertificates;
use crate::fleet::{Credentials, Fleet, HostEntry};
use crate::tls::certificate_names;

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
    let (fleet, entry) = authorize(&app, &host, &parts)?;
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
    let wait = Duration::from_secs(query.wait.unwrap_or(DEFAULT_WAIT_SECS).min(MAX_WAIT_SECS));
    Ok(WireJson(
        fleet.await_desired(&entry, query.known, wait).await?,
    ))
}

/// `POST /v1/agent/hosts/{host}/events`.
pub async fn events(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    request: Request,
) -> Result<WireJson<EventAck>, ApiError> {
    let (parts, body) = request.into_parts();
    let (fleet, entry) = authorize(&app, &host, &parts)?;
    let batch: EventBatch = decode_body(body).await?;
    Ok(WireJson(fleet.ingest(&entry, batch).await?))
}

/// `POST /v1/agent/hosts/{host}/heartbeat`.
pub async fn heartbeat(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    request: Request,
) -> Result<WireJson<HeartbeatAck>, ApiError> {
    let (parts, body) = request.into_parts();
    let (fleet, entry) = authorize(&app, &host, &parts)?;
    let heartbeat: AgentStatus = decode_body(body).await?;
    Ok(WireJson(fleet.heartbeat(&entry, heartbeat).await?))
}

/// Authenticates a host for `{host}`: by its bearer token, and with mutual TLS by a client
/// certificate naming it. With mutual TLS a certificate alone is enough (an agent configured
/// with a client certificate and no token); a token sent along must still be the host's own.
fn authorize<'a>(
    app: &'a App,
    host: &str,
    parts: &Parts,
) -> Result<(&'a Arc<Fleet>, Arc<HostEntry>), ApiError> {
    let fleet = app.fleet()?;
    if app.client_certs {
        check_certificate(parts, host)?;
    }
    let credentials = match bearer(&parts.headers) {
        Some(token) => Credentials::Token(token),
        None if app.client_certs => Credentials::Certificate,
        None => Credentials::None,
    };
    Ok((fleet, fleet.authorize_host(host, credentials)?))
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
