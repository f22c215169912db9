//! A control plane that refuses one kind of report: a TLS proxy in front of the real
//! `fleetnode-cp` that answers **422** `invalid` to every event batch holding a report of the
//! chosen type (as a control plane of another version might refuse a report it finds invalid),
//! and passes everything else through unchanged.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use fleetnode_wire::{ErrorBody, ErrorCode, EventBatch, PROTOCOL_HEADER, decode, encode};

use crate::control_plane::ControlPlane;
use crate::{HarnessError, Result};

/// The running proxy; dropping it stops it.
#[derive(Debug)]
pub struct RefusingProxy {
    addr: SocketAddr,
    _runtime: tokio::runtime::Runtime,
}

#[derive(Clone)]
struct Forward {
    client: reqwest::Client,
    target: String,
    refuse: &'static str,
}

impl RefusingProxy {
    /// Listens on a free loopback port with the control plane's own certificate and forwards
    /// to it, refusing batches that hold a `refuse` report.
    pub fn start(cp: &ControlPlane, refuse: &'static str) -> Result<Self> {
        let setup = |message: String| HarnessError::Setup {
            what: "the refusing proxy".into(),
            message,
        };
        let files = cp.files();
        let certs = fleetnode_tls::read_certs(&files.cert).map_err(|e| setup(e.to_string()))?;
        let key = fleetnode_tls::read_private_key(&files.key).map_err(|e| setup(e.to_string()))?;
        let server = rustls::ServerConfig::builder_with_provider(fleetnode_tls::provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|e| setup(e.to_string()))?;
        let roots = fleetnode_tls::read_roots(&files.ca).map_err(|e| setup(e.to_string()))?;
        let client = rustls::ClientConfig::builder_with_provider(fleetnode_tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(client)
            .build()
            .map_err(|e| setup(e.to_string()))?;
        let forward = Forward {
            client,
            target: cp.url(),
            refuse,
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .map_err(HarnessError::io("bind the proxy"))?;
        let addr = listener
            .local_addr()
            .map_err(HarnessError::io("bind the proxy"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(HarnessError::io("start the proxy's runtime"))?;
        let app = Router::new().fallback(pass).with_state(forward);
        {
            // The listener registers with the runtime that serves it.
            let _entered = runtime.enter();
            crate::tls_server::spawn(listener, Arc::new(server), app)
                .map_err(HarnessError::io("serve the proxy"))?;
        }
        Ok(Self {
            addr,
            _runtime: runtime,
        })
    }

    /// The URL agents use instead of the control plane's.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.addr.port())
    }
}

async fn pass(State(forward): State<Forward>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, fleetnode_wire::MAX_BODY_BYTES).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    if parts.uri.path().ends_with("/events") && holds(&body, forward.refuse) {
        let body = ErrorBody::new(
            ErrorCode::Invalid,
            format!(
                "this control plane does not take {} reports",
                forward.refuse
            ),
        );
        let mut response = (StatusCode::UNPROCESSABLE_ENTITY, encode(&body)).into_response();
        if let Ok(value) = fleetnode_wire::protocol_version().parse() {
            response.headers_mut().insert(PROTOCOL_HEADER, value);
        }
        return response;
    }
    let url = format!(
        "{}{}",
        forward.target,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let sent = forward
        .client
        .request(parts.method, url)
        .headers(without_host(parts.headers))
        .body(body)
        .send()
        .await;
    match sent {
        Ok(answer) => {
            let status = answer.status();
            let headers = answer.headers().clone();
            let body = answer.bytes().await.unwrap_or_default();
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            *response.headers_mut() = headers;
            response
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

fn holds(body: &Bytes, refuse: &str) -> bool {
    decode::<EventBatch>(body).is_ok_and(|batch| {
        batch
            .events
            .iter()
            .any(|event| event.report.name() == refuse)
    })
}

fn without_host(mut headers: HeaderMap) -> HeaderMap {
    headers.remove("host");
    headers.remove("content-length");
    headers
}
