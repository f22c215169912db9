//! The client's real request paths over real TLS on loopback, with certificates from the test CA.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fleetnode_fixtures::certs::TestCa;
use fleetnode_state_machine::{OutboundEvent, Report, Timestamp};
use fleetnode_wire::EventBatch;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, SupportedProtocolVersion};
use tokio::io::AsyncReadExt;

use super::{TlsError, client_config, client_config_with_bundles};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::testlog::Logs;
use crate::workers::control::testserver::TestServer;
use crate::workers::control::{Client, RequestError, heartbeat, longpoll};

const ALL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    fleetnode_tls::provider()
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap()
}

fn key(pem: &str) -> PrivateKeyDer<'static> {
    fleetnode_tls::parse_private_key(pem.as_bytes()).unwrap()
}

/// A server configuration with a certificate from `ca`, optionally requiring a client
/// certificate signed by `ca`.
fn server_config(
    ca: &TestCa,
    require_client_cert: bool,
    versions: &[&'static SupportedProtocolVersion],
) -> ServerConfig {
    let issued = ca.server().unwrap();
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .unwrap();
    let builder = if require_client_cert {
        let mut roots = RootCertStore::empty();
        roots.add_parsable_certificates(certs(ca.pem()));
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    builder
        .with_single_cert(certs(&issued.cert_pem), key(&issued.key_pem))
        .unwrap()
}

fn ca_section(dir: &Path, ca: &TestCa) -> String {
    format!("ca_file = \"{}\"\n", ca.write(dir).unwrap().display())
}

fn client_cert_section(dir: &Path, ca: &TestCa) -> String {
    let paths = ca.client("web-01").unwrap().write(dir, "web-01").unwrap();
    format!(
        "cert_file = \"{}\"\nkey_file = \"{}\"\n",
        paths.cert.display(),
        paths.key.display()
    )
}

fn client(config: &Config) -> Arc<Client> {
    Arc::new(Client::new(config, Arc::new(Metrics::new())).unwrap())
}

fn batch(seq: u64) -> EventBatch {
    EventBatch {
        stream: 7,
        events: vec![OutboundEvent {
            seq,
            at: Timestamp(seq),
            report: Report::Paused,
        }],
    }
}

fn heartbeat_message(client: &Arc<Client>) -> fleetnode_wire::AgentStatus {
    let status = crate::status::build(
        &fleetnode_state_machine::State::default(),
        7,
        Default::default(),
        &Default::default(),
        Vec::new(),
        Timestamp(1_000),
    );
    let metrics = Arc::new(Metrics::new());
    let (_tx, rx) = tokio::sync::watch::channel(Arc::new(status));
    let ctx = heartbeat::HeartbeatContext {
        client: client.clone(),
        interval: Duration::from_secs(30),
        status: rx,
        workers: crate::status::Workers::new(metrics.clone()),
        clock: crate::clock::Clock::anchored_at(1_000, Timestamp(0)),
        metrics,
    };
    heartbeat::current(&ctx)
}

/// Runs the three request paths and returns their errors (none when all worked).
async fn every_request(client: &Arc<Client>) -> Vec<RequestError> {
    let mut errors = Vec::new();
    match client.desired(None, 0).await {
        Ok(answer) => assert_eq!(answer.desired.revision.0, 1),
        Err(e) => errors.push(e),
    }
    match client.post_events(&batch(1)).await {
        Ok(ack) => assert_eq!(ack.acked_through, 1),
        Err(e) => errors.push(e),
    }
    match client.heartbeat(&heartbeat_message(client)).await {
        Ok(ack) => assert_eq!(ack.desired_revision.0, 1),
        Err(e) => errors.push(e),
    }
    errors
}

#[tokio::test]
async fn a_trusted_ca_file_lets_every_request_through() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("fleetnode test CA").unwrap();
    let server = TestServer::start_tls(server_config(&ca, false, ALL_VERSIONS)).await;
    let config = server.config_with_tls(dir.path(), &ca_section(dir.path(), &ca));
    let client = client(&config);
    let errors = every_request(&client).await;
    assert!(errors.is_empty(), "{errors:?}");
    let r = server.lock();
    assert_eq!(r.polls, vec![None]);
    assert_eq!(r.events.len(), 1);
    assert_eq!(r.heartbeats.len(), 1);
    assert!(r.tokens.contains("Bearer s3cret-token"));
}

#[tokio::test]
async fn the_system_bundle_alone_does_not_trust_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("private control plane CA").unwrap();
    // Stands in for the operating system's bundle: public roots, not the private CA. The first
    // entry does not exist, so the lookup goes on to the next one like on a real host.
    let public = TestCa::new("some public root").unwrap();
    let bundle = dir.path().join("os-bundle.pem");
    std::fs::write(&bundle, public.pem()).unwrap();
    let bundles = ["/nonexistent/ca-certificates.crt", bundle.to_str().unwrap()];

    let server = TestServer::start_tls(server_config(&ca, false, ALL_VERSIONS)).await;
    let config = server.config_with_tls(dir.path(), "");
    assert_eq!(config.tls.ca_file, None);
    let tls = client_config_with_bundles(&config.tls, &bundles).unwrap();
    let client = Arc::new(Client::with_tls(&config, tls, Arc::new(Metrics::new())).unwrap());
    let errors = every_request(&client).await;
    assert_eq!(errors.len(), 3, "{errors:?}");
    for error in &errors {
        assert!(
            matches!(error, RequestError::Tls(_)),
            "not reported as a TLS failure: {error:?}"
        );
        let text = error.to_string();
        assert!(text.contains("UnknownIssuer"), "{text}");
        assert!(text.contains("tls.ca_file"), "no advice in: {text}");
    }
    let r = server.lock();
    assert!(r.polls.is_empty() && r.batches.is_empty() && r.heartbeats.is_empty());
}

#[test]
fn without_any_bundle_the_error_names_the_places_looked_and_the_setting() {
    let error = client_config_with_bundles(&Default::default(), &["/nonexistent/a.crt"])
        .err()
        .unwrap();
    assert!(matches!(error, TlsError::NoTrustStore));
    assert!(error.to_string().contains("tls.ca_file"), "{error}");
}

#[tokio::test]
async fn mutual_tls_works_with_the_configured_client_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("fleetnode test CA").unwrap();
    let server = TestServer::start_tls(server_config(&ca, true, ALL_VERSIONS)).await;
    let tls = ca_section(dir.path(), &ca) + &client_cert_section(dir.path(), &ca);
    let config = server.config_with_tls(dir.path(), &tls);
    assert!(config.tls.cert_file.is_some() && config.tls.key.is_some());
    let errors = every_request(&client(&config)).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(server.lock().heartbeats.len(), 1);
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("fleetnode test CA").unwrap();
    let server = TestServer::start_tls(server_config(&ca, true, ALL_VERSIONS)).await;
    let config = server.config_with_tls(dir.path(), &ca_section(dir.path(), &ca));
    let errors = every_request(&client(&config)).await;
    assert_eq!(errors.len(), 3, "{errors:?}");
    for error in &errors {
        // With TLS 1.3 the server's refusal arrives after the client finished its handshake, as
        // an alert on the first read.
        assert!(
            matches!(error, RequestError::Tls(_)),
            "not reported as a TLS failure: {error:?}"
        );
        assert!(error.to_string().contains("CertificateRequired"), "{error}");
    }
    let r = server.lock();
    assert!(r.polls.is_empty() && r.batches.is_empty() && r.heartbeats.is_empty());
}

#[tokio::test]
async fn mutual_tls_refuses_a_certificate_from_another_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("fleetnode test CA").unwrap();
    let stranger = TestCa::new("someone else's CA").unwrap();
    let server = TestServer::start_tls(server_config(&ca, true, ALL_VERSIONS)).await;
    let tls = ca_section(dir.path(), &ca) + &client_cert_section(dir.path(), &stranger);
    let config = server.config_with_tls(dir.path(), &tls);
    let errors = every_request(&client(&config)).await;
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(server.lock().heartbeats.is_empty());
}

#[tokio::test]
async fn a_server_limited_to_either_version_is_reached() {
    for version in ALL_VERSIONS {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("fleetnode test CA").unwrap();
        let server = TestServer::start_tls(server_config(&ca, true, &[version])).await;
        let tls = ca_section(dir.path(), &ca) + &client_cert_section(dir.path(), &ca);
        let config = server.config_with_tls(dir.path(), &tls);
        let errors = every_request(&client(&config)).await;
        assert!(errors.is_empty(), "{version:?}: {errors:?}");
    }
}

#[tokio::test]
async fn the_client_hello_offers_tls_1_3_and_1_2_and_nothing_older() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("fleetnode test CA").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let text = format!(
        "control_plane_url = \"https://{}\"\nhost_id = \"web-01\"\ntoken_file = \"{}\"\n[tls]\n{}",
        listener.local_addr().unwrap(),
        dir.path().join("token").display(),
        ca_section(dir.path(), &ca),
    );
    std::fs::write(dir.path().join("token"), "t").unwrap();
    let config = Config::parse(&text).unwrap();
    // The configuration itself, through the public builder.
    let tls = client_config(&config.tls).unwrap();
    let client = Client::with_tls(&config, tls, Arc::new(Metrics::new())).unwrap();
    let hello = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut header = [0u8; 5];
        stream.read_exact(&mut header).await.unwrap();
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        let mut body = vec![0u8; len];
        stream.read_exact(&mut body).await.unwrap();
        (header, body)
    });
    // The server hangs up after the hello, so the request fails; what matters is the offer.
    assert!(client.post_events(&batch(1)).await.is_err());
    let (header, body) = hello.await.unwrap();
    assert_eq!(header[0], 0x16, "not a handshake record");
    assert!(
        u16::from_be_bytes([header[1], header[2]]) >= 0x0301,
        "record version below TLS 1.0"
    );
    let offered = supported_versions(&body);
    assert_eq!(offered, vec![0x0304, 0x0303], "offered {offered:04x?}");
}

/// The versions a ClientHello offers in its `supported_versions` extension.
fn supported_versions(hello: &[u8]) -> Vec<u16> {
    assert_eq!(hello[0], 1, "not a ClientHello");
    let u16_at = |at: usize| usize::from(u16::from_be_bytes([hello[at], hello[at + 1]]));
    // type (1) + length (3) + legacy_version (2) + random (32)
    let legacy_version = u16_at(4);
    assert_eq!(legacy_version, 0x0303, "legacy version is not TLS 1.2");
    let mut at = 4 + 2 + 32;
    at += 1 + usize::from(hello[at]); // session id
    at += 2 + u16_at(at); // cipher suites
    at += 1 + usize::from(hello[at]); // compression methods
    let end = at + 2 + u16_at(at);
    at += 2;
    while at < end {
        let (kind, len) = (u16_at(at), u16_at(at + 2));
        at += 4;
        if kind == 0x002b {
            let list = &hello[at + 1..at + 1 + usize::from(hello[at])];
            return list
                .chunks(2)
                .map(|pair| u16::from_be_bytes([pair[0], pair[1]]))
                .collect();
        }
        at += len;
    }
    panic!("no supported_versions extension: TLS 1.3 is not offered");
}

#[tokio::test(start_paused = true)]
async fn a_worker_reports_an_untrusted_certificate_as_such_and_keeps_retrying() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("private control plane CA").unwrap();
    let public = TestCa::new("some public root").unwrap();
    let bundle = dir.path().join("os-bundle.pem");
    std::fs::write(&bundle, public.pem()).unwrap();
    let server = TestServer::start_tls(server_config(&ca, false, ALL_VERSIONS)).await;
    let config = server.config_with_tls(dir.path(), "");
    let tls = client_config_with_bundles(&config.tls, &[bundle.to_str().unwrap()]).unwrap();
    let metrics = Arc::new(Metrics::new());
    let client = Arc::new(Client::with_tls(&config, tls, metrics.clone()).unwrap());
    let (inputs_tx, mut inputs) = tokio::sync::mpsc::channel(16);
    let cancel = tokio_util::sync::CancellationToken::new();

    let (logs, _guard) = Logs::capture();
    let task = tokio::spawn(longpoll::run(client, inputs_tx, cancel.clone()));
    tokio::time::sleep(Duration::from_secs(600)).await;

    assert!(!task.is_finished(), "the worker gave up");
    assert!(inputs.try_recv().is_err());
    let reports = logs.lines_with("TLS handshake with the control plane failed");
    // Exponential backoff capped at a minute: at least ten attempts in ten minutes.
    assert!(
        reports.len() >= 10,
        "{} reports:\n{}",
        reports.len(),
        logs.text()
    );
    for line in &reports {
        assert!(line.contains("ERROR"), "{line}");
        assert!(line.contains("UnknownIssuer"), "{line}");
        assert!(line.contains("tls.ca_file"), "{line}");
    }
    let failed = metrics.render();
    assert!(
        failed.contains("fleetnode_agent_requests_total{endpoint=\"desired\",status=\"error\"}"),
        "{failed}"
    );
    assert!(server.lock().polls.is_empty());
    cancel.cancel();
    assert_eq!(task.await.unwrap(), Ok(()));
}
