//! Reading secrets (the host token, the TLS client key) from a file or a systemd credential.
//!
//! Secrets never come from argv or the environment, and never reach a log line: they are held
//! as [`Secret`], whose `Debug` and `Display` redact the value.

use std::path::PathBuf;

use fleetnode_wire::Secret;

use crate::config::SecretSource;

/// Largest secret file read (a PEM key with a chain fits easily).
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// A credential was named but the agent does not run with `LoadCredential=`.
    #[error(
        "credential {0:?} is configured but $CREDENTIALS_DIRECTORY is not set (run the agent as the systemd service, or use a *_file option)"
    )]
    NoCredentialsDirectory(String),
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The file is empty or too large.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Where a secret source points.
pub fn path_of(source: &SecretSource) -> Result<PathBuf, SecretError> {
    match source {
        SecretSource::File(path) => Ok(path.clone()),
        SecretSource::Credential(name) => std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|dir| PathBuf::from(dir).join(name))
            .ok_or_else(|| SecretError::NoCredentialsDirectory(name.clone())),
    }
}

/// Reads a secret (surrounding whitespace removed).
pub fn read(source: &SecretSource) -> Result<Secret, SecretError> {
    let path = path_of(source)?;
    let read_error = |e: std::io::Error| SecretError::Read {
        path: path.clone(),
        message: e.to_string(),
    };
    let len = std::fs::metadata(&path).map_err(read_error)?.len();
    if len > MAX_SECRET_BYTES {
        return Err(SecretError::Invalid {
            path,
            message: format!("larger than {MAX_SECRET_BYTES} bytes"),
        });
    }
    let text = std::fs::read_to_string(&path).map_err(read_error)?;
    let secret = Secret::new(&text);
    if secret.is_empty() {
        return Err(SecretError::Invalid {
            path,
            message: "is empty".into(),
        });
    }
    Ok(secret)
}
