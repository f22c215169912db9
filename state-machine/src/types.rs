//! Validated value types shared by the state machine and the wire protocol.
//!
//! Every type here is parsed once from untrusted text ("parse, don't validate"): a string that is
//! not a well-formed store path never becomes a [`StorePath`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// Characters of Nix's base-32 alphabet (no `e`, `o`, `u`, `t`).
const NIX_BASE32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
/// The store directory every closure lives in.
pub const STORE_DIR: &str = "/nix/store/";
/// Length of the hash part of a store path.
const HASH_LEN: usize = 32;
/// Nix limits the name part of a store path to 211 bytes.
const MAX_NAME_LEN: usize = 211;
/// Longest label ([`ProbeId`], host ids on the wire): the DNS label limit.
pub const MAX_LABEL_LEN: usize = 63;

/// Why a string was refused as a validated value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// Not of the form `/nix/store/<32 nix-base32 chars>-<name>`.
    #[error("invalid store path {input:?}: {why}")]
    StorePath {
        /// The offending input, shortened to 100 characters.
        input: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// Not a DNS-label style identifier.
    #[error("invalid {what} {input:?}: {why}")]
    Label {
        /// Which kind of identifier (for example "probe id").
        what: &'static str,
        /// The offending input, shortened to 100 characters.
        input: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

fn shorten(input: &str) -> String {
    input.chars().take(100).collect()
}

/// A Nix store path naming a system closure: `/nix/store/<hash>-<name>`.
///
/// The hash is 32 characters of Nix's base-32 alphabet; the name is 1 to 211 characters of
/// `[A-Za-z0-9+-._?=]`, does not start with a dot and contains no `..`. No NUL, no slash beyond
/// the store directory: such a value can be placed on an argv without further checks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StorePath(String);

impl StorePath {
    /// Parses and validates a store path.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        let fail = |why| ValueError::StorePath {
            input: shorten(input),
            why,
        };
        let rest = input
            .strip_prefix(STORE_DIR)
            .ok_or_else(|| fail("must start with /nix/store/"))?;
        let (hash, name) = rest
            .split_at_checked(HASH_LEN)
            .ok_or_else(|| fail("hash part is shorter than 32 characters"))?;
        if !hash.bytes().all(|b| NIX_BASE32.contains(&b)) {
            return Err(fail("hash part is not nix base-32"));
        }
        let name = name
            .strip_prefix('-')
            .ok_or_else(|| fail("a '-' must follow the 32-character hash"))?;
        if name.is_empty() {
            return Err(fail("name part is empty"));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(fail("name part is longer than 211 characters"));
        }
        if name.starts_with('.') || name.contains("..") {
            return Err(fail("name part starts with '.' or contains '..'"));
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"+-._?=".contains(&b);
        if !name.bytes().all(allowed) {
            return Err(fail("name part has a character outside [A-Za-z0-9+-._?=]"));
        }
        Ok(Self(input.to_owned()))
    }

    /// The full path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The base name, hash and name: what follows `/nix/store/`.
    pub fn name_with_hash(&self) -> &str {
        // Validated in `parse`: the path starts with the store prefix.
        &self.0[STORE_DIR.len()..]
    }

    /// The name part after the hash, e.g. `nixos-system-web-01-24.05`.
    pub fn name(&self) -> &str {
        // Validated in `parse`: the store prefix, 32 hash characters and a dash precede the name.
        &self.0[STORE_DIR.len() + HASH_LEN + 1..]
    }
}

impl TryFrom<String> for StorePath {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<StorePath> for String {
    fn from(value: StorePath) -> Self {
        value.0
    }
}

impl fmt::Display for StorePath {
    /// The whole path; with `{:#}`, the short form tables and narratives use: the first 7
    /// characters of the hash and the name (`0123456…-nixos-system-web-01`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            let hash = self
                .0
                .get(STORE_DIR.len()..STORE_DIR.len() + 7)
                .unwrap_or_default();
            write!(f, "{hash}…-{}", self.name())
        } else {
            f.write_str(&self.0)
        }
    }
}

/// Checks DNS-label rules: 1 to 63 characters of `[a-z0-9-]`, not starting or ending with `-`.
///
/// Only lower case is accepted, so that one name has one spelling on both sides of the wire.
pub fn check_label(what: &'static str, input: &str) -> Result<(), ValueError> {
    let fail = |why| ValueError::Label {
        what,
        input: shorten(input),
        why,
    };
    if input.is_empty() {
        return Err(fail("must not be empty"));
    }
    if input.len() > MAX_LABEL_LEN {
        return Err(fail("must be at most 63 characters"));
    }
    if !input
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(fail("may only contain a-z, 0-9 and '-'"));
    }
    if input.starts_with('-') || input.ends_with('-') {
        return Err(fail("must not start or end with '-'"));
    }
    Ok(())
}

/// The name of a health probe, following DNS-label rules.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProbeId(String);

impl ProbeId {
    /// Name of the built-in probe fed by heartbeats: can the host reach its control plane.
    pub const CONTROL_PLANE: &'static str = "control-plane";

    /// Parses and validates a probe id.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        check_label("probe id", input)?;
        Ok(Self(input.to_owned()))
    }

    /// The built-in control-plane reachability probe.
    pub fn control_plane() -> Self {
        Self(Self::CONTROL_PLANE.to_owned())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProbeId {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ProbeId> for String {
    fn from(value: ProbeId) -> Self {
        value.0
    }
}

impl fmt::Display for ProbeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The revision of a host's desired state, increasing with every change the control plane makes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct Revision(pub u64);

impl fmt::Display for Revision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "r{}", self.0)
    }
}

/// Identifies one switch (activation, commit or rollback) the agent launched: the seq of the
/// event that started it, so it is unique per host and names the transient unit
/// `fleetnode-activate-<id>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(transparent)]
pub struct SwitchId(pub u64);

impl fmt::Display for SwitchId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";

    #[test]
    fn store_path_accepts_a_system_closure() {
        let input = format!("/nix/store/{HASH}-nixos-system-web-01-24.05.20240601");
        let path = StorePath::parse(&input).unwrap();
        assert_eq!(path.as_str(), input);
        assert_eq!(path.name(), "nixos-system-web-01-24.05.20240601");
    }

    #[test]
    fn store_path_rejects_malformed_input() {
        let cases = [
            "/nix/store/short-name".to_owned(),
            format!("/nix/stor/{HASH}-x"),
            format!("/nix/store/{}-x", "e".repeat(32)),
            format!("/nix/store/{HASH}x"),
            format!("/nix/store/{HASH}-"),
            format!("/nix/store/{HASH}-a/b"),
            format!("/nix/store/{HASH}-a..b"),
            format!("/nix/store/{HASH}-.hidden"),
            format!("/nix/store/{HASH}-a\0b"),
            format!("/nix/store/{HASH}-{}", "a".repeat(212)),
            format!("/nix/store/{HASH}-caf\u{e9}"),
        ];
        for case in cases {
            assert!(StorePath::parse(&case).is_err(), "accepted {case:?}");
        }
        let longest = format!("/nix/store/{HASH}-{}", "a".repeat(211));
        assert!(StorePath::parse(&longest).is_ok());
    }

    #[test]
    fn store_path_error_names_the_input_and_reason() {
        let err = StorePath::parse("/etc/passwd").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("/etc/passwd"), "{text}");
        assert!(text.contains("/nix/store/"), "{text}");
    }

    #[test]
    fn store_path_serde_validates() {
        let good = format!("\"/nix/store/{HASH}-x\"");
        let path: StorePath = serde_json::from_str(&good).unwrap();
        assert_eq!(serde_json::to_string(&path).unwrap(), good);
        assert!(serde_json::from_str::<StorePath>("\"/tmp/x\"").is_err());
    }

    #[test]
    fn labels_follow_dns_rules() {
        for good in ["a", "web-01", "x9", &"a".repeat(63)] {
            assert!(ProbeId::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", "a.b", &"a".repeat(64)] {
            assert!(ProbeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_display_plainly() {
        let input = format!("/nix/store/{HASH}-x");
        assert_eq!(StorePath::parse(&input).unwrap().to_string(), input);
        assert_eq!(
            format!("{:#}", StorePath::parse(&input).unwrap()),
            "0123456…-x"
        );
        assert_eq!(Revision(7).to_string(), "r7");
        assert_eq!(SwitchId(12).to_string(), "12");
        assert_eq!(ProbeId::control_plane().to_string(), "control-plane");
    }
}
