//! The operator API of rollouts (start, list, status, pause, resume, abort, rollback) and the
//! driver that decides for them. `docs/protocol.md` lists the endpoints.

mod driver;
mod observe;
mod service;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fleetnode_wire::{
    ErrorCode, HostId, MAX_LISTED_ROLLOUTS, Rollout, RolloutId, RolloutList, RolloutStatus,
    RolloutSummary, StartRollout, StorePath,
};

use super::admin::admin;
use super::app::{App, Ready};
use super::http::{ApiError, WireJson, decode_body};
use super::metrics::{METRICS_ROLLOUTS, RolloutCounts};
use crate::registry::HostEntry;

pub use driver::run;
pub use service::{Action, REQUEST_QUEUE, Rollouts, Snapshot};

/// `POST /v1/admin/rollouts`.
pub async fn start(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    admin(&app, &headers)?;
    let ready = app.ready()?;
    let request: StartRollout = decode_body(body).await?;
    let rollout = ready.rollouts.start(request).await?;
    let answer = status(&app, ready, &rollout);
    Ok((StatusCode::CREATED, WireJson(answer)).into_response())
}

/// `GET /v1/admin/rollouts`: the newest rollouts first.
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<WireJson<RolloutList>, ApiError> {
    admin(&app, &headers)?;
    let ready = app.ready()?;
    let snapshot = ready.rollouts.snapshot();
    let rollouts = snapshot
        .rollouts
        .values()
        .rev()
        .take(MAX_LISTED_ROLLOUTS)
        .map(|rollout| RolloutSummary::of(rollout))
        .collect();
    Ok(WireJson(RolloutList { rollouts }))
}

/// `GET /v1/admin/rollouts/{id}`.
pub async fn show(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<WireJson<RolloutStatus>, ApiError> {
    admin(&app, &headers)?;
    let ready = app.ready()?;
    let id = parse_id(&id)?;
    let snapshot = ready.rollouts.snapshot();
    let rollout = snapshot
        .rollouts
        .get(&id)
        .ok_or_else(|| ApiError::from(service::RequestError::NotFound(id)))?;
    Ok(WireJson(status(&app, ready, rollout)))
}

/// `POST /v1/admin/rollouts/{id}/pause`.
pub async fn pause(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<WireJson<RolloutStatus>, ApiError> {
    act(app, id, headers, Action::Pause).await
}

/// `POST /v1/admin/rollouts/{id}/resume`.
pub async fn resume(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<WireJson<RolloutStatus>, ApiError> {
    act(app, id, headers, Action::Resume).await
}

/// `POST /v1/admin/rollouts/{id}/abort`.
pub async fn abort(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<WireJson<RolloutStatus>, ApiError> {
    act(app, id, headers, Action::Abort).await
}

/// `POST /v1/admin/rollouts/{id}/rollback`.
pub async fn rollback(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<WireJson<RolloutStatus>, ApiError> {
    act(app, id, headers, Action::Rollback).await
}

async fn act(
    app: Arc<App>,
    id: String,
    headers: HeaderMap,
    action: Action,
) -> Result<WireJson<RolloutStatus>, ApiError> {
    admin(&app, &headers)?;
    let ready = app.ready()?;
    let id = parse_id(&id)?;
    let rollout = ready.rollouts.act(id, action).await?;
    Ok(WireJson(status(&app, ready, &rollout)))
}

/// Refuses a manual target for hosts a running or paused rollout owns, naming the rollout;
/// with `force`, takes them out of their rollouts first (durably), so the rollout never acts
/// on them again.
pub async fn claim(
    ready: &Ready,
    entries: &[Arc<HostEntry>],
    force: bool,
    target: &StorePath,
) -> Result<(), ApiError> {
    let snapshot = ready.rollouts.snapshot();
    let owned: Vec<(&HostId, &Rollout)> = entries
        .iter()
        .filter_map(|entry| snapshot.owner_of(&entry.id).map(|r| (&entry.id, r)))
        .collect();
    let Some((_, first)) = owned.first() else {
        return Ok(());
    };
    if !force {
        let hosts: Vec<String> = owned
            .iter()
            .filter(|(_, rollout)| rollout.id == first.id)
            .map(|(host, _)| host.to_string())
            .collect();
        let (noun, verb) = if hosts.len() == 1 {
            ("host", "belongs")
        } else {
            ("hosts", "belong")
        };
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "{noun} {} {verb} to {} rollout {}; nothing was changed. Wait for it, `fleetnode-cp rollout abort {}`, or pass --force to take the {noun} out of the rollout",
                hosts.join(", "),
                first.phase.name(),
                first.id,
                first.id
            ),
        ));
    }
    let hosts = owned.iter().map(|(host, _)| (*host).clone()).collect();
    ready
        .rollouts
        .take_out(hosts, format!("set-target --force {target}"))
        .await?;
    Ok(())
}

/// The rollout gauges: rollouts by phase, and hosts by state for the newest rollouts.
pub fn rollout_counts(ready: &Ready) -> RolloutCounts {
    let snapshot = ready.rollouts.snapshot();
    let mut by_phase = std::collections::BTreeMap::<&'static str, i64>::new();
    for rollout in snapshot.rollouts.values() {
        *by_phase.entry(rollout.phase.name()).or_default() += 1;
    }
    RolloutCounts {
        by_phase: by_phase.into_iter().collect(),
        hosts: snapshot
            .rollouts
            .values()
            .rev()
            .take(METRICS_ROLLOUTS)
            .map(|rollout| (rollout.id, rollout.counts()))
            .collect(),
    }
}

fn parse_id(text: &str) -> Result<RolloutId, ApiError> {
    text.parse::<u64>().map(RolloutId).map_err(|_| {
        ApiError::new(
            ErrorCode::Invalid,
            format!("{text:?} is not a rollout number; `fleetnode-cp rollout list` lists them"),
        )
    })
}

/// A rollout with the live line of each of its hosts.
fn status(app: &App, ready: &Ready, rollout: &Rollout) -> RolloutStatus {
    let hosts = rollout
        .hosts
        .keys()
        .filter_map(|id| ready.hosts.get(id))
        .map(|entry| app.row(&entry))
        .collect();
    RolloutStatus {
        rollout: rollout.clone(),
        hosts,
    }
}
