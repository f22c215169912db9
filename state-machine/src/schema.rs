//! JSON Schema of the validated string types (feature `schema`), for the wire protocol's
//! generated schema: the rules [`StorePath::parse`] and [`crate::check_label`] enforce, as
//! patterns a third-party implementation can check.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use crate::types::{MAX_LABEL_LEN, ProbeId, StorePath};

/// A DNS label as [`crate::check_label`] accepts it.
pub const LABEL_PATTERN: &str = "^[a-z0-9]([a-z0-9-]*[a-z0-9])?$";
/// A store path as [`StorePath::parse`] accepts it (the rule against `..` is in the
/// description: JSON Schema patterns have no look-ahead everywhere).
pub const STORE_PATH_PATTERN: &str =
    "^/nix/store/[0123456789abcdfghijklmnpqrsvwxyz]{32}-[A-Za-z0-9+_?=-][A-Za-z0-9+._?=-]{0,210}$";

/// The schema of a DNS-label identifier, described as `what`.
pub fn label_schema(what: &str) -> Schema {
    json_schema!({
        "type": "string",
        "description": format!("{what}: a DNS label, 1 to {MAX_LABEL_LEN} characters of [a-z0-9-], not starting or ending with '-'"),
        "minLength": 1,
        "maxLength": MAX_LABEL_LEN,
        "pattern": LABEL_PATTERN,
    })
}

impl JsonSchema for StorePath {
    fn schema_name() -> Cow<'static, str> {
        "StorePath".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A Nix store path: /nix/store/<32 characters of Nix base-32>-<name>; the name is 1 to 211 characters of [A-Za-z0-9+-._?=], does not start with '.' and contains no '..'",
            "pattern": STORE_PATH_PATTERN,
        })
    }
}

impl JsonSchema for ProbeId {
    fn schema_name() -> Cow<'static, str> {
        "ProbeId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        label_schema("A probe id")
    }
}
