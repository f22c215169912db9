//! The operator API client: reqwest over rustls, with errors that say what to do.

use std::error::Error as _;
use std::time::Duration;

use fleetnode_wire::{ErrorBody, ErrorCode, PROTOCOL_HEADER, Secret, Validate, protocol_version};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;

use super::Connection;
use crate::tls::client_config;

/// How long one operator request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed CLI command.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The command's own input is wrong (a file, an option).
    #[error("{0}")]
    Usage(String),
    /// The server could not be reached.
    #[error("cannot reach the control plane at {url}: {cause}; {hint}")]
    Unreachable {
        /// The URL.
        url: String,
        /// The underlying error chain.
        cause: String,
        /// What to check.
        hint: &'static str,
    },
    /// The server refused the admin token.
    #[error(
        "the admin token was refused by {url}; check --admin-token-file (or FLEETNODE_ADMIN_TOKEN_FILE) holds the server's admin token ({message})"
    )]
    AdminTokenRefused {
        /// The URL.
        url: String,
        /// The server's explanation.
        message: String,
    },
    /// The server answered with an error.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        /// HTTP status.
        status: u16,
        /// Error code.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// A watched rollout ended otherwise than completed.
    #[error("{0}")]
    Ended(String),
    /// The answer was not what the API promises.
    #[error(
        "unexpected answer from {url}: {detail}; is that a fleetnode control plane of a compatible version?"
    )]
    BadAnswer {
        /// The URL.
        url: String,
        /// What was wrong.
        detail: String,
    },
}

/// A client of one control plane.
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: Secret,
}

impl Client {
    /// A client for the connection options (reads the admin token file and the CA file).
    pub fn new(connection: &Connection) -> Result<Self, CliError> {
        let text = std::fs::read_to_string(&connection.admin_token_file).map_err(|e| {
            CliError::Usage(format!(
                "cannot read the admin token file {}: {e}",
                connection.admin_token_file.display()
            ))
        })?;
        let token = Secret::new(&text);
        if token.is_empty() {
            return Err(CliError::Usage(format!(
                "the admin token file {} is empty",
                connection.admin_token_file.display()
            )));
        }
        let tls = client_config(connection.ca_file.as_deref())
            .map_err(|e| CliError::Usage(e.to_string()))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|e| CliError::Usage(format!("cannot build the HTTP client: {e}")))?;
        let base = connection.url.trim_end_matches('/').to_owned();
        if !(base.starts_with("https://") || base.starts_with("http://")) {
            return Err(CliError::Usage(format!(
                "--url {base:?} must start with https:// (or http:// for a plain-HTTP demo server)"
            )));
        }
        Ok(Self { http, base, token })
    }

    /// Sends a request and decodes a successful answer.
    pub async fn call<T: DeserializeOwned + Validate>(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, CliError> {
        let bytes = self.send(method, path, body).await?;
        let bad = |detail: String| CliError::BadAnswer {
            url: self.base.clone(),
            detail,
        };
        // Not `wire::decode`: its 1 MiB body cap is for untrusted peers, and the host list of a
        // fleet of a few thousand hosts is larger. The operator chose this server; its answer
        // is still parsed into validated types and checked against every other cap.
        let value: T = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        value.validate().map_err(|e| bad(e.to_string()))?;
        Ok(value)
    }

    /// Sends a request; returns the body of a successful answer.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Vec<u8>, CliError> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .http
            .request(method, &url)
            .bearer_auth(self.token.expose())
            .header(PROTOCOL_HEADER, protocol_version());
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| self.unreachable(&e))?
            .to_vec();
        if status.is_success() {
            return Ok(bytes);
        }
        Err(self.api_error(status, &bytes))
    }

    fn unreachable(&self, error: &reqwest::Error) -> CliError {
        let cause = chain(error);
        let hint = if cause.contains("certificate") || cause.contains("Certificate") {
            "the server's certificate was not accepted: pass --ca-file with the CA that signed it, and use the host name the certificate names in --url"
        } else if error.is_timeout() {
            "the server did not answer in time; check that it is running and not overloaded"
        } else {
            "check --url (or FLEETNODE_CP_URL) and that `fleetnode-cp serve` is running there"
        };
        CliError::Unreachable {
            url: self.base.clone(),
            cause,
            hint,
        }
    }

    fn api_error(&self, status: StatusCode, bytes: &[u8]) -> CliError {
        let body: Option<ErrorBody> = serde_json::from_slice(bytes).ok();
        let message = body.as_ref().map_or_else(
            || String::from_utf8_lossy(bytes).chars().take(300).collect(),
            |b| b.message.clone(),
        );
        if status == StatusCode::UNAUTHORIZED {
            return CliError::AdminTokenRefused {
                url: self.base.clone(),
                message,
            };
        }
        let code = body.map_or_else(
            || status.canonical_reason().unwrap_or("error").to_owned(),
            |b| code_name(b.code),
        );
        CliError::Api {
            status: status.as_u16(),
            code,
            message,
        }
    }
}

fn code_name(code: ErrorCode) -> String {
    serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{code:?}"))
}

/// An error and its causes, joined.
fn chain(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}
