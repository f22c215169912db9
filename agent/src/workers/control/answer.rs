//! Reading an answer of the control plane: its version header, its body within the cap, and
//! what a failed exchange was (a TLS refusal or another network failure).

use fleetnode_wire::{MAX_BODY_BYTES, PROTOCOL_HEADER, VersionError, check_version};

use super::RequestError;

/// An answer without the version header is read (a proxy may have made it); one with another
/// major version, or a header that is not `<major>.<minor>`, is not.
pub(super) fn check_answer_version(
    headers: &reqwest::header::HeaderMap,
) -> Result<(), RequestError> {
    let Some(value) = headers.get(PROTOCOL_HEADER) else {
        return Ok(());
    };
    let text = value.to_str().unwrap_or("(not text)");
    match check_version(Some(text)) {
        Ok(()) | Err(VersionError::Missing) => Ok(()),
        Err(e @ (VersionError::Malformed(_) | VersionError::Unsupported { .. })) => {
            Err(RequestError::OtherVersion(e.to_string()))
        }
    }
}

/// Reads a body chunk by chunk, stopping at the cap.
pub(super) async fn read_capped(mut response: reqwest::Response) -> Result<Vec<u8>, RequestError> {
    if response
        .content_length()
        .is_some_and(|len| len > MAX_BODY_BYTES as u64)
    {
        return Err(RequestError::BadAnswer(format!(
            "the answer is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| network_error(&e))? {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(RequestError::BadAnswer(format!(
                "the answer is larger than {MAX_BODY_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// A failed exchange as a [`RequestError`]: [`RequestError::Tls`] when rustls refused the
/// handshake (its error sits somewhere in the chain of causes), else
/// [`RequestError::Network`].
pub(super) fn network_error(error: &reqwest::Error) -> RequestError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(cause) = source {
        if is_tls(cause) {
            return RequestError::Tls(describe(error));
        }
        source = cause.source();
    }
    RequestError::Network(describe(error))
}

/// Whether `error` is a rustls error, possibly wrapped in I/O errors (which show their inner
/// error but skip it as a source, so the chain of sources alone misses it).
fn is_tls(mut error: &(dyn std::error::Error + 'static)) -> bool {
    loop {
        if error.is::<rustls::Error>() {
            return true;
        }
        match error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
        {
            Some(inner) => error = inner,
            None => return false,
        }
    }
}

/// A reqwest error with its causes, which carry the useful part (TLS, DNS, refused).
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
