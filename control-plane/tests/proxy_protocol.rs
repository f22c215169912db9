//! The listener behind a load balancer: connections from a `--trusted-proxy` address begin
//! with a PROXY protocol v2 header, and the client it names is the one the per-source limit
//! counts; from any other address a header is not read and the TLS handshake fails on it.
//! Raw TCP from chosen loopback addresses (127.0.0.2 is the balancer), headers written by hand
//! from the specification, then real TLS to the real server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use common::{ADMIN_TOKEN, Pki, tls_config};
use fleetnode_control_plane::server::Limits;
use fleetnode_control_plane::server::listen::{TrustedNet, TrustedProxies};
use fleetnode_control_plane::{RunningServer, ServerOptions, Transport, start};
use fleetnode_wire::Secret;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

const BALANCER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const STRANGER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n";

struct Server {
    pki: Pki,
    running: RunningServer,
}

/// A server trusting 127.0.0.2 as its balancer, each source limited to `per_source`, once its
/// store is open.
async fn server(per_source: usize, tls_handshake: Duration) -> Server {
    let pki = Pki::new();
    let mut options = ServerOptions::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        Transport::Tls {
            cert: pki.server.cert.clone(),
            key: pki.server.key.clone(),
            client_ca: None,
        },
        Secret::new(ADMIN_TOKEN),
        pki.dir.path().join("cp.redb"),
    );
    options.limits = Limits {
        per_source,
        tls_handshake,
        ..Limits::default()
    };
    options.trusted_proxies = TrustedProxies::new(vec!["127.0.0.2".parse::<TrustedNet>().unwrap()]);
    let running = start(options).await.unwrap();
    let server = Server { pki, running };
    // The store opens in the background; until then every answer is 503.
    while !healthz(&server, STRANGER, b"")
        .await
        .unwrap()
        .starts_with("HTTP/1.1 200")
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server
}

/// A TCP connection to the server from `from`.
async fn tcp_from(server: &Server, from: Ipv4Addr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket
        .connect(SocketAddr::from((
            [127, 0, 0, 1],
            server.running.local_addr().port(),
        )))
        .await
        .unwrap()
}

/// A version 2 header: PROXY for a TCP-over-IPv4 client, or LOCAL.
fn header(client: Option<SocketAddr>) -> Vec<u8> {
    let mut bytes = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    match client {
        Some(SocketAddr::V4(client)) => {
            bytes.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
            bytes.extend_from_slice(&client.ip().octets());
            bytes.extend_from_slice(&[127, 0, 0, 2]);
            bytes.extend_from_slice(&client.port().to_be_bytes());
            bytes.extend_from_slice(&8443u16.to_be_bytes());
        }
        Some(SocketAddr::V6(_)) => unreachable!("the tests forward IPv4 clients"),
        None => bytes.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]),
    }
    bytes
}

/// Sends `prelude` raw, then a TLS handshake and `/healthz`; the answer, or the handshake's
/// error.
async fn healthz(server: &Server, from: Ipv4Addr, prelude: &[u8]) -> Result<String, String> {
    let mut tcp = tcp_from(server, from).await;
    tcp.write_all(prelude).await.unwrap();
    let connector = TlsConnector::from(Arc::new(tls_config(&server.pki.ca_file, None)));
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(HEALTHZ.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    // A reset instead of a clean close also ends the exchange.
    let _ = tls.read_to_end(&mut bytes).await;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Opens a connection that stays open: header, handshake, one kept-alive answer.
async fn hold(server: &Server, prelude: &[u8]) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut tcp = tcp_from(server, BALANCER).await;
    tcp.write_all(prelude).await.unwrap();
    let connector = TlsConnector::from(Arc::new(tls_config(&server.pki.ca_file, None)));
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    tls.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200");
    tls
}

#[tokio::test]
async fn the_limit_counts_the_client_the_balancer_names_not_the_balancer() {
    let server = server(1, Duration::from_secs(10)).await;
    let alice: SocketAddr = "127.0.0.77:40001".parse().unwrap();
    let bob: SocketAddr = "127.0.0.78:40002".parse().unwrap();
    // Alice's one connection is held open through the balancer.
    let _alice = hold(&server, &header(Some(alice))).await;
    // Bob comes through the same balancer: his own first connection, served.
    let served = healthz(&server, BALANCER, &header(Some(bob)))
        .await
        .unwrap();
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    // Alice's second connection is over her limit, and the refusal names her address.
    let refused = healthz(&server, BALANCER, &header(Some(alice)))
        .await
        .unwrap();
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(
        refused.contains("too many connections from 127.0.0.77: at most 1"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_local_header_is_the_balancers_own_connection() {
    let server = server(1, Duration::from_secs(10)).await;
    let _check = hold(&server, &header(None)).await;
    let refused = healthz(&server, BALANCER, &header(None)).await.unwrap();
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(
        refused.contains("too many connections from 127.0.0.2"),
        "{refused}"
    );
}

#[tokio::test]
async fn a_trusted_balancer_must_send_a_good_header() {
    let server = server(64, Duration::from_secs(10)).await;
    // Straight TLS: the ClientHello is not a header, and the connection is closed.
    let error = healthz(&server, BALANCER, b"").await.unwrap_err();
    assert!(!error.is_empty());
    // Version 1, the text header.
    let v1 = b"PROXY TCP4 127.0.0.77 127.0.0.2 40001 8443\r\n";
    healthz(&server, BALANCER, v1).await.unwrap_err();
    // A PROXY command for UDP.
    let mut udp = header(Some("127.0.0.77:40001".parse().unwrap()));
    udp[13] = 0x12;
    healthz(&server, BALANCER, &udp).await.unwrap_err();
    // More bytes announced than the server accepts.
    let mut long = header(None);
    long[14..16].copy_from_slice(&4096u16.to_be_bytes());
    healthz(&server, BALANCER, &long).await.unwrap_err();
    // The server keeps serving.
    let served = healthz(&server, BALANCER, &header(None)).await.unwrap();
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
}

#[tokio::test]
async fn a_balancer_that_sends_nothing_is_closed_at_the_handshake_timeout() {
    let server = server(64, Duration::from_millis(300)).await;
    let mut silent = tcp_from(&server, BALANCER).await;
    let mut buffer = [0u8; 1];
    // Closed by the server (end of stream or a reset), not left waiting.
    let read = silent.read(&mut buffer).await;
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}

#[tokio::test]
async fn from_any_other_address_a_header_is_not_read_and_tls_fails_on_it() {
    let server = server(64, Duration::from_secs(10)).await;
    let forged = header(Some("10.1.2.3:1234".parse().unwrap()));
    let error = healthz(&server, STRANGER, &forged).await.unwrap_err();
    assert!(!error.is_empty());
    let local = healthz(&server, STRANGER, &header(None)).await.unwrap_err();
    assert!(!local.is_empty());
    // Without a header the same address is served as always.
    let served = healthz(&server, STRANGER, b"").await.unwrap();
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
}
