//! A small HTTPS server for the harness's stand-ins of a control plane (the refusing proxy, the
//! conformance test's scripted server): TLS by rustls, HTTP/1.1 by hyper, routes by an axum
//! `Router`.
//!
//! HTTP/1.1 only, as the real control plane serves: Cargo unifies features across the
//! workspace, so a harness that served HTTP/2 would put an HTTP/2 stack into every binary that
//! `cargo build --workspace` makes, the shipped agent's included.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

/// Serves `router` over TLS on `listener` (non-blocking) until the runtime stops. Call it
/// inside a Tokio runtime: the listener registers with it, and the server runs on it.
pub fn spawn(
    listener: std::net::TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: Router,
) -> std::io::Result<()> {
    let listener = TcpListener::from_std(listener)?;
    let acceptor = TlsAcceptor::from(tls);
    tokio::spawn(accept(listener, acceptor, router));
    Ok(())
}

async fn accept(listener: TcpListener, acceptor: TlsAcceptor, router: Router) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of descriptors, or a connection reset before it was taken: wait a little
                // rather than spin, then take the next one.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            // A failed handshake or a broken connection concerns that client alone.
            let Ok(stream) = acceptor.accept(stream).await else {
                return;
            };
            let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                let mut router = router.clone();
                async move { router.call(request.map(Body::new)).await }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
