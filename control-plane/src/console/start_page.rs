//! Starting a rollout from an uploaded release manifest (either shape the CLI reads, parsed
//! by the same function): the form, a preview of which hosts go in which wave (planned by the
//! same function the driver uses; nothing is sent), and the confirmation that starts it.

use std::sync::Arc;

use askama::Template;
use axum::Form;
use axum::extract::{Multipart, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use fleetnode_wire::{
    ApprovalPolicy, DEFAULT_BAKE, DEFAULT_OFFLINE_DEADLINE, FailureBudget, MAX_BODY_BYTES, Millis,
    OnHalt, StartRollout, Validate, WaveSpec,
};
use serde::Deserialize;

use super::guard::{ConsoleError, PageResult, Signed};
use super::record::{Named, record};
use super::view::{Chrome, render};
use crate::rollout::parse_manifest;
use crate::server::App;

/// The form.
#[derive(Template)]
#[template(path = "console/start.html")]
struct StartForm {
    chrome: Chrome,
}

/// The preview.
#[derive(Template)]
#[template(path = "console/preview.html")]
struct Preview {
    chrome: Chrome,
    origin: String,
    settings: String,
    waves: Vec<WaveLine>,
    request: String,
}

struct WaveLine {
    number: usize,
    spec: String,
    hosts: Vec<(String, String, String)>,
}

/// `GET /console/start`.
pub async fn form(signed: Signed) -> PageResult {
    Ok(render(&StartForm {
        chrome: Chrome::new(&signed, "start", ""),
    }))
}

/// `POST /console/start` (multipart): the manifest and the rollout's settings, previewed.
pub async fn preview(
    State(app): State<Arc<App>>,
    signed: Signed,
    headers: HeaderMap,
    multipart: Multipart,
) -> PageResult {
    let fields = read_fields(multipart).await?;
    signed.check_form(&app, &headers, fields.csrf.as_deref())?;
    let fleet = app.fleet().map_err(|_| super::fleet_page::starting())?;
    let origin = if fields.file_name.is_empty() {
        "(uploaded)".to_owned()
    } else {
        format!("{:?}", fields.file_name)
    };
    let release = parse_manifest(&fields.manifest, &origin)
        .map_err(|e| ConsoleError::Invalid(e.to_string()))?;
    let request = StartRollout {
        release,
        waves: setting(&fields.waves, WaveSpec::parse_list, WaveSpec::defaults)?,
        bake_ms: setting(&fields.bake, Millis::parse, || DEFAULT_BAKE)?,
        max_failures: setting(
            &fields.max_failures,
            FailureBudget::parse,
            FailureBudget::default,
        )?,
        on_halt: match fields.on_halt.as_str() {
            "rollback" => OnHalt::Rollback,
            _ => OnHalt::Stop,
        },
        offline_deadline_ms: setting(&fields.offline_deadline, Millis::parse, || {
            DEFAULT_OFFLINE_DEADLINE
        })?,
        require_approval: setting(
            &fields.require_approval,
            ApprovalPolicy::parse,
            ApprovalPolicy::default,
        )?,
    };
    request
        .validate()
        .map_err(|e| ConsoleError::Invalid(format!("cannot start this rollout: {e}")))?;
    let waves = fleet.preview_rollout(&request).await?;
    let waves = waves
        .iter()
        .enumerate()
        .map(|(index, wave)| WaveLine {
            number: index + 1,
            spec: wave.spec.to_string(),
            hosts: wave
                .hosts
                .iter()
                .map(|host| {
                    let closure = request.release.closure(host);
                    (
                        host.to_string(),
                        super::view::short(closure),
                        super::view::full(closure),
                    )
                })
                .collect(),
        })
        .collect();
    let settings = format!(
        "bake {}, failures allowed {}, on halt {}, offline after {}, approval before each wave: {}",
        request.bake_ms,
        request.max_failures.allowed(request.release.hosts.len()),
        request.on_halt,
        request.offline_deadline_ms,
        request.require_approval
    );
    let page = Preview {
        chrome: Chrome::new(&signed, "start", ""),
        origin,
        settings,
        waves,
        request: serde_json::to_string(&request)
            .map_err(|e| ConsoleError::Invalid(format!("cannot carry the request: {e}")))?,
    };
    Ok(render(&page))
}

/// The confirmation form of a previewed rollout.
#[derive(Debug, Deserialize)]
pub struct ConfirmForm {
    /// The session's CSRF token.
    #[serde(default)]
    csrf: Option<String>,
    /// The previewed request, as JSON.
    request: String,
}

/// `POST /console/start/confirm`: starts the previewed rollout.
pub async fn confirm(
    State(app): State<Arc<App>>,
    signed: Signed,
    headers: HeaderMap,
    Form(form): Form<ConfirmForm>,
) -> Result<Response, ConsoleError> {
    signed.check_form(&app, &headers, form.csrf.as_deref())?;
    let fleet = app.fleet().map_err(|_| super::fleet_page::starting())?;
    let request: StartRollout = fleetnode_wire::decode(form.request.as_bytes())
        .map_err(|e| ConsoleError::Invalid(format!("the previewed rollout is not valid: {e}")))?;
    let hosts = request.release.hosts.keys().cloned().collect();
    let result = fleet
        .start_rollout(request)
        .await
        .map_err(ConsoleError::from);
    let named = Named {
        action: "rollout-start",
        subject: result
            .as_ref()
            .ok()
            .map(|s| format!("rollout {}", s.rollout.id)),
        hosts,
    };
    record(&app, signed.who(), named, &result).await;
    let status = result?;
    Ok(Redirect::to(&format!("/console/rollouts/{}", status.rollout.id)).into_response())
}

/// The fields of the upload form.
#[derive(Default)]
struct Fields {
    csrf: Option<String>,
    manifest: String,
    file_name: String,
    waves: String,
    bake: String,
    max_failures: String,
    on_halt: String,
    offline_deadline: String,
    require_approval: String,
}

/// Reads the upload form; the manifest is at most the API's body cap.
async fn read_fields(mut multipart: Multipart) -> Result<Fields, ConsoleError> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        ConsoleError::Invalid(format!("cannot read the uploaded form: {}", e.body_text()))
    };
    let mut fields = Fields::default();
    while let Some(field) = multipart.next_field().await.map_err(bad)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "manifest" {
            fields.file_name = field.file_name().unwrap_or_default().to_owned();
        }
        let bytes = field.bytes().await.map_err(bad)?;
        if bytes.len() > MAX_BODY_BYTES {
            return Err(ConsoleError::Invalid(format!(
                "the manifest is {} bytes; at most {MAX_BODY_BYTES} are taken",
                bytes.len()
            )));
        }
        let text = String::from_utf8(bytes.to_vec())
            .map_err(|_| ConsoleError::Invalid(format!("the field {name:?} is not UTF-8 text")))?;
        match name.as_str() {
            "csrf" => fields.csrf = Some(text),
            "manifest" => fields.manifest = text,
            "waves" => fields.waves = text,
            "bake" => fields.bake = text,
            "max_failures" => fields.max_failures = text,
            "on_halt" => fields.on_halt = text,
            "offline_deadline" => fields.offline_deadline = text,
            "require_approval" => fields.require_approval = text,
            _ => {}
        }
    }
    Ok(fields)
}

/// A setting from its text, or its default when left empty.
fn setting<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
    default: impl Fn() -> T,
) -> Result<T, ConsoleError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(default());
    }
    parse(text).map_err(|e| ConsoleError::Invalid(format!("{text:?}: {e}")))
}
