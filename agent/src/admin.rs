//! The local admin listener: plain HTTP on a loopback address (`admin.listen`).
//!
//! - `GET /metrics`: Prometheus text (when `admin.metrics` is on).
//! - `GET /status`: the agent's status ([`fleetnode_wire::AgentStatus`]) as JSON, answered by
//!   the event loop itself (so a stalled loop shows as a 503 here).
//! - `POST /pause`, `POST /resume`: the operator hold, through the event loop like any input.
//!
//! It has no authentication, so it refuses to bind anything but a loopback address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fleetnode_state_machine::Event;
use serde_json::json;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::input::{Input, InputSender, WorkerError};
use crate::metrics::Metrics;
use crate::runtime::status::StatusWatch;

/// How long a request waits for the event loop.
pub const REDUCER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin listener needs.
#[derive(Debug, Clone)]
pub struct AdminContext {
    /// Where to send pause, resume and status requests.
    pub inputs: InputSender,
    /// The event loop's status.
    pub status: StatusWatch,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Serve `/metrics`.
    pub metrics_enabled: bool,
    /// The agent's clock (for the queue age at scrape time).
    pub clock: Clock,
}

/// Serves until `cancel`. Refuses a non-loopback address.
pub async fn serve(
    addr: SocketAddr,
    ctx: AdminContext,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    serve_on(bind(addr).await?, ctx, cancel).await
}

/// Binds the listener's socket. Refuses a non-loopback address before binding anything.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, WorkerError> {
    if !addr.ip().is_loopback() {
        return Err(WorkerError::new(format!(
            "admin.listen {addr} is not a loopback address; refusing to serve unauthenticated pause and resume on it"
        )));
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| WorkerError::new(format!("cannot listen on {addr} (admin.listen): {e}")))
}

/// Serves on a socket from [`bind`] until `cancel`.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    ctx: AdminContext,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let addr = listener
        .local_addr()
        .map_err(|e| WorkerError::new(format!("admin listener has no address: {e}")))?;
    tracing::info!(%addr, "admin listener ready");
    axum::serve(listener, router(ctx))
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
        .map_err(|e| WorkerError::new(format!("admin listener failed: {e}")))
}

/// The routes.
pub fn router(ctx: AdminContext) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .with_state(ctx)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

async fn metrics(State(ctx): State<AdminContext>) -> Response {
    if !ctx.metrics_enabled {
        return error(
            StatusCode::NOT_FOUND,
            "metrics are off (admin.metrics = false)",
        );
    }
    let queue = ctx.status.borrow().queue;
    crate::runtime::record::export_queue(&ctx.metrics, &queue, ctx.clock.now());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        ctx.metrics.render(),
    )
        .into_response()
}

async fn status(State(ctx): State<AdminContext>) -> Response {
    let (reply, answer) = oneshot::channel();
    let asked = tokio::time::timeout(REDUCER_TIMEOUT, ctx.inputs.send(Input::Status(reply))).await;
    if !matches!(asked, Ok(Ok(()))) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the event loop is not taking inputs",
        );
    }
    match tokio::time::timeout(REDUCER_TIMEOUT, answer).await {
        Ok(Ok(value)) => axum::Json(value).into_response(),
        Ok(Err(_)) | Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the event loop did not answer in time",
        ),
    }
}

async fn pause(State(ctx): State<AdminContext>) -> Response {
    hold(ctx, true).await
}

async fn resume(State(ctx): State<AdminContext>) -> Response {
    hold(ctx, false).await
}

/// Sends the request and waits (briefly) until the state shows it.
async fn hold(mut ctx: AdminContext, paused: bool) -> Response {
    let event = if paused {
        Event::PauseRequested
    } else {
        Event::ResumeRequested
    };
    let sent = tokio::time::timeout(REDUCER_TIMEOUT, ctx.inputs.send(Input::Event(event))).await;
    if !matches!(sent, Ok(Ok(()))) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the event loop is not taking inputs",
        );
    }
    let confirmed =
        tokio::time::timeout(REDUCER_TIMEOUT, ctx.status.wait_for(|s| s.paused == paused)).await;
    match confirmed {
        Ok(Ok(_)) => axum::Json(json!({ "paused": paused })).into_response(),
        Ok(Err(_)) | Err(_) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({ "paused": !paused, "requested": paused })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests;
