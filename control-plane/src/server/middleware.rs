//! What every request goes through: [`frame`] around all routes (metrics, protocol version,
//! readiness), and [`record`] around the operator routes, which writes every operator action
//! to the audit log before its answer goes out.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fleetnode_wire::{
    AuditEntry, ErrorBody, ErrorCode, HostId, MAX_BODY_BYTES, PROTOCOL_HEADER, UNAUTHENTICATED,
    VersionError, check_version, protocol_version,
};
use tracing::{error, info};

use super::app::App;
use super::http::ApiError;

/// What every request goes through, in one layer (one boxed future per request, not one per
/// concern: a waiting long-poll holds it for its whole wait): the request is counted with its
/// latency by route template, the peer's protocol version is checked (required on the agent
/// API, optional elsewhere), the store must be open (else 503), and every response is stamped
/// with this server's version.
pub async fn frame(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let mut response = match check_protocol(&request) {
        Err(error) => error.into_response(),
        Ok(()) if !app.is_ready() => app.starting().into_response(),
        Ok(()) => next.run(request).await,
    };
    if let Ok(value) = HeaderValue::from_str(&protocol_version()) {
        response.headers_mut().insert(PROTOCOL_HEADER, value);
    }
    app.metrics
        .observe_request(route, method, response.status().as_u16(), started.elapsed());
    response
}

fn check_protocol(request: &Request) -> Result<(), ApiError> {
    let agent_api = request.uri().path().starts_with("/v1/agent/");
    let header = request
        .headers()
        .get(PROTOCOL_HEADER)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    match check_version(header) {
        Ok(()) => Ok(()),
        Err(VersionError::Missing) if !agent_api => Ok(()),
        Err(error @ VersionError::Malformed(_)) => Err(ApiError::new(
            ErrorCode::Malformed,
            format!("{error}; send {PROTOCOL_HEADER}: {}", protocol_version()),
        )),
        Err(error @ (VersionError::Missing | VersionError::Unsupported { .. })) => {
            Err(ApiError::new(
                ErrorCode::ProtocolVersionUnsupported,
                format!(
                    "{error}; send {PROTOCOL_HEADER}: {} (upgrade the agent or the control plane so both speak the same major version)",
                    protocol_version()
                ),
            ))
        }
    }
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
    let who = match app.authenticate(request.headers()) {
        Ok(principal) => principal.name().to_owned(),
        Err(_) => UNAUTHENTICATED.to_owned(),
    };
    let (path_host, mut subject) = named(matched.as_deref(), request.uri().path());
    let response = next.run(request).await;
    let Ok(fleet) = app.fleet() else {
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
        at: app.settings.clock.now(),
        who,
        action: action.to_owned(),
        subject,
        hosts,
        status: parts.status.as_u16(),
        outcome,
    };
    match fleet.record_audit(entry).await {
        Ok(entry) => info!(seq = entry.seq, who = %entry.who, action = %entry.action,
            outcome = %entry.outcome, "operator action recorded"),
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
        ("POST", "/v1/admin/rollouts/{id}/approve") => "rollout-approve",
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
