//! TLS for the control-plane client: rustls with the ring provider, TLS 1.2 or newer, always
//! verified.
//!
//! The trust anchors are the CA file from `tls.ca_file` when set, otherwise the operating
//! system's CA bundle (the first of [`SYSTEM_CA_BUNDLES`] that exists; the environment is not
//! consulted, so the service's trust is what its configuration says). No built-in root list is
//! compiled in. A client certificate and key (`tls.cert_file`, `tls.key_file` or
//! `tls.key_credential`) enable mutual TLS.

use std::path::{Path, PathBuf};

use fleetnode_tls::PemError;
pub use fleetnode_tls::SYSTEM_CA_BUNDLES;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::TlsConfig;
use crate::secrets;

/// Why the TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("{key}: {path}: {message}")]
    File {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No trust anchors are available.
    #[error(
        "no CA bundle found (looked for {}); set tls.ca_file to the control plane's CA certificate",
        SYSTEM_CA_BUNDLES.join(", ")
    )]
    NoTrustStore,
    /// The client key could not be read.
    #[error("tls client key: {0}")]
    Key(String),
    /// rustls refused the settings.
    #[error("TLS settings refused: {0}")]
    Rustls(#[from] rustls::Error),
}

fn file_error(key: &'static str, error: PemError) -> TlsError {
    TlsError::File {
        key,
        path: error.path,
        message: error.detail,
    }
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    fleetnode_tls::read_certs(path).map_err(|e| file_error(key, e))
}

/// The trust anchors: `ca_file` if set, else the system's bundle among `bundles`.
fn roots(ca_file: Option<&Path>, bundles: &[&str]) -> Result<RootCertStore, TlsError> {
    let (key, path) = match ca_file {
        Some(path) => ("tls.ca_file", path.to_owned()),
        None => (
            "system CA bundle",
            fleetnode_tls::first_bundle(bundles).ok_or(TlsError::NoTrustStore)?,
        ),
    };
    fleetnode_tls::read_roots(&path).map_err(|e| file_error(key, e))
}

fn client_key(tls: &TlsConfig) -> Result<Option<PrivateKeyDer<'static>>, TlsError> {
    let Some(source) = &tls.key else {
        return Ok(None);
    };
    let secret = secrets::read(source).map_err(|e| TlsError::Key(e.to_string()))?;
    let key =
        fleetnode_tls::parse_private_key(secret.expose().as_bytes()).map_err(TlsError::Key)?;
    Ok(Some(key))
}

/// Builds the rustls client configuration from the validated `[tls]` settings.
pub fn client_config(tls: &TlsConfig) -> Result<ClientConfig, TlsError> {
    client_config_with_bundles(tls, &SYSTEM_CA_BUNDLES)
}

/// [`client_config`] with another list of system bundles to look for (tests stand in for the
/// operating system's bundle with their own file).
pub(crate) fn client_config_with_bundles(
    tls: &TlsConfig,
    bundles: &[&str],
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(fleetnode_tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(roots(tls.ca_file.as_deref(), bundles)?);
    let config = match (&tls.cert_file, client_key(tls)?) {
        (Some(cert), Some(key)) => {
            builder.with_client_auth_cert(read_certs("tls.cert_file", cert)?, key)?
        }
        (None, None) | (Some(_), None) | (None, Some(_)) => builder.with_no_client_auth(),
    };
    Ok(config)
}

#[cfg(test)]
mod tests;
