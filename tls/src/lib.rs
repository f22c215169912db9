//! The TLS pieces the agent (its control-plane client and its https probes) and the control
//! plane (its server and operator CLI) share, so that they trust the same files the same way:
//! the crypto provider (rustls with ring), where the system's CA bundle is, and reading
//! certificates, trust anchors and private keys from PEM.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Environment variables naming a CA bundle, looked at first (as OpenSSL and Nix do).
pub const CA_BUNDLE_VARIABLES: [&str; 2] = ["SSL_CERT_FILE", "NIX_SSL_CERT_FILE"];
/// The system's CA bundle, the first of these that exists: NixOS and Debian-likes, Fedora-likes
/// (two spellings), then the BSD-style path.
pub const SYSTEM_CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/certs/ca-bundle.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
];

/// A PEM file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {detail}", path.display())]
pub struct PemError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub detail: String,
}

/// The crypto provider every fleetnode TLS configuration uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system's CA bundle: the file a variable of [`CA_BUNDLE_VARIABLES`] names, else the first
/// of `bundles` that is a file. `None` when there is none.
pub fn system_bundle(bundles: &[&str]) -> Option<PathBuf> {
    bundle_from(|name| std::env::var_os(name), bundles)
}

/// The first of `bundles` that is a file, whatever the environment says: for a service whose
/// trust is configured, not inherited.
pub fn first_bundle(bundles: &[&str]) -> Option<PathBuf> {
    bundle_from(|_| None, bundles)
}

/// [`system_bundle`] with the environment read through `variable`.
fn bundle_from(
    variable: impl Fn(&str) -> Option<std::ffi::OsString>,
    bundles: &[&str],
) -> Option<PathBuf> {
    CA_BUNDLE_VARIABLES
        .iter()
        .filter_map(|name| variable(name))
        .filter(|value| !value.is_empty())
        .map(PathBuf::from)
        .chain(bundles.iter().map(PathBuf::from))
        .find(|path| path.is_file())
}

/// Every certificate of a PEM file, in order; at least one.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let fail = |detail: String| PemError {
        path: path.to_owned(),
        detail,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail("holds no PEM certificate".to_owned()));
    }
    Ok(certs)
}

/// The trust anchors of a PEM file. Certificates that are not usable as anchors are skipped;
/// a file with none at all is an error.
pub fn read_roots(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    let (added, _skipped) = roots.add_parsable_certificates(read_certs(path)?);
    if added == 0 {
        return Err(PemError {
            path: path.to_owned(),
            detail: "holds no usable CA certificate".to_owned(),
        });
    }
    Ok(roots)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| PemError {
        path: path.to_owned(),
        detail: format!("{e}; expected a PEM private key (PKCS#8, PKCS#1 or SEC1)"),
    })
}

/// A private key from PEM text held in memory (a secret that never touches a second file);
/// the error says what is wrong without repeating the text.
pub fn parse_private_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("{e}; expected a PEM private key (PKCS#8, PKCS#1 or SEC1)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_files(dir: &Path) -> (PathBuf, PathBuf) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["ca.test".to_owned()]).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        (cert_path, key_path)
    }

    #[test]
    fn certificates_roots_and_keys_are_read_from_pem() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_files(dir.path());
        assert_eq!(read_certs(&cert).unwrap().len(), 1);
        assert_eq!(read_roots(&cert).unwrap().len(), 1);
        read_private_key(&key).unwrap();
        parse_private_key(&std::fs::read(&key).unwrap()).unwrap();
    }

    #[test]
    fn unusable_files_say_which_and_why() {
        let dir = tempfile::tempdir().unwrap();
        let (_, key) = pem_files(dir.path());
        let err = read_certs(&key).unwrap_err();
        assert!(
            err.to_string().contains("holds no PEM certificate"),
            "{err}"
        );
        assert!(err.to_string().contains("ca.key"), "{err}");
        let missing = dir.path().join("missing.pem");
        assert!(
            read_certs(&missing)
                .unwrap_err()
                .to_string()
                .contains("missing.pem")
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "-----BEGIN CERTIFICATE-----\n@@@\n").unwrap();
        assert!(read_roots(&garbage).is_err());
        assert!(read_private_key(&garbage).is_err());
        let err = parse_private_key(b"secret text, not PEM").unwrap_err();
        assert!(!err.contains("secret text"), "{err}");
    }

    #[test]
    fn the_system_bundle_is_the_first_that_exists() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, _) = pem_files(dir.path());
        let other = dir.path().join("other.pem");
        std::fs::copy(&cert, &other).unwrap();
        let absent = dir.path().join("absent.pem");
        let list = [absent.to_str().unwrap(), cert.to_str().unwrap()];
        let none = |_: &str| None;
        assert_eq!(bundle_from(none, &list), Some(cert.clone()));
        assert_eq!(bundle_from(none, &[absent.to_str().unwrap()]), None);
        // A variable naming a bundle wins; one naming nothing (or empty) is passed over.
        let nix = |name: &str| (name == "NIX_SSL_CERT_FILE").then(|| other.clone().into());
        assert_eq!(bundle_from(nix, &list), Some(other.clone()));
        let stale = |name: &str| (name == "SSL_CERT_FILE").then(|| absent.clone().into());
        assert_eq!(bundle_from(stale, &list), Some(cert.clone()));
        let empty = |_: &str| Some(std::ffi::OsString::new());
        assert_eq!(bundle_from(empty, &list), Some(cert.clone()));
        assert_eq!(first_bundle(&list), Some(cert));
    }
}
