//! Protocol versioning: every request and response carries the version header.

/// The header naming the protocol version, e.g. `fleetnode-protocol: 1.0`.
pub const PROTOCOL_HEADER: &str = "fleetnode-protocol";
/// Major version: a difference means the peers cannot talk.
pub const PROTOCOL_MAJOR: u32 = 1;
/// Minor version: additions only; any minor of the same major interoperates.
pub const PROTOCOL_MINOR: u32 = 1;

/// The header value this build speaks.
pub fn protocol_version() -> String {
    format!("{PROTOCOL_MAJOR}.{PROTOCOL_MINOR}")
}

/// A peer's version header that this build cannot work with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// The header is absent.
    #[error("missing {PROTOCOL_HEADER} header; this side speaks {PROTOCOL_MAJOR}.x")]
    Missing,
    /// The header is not `<major>.<minor>`.
    #[error("malformed {PROTOCOL_HEADER} header {0:?}; expected <major>.<minor>")]
    Malformed(String),
    /// Another major version.
    #[error("protocol major version {got} is not supported; this side speaks {PROTOCOL_MAJOR}.x")]
    Unsupported {
        /// The peer's major version.
        got: u32,
    },
}

/// Checks a peer's version header value.
pub fn check_version(header: Option<&str>) -> Result<(), VersionError> {
    let value = header.ok_or(VersionError::Missing)?;
    let malformed = || VersionError::Malformed(value.chars().take(32).collect());
    let (major, minor) = value.trim().split_once('.').ok_or_else(malformed)?;
    let major: u32 = major.parse().map_err(|_| malformed())?;
    let _minor: u32 = minor.parse().map_err(|_| malformed())?;
    if major != PROTOCOL_MAJOR {
        return Err(VersionError::Unsupported { got: major });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_major_any_minor_is_accepted() {
        assert_eq!(check_version(Some("1.0")), Ok(()));
        assert_eq!(check_version(Some("1.7")), Ok(()));
        assert_eq!(check_version(Some(&protocol_version())), Ok(()));
    }

    #[test]
    fn other_majors_and_garbage_are_refused() {
        assert_eq!(
            check_version(Some("2.0")),
            Err(VersionError::Unsupported { got: 2 })
        );
        assert_eq!(check_version(None), Err(VersionError::Missing));
        assert!(matches!(
            check_version(Some("one")),
            Err(VersionError::Malformed(_))
        ));
        assert!(matches!(
            check_version(Some("1.x")),
            Err(VersionError::Malformed(_))
        ));
    }
}
