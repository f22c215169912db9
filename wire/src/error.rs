//! Errors on the wire: the JSON error body, stable codes, and which failures are retried.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A stable, machine-readable error code. New codes may be added in a minor version; a client
/// treats an unknown code by its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON or not the expected shape (400).
    Malformed,
    /// A field is well-formed JSON but not a valid value (422).
    Invalid,
    /// No or wrong credentials (401).
    Unauthorized,
    /// Credentials valid but not for this resource, e.g. another host's (403).
    Forbidden,
    /// No such host or route (404).
    NotFound,
    /// The route exists but not with this method (405; an `Allow` header lists the methods).
    MethodNotAllowed,
    /// A conflicting request, e.g. adding a host that exists (409).
    Conflict,
    /// The event batch or heartbeat does not fit the control plane's log of the stream: send a
    /// snapshot (409; the body's `seq` is the last seq the control plane holds).
    ResyncRequired,
    /// The body exceeds its cap (413).
    TooLarge,
    /// The request body did not arrive in time (408).
    Timeout,
    /// The peer's protocol major version is not supported (426).
    ProtocolVersionUnsupported,
    /// Too many requests or waiters; retry after the given time (429).
    RateLimited,
    /// The server is starting or its store is not open; retry after the given time (503).
    Unavailable,
    /// An unexpected server fault (500).
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire, e.g. `protocol_version_unsupported`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Invalid => "invalid",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Conflict => "conflict",
            Self::ResyncRequired => "resync_required",
            Self::TooLarge => "too_large",
            Self::Timeout => "timeout",
            Self::ProtocolVersionUnsupported => "protocol_version_unsupported",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// The HTTP status this code travels with.
    pub fn status(self) -> u16 {
        match self {
            Self::Malformed => 400,
            Self::Invalid => 422,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict | Self::ResyncRequired => 409,
            Self::TooLarge => 413,
            Self::Timeout => 408,
            Self::ProtocolVersionUnsupported => 426,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
            Self::Internal => 500,
        }
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// Stable code.
    pub code: ErrorCode,
    /// What was wrong and what to do, for a human.
    pub message: String,
    /// Seconds to wait before retrying (also sent as `Retry-After`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_secs: Option<u64>,
    /// For a rejected event batch: the seq of the event that was refused; for
    /// `resync_required`: the last seq the control plane holds of the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

impl ErrorBody {
    /// An error body with a code and message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_secs: None,
            seq: None,
        }
    }
}

/// How a client treats a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryClass {
    /// Network errors, 5xx, 408, 429: retry with exponential backoff and full jitter, honouring
    /// `Retry-After`.
    Transient,
    /// 401/403: the credentials are wrong or revoked. Nothing is dropped; retry at the backoff
    /// cap and tell the operator, since only a human can fix it.
    Credentials,
    /// 426: the peers speak different major versions. Nothing is dropped; retry at the backoff
    /// cap and tell the operator.
    Version,
    /// The control plane refused the request's content itself: 400, 413 or 422 with a fleetnode
    /// error body whose code is the one of that status (`malformed`, `too_large`, `invalid`).
    /// Only this splits an event batch, and only an event refused so on its own is
    /// dead-lettered.
    Content,
    /// 409 `resync_required`: the control plane's log cannot take the agent's events; the agent
    /// sends a snapshot (see `docs/protocol.md`, "Resync").
    Resync,
    /// Any other 4xx (a proxy's 413 without a fleetnode body, a retired stream's 409, a 404):
    /// about the path or the agent, not the event. Nothing is dropped; retry at the backoff cap
    /// and tell the operator.
    Permanent,
}

/// Classifies a failed request by its HTTP status and the code of its error body, when it
/// carried a valid one. This is the one rule of which refusals split an event batch
/// ([`RetryClass::Content`]); `docs/protocol.md` states it in prose.
pub fn classify(status: u16, code: Option<ErrorCode>) -> RetryClass {
    match status {
        401 | 403 => RetryClass::Credentials,
        426 => RetryClass::Version,
        408 | 429 => RetryClass::Transient,
        400 | 413 | 422 if refuses_content(status, code) => RetryClass::Content,
        409 if code == Some(ErrorCode::ResyncRequired) => RetryClass::Resync,
        400..=499 => RetryClass::Permanent,
        _ => RetryClass::Transient,
    }
}

/// The body's code is a content refusal and travels with its own status.
fn refuses_content(status: u16, code: Option<ErrorCode>) -> bool {
    match code {
        Some(code @ (ErrorCode::Malformed | ErrorCode::TooLarge | ErrorCode::Invalid)) => {
            code.status() == status
        }
        Some(
            ErrorCode::Unauthorized
            | ErrorCode::Forbidden
            | ErrorCode::NotFound
            | ErrorCode::MethodNotAllowed
            | ErrorCode::Conflict
            | ErrorCode::ResyncRequired
            | ErrorCode::Timeout
            | ErrorCode::ProtocolVersionUnsupported
            | ErrorCode::RateLimited
            | ErrorCode::Unavailable
            | ErrorCode::Internal,
        )
        | None => false,
    }
}

/// A message that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Not valid JSON, or not the expected shape (includes invalid ids and store paths).
    #[error("malformed message: {message}")]
    Malformed {
        /// The parser's explanation, naming the field.
        message: String,
    },
    /// A body, list or string is over its cap.
    #[error("{what} is too large: {got} exceeds the limit of {limit}")]
    TooLarge {
        /// Which field.
        what: &'static str,
        /// The cap.
        limit: usize,
        /// The size found.
        got: usize,
    },
    /// A value is well-formed but not acceptable.
    #[error("invalid {what}: {why}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// Why.
        why: String,
    },
}

impl WireError {
    /// The error code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Malformed { .. } => ErrorCode::Malformed,
            Self::TooLarge { .. } => ErrorCode::TooLarge,
            Self::Invalid { .. } => ErrorCode::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_classify_as_documented() {
        for s in [500, 502, 503, 504, 429, 408] {
            assert_eq!(classify(s, None), RetryClass::Transient, "{s}");
        }
        for s in [400, 404, 405, 409, 413, 422] {
            assert_eq!(classify(s, None), RetryClass::Permanent, "{s}");
        }
        assert_eq!(classify(401, None), RetryClass::Credentials);
        assert_eq!(classify(403, None), RetryClass::Credentials);
        assert_eq!(classify(426, None), RetryClass::Version);
    }

    #[test]
    fn only_a_content_code_with_its_own_status_refuses_the_content() {
        for code in [
            ErrorCode::Malformed,
            ErrorCode::TooLarge,
            ErrorCode::Invalid,
        ] {
            assert_eq!(classify(code.status(), Some(code)), RetryClass::Content);
        }
        // The code alone is not enough: a 409 or a 503 that says `invalid` is not about the
        // event, and a 422 that says `malformed` is not a fleetnode answer.
        assert_eq!(
            classify(409, Some(ErrorCode::Invalid)),
            RetryClass::Permanent
        );
        assert_eq!(
            classify(503, Some(ErrorCode::Malformed)),
            RetryClass::Transient
        );
        assert_eq!(
            classify(422, Some(ErrorCode::Malformed)),
            RetryClass::Permanent
        );
        // A proxy's 413 without a fleetnode body never dead-letters an event.
        assert_eq!(classify(413, None), RetryClass::Permanent);
        assert_eq!(
            classify(400, Some(ErrorCode::NotFound)),
            RetryClass::Permanent
        );
    }

    #[test]
    fn every_code_but_resync_has_a_distinct_status() {
        let codes = [
            ErrorCode::Malformed,
            ErrorCode::Invalid,
            ErrorCode::Unauthorized,
            ErrorCode::Forbidden,
            ErrorCode::NotFound,
            ErrorCode::MethodNotAllowed,
            ErrorCode::Conflict,
            ErrorCode::ResyncRequired,
            ErrorCode::TooLarge,
            ErrorCode::Timeout,
            ErrorCode::ProtocolVersionUnsupported,
            ErrorCode::RateLimited,
            ErrorCode::Unavailable,
            ErrorCode::Internal,
        ];
        for code in codes {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        let mut statuses: Vec<u16> = codes.iter().map(|c| c.status()).collect();
        statuses.sort_unstable();
        statuses.dedup();
        // `resync_required` shares 409 with `conflict`: the code tells them apart.
        assert_eq!(statuses.len(), codes.len() - 1);
        assert_eq!(
            classify(409, Some(ErrorCode::ResyncRequired)),
            RetryClass::Resync
        );
        assert_eq!(
            classify(409, Some(ErrorCode::Conflict)),
            RetryClass::Permanent
        );
    }
}
