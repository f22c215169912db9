//! A real control plane on loopback over real TLS, with certificates from the fixtures, and
//! agent-side helpers that speak the wire protocol.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fleetnode_control_plane::fleet::StoreLocation;
use fleetnode_control_plane::server::Limits;
use fleetnode_control_plane::{ManualClock, RunningServer, ServerOptions, Transport, start};
use fleetnode_fixtures::certs::{IssuedPaths, TestCa};
use fleetnode_wire::{
    AgentStatus, EventBatch, HostAdded, HostDetail, OutboundEvent, PROTOCOL_HEADER, Secret,
    StorePath, Timestamp, protocol_version,
};
use reqwest::{Method, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tempfile::TempDir;

pub const ADMIN_TOKEN: &str = "admin-token-for-tests-0123456789abcdef";
pub const START: Timestamp = Timestamp(1_700_000_000_000);

pub const HASHES: [&str; 3] = [
    "0123456789abcdfghijklmnpqrsvwxyz",
    "zyxwvsrqpnmlkjihgfdcba9876543210",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
];

/// Closure number `n` of host `host`.
pub fn closure(host: &str, n: usize) -> StorePath {
    StorePath::parse(&format!("/nix/store/{}-nixos-system-{host}-{n}", HASHES[n])).unwrap()
}

/// The test PKI: a CA, the server's certificate, and the directory holding them.
pub struct Pki {
    pub dir: TempDir,
    pub ca: TestCa,
    pub ca_file: PathBuf,
    pub server: IssuedPaths,
}

impl Pki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("fleetnode test CA").unwrap();
        let ca_file = ca.write(dir.path()).unwrap();
        let server = ca.server().unwrap().write(dir.path(), "server").unwrap();
        Self {
            dir,
            ca,
            ca_file,
            server,
        }
    }
}

/// A server under test and what is needed to restart it on the same store.
pub struct Harness {
    pub pki: Pki,
    pub store: PathBuf,
    /// Where the server keeps its store: the redb file `store` unless a test chose a
    /// database.
    pub location: Option<StoreLocation>,
    pub clock: Arc<ManualClock>,
    pub client_ca: Option<PathBuf>,
    pub heartbeat_interval: Duration,
    pub server: Option<RunningServer>,
    pub url: String,
    pub http: reqwest::Client,
    pub limits: Limits,
}

impl Harness {
    /// A server with a fresh store, TLS, no mTLS.
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server with mutual TLS: client certificates signed by `client_ca` are required on the
    /// agent API.
    pub async fn start_with(client_ca: Option<PathBuf>) -> Self {
        Self::start_limited(client_ca, Limits::default()).await
    }

    /// A server with these connection limits.
    pub async fn start_limited(client_ca: Option<PathBuf>, limits: Limits) -> Self {
        let pki = Pki::new();
        let store = pki.dir.path().join("cp.redb");
        let mut harness = Self {
            http: client(&pki.ca_file, None),
            pki,
            store,
            location: None,
            clock: Arc::new(ManualClock::new(START)),
            client_ca,
            heartbeat_interval: Duration::from_secs(30),
            server: None,
            url: String::new(),
            limits,
        };
        harness.boot().await;
        harness.wait_ready().await;
        harness
    }

    pub fn options(&self) -> ServerOptions {
        let mut options = ServerOptions::new(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Transport::Tls {
                cert: self.pki.server.cert.clone(),
                key: self.pki.server.key.clone(),
                client_ca: self.client_ca.clone(),
            },
            Secret::new(ADMIN_TOKEN),
            self.location
                .clone()
                .unwrap_or_else(|| StoreLocation::Redb(self.store.clone())),
        );
        options.clock = self.clock.clone();
        options.heartbeat_interval = self.heartbeat_interval;
        options.limits = self.limits;
        options
    }

    /// A server on the PostgreSQL database at `url` (each call a replica of its own, with
    /// its own TLS files).
    pub async fn start_on(url: &str) -> Self {
        let pki = Pki::new();
        let store = pki.dir.path().join("unused.redb");
        let mut harness = Self {
            http: client(&pki.ca_file, None),
            pki,
            store,
            location: Some(StoreLocation::parse(url, None)),
            clock: Arc::new(ManualClock::new(START)),
            client_ca: None,
            heartbeat_interval: Duration::from_secs(30),
            server: None,
            url: String::new(),
            limits: Limits::default(),
        };
        harness.boot().await;
        harness.wait_ready().await;
        harness
    }

    /// Starts the server (not waiting for the store).
    pub async fn boot(&mut self) {
        let server = start(self.options()).await.unwrap();
        self.url = format!("https://localhost:{}", server.local_addr().port());
        self.server = Some(server);
    }

    /// Waits until the store is open (healthz answers 200).
    pub async fn wait_ready(&self) {
        for _ in 0..500 {
            let response = self
                .http
                .get(format!("{}/healthz", self.url))
                .send()
                .await
                .unwrap();
            if response.status() == StatusCode::OK {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the server never opened its store");
    }

    pub async fn stop(&mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        self.boot().await;
        self.wait_ready().await;
    }

    // ------------------------------------------------------------ operator side

    pub async fn admin(&self, method: Method, path: &str, body: Option<String>) -> Answer {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(ADMIN_TOKEN)
            .header(PROTOCOL_HEADER, protocol_version());
        if let Some(body) = body {
            request = request.body(body);
        }
        Answer::from(request.send().await.unwrap()).await
    }

    pub async fn add_host(&self, id: &str) -> String {
        self.add_host_tagged(id, &[]).await
    }

    pub async fn add_host_tagged(&self, id: &str, tags: &[&str]) -> String {
        let body = serde_json::json!({ "id": id, "tags": tags }).to_string();
        let answer = self
            .admin(Method::POST, "/v1/admin/hosts", Some(body))
            .await;
        assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
        let added: HostAdded = answer.json();
        added.token.expose().to_owned()
    }

    pub async fn set_target(&self, hosts: &[&str], target: &StorePath) -> Answer {
        let body = serde_json::json!({
            "selector": { "by": "hosts", "hosts": hosts },
            "target": target,
        })
        .to_string();
        self.admin(Method::POST, "/v1/admin/targets", Some(body))
            .await
    }

    pub async fn detail(&self, id: &str) -> HostDetail {
        let answer = self
            .admin(Method::GET, &format!("/v1/admin/hosts/{id}"), None)
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        answer.json()
    }

    // ------------------------------------------------------------ agent side

    pub fn agent(&self, host: &str, token: &str) -> Agent {
        Agent {
            base: self.url.clone(),
            host: host.to_owned(),
            token: token.to_owned(),
            http: self.http.clone(),
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Answer {
    pub async fn from(response: reqwest::Response) -> Self {
        Self {
            status: response.status(),
            headers: response.headers().clone(),
            text: response.text().await.unwrap(),
        }
    }

    pub fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_str(&self.text).unwrap_or_else(|e| panic!("{e}: {}", self.text))
    }

    /// The error code of an error answer.
    pub fn code(&self) -> String {
        let body: serde_json::Value = self.json();
        body["code"].as_str().unwrap().to_owned()
    }
}

/// An agent's side of the protocol, over its own client.
#[derive(Clone)]
pub struct Agent {
    pub base: String,
    pub host: String,
    pub token: String,
    pub http: reqwest::Client,
}

impl Agent {
    pub fn with_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    pub fn request(&self, method: Method, what: &str) -> reqwest::RequestBuilder {
        self.http
            .request(
                method,
                format!("{}/v1/agent/hosts/{}/{what}", self.base, self.host),
            )
            .bearer_auth(&self.token)
            .header(PROTOCOL_HEADER, protocol_version())
    }

    pub async fn desired(&self, known: Option<u64>, wait: u64) -> Answer {
        let mut query = vec![("wait", wait.to_string())];
        if let Some(known) = known {
            query.push(("known", known.to_string()));
        }
        Answer::from(
            self.request(Method::GET, "desired")
                .query(&query)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post_raw(&self, what: &str, body: Vec<u8>) -> Answer {
        Answer::from(
            self.request(Method::POST, what)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn events(&self, stream: u64, events: &[OutboundEvent]) -> Answer {
        let batch = EventBatch {
            stream,
            events: events.to_vec(),
        };
        self.post_raw("events", fleetnode_wire::encode(&batch))
            .await
    }

    pub async fn heartbeat(&self, heartbeat: &AgentStatus) -> Answer {
        self.post_raw("heartbeat", fleetnode_wire::encode(heartbeat))
            .await
    }
}

/// An HTTP client trusting the test CA, optionally with a client certificate.
pub fn client(ca_file: &Path, identity: Option<&IssuedPaths>) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls_config(ca_file, identity))
        .build()
        .unwrap()
}

/// A client TLS configuration trusting `ca_file`, with a client certificate when given.
pub fn tls_config(ca_file: &Path, identity: Option<&IssuedPaths>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    match identity {
        Some(paths) => {
            let chain: Vec<_> = CertificateDer::pem_file_iter(&paths.cert)
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(&paths.key).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    }
}

// ---------------------------------------------------------------- agent-side scenario

// Not every test file speaks for an agent.
#[allow(unused_imports)]
pub use fleetnode_fixtures::simulated::SimulatedAgent;

/// Waits until `n` long-polls are waiting on the server (read from its metrics), so that a
/// test changes the desired state only once the poll it watches is really waiting.
pub async fn wait_for_waiters(harness: &Harness, n: u64) {
    let line = format!("fleetnode_cp_longpoll_waiters {n}\n");
    for _ in 0..1000 {
        let metrics = harness.admin(Method::GET, "/metrics", None).await;
        if metrics.text.contains(&line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never saw {n} waiting long-polls");
}
