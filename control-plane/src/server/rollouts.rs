//! The operator API of rollouts: start, list, status, pause, resume, abort, rollback, approve.
//! `docs/protocol.md` lists the endpoints.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fleetnode_wire::{ErrorCode, RolloutId, RolloutList, RolloutStatus, StartRollout};

use super::app::App;
use super::http::{ApiError, WireJson, decode_body};
use crate::fleet::Action;

/// `POST /v1/admin/rollouts`.
pub async fn start(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.authenticate(&headers)?;
    let fleet = app.fleet()?;
    let request: StartRollout = decode_body(body).await?;
    let answer = fleet.start_rollout(request).await?;
    Ok((StatusCode::CREATED, WireJson(answer)).into_response())
}

/// `GET /v1/admin/rollouts`: the newest rollouts first.
pub async fn list(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<WireJson<RolloutList>, ApiError> {
    app.authenticate(&headers)?;
    Ok(WireJson(app.fleet()?.rollout_list().await?))
}

/// `GET /v1/admin/rollouts/{id}`.
pub async fn show(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<WireJson<RolloutStatus>, ApiError> {
    app.authenticate(&headers)?;
    let fleet = app.fleet()?;
    Ok(WireJson(fleet.rollout(parse_id(&id)?).await?))
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

/// `POST /v1/admin/rollouts/{id}/approve`.
pub async fn approve(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<WireJson<RolloutStatus>, ApiError> {
    act(app, id, headers, Action::Approve).await
}

async fn act(
    app: Arc<App>,
    id: String,
    headers: HeaderMap,
    action: Action,
) -> Result<WireJson<RolloutStatus>, ApiError> {
    app.authenticate(&headers)?;
    let fleet = app.fleet()?;
    Ok(WireJson(
        fleet.act_on_rollout(parse_id(&id)?, action).await?,
    ))
}

fn parse_id(text: &str) -> Result<RolloutId, ApiError> {
    text.parse::<u64>().map(RolloutId).map_err(|_| {
        ApiError::new(
            ErrorCode::Invalid,
            format!("{text:?} is not a rollout number; `fleetnode-cp rollout list` lists them"),
        )
    })
}
