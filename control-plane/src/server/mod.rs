//! The HTTPS server: agent API, operator API, the operator's console, `/metrics` and
//! `/healthz`.
//!
//! [`start`] binds the listener first and answers at once; the store is opened in the
//! background (an integrity check of a large file takes a while), and until it is open every
//! request gets 503 `unavailable` with `Retry-After`. `docs/control-plane.md` describes running
//! and securing it, `docs/protocol.md` the API.

mod admin;
mod agent;
mod app;
mod body;
mod http;
pub mod listen;
mod middleware;
mod operators;
mod rollouts;
mod routes;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_wire::Secret;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::auth::hash_token;
use crate::clock::{Clock, SystemClock};
use crate::fleet::{DEFAULT_LEASE_TTL, Fleet, OpenError, Retention, Settings, StoreLocation};
use crate::metrics::Metrics;
use crate::rollout::window::TagWindows;
use crate::tls::{TlsError, server_config};

pub use app::App;
pub(crate) use http::ApiError;
pub use listen::{Limits, TrustedProxies};

/// Default heartbeat interval agents are expected to keep; three missed make a host offline.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(30);
/// Default cap of long-polls one host may have waiting at once. An agent needs one; a few more
/// cover a restart racing its old connection.
pub const DEFAULT_WAITERS_PER_HOST: usize = 4;
/// How often the store is tried again while another process holds it.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// How the server talks to clients.
#[derive(Debug, Clone)]
pub enum Transport {
    /// HTTPS with this certificate chain and key (PEM files).
    Tls {
        /// Certificate chain.
        cert: PathBuf,
        /// Private key.
        key: PathBuf,
        /// With mutual TLS: the CA that signs agents' client certificates.
        client_ca: Option<PathBuf>,
    },
    /// Plain HTTP, on a loopback address only (demos and tests of the plain-HTTP path).
    InsecureHttp,
}

/// Everything `serve` needs.
#[derive(Clone)]
pub struct ServerOptions {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// TLS or (loopback only) plain HTTP.
    pub transport: Transport,
    /// The operator's admin token.
    pub admin_token: Secret,
    /// The store: a redb file, or a PostgreSQL database shared with other replicas.
    pub store: StoreLocation,
    /// Heartbeat interval agents keep; a host is offline after three without one.
    pub heartbeat_interval: Duration,
    /// Serve `/metrics` without the admin token.
    pub metrics_public: bool,
    /// Long-polls one host may have waiting at once; beyond, 429.
    pub waiters_per_host: usize,
    /// What one client and the whole server may hold.
    pub limits: Limits,
    /// Load balancers whose connections carry a PROXY protocol v2 header naming the client.
    pub trusted_proxies: TrustedProxies,
    /// The wall clock.
    pub clock: Arc<dyn Clock>,
    /// What the store keeps, and how often it is pruned.
    pub retention: Retention,
    /// On a shared store, how soon another replica takes the rollouts over when the driving
    /// one dies.
    pub lease_ttl: Duration,
    /// How long a console session lasts after sign-in.
    pub console_session_lifetime: Duration,
    /// The maintenance windows of tags: rollouts switch a host only inside one of its tags'.
    pub windows: Arc<TagWindows>,
}

impl ServerOptions {
    /// Options with the defaults for everything but the essentials.
    pub fn new(
        listen: SocketAddr,
        transport: Transport,
        admin_token: Secret,
        store: impl Into<StoreLocation>,
    ) -> Self {
        Self {
            listen,
            transport,
            admin_token,
            store: store.into(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            metrics_public: false,
            waiters_per_host: DEFAULT_WAITERS_PER_HOST,
            limits: Limits::default(),
            trusted_proxies: TrustedProxies::default(),
            clock: Arc::new(SystemClock),
            retention: Retention::default(),
            lease_ttl: DEFAULT_LEASE_TTL,
            console_session_lifetime: crate::console::DEFAULT_SESSION_LIFETIME,
            windows: Arc::default(),
        }
    }
}

/// Why the server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The TLS files are unusable.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The admin token is empty.
    #[error("the admin token is empty; put a long random secret in the --admin-token-file")]
    EmptyAdminToken,
    /// Plain HTTP was asked for on an address other than loopback.
    #[error(
        "--insecure-http is only allowed on a loopback address (127.0.0.1 or ::1), not {0}: tokens would cross the network in clear text"
    )]
    InsecureNotLoopback(SocketAddr),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] OpenError),
    /// The HTTP server failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// A running server.
pub struct RunningServer {
    addr: SocketAddr,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    opener: JoinHandle<Result<(), OpenError>>,
}

/// Binds the listener, starts serving (503 until the store is open) and opens the store in the
/// background.
pub async fn start(options: ServerOptions) -> Result<RunningServer, ServeError> {
    if options.admin_token.is_empty() {
        return Err(ServeError::EmptyAdminToken);
    }
    let acceptor = match &options.transport {
        Transport::Tls {
            cert,
            key,
            client_ca,
        } => {
            let config = server_config(cert, key, client_ca.as_deref())?;
            Some(TlsAcceptor::from(Arc::new(config)))
        }
        Transport::InsecureHttp => {
            if !options.listen.ip().is_loopback() {
                return Err(ServeError::InsecureNotLoopback(options.listen));
            }
            warn!(
                listen = %options.listen,
                "serving plain HTTP (--insecure-http): tokens travel in clear text; for demos on loopback only"
            );
            None
        }
    };
    let listener =
        std::net::TcpListener::bind(options.listen).map_err(|source| ServeError::Bind {
            addr: options.listen,
            source,
        })?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    let settings = Settings {
        heartbeat_interval: options.heartbeat_interval,
        waiters_per_host: options.waiters_per_host,
        clock: options.clock.clone(),
        metrics: Arc::new(Metrics::new()),
        shutdown: shutdown.clone(),
        lease_ttl: options.lease_ttl,
        windows: options.windows.clone(),
    };
    let app = Arc::new(App::new(
        hash_token(options.admin_token.expose()),
        matches!(
            options.transport,
            Transport::Tls {
                client_ca: Some(_),
                ..
            }
        ),
        options.metrics_public,
        settings,
        options.store.describe(),
        crate::console::Console::new(
            options.console_session_lifetime,
            options.clock.clone(),
            matches!(options.transport, Transport::InsecureHttp),
        ),
    ));
    let router = routes::router(app.clone());
    let server = tokio::spawn(listen::serve(
        listener,
        acceptor,
        router,
        options.limits,
        options.trusted_proxies.clone(),
        shutdown.clone(),
    ));
    let opener = tokio::spawn(open_store(
        app,
        options.store.clone(),
        options.retention,
        shutdown.clone(),
    ));
    info!(%addr, store = %options.store.describe(), "listening");
    Ok(RunningServer {
        addr,
        shutdown,
        server,
        opener,
    })
}

impl RunningServer {
    /// The address the server listens on (the port is known even when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A token that stops the server when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops accepting, answers waiting long-polls, waits for requests in flight and closes
    /// the store.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.shutdown.cancel();
        self.wait().await
    }

    /// Runs until the server stops: after [`RunningServer::stop`], a cancelled shutdown token,
    /// or a store that cannot be opened (returned as the error).
    pub async fn wait(self) -> Result<(), ServeError> {
        let served = self.server.await;
        // The opener (then the rollout driver) ends when the store failed or shutdown was
        // requested.
        self.shutdown.cancel();
        let opened = self.opener.await;
        match served {
            Ok(result) => result?,
            Err(join) => return Err(ServeError::Io(std::io::Error::other(join.to_string()))),
        }
        match opened {
            Ok(result) => result?,
            Err(join) => return Err(ServeError::Io(std::io::Error::other(join.to_string()))),
        }
        Ok(())
    }
}

/// Opens the store, retrying while another process holds the redb file, then runs the rollout
/// driver and the retention task until the server stops; a failure to open stops the server
/// with the error.
async fn open_store(
    app: Arc<App>,
    location: StoreLocation,
    retention: Retention,
    shutdown: CancellationToken,
) -> Result<(), OpenError> {
    let mut warned = false;
    let store = location.describe();
    loop {
        match Fleet::open(&location, app.settings.clone()).await {
            Ok((fleet, driver)) => {
                let (hosts, loaded) = fleet.loaded();
                info!(%store, hosts, rollouts = loaded, "store open; serving");
                app.set_ready(fleet.clone());
                // The opener goes on as the rollout driver and the retention task until the
                // server stops.
                tokio::join!(
                    crate::fleet::rollouts::run(fleet.clone(), driver),
                    crate::fleet::retention::run(fleet, retention),
                );
                return Ok(());
            }
            Err(error) if error.is_locked() && !shutdown.is_cancelled() => {
                if !warned {
                    warn!(%store, "store is in use by another process; answering 503 and retrying every second");
                    warned = true;
                }
                tokio::select! {
                    () = tokio::time::sleep(STORE_RETRY) => {}
                    () = shutdown.cancelled() => return Ok(()),
                }
            }
            Err(error) if error.is_locked() => return Ok(()),
            Err(error) => {
                error!(%error, "cannot open the store; stopping");
                shutdown.cancel();
                return Err(error);
            }
        }
    }
}
