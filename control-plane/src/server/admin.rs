//! The operator API: hosts, targets, rollbacks, pause and resume, and `/metrics`.

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetnode_wire::{
    AddHost, DesiredChanged, DesiredState, Directive, DirectiveKind, ErrorCode, HostAdded,
    HostDetail, HostId, HostList, HostRevision, HostRow, MAX_HOST_PAGE, MAX_RECENT_EVENTS,
    Revision, RollbackRequest, Secret, Selector, SetTarget, StorePath,
};
use serde::Deserialize;
use tracing::info;

use super::app::{App, Ready};
use super::http::{ApiError, WireJson, decode_body, decode_body_or_default};
use super::metrics::HostCounts;
use crate::auth::{hash_token, hex, new_host_token};
use crate::mirror::Mirror;
use crate::registry::HostEntry;
use crate::store::{DesiredChange, DesiredRecord, HostRecord};

/// `POST /v1/admin/hosts`.
pub async fn add_host(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    admin(&app, &headers)?;
    let ready = app.ready()?;
    let request: AddHost = decode_body(body).await?;
    if ready.hosts.contains(&request.id) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!(
                "host {} already exists (revoked hosts keep their id and history); choose another id or revoke-host the old one first",
                request.id
            ),
        ));
    }
    let token =
        new_host_token().map_err(|e| ApiError::internal("generating a token failed", &e))?;
    let mut tags = request.tags.clone();
    tags.sort();
    tags.dedup();
    let record = HostRecord {
        id: request.id.clone(),
        tags,
        token_sha256: hex(&hash_token(&token)),
        revoked: false,
        added_at: app.clock.now(),
        revoked_at: None,
    };
    let desired = DesiredState {
        revision: Revision(0),
        directive: None,
        paused: false,
    };
    let store = ready.store.clone();
    let (stored, initial) = (record.clone(), desired.clone());
    tokio::task::spawn_blocking(move || store.add_host(&stored, &initial))
        .await
        .map_err(|e| ApiError::internal("storing the host failed", &e))?
        .map_err(|e| ApiError::internal("storing the host failed", &e))?;
    ready.hosts.insert(record, desired, Mirror::default(), None);
    info!(host = %request.id, "host added");
    let answer = HostAdded {
        id: request.id,
        token: Secret::new(&token),
    };
    Ok((StatusCode::CREATED, WireJson(answer)).into_response())
}

/// `DELETE /v1/admin/hosts/{host}`.
pub async fn revoke_host(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    admin(&app, &headers)?;
    let ready = app.ready()?;
    let entry = find(ready, &host)?;
    let _write = entry.write.lock().await;
    let mut record = entry.with_view(|v| v.record.clone());
    if !record.revoked {
        record.revoked = true;
        record.revoked_at = Some(app.clock.now());
        let store = ready.store.clone();
        let stored = record.clone();
        tokio::task::spawn_blocking(move || store.put_host(&stored))
            .await
            .map_err(|e| ApiError::internal("revoking the host failed", &e))?
            .map_err(|e| ApiError::internal("revoking the host failed", &e))?;
        entry.update(|v| v.record = record);
        entry.wake();
        info!(%host, "host revoked");
    }
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
/// revoked, by id. The cursor is the id of the previous page's last host, so hosts added or
/// revoked between pages neither repeat nor hide others.
pub async fn list_hosts(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<WireJson<HostList>, ApiError> {
    admin(&app, &headers)?;
    let ready = app.ready()?;
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
    let all = ready.hosts.all();
    let start = match &query.cursor {
        Some(cursor) => all.partition_point(|e| e.id.as_str() <= cursor.as_str()),
        None => 0,
    };
    let mut page: Vec<HostRow> = Vec::with_capacity(limit);
    let mut more = false;
    for entry in &all[start..] {
        if entry.with_view(|v| v.record.revoked) {
            continue;
        }
        if page.len() == limit {
            more = true;
            break;
        }
        page.push(app.row(entry));
    }
    let next_cursor = more
        .then(|| page.last().map(|row| row.id.as_str().to_owned()))
        .flatten();
    Ok(WireJson(HostList {
        hosts: page,
        next_cursor,
    }))
}

/// `GET /v1/admin/hosts/{host}`.
pub async fn host_detail(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    headers: HeaderMap,
) -> Result<WireJson<HostDetail>, ApiError> {
    admin(&app, &headers)?;
    let ready = app.ready()?;
    let entry = find(ready, &host)?;
    let row = app.row(&entry);
    let view = entry.view();
    let recent_events = match view.mirror.stream {
        Some(stream) => {
            let store = ready.store.clone();
            let id = entry.id.clone();
            tokio::task::spawn_blocking(move || store.recent_events(&id, stream, MAX_RECENT_EVENTS))
                .await
                .map_err(|e| ApiError::internal("reading events failed", &e))?
                .map_err(|e| ApiError::internal("reading events failed", &e))?
        }
        None => Vec::new(),
    };
    let heartbeat_divergence = view.heartbeat.as_ref().and_then(|h| h.divergence.clone());
    let divergence = match (view.mirror.divergence.clone(), heartbeat_divergence) {
        (Some(events), Some(heartbeat)) => Some(format!("{events}; {heartbeat}")),
        (Some(one), None) | (None, Some(one)) => Some(one),
        (None, None) => None,
    };
    Ok(WireJson(HostDetail {
        row,
        desired: entry.desired(),
        mirror: view.mirror.state.host,
        divergence,
        last_heartbeat: view.heartbeat.map(|h| h.heartbeat),
        recent_events,
    }))
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
    admin(&app, &headers)?;
    let ready = app.ready()?;
    let Query(query) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::Malformed,
            format!("{}; expected ?force=true or no query", e.body_text()),
        )
    })?;
    let request: SetTarget = decode_body(body).await?;
    let entries = select(ready, &request.selector)?;
    super::rollouts::claim(ready, &entries, query.force, &request.target).await?;
    let kind = DirectiveKind::Activate {
        target: request.target.clone(),
        mode: request.mode,
        health: request.health,
    };
    let changed = change_desired(&app, ready, entries, "set-target", |current, revision| {
        Some(DesiredState {
            revision,
            directive: Some(Directive {
                revision,
                kind: kind.clone(),
            }),
            paused: current.paused,
        })
    })
    .await?;
    info!(target = %request.target, hosts = changed.hosts.len(), "target set");
    Ok(WireJson(changed))
}

/// `POST /v1/admin/hosts/{host}/rollback`.
pub async fn rollback(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<WireJson<DesiredChanged>, ApiError> {
    admin(&app, &headers)?;
    let ready = app.ready()?;
    let request: RollbackRequest = decode_body_or_default(body).await?;
    let entry = find_active(ready, &host)?;
    let changed = change_desired(&app, ready, vec![entry], "rollback", |current, revision| {
        Some(DesiredState {
            revision,
            directive: Some(Directive {
                revision,
                kind: DirectiveKind::Rollback {
                    to: request.to.clone(),
                },
            }),
            paused: current.paused,
        })
    })
    .await?;
    info!(%host, "rollback requested");
    Ok(WireJson(changed))
}

/// `POST /v1/admin/hosts/{host}/pause`.
pub async fn pause(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    headers: HeaderMap,
) -> Result<WireJson<DesiredChanged>, ApiError> {
    set_paused(app, host, headers, true).await
}

/// `POST /v1/admin/hosts/{host}/resume`.
pub async fn resume(
    State(app): State<Arc<App>>,
    Path(host): Path<String>,
    headers: HeaderMap,
) -> Result<WireJson<DesiredChanged>, ApiError> {
    set_paused(app, host, headers, false).await
}

/// `GET /metrics`.
pub async fn metrics(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !app.metrics_public {
        admin(&app, &headers)?;
    }
    let ready = app.ready()?;
    let mut counts = HostCounts::default();
    let mut by_phase = std::collections::BTreeMap::<&'static str, i64>::new();
    for entry in ready.hosts.all() {
        if entry.with_view(|v| v.record.revoked) {
            continue;
        }
        let row = app.row(&entry);
        let phase = entry.with_view(|v| v.mirror.state.host.phase.name());
        *by_phase.entry(phase).or_default() += 1;
        counts.offline += i64::from(row.offline);
        counts.diverged += i64::from(row.diverged);
    }
    counts.by_phase = by_phase.into_iter().collect();
    let text = app
        .metrics
        .render(&counts, &super::rollouts::rollout_counts(ready));
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

/// The closure a directive puts in place, if it names one.
pub fn target_of(directive: &Directive) -> Option<StorePath> {
    match &directive.kind {
        DirectiveKind::Activate { target, .. } => Some(target.clone()),
        DirectiveKind::Rollback { to } => to.clone(),
    }
}

async fn set_paused(
    app: Arc<App>,
    host: String,
    headers: HeaderMap,
    paused: bool,
) -> Result<WireJson<DesiredChanged>, ApiError> {
    admin(&app, &headers)?;
    let ready = app.ready()?;
    let entry = find_active(ready, &host)?;
    let cause = if paused { "pause" } else { "resume" };
    let changed = change_desired(&app, ready, vec![entry], cause, |current, revision| {
        (current.paused != paused).then(|| DesiredState {
            revision,
            directive: current.directive.clone(),
            paused,
        })
    })
    .await?;
    if !changed.hosts.is_empty() {
        info!(%host, paused, "hold changed");
    }
    Ok(WireJson(changed))
}

/// Applies a change to the desired states of hosts: every host's write lock is taken (in id
/// order, so two commands cannot deadlock), the new states are committed in one transaction,
/// and only then published, which wakes the hosts' long-polls. `change` gets the current state
/// and the revision a change must carry (see [`HostEntry::next_revision`]).
async fn change_desired(
    app: &App,
    ready: &Ready,
    mut entries: Vec<Arc<HostEntry>>,
    cause: &str,
    change: impl Fn(&DesiredState, Revision) -> Option<DesiredState>,
) -> Result<DesiredChanged, ApiError> {
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    entries.dedup_by(|a, b| a.id == b.id);
    let mut guards = Vec::with_capacity(entries.len());
    for entry in &entries {
        guards.push(entry.write.lock().await);
    }
    let now = app.clock.now();
    let changes: Vec<(Arc<HostEntry>, DesiredChange)> = entries
        .iter()
        .filter_map(|entry| {
            change(&entry.desired(), entry.next_revision()).map(|desired| {
                let record = DesiredRecord {
                    desired,
                    set_at: now,
                    cause: cause.to_owned(),
                };
                (
                    entry.clone(),
                    DesiredChange {
                        host: entry.id.clone(),
                        record,
                    },
                )
            })
        })
        .collect();
    if !changes.is_empty() {
        let store = ready.store.clone();
        let records: Vec<DesiredChange> = changes.iter().map(|(_, c)| c.clone()).collect();
        tokio::task::spawn_blocking(move || store.set_desired(&records))
            .await
            .map_err(|e| ApiError::internal("storing the desired state failed", &e))?
            .map_err(|e| ApiError::internal("storing the desired state failed", &e))?;
    }
    let mut hosts = Vec::with_capacity(changes.len());
    for (entry, change) in changes {
        hosts.push(HostRevision {
            host: entry.id.clone(),
            revision: change.record.desired.revision,
        });
        entry.publish(change.record.desired);
    }
    drop(guards);
    Ok(DesiredChanged { hosts })
}

/// Checks the request's token: the admin token or a named operator's (see [`super::audit`]).
pub(super) fn admin(app: &App, headers: &HeaderMap) -> Result<super::audit::Principal, ApiError> {
    super::audit::authenticate(app, headers)
}

fn find(ready: &Ready, host: &str) -> Result<Arc<HostEntry>, ApiError> {
    let id = HostId::parse(host).map_err(|e| ApiError::new(ErrorCode::Invalid, e.to_string()))?;
    ready.hosts.get(&id).ok_or_else(|| unknown(&id))
}

fn find_active(ready: &Ready, host: &str) -> Result<Arc<HostEntry>, ApiError> {
    let entry = find(ready, host)?;
    if entry.with_view(|v| v.record.revoked) {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            format!("host {host} is revoked; its desired state can no longer change"),
        ));
    }
    Ok(entry)
}

fn unknown(id: &HostId) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!("no host {id}; `fleetnode-cp hosts` lists the registered hosts"),
    )
}

/// The hosts a selector names; all or nothing: an unknown or revoked host named explicitly
/// refuses the whole command.
fn select(ready: &Ready, selector: &Selector) -> Result<Vec<Arc<HostEntry>>, ApiError> {
    let active = |e: &Arc<HostEntry>| !e.with_view(|v| v.record.revoked);
    match selector {
        Selector::Hosts { hosts } => {
            let ids: BTreeSet<&HostId> = hosts.iter().collect();
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                let entry = ready.hosts.get(id).ok_or_else(|| unknown(id))?;
                if !active(&entry) {
                    return Err(ApiError::new(
                        ErrorCode::Conflict,
                        format!("host {id} is revoked; leave it out of the selection"),
                    ));
                }
                out.push(entry);
            }
            Ok(out)
        }
        Selector::Tag { tag } => {
            let out: Vec<_> = ready
                .hosts
                .all()
                .into_iter()
                .filter(|e| active(e) && e.with_view(|v| v.record.tags.contains(tag)))
                .collect();
            if out.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    format!("no active host has tag {tag}; nothing was changed"),
                ));
            }
            Ok(out)
        }
        Selector::All => {
            let out: Vec<_> = ready.hosts.all().into_iter().filter(active).collect();
            if out.is_empty() {
                return Err(ApiError::new(
                    ErrorCode::NotFound,
                    "no active hosts are registered; add hosts first",
                ));
            }
            Ok(out)
        }
    }
}
