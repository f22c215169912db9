//! What one client may hold: connections per source, the time to send a request head (which
//! also closes idle keep-alive connections) and the time to send a body. Raw TLS connections
//! from 127.0.0.2, so that the harness's own connections (from 127.0.0.1) are not counted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{Harness, tls_config};
use fleetnode_control_plane::server::Limits;
use fleetnode_wire::{ErrorBody, ErrorCode};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

type Tls = TlsStream<tokio::net::TcpStream>;

/// A TLS connection to the harness's server from 127.0.0.2.
async fn connect(harness: &Harness) -> Tls {
    let port = harness.server.as_ref().unwrap().local_addr().port();
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
    let tcp = socket
        .connect(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let connector = TlsConnector::from(Arc::new(tls_config(&harness.pki.ca_file, None)));
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Sends `request` and reads until the server closes the connection.
async fn exchange(stream: &mut Tls, request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    read_to_close(stream).await
}

async fn read_to_close(stream: &mut Tls) -> String {
    let mut bytes = Vec::new();
    // A reset instead of a clean close also ends the exchange.
    let _ = stream.read_to_end(&mut bytes).await;
    String::from_utf8_lossy(&bytes).into_owned()
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";

fn error_body(response: &str) -> ErrorBody {
    let body = response.split("\r\n\r\n").nth(1).unwrap();
    serde_json::from_str(body).unwrap()
}

#[tokio::test]
async fn a_source_over_its_connection_limit_is_answered_429_saying_so() {
    let limits = Limits {
        per_source: 2,
        ..Limits::default()
    };
    let harness = Harness::start_limited(None, limits).await;
    let mut first = connect(&harness).await;
    let _second = connect(&harness).await;
    let mut third = connect(&harness).await;

    let refused = exchange(&mut third, HEALTHZ).await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    let body = error_body(&refused);
    assert_eq!(body.code, ErrorCode::RateLimited);
    assert!(
        body.message
            .contains("too many connections from 127.0.0.2: at most 2"),
        "{}",
        body.message
    );
    assert!(body.message.contains("--max-connections-per-source"));

    // The connections within the limit are served, and a closed one frees its place.
    let served = exchange(&mut first, HEALTHZ).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    drop(third);
    let mut again = connect(&harness).await;
    let served = exchange(&mut again, HEALTHZ).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
}

#[tokio::test]
async fn a_client_slow_with_its_request_head_or_idle_after_an_answer_is_disconnected() {
    let limits = Limits {
        header_read: Duration::from_millis(200),
        ..Limits::default()
    };
    let harness = Harness::start_limited(None, limits).await;

    // Half a request head, then nothing: the server closes without waiting forever.
    let mut slow = connect(&harness).await;
    let answer = exchange(&mut slow, "GET /healthz HTTP/1.1\r\nhost: local").await;
    assert!(answer.is_empty(), "{answer}");

    // A kept-alive connection that sends nothing after its answer is closed too.
    let mut idle = connect(&harness).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut idle).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("ok\n"), "{answer}");
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_is_answered_408_saying_so() {
    let limits = Limits {
        body_read: Duration::from_millis(200),
        ..Limits::default()
    };
    let harness = Harness::start_limited(None, limits).await;
    let token = harness.add_host("web-1").await;
    let mut slow = connect(&harness).await;
    let head = format!(
        "POST /v1/agent/hosts/web-1/heartbeat HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {token}\r\nfleetnode-protocol: {}\r\ncontent-type: application/json\r\ncontent-length: 400\r\n\r\n{{\"agent_version\":",
        fleetnode_wire::protocol_version()
    );
    let answer = exchange(&mut slow, &head).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let body = error_body(&answer);
    assert_eq!(body.code, ErrorCode::Timeout);
    assert!(
        body.message
            .contains("the request body did not arrive within"),
        "{}",
        body.message
    );
}
