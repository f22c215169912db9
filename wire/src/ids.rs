//! Identifiers and secrets on the wire.

use std::borrow::Cow;
use std::fmt;

use fleetnode_state_machine::schema::label_schema;
use fleetnode_state_machine::{ValueError, check_label};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};

/// A host's id: a DNS label (1 to 63 characters of `[a-z0-9-]`, no leading or trailing `-`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostId(String);

impl HostId {
    /// Parses and validates a host id.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        check_label("host id", input)?;
        Ok(Self(input.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for HostId {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<HostId> for String {
    fn from(value: HostId) -> Self {
        value.0
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A host tag for selecting groups of hosts (same rules as a host id).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Tag(String);

impl Tag {
    /// Parses and validates a tag.
    pub fn parse(input: &str) -> Result<Self, ValueError> {
        check_label("tag", input)?;
        Ok(Self(input.to_owned()))
    }

    /// The tag as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Tag {
    type Error = ValueError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Tag> for String {
    fn from(value: Tag) -> Self {
        value.0
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret (bearer token): its `Debug` and `Display` never show the value, so it cannot reach
/// a log line by accident. Read the value with [`Secret::expose`] where it is really needed.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value (surrounding whitespace, such as a file's final newline, removed).
    pub fn new(value: &str) -> Self {
        Self(value.trim().to_owned())
    }

    /// The secret value.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when there is no secret at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl JsonSchema for HostId {
    fn schema_name() -> Cow<'static, str> {
        "HostId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        label_schema("A host id")
    }
}

impl JsonSchema for Tag {
    fn schema_name() -> Cow<'static, str> {
        "Tag".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        label_schema("A host tag")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let s = Secret::new(" hunter2\n");
        assert_eq!(s.expose(), "hunter2");
        assert!(!format!("{s:?} {s}").contains("hunter2"));
    }

    #[test]
    fn host_ids_are_dns_labels() {
        assert!(HostId::parse("web-01").is_ok());
        assert!(HostId::parse("Web-01").is_err());
        assert!(HostId::parse("web_01").is_err());
        assert!(serde_json::from_str::<HostId>("\"../etc\"").is_err());
        assert!(Tag::parse("prod").is_ok());
        assert!(Tag::parse("").is_err());
    }
}
