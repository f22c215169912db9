//! Checking a closure's signatures ourselves, path by path.
//!
//! `nix store verify --sigs-needed 1` counts a content-addressed path as valid without any
//! signature, so an unsigned closure rewritten by `nix store make-content-addressed` (or added
//! with `nix-store --add`) would pass it. The promise of `require_signatures` is "refuse
//! closures not signed by one of `trusted_public_keys`", so the agent checks every path of the
//! closure (from `nix path-info --json --recursive`) itself: an ed25519 signature by a trusted
//! key over Nix's fingerprint of the path,
//!
//! ```text
//! 1;<store path>;sha256:<NAR hash in Nix base-32>;<NAR size>;<references, sorted, comma-separated>
//! ```
//!
//! content-addressed or not. The listing must also be closed: every reference of every path
//! is itself listed (and so checked).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use fleetnode_state_machine::StorePath;
use ring::signature::{ED25519, UnparsedPublicKey};

use super::path_info::{PathInfo, by_path, nix32_encode};

/// A trusted public key, parsed from `<name>:<base64 of 32 bytes>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedKey {
    /// The key's name, which signatures carry.
    pub name: String,
    /// The ed25519 public key.
    pub key: [u8; 32],
}

impl TrustedKey {
    /// Parses `<name>:<base64>` as `nix-store --generate-binary-cache-key` writes it.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (name, encoded) = text
            .trim()
            .split_once(':')
            .filter(|(name, _)| !name.is_empty())
            .ok_or_else(|| format!("{text:?} is not <name>:<base64 public key>"))?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|e| format!("the key {name:?} is not base-64: {e}"))?;
        let key = <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
            format!(
                "the key {name:?} has {} bytes, not the 32 of an ed25519 public key",
                bytes.len()
            )
        })?;
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }
}

/// Nix's fingerprint of a path: what its signatures sign.
pub fn fingerprint(info: &PathInfo) -> String {
    let references: Vec<&str> = info.references.iter().map(StorePath::as_str).collect();
    format!(
        "1;{};sha256:{};{};{}",
        info.path,
        nix32_encode(&info.nar_hash),
        info.nar_size,
        references.join(",")
    )
}

/// Checks that `target` and everything it refers to carry a valid signature by one of
/// `trusted`; on failure, says which path and why.
pub fn verify_closure(
    target: &StorePath,
    infos: &[PathInfo],
    trusted: &[TrustedKey],
) -> Result<(), String> {
    let listed = by_path(infos);
    if !listed.contains_key(target) {
        return Err(format!("nix path-info did not list {target} itself"));
    }
    for info in infos {
        if let Some(missing) = info.references.iter().find(|r| !listed.contains_key(r)) {
            return Err(format!(
                "nix path-info listed {} but not its reference {missing}, so the closure cannot be checked",
                info.path
            ));
        }
        check_path(info, trusted)?;
    }
    Ok(())
}

fn check_path(info: &PathInfo, trusted: &[TrustedKey]) -> Result<(), String> {
    let message = fingerprint(info);
    let valid = info.signatures.iter().any(|signature| {
        trusted
            .iter()
            .filter(|key| key.name == signature.key_name)
            .any(|key| {
                UnparsedPublicKey::new(&ED25519, key.key)
                    .verify(message.as_bytes(), &signature.bytes)
                    .is_ok()
            })
    });
    if valid {
        return Ok(());
    }
    let content_addressed = if info.content_address.is_some() {
        " (it is content-addressed, which does not stand in for a signature)"
    } else {
        ""
    };
    let found = if info.signatures.is_empty() {
        "it has no signature".to_owned()
    } else {
        let names: Vec<&str> = info
            .signatures
            .iter()
            .map(|s| s.key_name.as_str())
            .collect();
        format!(
            "its signatures ({}) are by untrusted keys or do not match its contents",
            names.join(", ")
        )
    };
    Err(format!("{}: {found}{content_addressed}", info.path))
}
