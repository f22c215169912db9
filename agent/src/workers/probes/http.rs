//! `http` probes: a GET over reqwest with a preconfigured rustls (ring) client.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetnode_tls::SYSTEM_CA_BUNDLES;
use rustls::RootCertStore;

/// Body bytes searched for `body_contains`.
const BODY_CAP: usize = 1 << 20;

/// An HTTP(S) client for probes: no redirects, no proxy, rustls with the ring provider.
#[derive(Debug, Clone)]
pub struct HttpProber {
    client: reqwest::Client,
}

impl HttpProber {
    /// A client trusting the system's CA bundle. Without a bundle, HTTPS probes fail (plain
    /// HTTP still works) and a warning says why.
    pub fn with_system_roots() -> Result<Self, String> {
        let (roots, source) = system_roots();
        match &source {
            Some(path) => tracing::debug!(bundle = %path.display(), certificates = roots.len(),
                "https probes trust the system CA bundle"),
            None => tracing::warn!(
                "no CA bundle found ($SSL_CERT_FILE, $NIX_SSL_CERT_FILE, {}); https probes will fail verification",
                SYSTEM_CA_BUNDLES.join(", ")
            ),
        }
        Self::with_roots(roots)
    }

    /// A client trusting exactly `roots`.
    pub fn with_roots(roots: RootCertStore) -> Result<Self, String> {
        let tls = rustls::ClientConfig::builder_with_provider(fleetnode_tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot configure TLS for http probes: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .user_agent(concat!("fleetnode-probe/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the http probe client: {}", chain(&e)))?;
        Ok(Self { client })
    }

    /// GETs `url`; passes on `expect_status` with `body_contains` (if any) in the body.
    pub async fn check(
        &self,
        url: &str,
        expect_status: u16,
        body_contains: Option<&str>,
        timeout: Duration,
    ) -> (bool, String) {
        match tokio::time::timeout(timeout, self.get(url, expect_status, body_contains)).await {
            Ok(result) => result,
            Err(_) => (false, format!("GET {url} timed out after {timeout:?}")),
        }
    }

    async fn get(
        &self,
        url: &str,
        expect_status: u16,
        body_contains: Option<&str>,
    ) -> (bool, String) {
        let mut response = match self.client.get(url).send().await {
            Ok(response) => response,
            Err(e) => return (false, format!("GET {url} failed: {}", chain(&e))),
        };
        let status = response.status().as_u16();
        if status != expect_status {
            return (false, format!("HTTP {status}, expected {expect_status}"));
        }
        let Some(needle) = body_contains else {
            return (true, format!("HTTP {status}"));
        };
        let mut body = Vec::new();
        while body.len() < BODY_CAP {
            match response.chunk().await {
                Ok(Some(chunk)) => body.extend_from_slice(&chunk),
                Ok(None) => break,
                Err(e) => {
                    return (
                        false,
                        format!("reading the body of {url} failed: {}", chain(&e)),
                    );
                }
            }
        }
        body.truncate(BODY_CAP);
        if String::from_utf8_lossy(&body).contains(needle) {
            (true, format!("HTTP {status}, body contains {needle:?}"))
        } else {
            (
                false,
                format!("HTTP {status}, but the body does not contain {needle:?}"),
            )
        }
    }
}

/// An error with its causes: reqwest's own message rarely says what went wrong.
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The system's CA bundle, parsed; certificates that do not parse are skipped.
fn system_roots() -> (RootCertStore, Option<PathBuf>) {
    match fleetnode_tls::system_bundle(&SYSTEM_CA_BUNDLES) {
        Some(path) => match load_bundle(&path) {
            Some(roots) => (roots, Some(path)),
            None => (RootCertStore::empty(), None),
        },
        None => (RootCertStore::empty(), None),
    }
}

pub(super) fn load_bundle(path: &Path) -> Option<RootCertStore> {
    fleetnode_tls::read_roots(path).ok()
}
