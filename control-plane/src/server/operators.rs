//! The operator API of operators and the audit log: add, revoke, list, and read the log.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fleetnode_wire::{
    AddOperator, AuditLog, ErrorCode, HostId, OperatorAdded, OperatorList, OperatorName, Timestamp,
};
use serde::Deserialize;

use super::app::App;
use super::http::{ApiError, WireJson, decode_body};
use crate::store::AuditFilter;

/// `POST /v1/admin/operators`: a new operator and their token, shown once.
pub async fn add_operator(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = app.authenticate(&headers)?;
    let fleet = app.fleet()?;
    let request: AddOperator = decode_body(body).await?;
    let name = request.name.clone();
    let token = fleet.add_operator(&principal, request).await?;
    let answer = OperatorAdded { name, token };
    Ok((StatusCode::CREATED, WireJson(answer)).into_response())
}

/// `DELETE /v1/admin/operators/{name}`.
pub async fn revoke_operator(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let principal = app.authenticate(&headers)?;
    let fleet = app.fleet()?;
    let name =
        OperatorName::parse(&name).map_err(|e| ApiError::new(ErrorCode::Invalid, e.to_string()))?;
    fleet.revoke_operator(&principal, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/admin/operators`.
pub async fn list_operators(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<WireJson<OperatorList>, ApiError> {
    app.authenticate(&headers)?;
    let operators = app.fleet()?.operators();
    Ok(WireJson(OperatorList { operators }))
}

/// The query of `GET /v1/admin/audit`.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Only entries naming this host.
    host: Option<String>,
    /// Only entries at or after this time (milliseconds since the Unix epoch).
    since: Option<u64>,
}

/// `GET /v1/admin/audit?host=&since=`: the newest matching entries, oldest first.
pub async fn audit(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Result<WireJson<AuditLog>, ApiError> {
    app.authenticate(&headers)?;
    let fleet = app.fleet()?;
    let host = query
        .host
        .map(|h| HostId::parse(&h))
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::Invalid, e.to_string()))?;
    let filter = AuditFilter {
        host,
        since: query.since.map(Timestamp),
        who: None,
    };
    Ok(WireJson(fleet.audit(filter).await?))
}
