//! The agent's local admin surfaces: the admin socket and the metrics listener.
//!
//! - The **admin socket** (`admin.socket`, default `/run/fleetnode/admin.sock`), a Unix socket
//!   owned by root with mode 0600, or 0660 and the group `admin.group` when that is set. Only
//!   root (and that group) may connect, which is the whole of its authentication: holding the
//!   agent blocks every update of the host, a security fix included, so no other local user
//!   may do it.
//!   - `GET /status`: the agent's status ([`fleetnode_wire::AgentStatus`]) as JSON, answered by
//!     the event loop itself (so a stalled loop shows as a 503 here).
//!   - `POST /pause`, `POST /resume`: the operator hold, through the event loop like any input;
//!     each is logged with the caller's uid and pid.
//! - The **metrics listener** (`admin.listen`, loopback only, only while `admin.metrics` is on):
//!   `GET /metrics`, Prometheus text, read-only. Nothing else is served over TCP, where any
//!   local user can connect.
//!
//! Both speak HTTP/1.1 ([`http`]); `fleetnode-agent status|pause|resume` use the socket.

mod http;
pub mod socket;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::Event;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::json;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub use http::{CONNECTION_DEADLINE, MAX_CONNECTIONS, Peer};

use crate::clock::Clock;
use crate::input::{Input, InputSender, WorkerError};
use crate::metrics::Metrics;
use crate::status::StatusWatch;
use http::{Answer, error, json};

/// How long a request waits for the event loop.
pub const REDUCER_TIMEOUT: Duration = Duration::from_secs(5);
/// The content type of `/metrics`.
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// What the admin surfaces need.
#[derive(Debug, Clone)]
pub struct AdminContext {
    /// Where to send pause, resume and status requests.
    pub inputs: InputSender,
    /// The event loop's status.
    pub status: StatusWatch,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The agent's clock (for the queue age at scrape time).
    pub clock: Clock,
}

/// What a request asks for, by listener, method and path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /status` on the socket.
    Status,
    /// `POST /pause` on the socket.
    Pause,
    /// `POST /resume` on the socket.
    Resume,
    /// `GET /metrics` on the metrics listener.
    Metrics,
    /// A known path with another method; the one it takes.
    WrongMethod(&'static str),
    /// A socket-only path asked over TCP.
    SocketOnly,
    /// Nothing here.
    NotFound,
}

/// Which listener a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The admin socket.
    Socket,
    /// The loopback metrics listener.
    Metrics,
}

/// The route of a request: a pure function of where it came in and what it asks.
pub fn route(listener: Listener, method: &Method, path: &str) -> Route {
    let (wanted, route) = match (listener, path) {
        (Listener::Socket, "/status") => (Method::GET, Route::Status),
        (Listener::Socket, "/pause") => (Method::POST, Route::Pause),
        (Listener::Socket, "/resume") => (Method::POST, Route::Resume),
        (Listener::Metrics, "/metrics") => (Method::GET, Route::Metrics),
        (Listener::Metrics, "/status" | "/pause" | "/resume") => return Route::SocketOnly,
        (Listener::Socket | Listener::Metrics, _) => return Route::NotFound,
    };
    if *method == wanted {
        route
    } else if wanted == Method::GET {
        Route::WrongMethod("GET")
    } else {
        Route::WrongMethod("POST")
    }
}

/// Binds the metrics listener. Refuses a non-loopback address before binding anything.
pub async fn bind_metrics(addr: SocketAddr) -> Result<TcpListener, WorkerError> {
    if !addr.ip().is_loopback() {
        return Err(WorkerError::Listener(format!(
            "admin.listen {addr} is not a loopback address; refusing to serve unauthenticated metrics on it"
        )));
    }
    TcpListener::bind(addr)
        .await
        .map_err(|e| WorkerError::Listener(format!("cannot listen on {addr} (admin.listen): {e}")))
}

/// Binds the admin socket (see [`socket::bind`]).
pub fn bind_socket(path: &Path, group: Option<&str>) -> Result<UnixListener, WorkerError> {
    socket::bind(path, group)
}

/// Serves `/metrics` on a listener from [`bind_metrics`] until `cancel`.
pub async fn serve_metrics(
    listener: TcpListener,
    ctx: AdminContext,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let addr = listener
        .local_addr()
        .map_err(|e| WorkerError::Listener(format!("metrics listener has no address: {e}")))?;
    tracing::info!(%addr, "metrics listener ready");
    let accept = || async {
        let (stream, peer) = listener.accept().await?;
        Ok((stream, Peer::Tcp(peer)))
    };
    let handle = move |request, peer| answer(ctx.clone(), Listener::Metrics, request, peer);
    http::serve(accept, handle, cancel).await
}

/// Serves status, pause and resume on a socket from [`bind_socket`] until `cancel`.
pub async fn serve_socket(
    listener: UnixListener,
    ctx: AdminContext,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    let accept = || async {
        let (stream, _) = listener.accept().await?;
        let credentials = stream.peer_cred()?;
        let peer = Peer::Local {
            uid: credentials.uid(),
            pid: credentials.pid(),
        };
        Ok((stream, peer))
    };
    let handle = move |request, peer| answer(ctx.clone(), Listener::Socket, request, peer);
    http::serve(accept, handle, cancel).await
}

async fn answer(
    ctx: AdminContext,
    listener: Listener,
    request: Request<Incoming>,
    peer: Peer,
) -> Answer {
    match route(listener, request.method(), request.uri().path()) {
        Route::Status => status(ctx).await,
        Route::Pause => hold(ctx, true, peer).await,
        Route::Resume => hold(ctx, false, peer).await,
        Route::Metrics => metrics(&ctx),
        Route::WrongMethod(allowed) => {
            let mut answer = error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("use {allowed} for this path"),
            );
            answer.headers_mut().insert(
                hyper::header::ALLOW,
                hyper::header::HeaderValue::from_static(allowed),
            );
            answer
        }
        Route::SocketOnly => error(
            StatusCode::NOT_FOUND,
            "status, pause and resume are served on the admin socket only (root, or admin.group); use `fleetnode-agent status`",
        ),
        Route::NotFound => error(StatusCode::NOT_FOUND, "no such path"),
    }
}

fn metrics(ctx: &AdminContext) -> Answer {
    let queue = ctx.status.borrow().queue;
    ctx.metrics.export_queue(&queue, ctx.clock.now());
    http::with_type(StatusCode::OK, ctx.metrics.render(), OPENMETRICS)
}

async fn status(ctx: AdminContext) -> Answer {
    let (reply, answer) = oneshot::channel();
    let asked = tokio::time::timeout(REDUCER_TIMEOUT, ctx.inputs.send(Input::Status(reply))).await;
    if !matches!(asked, Ok(Ok(()))) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the event loop is not taking inputs",
        );
    }
    match tokio::time::timeout(REDUCER_TIMEOUT, answer).await {
        Ok(Ok(value)) => match serde_json::to_value(&value) {
            Ok(value) => json(StatusCode::OK, &value),
            Err(e) => error(
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("cannot encode the status: {e}"),
            ),
        },
        Ok(Err(_)) | Err(_) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the event loop did not answer in time",
        ),
    }
}

/// Sends the request and waits (briefly) until the state shows it.
async fn hold(mut ctx: AdminContext, paused: bool, peer: Peer) -> Answer {
    let event = if paused {
        Event::PauseRequested
    } else {
        Event::ResumeRequested
    };
    tracing::info!(%peer, paused, "local hold requested on the admin socket");
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
        Ok(Ok(_)) => json(StatusCode::OK, &json!({ "paused": paused })),
        Ok(Err(_)) | Err(_) => json(
            StatusCode::ACCEPTED,
            &json!({ "paused": !paused, "requested": paused }),
        ),
    }
}

#[cfg(test)]
mod tests;
