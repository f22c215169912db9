//! `nix path-info --json --recursive`, parsed once into validated [`PathInfo`]s.
//!
//! Nix has printed this in several shapes, all accepted here:
//! - Nix 2.4 to 2.18 (Debian bookworm has 2.8): an array of objects, each with its `path`;
//!   `narHash` in SRI form (`sha256-<base64>`); full store paths in `references`;
//!   `signatures` absent when there are none; an invalid path is `{"path": ..., "valid": false}`.
//! - Nix 2.19 and later, format 1 (the default of `--json`): an object keyed by full store
//!   path; an invalid path maps to `null`; newer releases add `version` and `storeDir`.
//! - Format 2 and 3 (`--json-format`): `{"version", "storeDir", "info": {<base name>: ...}}`
//!   with base names in keys and `references`, and in format 3 each signature as
//!   `{"keyName", "sig"}`. A structured `narHash` (`{"algorithm", "format", "hash"}`) was
//!   printed by some 2.3x releases and is accepted too.
//!
//! Anything else is an error that names the path and the field.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fleetnode_state_machine::{STORE_DIR, StorePath};
use serde_json::Value;

/// One store path as Nix describes it: what its signatures sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathInfo {
    /// The path.
    pub path: StorePath,
    /// SHA-256 of its NAR serialisation.
    pub nar_hash: [u8; 32],
    /// Size of its NAR serialisation.
    pub nar_size: u64,
    /// The paths it refers to, sorted (as Nix sorts them in the fingerprint).
    pub references: Vec<StorePath>,
    /// Its signatures (`<key name>:<base64 ed25519 signature>`), unverified.
    pub signatures: Vec<Signature>,
    /// Its content address, when it has one (such paths carry no signature by default).
    pub content_address: Option<String>,
}

/// A signature as Nix stores it: a key name and 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// The name of the key that claims to have made it.
    pub key_name: String,
    /// The ed25519 signature.
    pub bytes: Vec<u8>,
}

/// What is wrong with the output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathInfoError(pub String);

/// Parses the whole output of `nix path-info --json --recursive`.
pub fn parse(text: &str) -> Result<Vec<PathInfo>, PathInfoError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| PathInfoError(format!("not JSON ({e})")))?;
    let entries: Vec<(String, Value)> = match value {
        Value::Array(items) => items
            .into_iter()
            .map(|item| {
                let path = item
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| PathInfoError("an entry has no \"path\"".to_owned()))?
                    .to_owned();
                Ok((path, item))
            })
            .collect::<Result<_, PathInfoError>>()?,
        Value::Object(mut map) => match map.remove("info") {
            Some(Value::Object(info)) if map.contains_key("version") => info.into_iter().collect(),
            Some(other) => {
                map.insert("info".to_owned(), other);
                map.into_iter().collect()
            }
            None => map.into_iter().collect(),
        },
        other => {
            return Err(PathInfoError(format!(
                "expected an array or an object, got {}",
                kind(&other)
            )));
        }
    };
    entries
        .into_iter()
        .filter(|(key, _)| key != "version" && key != "storeDir")
        .map(|(key, item)| entry(&key, &item))
        .collect()
}

fn entry(key: &str, item: &Value) -> Result<PathInfo, PathInfoError> {
    let path = store_path(key).map_err(|why| PathInfoError(format!("key {key:?}: {why}")))?;
    let fail = |why: String| PathInfoError(format!("{path}: {why}"));
    let Value::Object(fields) = item else {
        return Err(fail("is not a valid path in the store".to_owned()));
    };
    if fields.get("valid") == Some(&Value::Bool(false)) {
        return Err(fail("is not a valid path in the store".to_owned()));
    }
    let nar_hash =
        nar_hash(fields.get("narHash")).map_err(|why| fail(format!("narHash: {why}")))?;
    let nar_size = fields
        .get("narSize")
        .and_then(Value::as_u64)
        .filter(|size| *size > 0)
        .ok_or_else(|| fail("narSize is missing or not a positive integer".to_owned()))?;
    let mut references = match fields.get("references") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .ok_or_else(|| "not a string".to_owned())
                    .and_then(store_path)
                    .map_err(|why| fail(format!("references: {why}")))
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(fail("references is missing or not an array".to_owned())),
    };
    references.sort();
    let signatures = match fields.get("signatures") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| signature(item).map_err(|why| fail(format!("signatures: {why}"))))
            .collect::<Result<_, _>>()?,
        Some(other) => return Err(fail(format!("signatures is {}, not an array", kind(other)))),
    };
    let content_address = match fields.get("ca") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(other) => Some(other.to_string()),
    };
    Ok(PathInfo {
        path,
        nar_hash,
        nar_size,
        references,
        signatures,
        content_address,
    })
}

/// A full store path or a base name (`<hash>-<name>`) as a [`StorePath`].
fn store_path(text: &str) -> Result<StorePath, String> {
    let full = if text.starts_with('/') {
        text.to_owned()
    } else {
        format!("{STORE_DIR}{text}")
    };
    StorePath::parse(&full).map_err(|e| e.to_string())
}

fn nar_hash(value: Option<&Value>) -> Result<[u8; 32], String> {
    let bytes = match value {
        Some(Value::String(text)) => {
            if let Some(base64) = text.strip_prefix("sha256-") {
                BASE64
                    .decode(base64)
                    .map_err(|e| format!("{text:?}: {e}"))?
            } else if let Some(digest) = text.strip_prefix("sha256:") {
                decode_digest(digest, None)?
            } else {
                return Err(format!("{text:?} is not a SHA-256 hash"));
            }
        }
        Some(Value::Object(fields)) => {
            let field = |name: &str| fields.get(name).and_then(Value::as_str).unwrap_or_default();
            if field("algorithm") != "sha256" {
                return Err(format!("algorithm {:?} is not sha256", field("algorithm")));
            }
            decode_digest(field("hash"), Some(field("format")))?
        }
        Some(other) => return Err(format!("is {}, not a hash", kind(other))),
        None => return Err("missing".to_owned()),
    };
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| format!("{} bytes, not the 32 of a SHA-256 hash", bytes.len()))
}

/// A SHA-256 digest in Nix's base-32, base-16 or base-64, told apart by its length unless
/// `format` names it.
fn decode_digest(text: &str, format: Option<&str>) -> Result<Vec<u8>, String> {
    match (format, text.len()) {
        (Some("nix32" | "base32"), _) | (None, 52) => nix32_decode(text),
        (Some("base16"), _) | (None, 64) => (0..text.len())
            .step_by(2)
            .map(|i| {
                text.get(i..i + 2)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| format!("{text:?} is not base-16"))
            })
            .collect(),
        (Some("base64"), _) | (None, _) => {
            BASE64.decode(text).map_err(|e| format!("{text:?}: {e}"))
        }
        (Some(other), _) => Err(format!("unknown hash format {other:?}")),
    }
}

/// Nix's base-32 alphabet (no e, o, u, t).
const NIX32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Nix's base-32 of `bytes`, as in store paths and `sha256:` hashes.
pub fn nix32_encode(bytes: &[u8]) -> String {
    let length = (bytes.len() * 8).div_ceil(5);
    (0..length)
        .rev()
        .map(|n| {
            let bit = n * 5;
            let (byte, shift) = (bit / 8, bit % 8);
            let low = u16::from(bytes[byte]) >> shift;
            let high = bytes
                .get(byte + 1)
                .map_or(0, |next| u16::from(*next) << (8 - shift));
            char::from(NIX32[usize::from((low | high) & 0x1f)])
        })
        .collect()
}

fn nix32_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut bytes = vec![0u8; text.len() * 5 / 8];
    for (n, c) in text.bytes().rev().enumerate() {
        let digit = NIX32
            .iter()
            .position(|d| *d == c)
            .ok_or_else(|| format!("{text:?} is not Nix base-32"))?;
        let bit = n * 5;
        let (byte, shift) = (bit / 8, bit % 8);
        // `digit` < 32, so it fits in the two bytes it straddles.
        let spread = (digit as u16) << shift;
        if let Some(slot) = bytes.get_mut(byte) {
            *slot |= (spread & 0xff) as u8;
        }
        match bytes.get_mut(byte + 1) {
            Some(slot) => *slot |= (spread >> 8) as u8,
            None if spread >> 8 != 0 => return Err(format!("{text:?} is not Nix base-32")),
            None => {}
        }
    }
    Ok(bytes)
}

fn signature(value: &Value) -> Result<Signature, String> {
    let (key_name, encoded) = match value {
        Value::String(text) => text
            .split_once(':')
            .ok_or_else(|| format!("{text:?} is not <key name>:<signature>"))?,
        Value::Object(fields) => (
            fields
                .get("keyName")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            fields
                .get("sig")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        ),
        other => return Err(format!("{} is not a signature", kind(other))),
    };
    if key_name.is_empty() {
        return Err("a signature has no key name".to_owned());
    }
    let bytes = BASE64
        .decode(encoded)
        .map_err(|e| format!("the signature by {key_name:?} is not base-64: {e}"))?;
    Ok(Signature {
        key_name: key_name.to_owned(),
        bytes,
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The paths by store path, for looking references up.
pub fn by_path(infos: &[PathInfo]) -> BTreeMap<&StorePath, &PathInfo> {
    infos.iter().map(|info| (&info.path, info)).collect()
}
