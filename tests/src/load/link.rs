//! One HTTP/1.1 connection over TLS, opened from a chosen loopback source address as an agent
//! on its own host would open it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use fleetnode_wire::{PROTOCOL_HEADER, protocol_version};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// Connecting (TCP or TLS) failed.
    #[error("connect from {source_ip}: {error}")]
    Connect {
        /// The source address.
        source_ip: IpAddr,
        /// The error.
        error: std::io::Error,
    },
    /// The HTTP exchange failed.
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    /// The request could not be built.
    #[error("request: {0}")]
    Request(#[from] hyper::http::Error),
    /// The server refused the request.
    #[error("HTTP {status}: {body}")]
    Refused {
        /// The status.
        status: StatusCode,
        /// What it said.
        body: String,
    },
}

/// Where the control plane is and how to trust it.
#[derive(Clone)]
pub struct Endpoint {
    server: SocketAddr,
    tls: TlsConnector,
    name: ServerName<'static>,
}

impl Endpoint {
    /// The server at `server`, whose certificate names `name` and chains to a root of `tls`.
    pub fn new(server: SocketAddr, tls: rustls::ClientConfig, name: ServerName<'static>) -> Self {
        Self {
            server,
            tls: TlsConnector::from(Arc::new(tls)),
            name,
        }
    }

    /// Opens a connection from `source` (a loopback address of this machine).
    pub async fn connect(&self, source: IpAddr) -> Result<Link, LinkError> {
        let connect_error = |error| LinkError::Connect {
            source_ip: source,
            error,
        };
        let socket = TcpSocket::new_v4().map_err(connect_error)?;
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(connect_error)?;
        let tcp = socket.connect(self.server).await.map_err(connect_error)?;
        tcp.set_nodelay(true).map_err(connect_error)?;
        let tls = self
            .tls
            .connect(self.name.clone(), tcp)
            .await
            .map_err(connect_error)?;
        let (sender, connection) = http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(async move {
            // The connection ends when either side closes it; its error is the exchange's.
            let _ = connection.await;
        });
        Ok(Link { sender })
    }
}

/// An open connection.
pub struct Link {
    sender: SendRequest<Full<Bytes>>,
}

/// An answer, read whole.
pub struct Answer {
    /// Its status.
    pub status: StatusCode,
    /// Its body.
    pub body: Bytes,
}

impl Link {
    /// Sends one request with the host's (or operator's) bearer token; `close` asks the server
    /// to close the connection after answering.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<Vec<u8>>,
        close: bool,
    ) -> Result<Answer, LinkError> {
        self.sender.ready().await?;
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "localhost")
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header(PROTOCOL_HEADER, protocol_version());
        if body.is_some() {
            request = request.header(header::CONTENT_TYPE, "application/json");
        }
        if close {
            request = request.header(header::CONNECTION, "close");
        }
        let request = request.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Answer { status, body })
    }
}
