//! The operator API of hosts: add, revoke, list, inspect, set targets, roll back, pause and
//! resume; and `/metrics` and `/healthz`. Each handler parses, calls one fleet operation and
//! encodes its answer.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetnode_wire::{
    AddHost, DesiredChanged, ErrorCode, HostAdded, HostDetail, HostId, HostList, MAX_HOST_PAGE,
    RollbackRequest, SetTarget,
};
use serde::Deserialize;

use super::app::App;
use super::http::{ApiError, WireJson, decode_body, decode_body_or_default};
use crate::fleet::{DesiredChangeRequest, HostPage};

/// `POST /v1/admin/hosts`.
pub async fn add_host(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.authenticate(&headers)?;
    let fleet = app.fleet()?;
    let request: AddHost = decode_body(body).await?;
    let id = request.id.clone();
    let token = fleet.add_host(request).await?;
    let answer = HostAdded { id, token };
    Ok((StatusCode::CREATED, WireJson(answer)).into_response())
}

/// `DELETE /v1/admin/hosts/{host}`.
pub async fn revoke_host(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    app.authenticate(&headers)?;
    let fleet = app.fleet()?;
    fleet.revoke_host(&host_id(&host)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Query of the host list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Where the page starts: the `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Most hosts in the page (at most [`MAX_HOST_PAGE`], which is also the default).
    limit: Option<usize>,
}

/// `GET /v1/admin/hosts?cursor=<cursor>&limit=<n>`: one page of the hosts that are not
/// revoked, by id.
pub async fn list_hosts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<WireJson<HostList>, ApiError> {
    app.authenticate(&headers)?;
    let fleet = app.fleet()?;
    let Query(query) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::Malformed,
            format!(
                "{}; expected ?cursor=<next_cursor of the previous page>&limit=<1 to {MAX_HOST_PAGE}>",
                e.body_text()
            ),
        )
    })?;
    let limit = match query.limit {
        None => MAX_HOST_PAGE,
        Some(limit @ 1..=MAX_HOST_PAGE) => limit,
        Some(limit) => {
            return Err(ApiError::new(
                ErrorCode::Invalid,
                format!("limit {limit} is out of range: ask for 1 to {MAX_HOST_PAGE} hosts a page"),
            ));
        }
    };
    let page = HostPage {
        after: query.cursor.as_deref(),
        limit,
    };
    Ok(WireJson(fleet.host_page(page).await?))
}

/// `GET /v1/admin/hosts/{host}`.
pub async fn host_detail(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    headers: HeaderMap,
) -> Result<WireJson<HostDetail>, ApiError> {
    app.authenticate(&headers)?;
    let fleet = app.fleet()?;
    Ok(WireJson(fleet.host_detail(&host_id(&host)?).await?))
}

/// Query of `POST /v1/admin/targets`.
#[derive(Debug, Default, Deserialize)]
pub struct TargetQuery {
    /// Take hosts a running rollout owns out of it instead of refusing.
    #[serde(default)]
    force: bool,
}

/// `POST /v1/admin/targets[?force=true]`.
pub async fn set_target(
    State(app): State<Arc<App>>,
    query: Result<Query<TargetQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<WireJson<DesiredChanged>, ApiError> {
    app.authenticate(&headers)?;
    let fleet = app.fleet()?;
    let Query(query) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::Malformed,
            format!("{}; expected ?force=true or no query", e.body_text()),
        )
    })?;
    let request: SetTarget = decode_body(body).await?;
    let change = DesiredChangeRequest::SetTarget {
        request,
        force: query.force,
    };
    Ok(WireJson(fleet.change_desired(change).await?))
}

/// `POST /v1/admin/hosts/{host}/rollback`.
pub async fn rollback(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<WireJson<DesiredChanged>, ApiError> {
    app.authenticate(&headers)?;
    let fleet = app.fleet()?;
    let request: RollbackRequest = decode_body_or_default(body).await?;
    let host = host_id(&host)?;
    let change = DesiredChangeRequest::Rollback { host, request };
    Ok(WireJson(fleet.change_desired(change).await?))
}

/// `POST /v1/admin/hosts/{host}/pause`.
pub async fn pause(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    headers: HeaderMap,
) -> Result<WireJson<DesiredChanged>, ApiError> {
    hold(app, host, headers, true).await
}

/// `POST /v1/admin/hosts/{host}/resume`.
pub async fn resume(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    headers: HeaderMap,
) -> Result<WireJson<DesiredChanged>, ApiError> {
    hold(app, host, headers, false).await
}

/// `GET /metrics`.
pub async fn metrics(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !app.metrics_public {
        app.authenticate(&headers)?;
    }
    let fleet = app.fleet()?;
    let (hosts, rollouts) = (fleet.host_counts().await?, fleet.rollout_counts().await?);
    let text = app.metrics.render(&hosts, &rollouts);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        text,
    )
        .into_response())
}

/// `GET /healthz`.
pub async fn healthz() -> &'static str {
    "ok\n"
}

async fn hold(
    app: Arc<App>,
    host: String,
    headers: HeaderMap,
    paused: bool,
) -> Result<WireJson<DesiredChanged>, ApiError> {
    app.authenticate(&headers)?;
    let fleet = app.fleet()?;
    let host = host_id(&host)?;
    let change = DesiredChangeRequest::Hold { host, paused };
    Ok(WireJson(fleet.change_desired(change).await?))
}

/// A host id from a request's path.
pub(super) fn host_id(text: &str) -> Result<HostId, ApiError> {
    HostId::parse(text).map_err(|e| ApiError::new(ErrorCode::Invalid, e.to_string()))
}
