//! Talking to the control plane: the HTTP client and the three workers that use it (long-poll
//! of the desired state, outbound event drainer, heartbeat).
//!
//! Every request carries `fleetnode-protocol: 1.0` and the host's bearer token, has a timeout,
//! and reads at most [`fleetnode_wire::MAX_BODY_BYTES`] of the response, incrementally. Every
//! answer is parsed with [`fleetnode_wire::decode`] into validated types.

mod answer;
pub mod drainer;
pub mod endpoints;
pub mod heartbeat;
pub mod longpoll;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::Revision;
use fleetnode_wire::{
    AgentStatus, DesiredAnswer, ErrorBody, EventAck, EventBatch, HeartbeatAck, HostId,
    PROTOCOL_HEADER, RetryClass, Secret, Validate, classify, decode, protocol_version,
};
use reqwest::header::{AUTHORIZATION, HeaderValue, RETRY_AFTER};
use serde::de::DeserializeOwned;

use answer::{check_answer_version, network_error, read_capped};
use endpoints::{Endpoints, InUse};

use crate::backoff::Backoff;
use crate::config::Config;
use crate::metrics::Metrics;

/// How long the control plane may hold a long-poll.
pub const LONGPOLL_WAIT_SECS: u64 = 30;
/// Timeout of a long-poll request: the wait plus room for the answer.
pub const LONGPOLL_TIMEOUT: Duration = Duration::from_secs(45);
/// Timeout of an event batch or heartbeat request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for establishing a connection (TCP and TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A request that did not succeed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// No answer: connection refused, timeout, a body cut short.
    #[error("{0}")]
    Network(String),
    /// The TLS handshake failed: a certificate was refused by either side, or the peers share
    /// no protocol version or cipher suite. It needs a person: retrying alone rarely fixes it.
    #[error(
        "{0} (TLS with the control plane failed: check that tls.ca_file holds the CA that signs the control plane's certificate and, under mutual TLS, that tls.cert_file is signed by the CA the control plane trusts)"
    )]
    Tls(String),
    /// An error status.
    #[error("HTTP {status}{}", body.as_ref().map(|b| format!(" ({:?}): {}", b.code, b.message)).unwrap_or_default())]
    Status {
        /// The status code.
        status: u16,
        /// The error body, when the server sent a valid one.
        body: Option<ErrorBody>,
        /// How long the server asked us to wait.
        retry_after: Option<Duration>,
    },
    /// A success status with a body that is not the expected message.
    #[error("bad answer: {0}")]
    BadAnswer(String),
    /// The answer carried the version header of another major version (or one that is not
    /// `<major>.<minor>`): it is not read.
    #[error("the control plane answered in another protocol version: {0}")]
    OtherVersion(String),
}

impl RequestError {
    /// How to treat this failure: [`fleetnode_wire::classify`], the one rule for both sides.
    pub fn class(&self) -> RetryClass {
        match self {
            Self::Network(_) | Self::Tls(_) | Self::BadAnswer(_) => RetryClass::Transient,
            Self::OtherVersion(_) => RetryClass::Version,
            Self::Status { status, body, .. } => classify(*status, body.as_ref().map(|b| b.code)),
        }
    }

    /// True when the control plane refused the request's content itself
    /// ([`RetryClass::Content`]): only then is a batch split and an event dead-lettered. Any
    /// other refusal (a proxy's 404 or 413, a retired stream's 409, ...) is about the path or
    /// the agent, not the event, and dropping events for it would lose reports.
    pub fn refuses_the_content(&self) -> bool {
        self.class() == RetryClass::Content
    }

    /// The error body's `seq`: for `resync_required`, the last seq the control plane holds.
    pub fn body_seq(&self) -> Option<u64> {
        match self {
            Self::Status { body, .. } => body.as_ref().and_then(|b| b.seq),
            Self::Network(_) | Self::Tls(_) | Self::BadAnswer(_) | Self::OtherVersion(_) => None,
        }
    }

    /// The wait the server asked for, if any.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            Self::Network(_) | Self::Tls(_) | Self::BadAnswer(_) | Self::OtherVersion(_) => None,
        }
    }

    /// A short code for a dead letter: the error body's code, or `http-<status>`.
    pub fn code(&self) -> String {
        match self {
            Self::Status {
                body: Some(body), ..
            } => body.code.as_str().to_owned(),
            Self::Status { status, .. } => format!("http-{status}"),
            Self::Network(_) => "network".into(),
            Self::Tls(_) => "tls".into(),
            Self::BadAnswer(_) => "bad-answer".into(),
            Self::OtherVersion(_) => "protocol-version".into(),
        }
    }
}

/// The longest wait a `Retry-After` (or `retry_after_secs`) can impose: the workers' own backoff
/// cap, so one answer never holds events longer than a down control plane would. A
/// misconfigured proxy asking for a day must not park reporting for a day.
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// The wait a failed answer asks for: the `Retry-After` header when it is delta-seconds, else
/// the error body's `retry_after_secs`; capped at [`RETRY_AFTER_CAP`]. An HTTP-date (or any
/// other text) in the header is ignored: the agent's clock is not trusted to agree with the
/// server's.
pub fn requested_wait(header: Option<&str>, body_secs: Option<u64>) -> Option<Duration> {
    header
        .and_then(|value| value.trim().parse::<u64>().ok())
        .or(body_secs)
        .map(|secs| Duration::from_secs(secs).min(RETRY_AFTER_CAP))
}

/// How a worker retries a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// How long to wait before the next attempt.
    pub delay: Duration,
    /// What the failure means, for the log line.
    pub advice: &'static str,
    /// Whether the failure needs a person (logged as an error) rather than patience.
    pub needs_a_person: bool,
}

/// How to retry after `error`: transient failures back off exponentially (honouring the
/// server's `Retry-After`), TLS failures too but need a person, and credential, version and
/// other refusals are retried at the slowest pace. Each worker logs the outcome itself, under
/// its own target.
pub fn retry_plan(error: &RequestError, backoff: &mut Backoff) -> Retry {
    let (delay, advice, needs_a_person) = match (error, error.class()) {
        (RequestError::Tls(_), _) => (
            backoff.next_delay(),
            "TLS handshake with the control plane failed; retrying",
            true,
        ),
        (_, RetryClass::Transient) => (
            backoff
                .next_delay()
                .max(error.retry_after().unwrap_or_default()),
            "control plane unavailable; retrying",
            false,
        ),
        (_, RetryClass::Credentials) => (
            backoff.cap(),
            "the control plane refused this host's credentials; check the host token or client certificate",
            true,
        ),
        (_, RetryClass::Version) => (
            backoff.cap(),
            "the control plane speaks another protocol major version; upgrade the agent or the control plane",
            true,
        ),
        (_, RetryClass::Resync) => (
            backoff.next_delay(),
            "the control plane asked for a snapshot; retrying",
            false,
        ),
        (_, RetryClass::Content | RetryClass::Permanent) => (
            backoff.cap(),
            "the control plane refused the request; retrying at the slowest pace",
            true,
        ),
    };
    Retry {
        delay,
        advice,
        needs_a_person,
    }
}

/// The control-plane client of one host.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    endpoints: Arc<Endpoints>,
    host: HostId,
    token: Option<Secret>,
    metrics: Arc<Metrics>,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// TLS settings.
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    /// The host token.
    #[error("host token: {0}")]
    Token(#[from] crate::secrets::SecretError),
    /// reqwest refused the settings.
    #[error("HTTP client: {0}")]
    Http(String),
}

impl Client {
    /// Builds the client from the configuration (reads the token and TLS files now).
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Result<Self, ClientError> {
        Self::with_tls(config, tls::client_config(&config.tls)?, metrics)
    }

    /// Builds the client with a TLS configuration already made from `config.tls`.
    pub(crate) fn with_tls(
        config: &Config,
        tls: rustls::ClientConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ClientError> {
        let token = config
            .token
            .as_ref()
            .map(crate::secrets::read)
            .transpose()?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("fleetnode-agent/", env!("CARGO_PKG_VERSION")))
            .pool_max_idle_per_host(2)
            .build()
            .map_err(|e| ClientError::Http(e.to_string()))?;
        Ok(Self {
            http,
            endpoints: Arc::new(Endpoints::new(&config.control_plane, metrics.clone())),
            host: config.host_id.clone(),
            token,
            metrics,
        })
    }

    /// Counts an answer of the control plane that breaks the protocol (the caller logs it).
    pub fn protocol_error(&self, kind: &'static str) {
        self.metrics
            .protocol_errors
            .get_or_create(&[("kind", kind.to_owned())])
            .inc();
    }

    /// The address in use, and the URL of `what` there.
    fn url(&self, what: &str) -> (InUse, String) {
        let (in_use, base) = self.endpoints.current();
        (
            in_use,
            format!("{base}/v1/agent/hosts/{}/{what}", self.host),
        )
    }

    /// `GET desired?known=<rev>&wait=<secs>`.
    pub async fn desired(
        &self,
        known: Option<Revision>,
        wait_secs: u64,
    ) -> Result<DesiredAnswer, RequestError> {
        let (in_use, url) = self.url("desired");
        let mut request = self.http.get(url);
        if let Some(known) = known {
            request = request.query(&[("known", known.0)]);
        }
        let request = request
            .query(&[("wait", wait_secs)])
            .timeout(LONGPOLL_TIMEOUT.max(Duration::from_secs(wait_secs + 15)));
        self.send(in_use, "desired", request).await
    }

    /// `POST events`.
    pub async fn post_events(&self, batch: &EventBatch) -> Result<EventAck, RequestError> {
        let (in_use, url) = self.url("events");
        let request = self.http.post(url).json(batch).timeout(REQUEST_TIMEOUT);
        self.send(in_use, "events", request).await
    }

    /// `POST heartbeat`.
    pub async fn heartbeat(&self, heartbeat: &AgentStatus) -> Result<HeartbeatAck, RequestError> {
        let (in_use, url) = self.url("heartbeat");
        let request = self.http.post(url).json(heartbeat).timeout(REQUEST_TIMEOUT);
        self.send(in_use, "heartbeat", request).await
    }

    /// Sends `request` to the address `in_use`; a failure that says the address did not
    /// answer moves the client to the next address ([`Endpoints::failed`]).
    async fn send<T: DeserializeOwned + Validate>(
        &self,
        in_use: InUse,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, RequestError> {
        let result = self.exchange(endpoint, request).await;
        if let Err(error) = &result {
            self.endpoints.failed(in_use, error);
        }
        result
    }

    async fn exchange<T: DeserializeOwned + Validate>(
        &self,
        endpoint: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, RequestError> {
        let mut request = request.header(PROTOCOL_HEADER, protocol_version());
        if let Some(token) = &self.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                .map_err(|_| RequestError::Network("the host token is not valid text".into()))?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => {
                self.metrics.request(endpoint, None);
                return Err(network_error(&e));
            }
        };
        let status = response.status().as_u16();
        self.metrics.request(endpoint, Some(status));
        check_answer_version(response.headers())?;
        let header = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = read_capped(response).await?;
        if (200..300).contains(&status) {
            return decode::<T>(&body).map_err(|e| RequestError::BadAnswer(e.to_string()));
        }
        let body = decode::<ErrorBody>(&body).ok();
        let retry_after = requested_wait(
            header.as_deref(),
            body.as_ref().and_then(|b| b.retry_after_secs),
        );
        Err(RequestError::Status {
            status,
            body,
            retry_after,
        })
    }
}

#[cfg(test)]
pub(crate) mod testserver;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{RETRY_AFTER_CAP, requested_wait};

    #[test]
    fn the_header_wins_over_the_body_and_dates_are_ignored() {
        let secs = Duration::from_secs;
        assert_eq!(requested_wait(Some("5"), Some(40)), Some(secs(5)));
        assert_eq!(requested_wait(Some(" 7 "), None), Some(secs(7)));
        assert_eq!(requested_wait(None, Some(40)), Some(secs(40)));
        // An HTTP-date is not honoured; the body's value stands in.
        let date = "Wed, 21 Oct 2026 07:28:00 GMT";
        assert_eq!(requested_wait(Some(date), Some(20)), Some(secs(20)));
        assert_eq!(requested_wait(Some(date), None), None);
        assert_eq!(requested_wait(None, None), None);
        assert_eq!(requested_wait(Some("86400"), None), Some(RETRY_AFTER_CAP));
        assert_eq!(requested_wait(None, Some(86_400)), Some(RETRY_AFTER_CAP));
        assert_eq!(RETRY_AFTER_CAP, secs(60));
    }
}
