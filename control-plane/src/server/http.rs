//! HTTP plumbing: error responses (and the one mapping of the fleet's refusals to them),
//! bounded body reading, bearer tokens.

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fleetnode_wire::{ErrorBody, ErrorCode, MAX_BODY_BYTES, Validate, WireError};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;

use super::body::BodyError;
use crate::fleet::rollouts::Refusal;
use crate::fleet::{FleetError, RequestError};
use crate::rollout::StartError;

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

    /// 401 with what to send instead.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    /// 409 `resync_required`, with the log's end in `seq`.
    fn resync(log_end: u64, message: String) -> Self {
        let mut error = Self::new(ErrorCode::ResyncRequired, message);
        error.0.seq = Some(log_end);
        error
    }
}

/// Seconds a client is asked to wait while the store is not open yet.
pub const STARTING_RETRY_SECS: u64 = 1;
/// Seconds a client is asked to wait while the database cannot be reached.
const DATABASE_RETRY_SECS: u64 = 2;
/// Seconds a client is asked to wait when its host has too many long-polls waiting.
const WAITERS_RETRY_SECS: u64 = 5;

impl From<FleetError> for ApiError {
    fn from(error: FleetError) -> Self {
        let code = match &error {
            FleetError::Starting(_) => {
                return Self::unavailable(error.to_string(), STARTING_RETRY_SECS);
            }
            FleetError::Unavailable(_) => {
                return Self::unavailable(error.to_string(), DATABASE_RETRY_SECS);
            }
            FleetError::TooManyWaiters { .. } => {
                return Self::rate_limited(error.to_string(), WAITERS_RETRY_SECS);
            }
            FleetError::ResyncRequired { log_end, message } => {
                return Self::resync(*log_end, message.clone());
            }
            FleetError::Rollout(request) => return Self::from(request),
            FleetError::UnknownHost(_) | FleetError::UnknownOperator(_) => ErrorCode::NotFound,
            FleetError::NoHostWithTag(_) | FleetError::NoActiveHosts => ErrorCode::NotFound,
            FleetError::HostExists(_)
            | FleetError::HostRevoked(_)
            | FleetError::RevokedInSelection(_)
            | FleetError::OwnedByRollout { .. }
            | FleetError::RetiredStream(_)
            | FleetError::OperatorExists(_) => ErrorCode::Conflict,
            FleetError::Unauthenticated(_) | FleetError::AgentRevoked(_) => ErrorCode::Unauthorized,
            FleetError::OtherHostsToken { .. } | FleetError::AdminOnly { .. } => {
                ErrorCode::Forbidden
            }
            FleetError::Store { .. } | FleetError::Internal { .. } => ErrorCode::Internal,
        };
        Self::new(code, error.to_string())
    }
}

impl From<&RequestError> for ApiError {
    fn from(error: &RequestError) -> Self {
        let code = match error {
            RequestError::Start(StartError::UnknownHosts(_)) | RequestError::NotFound(_) => {
                ErrorCode::NotFound
            }
            RequestError::Start(StartError::RevokedHosts(_) | StartError::Owned { .. })
            | RequestError::Rollout(_) => ErrorCode::Conflict,
            RequestError::Start(
                StartError::TagMatchesNothing { .. } | StartError::Uncovered { .. },
            ) => ErrorCode::Invalid,
            RequestError::Store => ErrorCode::Internal,
            RequestError::Contended(_) => ErrorCode::Conflict,
            RequestError::Stopped | RequestError::Elsewhere | RequestError::Unanswered => {
                return ApiError::unavailable(error.to_string(), STOPPING_RETRY_SECS);
            }
            RequestError::Forwarded { kind, .. } => match kind {
                Refusal::NotFound => ErrorCode::NotFound,
                Refusal::Conflict => ErrorCode::Conflict,
                Refusal::Invalid => ErrorCode::Invalid,
                Refusal::Internal => ErrorCode::Internal,
                Refusal::Unavailable => {
                    return ApiError::unavailable(error.to_string(), STOPPING_RETRY_SECS);
                }
            },
        };
        ApiError::new(code, error.to_string())
    }
}

/// Seconds a client is asked to wait when the driver has stopped with the server.
const STOPPING_RETRY_SECS: u64 = 5;

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
