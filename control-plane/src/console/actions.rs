//! The actions on a host (roll back, pause, resume) and on a rollout (pause, resume, abort,
//! roll back): a confirmation page that says exactly what will happen, then the form it posts,
//! which calls the same fleet operation as the API and the CLI and is recorded in the audit
//! log under the signed-in principal's name.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use fleetnode_wire::{HostId, RollbackRequest, RolloutId, StorePath};
use serde::Deserialize;

use super::guard::{ConsoleError, PageResult, Signed};
use super::host_page::{parse_host, rollback_target, undo_target};
use super::record::{Named, record};
use super::view::{Chrome, render};
use crate::fleet::{Action, DesiredChangeRequest};
use crate::server::App;

/// A confirmation page.
#[derive(Template)]
#[template(path = "console/confirm.html")]
struct Confirm {
    chrome: Chrome,
    title: String,
    sentence: String,
    post_to: String,
    button: &'static str,
    back: String,
    to: Option<String>,
}

/// A confirmed action's form.
#[derive(Debug, Deserialize)]
pub struct ActionForm {
    /// The session's CSRF token.
    #[serde(default)]
    csrf: Option<String>,
    /// A host rollback's target, as the confirmation named it.
    #[serde(default)]
    to: Option<String>,
}

/// `GET /console/hosts/{host}/{action}`: what the action will do, and the button to do it.
pub async fn confirm_host(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path((host, action)): Path<(String, String)>,
) -> PageResult {
    let fleet = app.fleet().map_err(|_| super::fleet_page::starting())?;
    let id = parse_host(&host)?;
    let detail = fleet.host_detail(&id).await?;
    let current = super::view::short(detail.mirror.system.current.as_ref());
    let revision = detail.desired.revision.0;
    let (sentence, button, to) = match action.as_str() {
        "rollback" => {
            let to = undo_target(&detail.mirror);
            let sentence = format!(
                "Roll host {id} back from {current} to {}. Its desired state becomes a rollback directive (revision {} replaces {revision}); if a rollout owns it, the rollout counts it as taken out.",
                rollback_target(to.as_ref()),
                revision + 1
            );
            (sentence, "Roll back", to.map(|t| t.to_string()))
        }
        "pause" => (
            format!(
                "Pause host {id} at {current}: it starts no new work until resumed (desired revision {revision} stays)."
            ),
            "Pause",
            None,
        ),
        "resume" => (
            format!(
                "Resume host {id}: it carries out its desired state again (revision {revision})."
            ),
            "Resume",
            None,
        ),
        other => return Err(unknown_action(other, "roll back, pause or resume")),
    };
    let page = Confirm {
        chrome: Chrome::new(&signed, "fleet", ""),
        title: format!("{button} {id}?"),
        sentence,
        post_to: format!("/console/hosts/{id}/{action}"),
        button,
        back: format!("/console/hosts/{id}"),
        to,
    };
    Ok(render(&page))
}

/// `POST /console/hosts/{host}/{action}`.
pub async fn act_on_host(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path((host, action)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, ConsoleError> {
    signed.check_form(&app, &headers, form.csrf.as_deref())?;
    let fleet = app.fleet().map_err(|_| super::fleet_page::starting())?;
    let id = parse_host(&host)?;
    let (change, name) = host_change(&id, &action, form.to.as_deref())?;
    let result = fleet
        .change_desired(change)
        .await
        .map_err(ConsoleError::from);
    let mut hosts = vec![id.clone()];
    if let Ok(changed) = &result {
        hosts.extend(changed.hosts.iter().map(|h| h.host.clone()));
    }
    let named = Named {
        action: name,
        subject: None,
        hosts,
    };
    record(&app, signed.who(), named, &result).await;
    result?;
    Ok(Redirect::to(&format!("/console/hosts/{id}")).into_response())
}

/// The change a host action asks for, and its audit name (the API's).
fn host_change(
    id: &HostId,
    action: &str,
    to: Option<&str>,
) -> Result<(DesiredChangeRequest, &'static str), ConsoleError> {
    let host = id.clone();
    Ok(match action {
        "rollback" => {
            let to = match to.filter(|t| !t.is_empty()) {
                Some(text) => Some(StorePath::parse(text).map_err(|e| {
                    ConsoleError::Invalid(format!("{text:?} is not a store path: {e}"))
                })?),
                None => None,
            };
            let request = RollbackRequest { to };
            (DesiredChangeRequest::Rollback { host, request }, "rollback")
        }
        "pause" => (DesiredChangeRequest::Hold { host, paused: true }, "pause"),
        "resume" => (
            DesiredChangeRequest::Hold {
                host,
                paused: false,
            },
            "resume",
        ),
        other => return Err(unknown_action(other, "roll back, pause or resume")),
    })
}

/// `GET /console/rollouts/{id}/{action}`.
pub async fn confirm_rollout(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path((id, action)): Path<(String, String)>,
) -> PageResult {
    let fleet = app.fleet().map_err(|_| super::fleet_page::starting())?;
    let id = parse_rollout(&id)?;
    let status = fleet.rollout(id).await?;
    let rollout = &status.rollout;
    let counts = rollout.counts();
    let moved = counts.in_flight + counts.converged + counts.failed;
    let phase = rollout.phase.name();
    let (sentence, button) = match action.as_str() {
        "pause" => (
            format!(
                "Pause rollout {id} ({phase}, wave {} of {}): no new wave starts; the {} hosts given the release carry on.",
                rollout.wave() + 1,
                rollout.waves.len(),
                counts.in_flight
            ),
            "Pause",
        ),
        "resume" => (
            format!(
                "Resume rollout {id} ({phase}): its waves go on from wave {}.",
                rollout.wave() + 1
            ),
            "Resume",
        ),
        "abort" => (
            format!(
                "Abort rollout {id} ({phase}): no further host gets the release; the {moved} hosts it moved keep what they have."
            ),
            "Abort",
        ),
        "rollback" => (
            format!(
                "Roll back rollout {id} ({phase}): it stops, and each of the {moved} hosts it moved is sent back to the generation it ran before."
            ),
            "Roll back",
        ),
        "approve" => {
            let wave = rollout.wave();
            let hosts = rollout.waves.get(wave).map_or(0, |w| w.hosts.len());
            (
                format!(
                    "Approve wave {} of {} of rollout {id}: its {hosts} hosts are given the release (each inside its maintenance window, if it has one).",
                    wave + 1,
                    rollout.waves.len()
                ),
                "Approve",
            )
        }
        other => {
            return Err(unknown_action(
                other,
                "pause, resume, abort, roll back or approve",
            ));
        }
    };
    let page = Confirm {
        chrome: Chrome::new(&signed, "rollouts", ""),
        title: format!("{button} rollout {id}?"),
        sentence,
        post_to: format!("/console/rollouts/{id}/{action}"),
        button,
        back: format!("/console/rollouts/{id}"),
        to: None,
    };
    Ok(render(&page))
}

/// `POST /console/rollouts/{id}/{action}`.
pub async fn act_on_rollout(
    State(app): State<Arc<App>>,
    signed: Signed,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<ActionForm>,
) -> Result<Response, ConsoleError> {
    signed.check_form(&app, &headers, form.csrf.as_deref())?;
    let fleet = app.fleet().map_err(|_| super::fleet_page::starting())?;
    let id = parse_rollout(&id)?;
    let (what, name) = match action.as_str() {
        "pause" => (Action::Pause, "rollout-pause"),
        "resume" => (Action::Resume, "rollout-resume"),
        "abort" => (Action::Abort, "rollout-abort"),
        "rollback" => (Action::Rollback, "rollout-rollback"),
        "approve" => (Action::Approve, "rollout-approve"),
        other => {
            return Err(unknown_action(
                other,
                "pause, resume, abort, roll back or approve",
            ));
        }
    };
    let result = fleet
        .act_on_rollout(id, what)
        .await
        .map_err(ConsoleError::from);
    let hosts = match &result {
        Ok(status) => status.hosts.iter().map(|row| row.id.clone()).collect(),
        Err(_) => Vec::new(),
    };
    let named = Named {
        action: name,
        subject: Some(format!("rollout {id}")),
        hosts,
    };
    record(&app, signed.who(), named, &result).await;
    result?;
    Ok(Redirect::to(&format!("/console/rollouts/{id}")).into_response())
}

/// A rollout number from a console path.
pub fn parse_rollout(text: &str) -> Result<RolloutId, ConsoleError> {
    text.parse::<u64>()
        .map(RolloutId)
        .map_err(|_| ConsoleError::Invalid(format!("{text:?} is not a rollout number")))
}

fn unknown_action(action: &str, known: &str) -> ConsoleError {
    ConsoleError::Invalid(format!(
        "{action:?} is not an action here; the console can {known}"
    ))
}
