//! TLS for the control-plane client: rustls with the ring provider, TLS 1.2 or newer, always
//! verified.
//!
//! The trust anchors are the CA file from `tls.ca_file` when set, otherwise the operating
//! system's CA bundle (the first of [`SYSTEM_CA_BUNDLES`] that exists). No built-in root list is
//! compiled in. A client certificate and key (`tls.cert_file`, `tls.key_file` or
//! `tls.key_credential`) enable mutual TLS.

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::TlsConfig;
use crate::secrets;

/// CA bundles tried, in order, when `tls.ca_file` is not set (NixOS and Debian-likes first,
/// then Fedora-likes and the BSD-style path).
pub const SYSTEM_CA_BUNDLES: [&str; 3] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

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

fn file_error(key: &'static str, path: &Path, message: impl Into<String>) -> TlsError {
    TlsError::File {
        key,
        path: path.to_owned(),
        message: message.into(),
    }
}

fn read_certs(key: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = std::fs::read(path).map_err(|e| file_error(key, path, e.to_string()))?;
    let certs = rustls_pemfile::certs(&mut BufReader::new(bytes.as_slice()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(key, path, format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(key, path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// The trust anchors: `ca_file` if set, else the first of `bundles` that exists.
fn roots(ca_file: Option<&Path>, bundles: &[&str]) -> Result<RootCertStore, TlsError> {
    let (key, path) = match ca_file {
        Some(path) => ("tls.ca_file", path.to_owned()),
        None => {
            let found = bundles
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .ok_or(TlsError::NoTrustStore)?;
            ("system CA bundle", found)
        }
    };
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(read_certs(key, &path)?);
    if added == 0 {
        return Err(file_error(key, &path, "holds no usable CA certificate"));
    }
    Ok(store)
}

fn client_key(tls: &TlsConfig) -> Result<Option<PrivateKeyDer<'static>>, TlsError> {
    let Some(source) = &tls.key else {
        return Ok(None);
    };
    let secret = secrets::read(source).map_err(|e| TlsError::Key(e.to_string()))?;
    let key = rustls_pemfile::private_key(&mut BufReader::new(secret.expose().as_bytes()))
        .map_err(|e| TlsError::Key(format!("not PEM: {e}")))?
        .ok_or_else(|| TlsError::Key("holds no PEM private key".into()))?;
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
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
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
