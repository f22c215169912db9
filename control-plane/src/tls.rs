//! TLS configurations (rustls with the ring provider) for the server and the operator CLI.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use fleetnode_tls::{PemError, SYSTEM_CA_BUNDLES};
use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{what} {path}: {detail}")]
    File {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// rustls refused the combination.
    #[error("TLS configuration: {0}")]
    Config(String),
    /// No CA bundle to verify the server with.
    #[error(
        "no CA bundle found (looked at $SSL_CERT_FILE, $NIX_SSL_CERT_FILE and {}); pass --ca-file with the CA that signed the server's certificate",
        SYSTEM_CA_BUNDLES.join(", ")
    )]
    NoCaBundle,
}

/// The crypto provider everything uses.
pub fn provider() -> Arc<CryptoProvider> {
    fleetnode_tls::provider()
}

/// The server's TLS configuration. With `client_ca`, clients may present a certificate, which
/// must then chain to that CA; whether one is required is decided per route (the agent API
/// requires one, the operator API does not).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<rustls::ServerConfig, TlsError> {
    let chain = read_certs("server certificate", cert)?;
    let key: PrivateKeyDer<'static> =
        fleetnode_tls::read_private_key(key).map_err(|e| file_error("server private key", e))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match client_ca {
        Some(path) => {
            let roots = root_store("client CA", path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| TlsError::Config(format!("client CA {}: {e}", path.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Config(format!("server certificate and key: {e}")))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The CLI's TLS configuration: trusts `ca_file`, else `$SSL_CERT_FILE`, else the system
/// bundle.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, TlsError> {
    let bundle = match ca_file {
        Some(path) => path.to_owned(),
        None => fleetnode_tls::system_bundle(&SYSTEM_CA_BUNDLES).ok_or(TlsError::NoCaBundle)?,
    };
    let roots = root_store("CA file", &bundle)?;
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// True when the first certificate of a verified chain names `host` as a DNS name.
pub fn certificate_names(der: &[u8], host: &str) -> bool {
    let cert = CertificateDer::from(der);
    let Ok(end_entity) = webpki::EndEntityCert::try_from(&cert) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(host) else {
        return false;
    };
    end_entity.verify_is_valid_for_subject_name(&name).is_ok()
}

fn file_error(what: &'static str, error: PemError) -> TlsError {
    TlsError::File {
        what,
        path: error.path,
        detail: error.detail,
    }
}

fn read_certs(what: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    fleetnode_tls::read_certs(path).map_err(|e| file_error(what, e))
}

fn root_store(what: &'static str, path: &Path) -> Result<RootCertStore, TlsError> {
    fleetnode_tls::read_roots(path).map_err(|e| file_error(what, e))
}
