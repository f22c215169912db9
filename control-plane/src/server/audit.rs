//! Who may act, and the record of what they did.
//!
//! Every operator request carries a bearer token: the shared admin token (the principal
//! `admin`, which alone may add and revoke operators) or a named operator's own token (stored
//! hashed, revocable). Every request that may change something (any method but `GET` under
//! `/v1/admin/`) is recorded in the audit log by [`record`], which wraps the routes: who (as
//! the token says; `unauthenticated` when it says nothing valid), what, which hosts, when and
//! the outcome. The entry is durable before the answer goes out, so an action whose answer an
//! operator saw is in the log.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fleetnode_wire::{
    ADMIN_PRINCIPAL, AddOperator, AuditEntry, AuditLog, ErrorBody, ErrorCode, HostId,
    MAX_AUDIT_ENTRIES, MAX_BODY_BYTES, OperatorAdded, OperatorList, OperatorName, OperatorRow,
    Secret, Timestamp, UNAUTHENTICATED,
};
use serde::Deserialize;
use tracing::{error, info};

use super::app::App;
use super::http::{ApiError, WireJson, bearer, decode_body};
use crate::auth::{digests_equal, hash_token, hex, new_operator_token, parse_hash};
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
}

/// The operators the server knows, loaded from the store when it opens.
#[derive(Debug, Default)]
pub struct Operators {
    by_name: RwLock<BTreeMap<OperatorName, OperatorRecord>>,
}

impl Operators {
    /// Replaces the whole set (at start-up).
    pub fn load(&self, records: Vec<OperatorRecord>) {
        let mut map = self.write();
        *map = records.into_iter().map(|r| (r.name.clone(), r)).collect();
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<OperatorName, OperatorRecord>> {
        // Every update is one insert; a panic cannot leave the map half changed.
        self.by_name.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<OperatorName, OperatorRecord>> {
        self.by_name.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The operator whose token has this digest, unless revoked. Every record is compared, in
    /// constant time each.
    fn find(&self, digest: &[u8; 32]) -> Option<OperatorName> {
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

/// The principal of a request's token, or 401.
pub fn authenticate(app: &App, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "missing admin token: send Authorization: Bearer <the token in the server's --admin-token-file, or an operator token from fleetnode-cp add-operator>",
        ));
    };
    let digest = hash_token(token);
    if digests_equal(&digest, &app.admin_hash) {
        return Ok(Principal::Admin);
    }
    app.operators.find(&digest).map(Principal::Operator).ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unauthorized,
            "the admin token was refused: use the token in the server's --admin-token-file, or an operator token (from fleetnode-cp add-operator) that is not revoked",
        )
    })
}

fn admin_only(principal: &Principal, what: &str) -> Result<(), ApiError> {
    match principal {
        Principal::Admin => Ok(()),
        Principal::Operator(name) => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!("{what} needs the admin token; operator {name} may not"),
        )),
    }
}

/// `POST /v1/admin/operators`: a new operator and their token, shown once.
pub async fn add_operator(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = authenticate(&app, &headers)?;
    admin_only(&principal, "adding an operator")?;
    let ready = app.ready()?;
    let request: AddOperator = decode_body(body).await?;
    if app.operators.read().contains_key(&request.name) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "operator {} already exists (revoked operators keep their name, so the audit log stays unambiguous); choose another name",
                request.name
            ),
        ));
    }
    let token =
        new_operator_token().map_err(|e| ApiError::internal("generating a token failed", &e))?;
    let record = OperatorRecord {
        name: request.name.clone(),
        token_sha256: hex(&hash_token(&token)),
        added_at: app.clock.now(),
        added_by: principal.name().to_owned(),
        revoked_at: None,
    };
    store_operator(&app, ready, record).await?;
    info!(operator = %request.name, "operator added");
    let answer = OperatorAdded {
        name: request.name,
        token: Secret::new(&token),
    };
    Ok((StatusCode::CREATED, WireJson(answer)).into_response())
}

/// `DELETE /v1/admin/operators/{name}`: the token stops working at once; the name and the
/// operator's entries in the audit log stay.
pub async fn revoke_operator(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let principal = authenticate(&app, &headers)?;
    admin_only(&principal, "revoking an operator")?;
    let ready = app.ready()?;
    let name =
        OperatorName::parse(&name).map_err(|e| ApiError::new(ErrorCode::Invalid, e.to_string()))?;
    let Some(mut record) = app.operators.read().get(&name).cloned() else {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no operator {name}; `fleetnode-cp operators` lists them"),
        ));
    };
    if record.revoked_at.is_none() {
        record.revoked_at = Some(app.clock.now());
        store_operator(&app, ready, record).await?;
        info!(operator = %name, "operator revoked");
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn store_operator(
    app: &App,
    ready: &super::app::Ready,
    record: OperatorRecord,
) -> Result<(), ApiError> {
    let store = ready.store.clone();
    let stored = record.clone();
    tokio::task::spawn_blocking(move || store.put_operator(&stored))
        .await
        .map_err(|e| ApiError::internal("storing the operator failed", &e))?
        .map_err(|e| ApiError::internal("storing the operator failed", &e))?;
    app.operators.write().insert(record.name.clone(), record);
    Ok(())
}

/// `GET /v1/admin/operators`.
pub async fn list_operators(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<WireJson<OperatorList>, ApiError> {
    authenticate(&app, &headers)?;
    app.ready()?;
    let operators = app
        .operators
        .read()
        .values()
        .map(|r| OperatorRow {
            name: r.name.clone(),
            added_at: r.added_at,
            added_by: r.added_by.clone(),
            revoked_at: r.revoked_at,
        })
        .collect();
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
    authenticate(&app, &headers)?;
    let ready = app.ready()?;
    let host = query
        .host
        .map(|h| HostId::parse(&h))
        .transpose()
        .map_err(|e| ApiError::new(ErrorCode::Invalid, e.to_string()))?;
    let filter = AuditFilter {
        host,
        since: query.since.map(Timestamp),
    };
    let store = ready.store.clone();
    let (entries, truncated) =
        tokio::task::spawn_blocking(move || store.audit(&filter, MAX_AUDIT_ENTRIES))
            .await
            .map_err(|e| ApiError::internal("reading the audit log failed", &e))?
            .map_err(|e| ApiError::internal("reading the audit log failed", &e))?;
    Ok(WireJson(AuditLog { entries, truncated }))
}

/// Records every request that may change something in the audit log, once its answer is
/// known and before it goes out.
pub async fn record(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let matched = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_owned());
    let Some(action) = action(request.method(), matched.as_deref()) else {
        return next.run(request).await;
    };
    let who = match authenticate(&app, request.headers()) {
        Ok(principal) => principal.name().to_owned(),
        Err(_) => UNAUTHENTICATED.to_owned(),
    };
    let (path_host, mut subject) = named(matched.as_deref(), request.uri().path());
    let response = next.run(request).await;
    let Ok(ready) = app.ready() else {
        return response;
    };
    let (parts, body) = response.into_parts();
    let Ok(bytes) = to_bytes(body, MAX_BODY_BYTES).await else {
        error!(action, %who, "cannot read the answer to record it in the audit log");
        return Response::from_parts(parts, Body::empty());
    };
    let mut hosts = hosts_in(&bytes);
    subject = subject.or_else(|| new_rollout_in(&bytes));
    hosts.extend(path_host);
    hosts.sort();
    hosts.dedup();
    let outcome = if parts.status.is_success() {
        "ok".to_owned()
    } else {
        serde_json::from_slice::<ErrorBody>(&bytes).map_or_else(
            |_| parts.status.as_str().to_owned(),
            |b| b.code.as_str().to_owned(),
        )
    };
    let entry = AuditEntry {
        seq: 0,
        at: app.clock.now(),
        who,
        action: action.to_owned(),
        subject,
        hosts,
        status: parts.status.as_u16(),
        outcome,
    };
    let store = ready.store.clone();
    match tokio::task::spawn_blocking(move || store.append_audit(entry)).await {
        Ok(Ok(entry)) => info!(seq = entry.seq, who = %entry.who, action = %entry.action,
            outcome = %entry.outcome, "operator action recorded"),
        Ok(Err(e)) => {
            error!(error = %e, action, "cannot record an operator action in the audit log")
        }
        Err(e) => error!(error = %e, action, "cannot record an operator action in the audit log"),
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// The audit name of a request that may change something; `None` for reads.
pub fn action(method: &Method, matched: Option<&str>) -> Option<&'static str> {
    if *method == Method::GET || *method == Method::HEAD {
        return None;
    }
    let known = match (method.as_str(), matched?) {
        ("POST", "/v1/admin/hosts") => "add-host",
        ("DELETE", "/v1/admin/hosts/{host}") => "revoke-host",
        ("POST", "/v1/admin/targets") => "set-target",
        ("POST", "/v1/admin/hosts/{host}/rollback") => "rollback",
        ("POST", "/v1/admin/hosts/{host}/pause") => "pause",
        ("POST", "/v1/admin/hosts/{host}/resume") => "resume",
        ("POST", "/v1/admin/rollouts") => "rollout-start",
        ("POST", "/v1/admin/rollouts/{id}/pause") => "rollout-pause",
        ("POST", "/v1/admin/rollouts/{id}/resume") => "rollout-resume",
        ("POST", "/v1/admin/rollouts/{id}/abort") => "rollout-abort",
        ("POST", "/v1/admin/rollouts/{id}/rollback") => "rollout-rollback",
        ("POST", "/v1/admin/operators") => "add-operator",
        ("DELETE", "/v1/admin/operators/{name}") => "revoke-operator",
        (_, path) if path.starts_with("/v1/admin/") => "other-admin-request",
        _ => return None,
    };
    Some(known)
}

/// The host and the other subject a request names in its path.
fn named(matched: Option<&str>, path: &str) -> (Option<HostId>, Option<String>) {
    let (Some(matched), segments) = (matched, path.split('/').collect::<Vec<_>>()) else {
        return (None, None);
    };
    let mut host = None;
    let mut subject = None;
    for (pattern, value) in matched.split('/').zip(segments) {
        match pattern {
            "{host}" => host = HostId::parse(value).ok(),
            "{id}" => subject = Some(format!("rollout {value}")),
            "{name}" => subject = Some(format!("operator {value}")),
            _ => {}
        }
    }
    (host, subject)
}

/// The hosts an answer names: `hosts` as a list of ids or of objects with a `host`
/// (`DesiredChanged`) or an `id` (a rollout's status), or as an object keyed by id, or an
/// answer's `id` when it is a host (`HostAdded`).
fn hosts_in(body: &[u8]) -> Vec<HostId> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let ids: Vec<String> = match value.get("hosts") {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(|item| {
                let id = item.get("host").or_else(|| item.get("id")).unwrap_or(item);
                id.as_str().map(str::to_owned)
            })
            .collect(),
        Some(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        Some(_) | None => Vec::new(),
    };
    let mut hosts: Vec<HostId> = ids.iter().filter_map(|id| HostId::parse(id).ok()).collect();
    if value.get("token").is_some()
        && let Some(id) = value.get("id").and_then(serde_json::Value::as_str)
        && let Ok(id) = HostId::parse(id)
    {
        hosts.push(id);
    }
    hosts
}

/// The rollout an answer describes (`rollout-start` names its new rollout only there).
fn new_rollout_in(body: &[u8]) -> Option<String> {
    let value = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let id = value.get("rollout")?.get("id")?.as_u64()?;
    Some(format!("rollout {id}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_not_recorded_and_every_change_has_a_name() {
        assert_eq!(action(&Method::GET, Some("/v1/admin/hosts")), None);
        assert_eq!(
            action(&Method::POST, Some("/v1/admin/rollouts/{id}/abort")),
            Some("rollout-abort")
        );
        assert_eq!(
            action(&Method::POST, Some("/v1/admin/some-new-endpoint")),
            Some("other-admin-request")
        );
        assert_eq!(
            action(&Method::POST, Some("/v1/agent/hosts/{host}/events")),
            None
        );
    }

    #[test]
    fn hosts_and_subjects_come_from_the_path_and_the_answer() {
        let (host, subject) = named(
            Some("/v1/admin/hosts/{host}/pause"),
            "/v1/admin/hosts/web-01/pause",
        );
        assert_eq!(host, Some(HostId::parse("web-01").unwrap()));
        assert_eq!(subject, None);
        let (_, subject) = named(
            Some("/v1/admin/rollouts/{id}/abort"),
            "/v1/admin/rollouts/7/abort",
        );
        assert_eq!(subject.as_deref(), Some("rollout 7"));
        let changed =
            br#"{"hosts":[{"host":"web-01","revision":3},{"host":"web-02","revision":1}]}"#;
        assert_eq!(hosts_in(changed).len(), 2);
        let rollout = br#"{"id":3,"hosts":{"db-01":{},"web-01":{}}}"#;
        assert_eq!(hosts_in(rollout).len(), 2);
        assert_eq!(hosts_in(br#"{"id":"web-03","token":"fnt_x"}"#).len(), 1);
        assert!(hosts_in(b"not json").is_empty());
    }
}
