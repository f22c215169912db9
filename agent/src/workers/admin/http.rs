//! HTTP/1.1 over the admin listeners, with hyper's server half and nothing above it: the two
//! listeners have five fixed routes, which a `match` serves as well as a router would.
//!
//! Every connection is bounded: at most [`MAX_CONNECTIONS`] at a time per listener (more wait
//! in the kernel's backlog) and [`CONNECTION_DEADLINE`] each, so a local process that opens
//! connections and never finishes a request cannot hold the listener.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::input::WorkerError;

/// Connections served at once by one listener. Each costs a task and a few KiB of buffers; a
/// CLI call or a scrape needs one, so 32 is far above honest use and bounds what a flood costs.
pub const MAX_CONNECTIONS: usize = 32;
/// Longest a connection may stay open. Answers wait at most twice the event loop's timeout
/// (`REDUCER_TIMEOUT`, 5 s), so 30 s cuts only a peer that never finishes its request.
pub const CONNECTION_DEADLINE: Duration = Duration::from_secs(30);

/// An answer.
pub type Answer = Response<Full<Bytes>>;

/// Who is on the other end of a connection, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A process on the admin socket (`SO_PEERCRED`).
    Local {
        /// Its user id.
        uid: u32,
        /// Its process id, when the kernel knows it.
        pid: Option<i32>,
    },
    /// A TCP peer (always on loopback).
    Tcp(std::net::SocketAddr),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local {
                uid,
                pid: Some(pid),
            } => write!(f, "uid {uid} (pid {pid})"),
            Self::Local { uid, pid: None } => write!(f, "uid {uid}"),
            Self::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Answer {
    with_type(status, value.to_string(), "application/json")
}

/// A JSON error answer `{"error": message}`.
pub fn error(status: StatusCode, message: &str) -> Answer {
    json(status, &serde_json::json!({ "error": message }))
}

/// An answer with a body of the given content type.
pub fn with_type(status: StatusCode, body: impl Into<Bytes>, content_type: &'static str) -> Answer {
    let mut answer = Response::new(Full::new(body.into()));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    answer
}

/// Accepts connections from `accept` until `cancel`, serving each with `handle`; then waits for
/// the connections in flight (each told to close once its answer is out).
pub async fn serve<A, AF, IO, H, HF>(
    mut accept: A,
    handle: H,
    cancel: CancellationToken,
) -> Result<(), WorkerError>
where
    A: FnMut() -> AF,
    AF: Future<Output = std::io::Result<(IO, Peer)>>,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Peer) -> HF + Clone + Send + Sync + 'static,
    HF: Future<Output = Answer> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut connections = JoinSet::new();
    loop {
        let slot = tokio::select! {
            () = cancel.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot,
        };
        let Ok(slot) = slot else { break };
        let (io, peer) = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = accept() => accepted
                .map_err(|e| WorkerError::Listener(format!("the admin listener cannot accept: {e}")))?,
        };
        while connections.try_join_next().is_some() {}
        let (handle, cancel) = (handle.clone(), cancel.clone());
        connections.spawn(async move {
            let _slot = slot;
            connection(io, peer, handle, cancel).await;
        });
    }
    while connections.join_next().await.is_some() {}
    Ok(())
}

/// Serves one connection until it closes, its deadline passes or `cancel` fires (then it
/// finishes the request in flight and closes).
async fn connection<IO, H, HF>(io: IO, peer: Peer, handle: H, cancel: CancellationToken)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<Incoming>, Peer) -> HF + Clone + Send + Sync + 'static,
    HF: Future<Output = Answer> + Send + 'static,
{
    let service = service_fn(move |request| {
        let answer = handle(request, peer);
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let served = http1::Builder::new().serve_connection(TokioIo::new(io), service);
    tokio::pin!(served);
    let outcome = tokio::time::timeout(CONNECTION_DEADLINE, async {
        tokio::select! {
            outcome = served.as_mut() => outcome,
            () = cancel.cancelled() => {
                served.as_mut().graceful_shutdown();
                served.as_mut().await
            }
        }
    })
    .await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin connection ended with an error"),
        Err(_) => tracing::debug!(%peer, "admin connection closed at its deadline"),
    }
}
