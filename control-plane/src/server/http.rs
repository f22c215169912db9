//! HTTP plumbing: error responses, bounded body reading, bearer tokens, and the middleware
//! every route shares (protocol version, readiness, metrics).

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use fleetnode_wire::{
    ErrorBody, ErrorCode, MAX_BODY_BYTES, PROTOCOL_HEADER, Validate, VersionError, WireError,
    check_version, protocol_version,
};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use super::app::App;
use super::body::BodyError;

/// How much of an oversized body is read (and dropped) before answering 413, so that a client
/// still sending gets the answer instead of a reset connection.
const DRAIN_LIMIT: usize = 8 * MAX_BODY_BYTES;

/// An error answer: a [`ErrorBody`] with its code's status.
#[derive(Debug, Clone)]
pub struct ApiError(pub ErrorBody);

impl ApiError {
    /// An error with a code and a message saying what was wrong and what to do.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self(ErrorBody::new(code, message))
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut body = ErrorBody::new(ErrorCode::Unavailable, message);
        body.retry_after_secs = Some(retry_after_secs);
        Self(body)
    }

    /// 429 with `Retry-After`.
    pub fn rate_limited(message: impl Into<String>, retry_after_secs: u64) -> Self {
        let mut body = ErrorBody::new(ErrorCode::RateLimited, message);
        body.retry_after_secs = Some(retry_after_secs);
        Self(body)
    }

    /// 500, for a failed store operation; the detail goes to the log, not to the client.
    pub fn internal(context: &str, error: &dyn std::fmt::Display) -> Self {
        tracing::error!(%error, "{context}");
        Self::new(
            ErrorCode::Internal,
            format!("{context}; the server log has the details"),
        )
    }
}

impl From<WireError> for ApiError {
    fn from(error: WireError) -> Self {
        Self::new(error.code(), error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let retry_after = self.0.retry_after_secs;
        let mut response = (status, json_body(&self.0)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// A JSON answer encoded with the wire encoder.
pub struct WireJson<T>(pub T);

impl<T: serde::Serialize> IntoResponse for WireJson<T> {
    fn into_response(self) -> Response {
        json_body(&self.0).into_response()
    }
}

fn json_body<T: serde::Serialize>(value: &T) -> ([(header::HeaderName, HeaderValue); 1], Vec<u8>) {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        fleetnode_wire::encode(value),
    )
}

/// Reads a body of at most [`MAX_BODY_BYTES`] and decodes it as a wire message.
pub async fn decode_body<T: DeserializeOwned + Validate>(body: Body) -> Result<T, ApiError> {
    let bytes = read_body(body).await?;
    Ok(fleetnode_wire::decode(&bytes)?)
}

async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    let mut body = body;
    let mut kept: Vec<u8> = Vec::new();
    let mut total = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(body_error)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total = total.saturating_add(data.len());
        if total <= MAX_BODY_BYTES {
            kept.extend_from_slice(&data);
        } else if total > DRAIN_LIMIT {
            break;
        }
    }
    if total > MAX_BODY_BYTES {
        return Err(WireError::TooLarge {
            what: "body",
            limit: MAX_BODY_BYTES,
            got: total,
        }
        .into());
    }
    Ok(Bytes::from(kept))
}

/// A failed body read: 408 when it was too slow (see [`super::body`]), else 400.
fn body_error(error: axum::Error) -> ApiError {
    let error = error.into_inner();
    let timeout = error.downcast_ref::<BodyError>().and_then(|e| match e {
        BodyError::Timeout(timeout) => Some(*timeout),
        BodyError::Read(_) => None,
    });
    match timeout {
        Some(timeout) => ApiError::new(
            ErrorCode::Timeout,
            format!(
                "{timeout}; send the whole body at once (it is at most {MAX_BODY_BYTES} bytes)"
            ),
        ),
        None => ApiError::new(
            ErrorCode::Malformed,
            format!("cannot read the request body: {error}"),
        ),
    }
}

/// The bearer token of a request.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = token.trim();
    (!token.is_empty()).then_some(token)
}

/// What every request goes through, in one layer (one boxed future per request, not one per
/// concern: a waiting long-poll holds it for its whole wait): the request is counted with its
/// latency by route template, the peer's protocol version is checked (required on the agent
/// API, optional elsewhere), the store must be open (else 503), and every response is stamped
/// with this server's version.
pub async fn frame(State(app): State<Arc<App>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let mut response = match check_protocol(&request) {
        Err(error) => error.into_response(),
        Ok(()) if !app.is_ready() => app.starting().into_response(),
        Ok(()) => next.run(request).await,
    };
    if let Ok(value) = HeaderValue::from_str(&protocol_version()) {
        response.headers_mut().insert(PROTOCOL_HEADER, value);
    }
    app.metrics
        .observe_request(route, method, response.status().as_u16(), started.elapsed());
    response
}

fn check_protocol(request: &Request) -> Result<(), ApiError> {
    let agent_api = request.uri().path().starts_with("/v1/agent/");
    let header = request
        .headers()
        .get(PROTOCOL_HEADER)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    match check_version(header) {
        Ok(()) => Ok(()),
        Err(VersionError::Missing) if !agent_api => Ok(()),
        Err(error @ VersionError::Malformed(_)) => Err(ApiError::new(
            ErrorCode::Malformed,
            format!("{error}; send {PROTOCOL_HEADER}: {}", protocol_version()),
        )),
        Err(error @ (VersionError::Missing | VersionError::Unsupported { .. })) => {
            Err(ApiError::new(
                ErrorCode::ProtocolVersionUnsupported,
                format!(
                    "{error}; send {PROTOCOL_HEADER}: {} (upgrade the agent or the control plane so both speak the same major version)",
                    protocol_version()
                ),
            ))
        }
    }
}

/// The answer to a request no route matches.
pub async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        ErrorCode::NotFound,
        format!(
            "no route {} {}; see docs/protocol.md for the API",
            request.method(),
            request.uri().path()
        ),
    )
}

/// The answer to a known route with the wrong method.
pub async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!(
            "{} is not allowed on {}; see docs/protocol.md for the API",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Like [`decode_body`], but an empty body stands for the message's default.
pub async fn decode_body_or_default<T: DeserializeOwned + Validate + Default>(
    body: Body,
) -> Result<T, ApiError> {
    let bytes = read_body(body).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    Ok(fleetnode_wire::decode(&bytes)?)
}
