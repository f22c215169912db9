//! The listener: accepts connections within the server's limits and serves each one with
//! hyper's HTTP/1.1, over TLS unless plain HTTP on loopback was asked for.
//!
//! What one client can hold is bounded: the TLS handshake and every request head must arrive
//! within their timeouts (an idle keep-alive connection counts as a head that has not arrived,
//! so it is closed too), request bodies within theirs ([`super::body`]), one source
//! address holds at most [`Limits::per_source`] connections (more are answered 429 saying so,
//! then closed), and the whole server at most [`Limits::max_connections`] (beyond, it stops
//! accepting until one closes, so the process never runs out of file descriptors).
//!
//! Behind a load balancer every connection comes from the balancer. A connection from a
//! `--trusted-proxy` address must begin with a PROXY protocol v2 header ([`proxy_header`]),
//! read before the TLS handshake and within the same timeout; the client it names is the
//! connection's source for the per-source limit and the logs (a LOCAL header, a balancer's
//! health check, leaves the balancer as the source). A bad or missing header closes the
//! connection. From any other address no header is read: its bytes go to TLS as always, so a
//! header sent by an untrusted peer fails the handshake.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::response::IntoResponse;
use hyper::body::{Body as _, Incoming};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;
use tracing::{debug, info, warn};

use super::body::TimedBody;
use super::http::ApiError;

pub mod proxy_header;
pub mod trusted;

use proxy_header::{HeaderError, PREFIX_LEN, ProxyHeader};
pub use trusted::{TrustedNet, TrustedNetError, TrustedProxies};

/// Default of [`Limits::per_source`]: an agent holds two connections (its long-poll, and one
/// for heartbeats and events) and a restarting agent briefly a few more; an operator's CLI one.
pub const DEFAULT_CONNECTIONS_PER_SOURCE: usize = 64;
/// Default of [`Limits::header_read`].
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of [`Limits::body_read`].
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of [`Limits::tls_handshake`].
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// File descriptors kept free of connections for the store, logs and blocking threads.
const DESCRIPTOR_RESERVE: usize = 64;
/// Pause after a failed `accept` (the error is logged), so a persistent failure cannot spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Seconds a source over its connection limit is asked to wait.
const PER_SOURCE_RETRY_SECS: u64 = 5;
/// How long a graceful shutdown waits for requests in flight.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What one client and the whole server may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections one source address may hold at once.
    pub per_source: usize,
    /// Connections the server holds at once; `None` for the file-descriptor limit less a
    /// reserve.
    pub max_connections: Option<usize>,
    /// Longest a client may take to send a request's head, counted from the end of the
    /// previous response (so it also closes idle keep-alive connections).
    pub header_read: Duration,
    /// Longest a TLS handshake may take; from a trusted proxy, the PROXY header and the
    /// handshake together.
    pub tls_handshake: Duration,
    /// Longest a client may take to send a request body, from the end of its head (bodies are
    /// at most 1 MiB, so the default asks for about 35 KB/s at worst); a slower one is answered
    /// 408.
    pub body_read: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            per_source: DEFAULT_CONNECTIONS_PER_SOURCE,
            max_connections: None,
            header_read: DEFAULT_HEADER_READ_TIMEOUT,
            tls_handshake: DEFAULT_TLS_HANDSHAKE_TIMEOUT,
            body_read: DEFAULT_BODY_READ_TIMEOUT,
        }
    }
}

/// The peer's certificate chain, put in every request of a mutual-TLS connection.
#[derive(Debug, Clone)]
pub struct PeerCertificates(pub Arc<Vec<CertificateDer<'static>>>);

/// Accepts and serves connections until `shutdown`, then waits up to [`SHUTDOWN_GRACE`] for
/// the connections to finish their requests. Connections from `trusted` balancers carry a
/// PROXY protocol v2 header naming their client.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Limits,
    trusted: TrustedProxies,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    if !trusted.is_empty() {
        info!(%trusted, "connections from these load balancers must begin with a PROXY protocol v2 header");
    }
    let slots = Arc::new(Semaphore::new(max_connections(&limits)));
    let sources = Arc::new(Sources::default());
    let tracker = TaskTracker::new();
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "accepting a connection failed; pausing briefly");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let accepted = Accepted {
            stream,
            peer,
            balancer: trusted.trusts(peer.ip()),
            slot: permit,
        };
        tracker.spawn(accepted.admit(
            sources.clone(),
            tls.clone(),
            router.clone(),
            limits,
            shutdown.clone(),
        ));
    }
    tracker.close();
    // Every connection task answers the shutdown itself within the grace; the extra second
    // covers the last writes.
    let _ = tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(1), tracker.wait()).await;
    Ok(())
}

/// The connection cap: the configured one, else the file-descriptor limit less a reserve.
fn max_connections(limits: &Limits) -> usize {
    limits.max_connections.unwrap_or_else(|| {
        let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
            .current
            .unwrap_or(u64::MAX);
        usize::try_from(soft)
            .unwrap_or(usize::MAX)
            .saturating_sub(DESCRIPTOR_RESERVE)
            .max(1)
    })
}

/// A connection just accepted, its client not yet known when it comes from a balancer.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    /// The peer is a trusted balancer: a PROXY header must come first.
    balancer: bool,
    slot: OwnedSemaphorePermit,
}

impl Accepted {
    /// Learns the client (from the PROXY header when the peer is a balancer), counts the
    /// connection against the client's limit and serves it. The header and the TLS handshake
    /// share one deadline, [`Limits::tls_handshake`] from now.
    async fn admit(
        mut self,
        sources: Arc<Sources>,
        tls: Option<TlsAcceptor>,
        router: Router,
        limits: Limits,
        shutdown: CancellationToken,
    ) {
        let deadline = Instant::now() + limits.tls_handshake;
        let client = if self.balancer {
            let read = tokio::time::timeout_at(deadline, read_proxy_header(&mut self.stream));
            match read.await {
                Ok(Ok(ProxyHeader::Proxied { source, .. })) => source,
                Ok(Ok(ProxyHeader::Local)) => self.peer,
                Ok(Err(ReadError::Header(error))) => {
                    warn!(balancer = %self.peer, %error, "refused a connection from a trusted proxy: its PROXY header is not acceptable");
                    return;
                }
                Ok(Err(ReadError::Io(error))) => {
                    debug!(balancer = %self.peer, %error, "a trusted proxy's connection ended before its PROXY header");
                    return;
                }
                Err(_) => {
                    debug!(balancer = %self.peer, timeout = ?limits.tls_handshake, "a trusted proxy's PROXY header did not arrive in time");
                    return;
                }
            }
        } else {
            self.peer
        };
        if self.balancer {
            debug!(peer = %client, balancer = %self.peer, "a trusted proxy forwarded a connection");
        }
        let connection = Connection {
            source: sources.enter(client.ip().to_canonical(), limits.per_source),
            peer: client,
            balancer: self.balancer.then_some(self.peer),
            _slot: self.slot,
        };
        connection
            .run(self.stream, tls, router, limits, deadline, shutdown)
            .await;
    }
}

/// Why no PROXY header was read.
enum ReadError {
    /// The connection failed or ended first.
    Io(std::io::Error),
    /// The bytes are not an acceptable header.
    Header(HeaderError),
}

/// Reads one PROXY v2 header and not a byte more: the prefix, then the length it announces.
async fn read_proxy_header(stream: &mut TcpStream) -> Result<ProxyHeader, ReadError> {
    let mut prefix = [0u8; PREFIX_LEN];
    stream
        .read_exact(&mut prefix)
        .await
        .map_err(ReadError::Io)?;
    let len = proxy_header::payload_len(&prefix).map_err(ReadError::Header)?;
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .map_err(ReadError::Io)?;
    proxy_header::parse_payload(&prefix, &payload).map_err(ReadError::Header)
}

/// One accepted connection and what it holds.
struct Connection {
    source: SourceSlot,
    /// The client: the peer, or the client a trusted balancer named.
    peer: SocketAddr,
    /// The balancer the connection came through, if any.
    balancer: Option<SocketAddr>,
    _slot: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(
        self,
        stream: TcpStream,
        tls: Option<TlsAcceptor>,
        router: Router,
        limits: Limits,
        deadline: Instant,
        shutdown: CancellationToken,
    ) {
        // Answers are small and written whole; do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = tls else {
            self.http(stream, None, router, limits, shutdown).await;
            return;
        };
        let stream = match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                debug!(peer = %self.peer, balancer = ?self.balancer, %error, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(peer = %self.peer, balancer = ?self.balancer, timeout = ?limits.tls_handshake, "TLS handshake timed out");
                return;
            }
        };
        let certificates = stream
            .get_ref()
            .1
            .peer_certificates()
            .map(|chain| PeerCertificates(Arc::new(chain.to_vec())));
        self.http(stream, certificates, router, limits, shutdown)
            .await;
    }

    async fn http<S>(
        self,
        stream: S,
        certificates: Option<PeerCertificates>,
        router: Router,
        limits: Limits,
        shutdown: CancellationToken,
    ) where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let refusal = self.source.refusal(limits.per_source);
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = if request.body().is_end_stream() {
                request.map(Body::new)
            } else {
                request.map(|body| Body::new(TimedBody::new(body, limits.body_read)))
            };
            if let Some(certificates) = &certificates {
                request.extensions_mut().insert(certificates.clone());
            }
            let mut router = router.clone();
            let refusal = refusal.clone();
            async move {
                match refusal {
                    Some(refusal) => Ok(refusal.into_response()),
                    None => router.call(request).await,
                }
            }
        });
        let mut builder = http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read)
            .keep_alive(!self.source.over_limit);
        let connection = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(connection);
        let result = tokio::select! {
            result = connection.as_mut() => result,
            () = shutdown.cancelled() => {
                connection.as_mut().graceful_shutdown();
                match tokio::time::timeout(SHUTDOWN_GRACE, connection.as_mut()).await {
                    Ok(result) => result,
                    Err(_) => return,
                }
            }
        };
        if let Err(error) = result {
            // Timeouts and resets are the client's business; they are logged for debugging.
            debug!(peer = %self.peer, balancer = ?self.balancer, %error, "connection ended with an error");
        }
    }
}

/// How many connections each source address holds.
#[derive(Default)]
struct Sources {
    held: Mutex<HashMap<IpAddr, usize>>,
}

impl Sources {
    /// Counts a new connection of `ip`; over the limit it is marked to be refused.
    fn enter(self: &Arc<Self>, ip: IpAddr, limit: usize) -> SourceSlot {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(ip).or_insert(0);
        let over_limit = *count >= limit;
        if *count == limit {
            warn!(source = %ip, limit, "a source reached its connection limit; refusing its further connections with 429 (raise --max-connections-per-source if many hosts share this address)");
        }
        *count += 1;
        SourceSlot {
            sources: self.clone(),
            ip,
            over_limit,
        }
    }
}

/// A counted connection; dropping it uncounts it.
struct SourceSlot {
    sources: Arc<Sources>,
    ip: IpAddr,
    over_limit: bool,
}

impl SourceSlot {
    /// The answer to every request of a connection over its source's limit.
    fn refusal(&self, limit: usize) -> Option<ApiError> {
        let ip = self.ip;
        self.over_limit.then(|| {
            ApiError::rate_limited(
                format!(
                    "too many connections from {ip}: at most {limit} at once; close idle connections, or ask the operator to raise --max-connections-per-source if many hosts share this address"
                ),
                PER_SOURCE_RETRY_SECS,
            )
        })
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self
            .sources
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}
