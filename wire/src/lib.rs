//! Wire protocol v1 between the fleetnode agent and its control plane.
//!
//! One set of types for both sides, so field names and identifiers cannot drift. Everything
//! that arrives from the network goes through [`decode`], which caps the size, parses into
//! validated types and checks every list and string against its cap. `docs/protocol.md` is the
//! prose version of this crate.

mod agent_api;
mod audit;
mod error;
mod ids;
mod operator_api;
mod rollout;
pub mod schema;
mod validate;
mod version;

pub use agent_api::*;
pub use audit::*;
pub use error::{ErrorBody, ErrorCode, RetryClass, WireError, classify};
pub use ids::{HostId, Secret, Tag};
pub use operator_api::*;
pub use rollout::*;
pub use version::{
    PROTOCOL_HEADER, PROTOCOL_MAJOR, PROTOCOL_MINOR, VersionError, check_version, protocol_version,
};

pub use fleetnode_state_machine::{
    ActivationMode, DeadlineKind, DesiredState, Directive, DirectiveKind, FailurePolicy, GapCause,
    HealthOverrides, Millis, OutboundEvent, PhaseKind, ProbeId, ProbeMode, Reason, Report,
    Revision, StorePath, SystemView, Timestamp,
};

/// Largest request or response body either side accepts, in bytes.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A message that can check its own caps after parsing.
pub trait Validate {
    /// Checks every list and string against its cap.
    fn validate(&self) -> Result<(), WireError>;
}

/// Parses an untrusted body: size cap, JSON, validated types, then [`Validate`].
pub fn decode<T>(body: &[u8]) -> Result<T, WireError>
where
    T: serde::de::DeserializeOwned + Validate,
{
    if body.len() > MAX_BODY_BYTES {
        return Err(WireError::TooLarge {
            what: "body",
            limit: MAX_BODY_BYTES,
            got: body.len(),
        });
    }
    let value: T = serde_json::from_slice(body).map_err(|e| WireError::Malformed {
        message: e.to_string(),
    })?;
    value.validate()?;
    Ok(value)
}

/// Encodes a message as JSON.
pub fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Serialising these types cannot fail: every map key is a string and no Serialize impl
    // returns an error.
    serde_json::to_vec(value).unwrap_or_default()
}
