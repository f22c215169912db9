//! Reading a release manifest an operator hands in (a file for the CLI, an upload for the
//! console): both shapes the wire type reads (fleetnode's `{"hosts": …}` and Cachix Deploy's
//! `deploy.json`), checked as a whole. Pure: the caller reads the bytes.

use fleetnode_wire::{ReleaseManifest, Validate};

/// Why a release manifest was refused, naming where it came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the release manifest {origin} is not valid: {detail}; it maps each host to its closure: {{\"hosts\": {{\"web-01\": \"/nix/store/…\"}}}} (or Cachix Deploy's {{\"agents\": {{…}}}})"
)]
pub struct ManifestError {
    /// Where it came from: a path, "on standard input", an uploaded file's name.
    pub origin: String,
    /// What is wrong with it.
    pub detail: String,
}

/// Parses and validates the text of a release manifest from `origin`.
pub fn parse_manifest(text: &str, origin: &str) -> Result<ReleaseManifest, ManifestError> {
    let invalid = |detail: &dyn std::fmt::Display| ManifestError {
        origin: origin.to_owned(),
        detail: detail.to_string(),
    };
    let manifest: ReleaseManifest = serde_json::from_str(text).map_err(|e| invalid(&e))?;
    manifest.validate().map_err(|e| invalid(&e))?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web-01";

    #[test]
    fn both_shapes_parse_and_a_bad_one_names_its_origin() {
        let ours = parse_manifest(&format!(r#"{{"hosts": {{"web-01": "{PATH}"}}}}"#), "a").unwrap();
        let cachix = parse_manifest(&format!(r#"{{"agents": {{"web-01": "{PATH}"}}}}"#), "b");
        assert_eq!(Ok(ours), cachix);
        let bad = parse_manifest("{}", "upload.json").unwrap_err();
        assert!(bad.to_string().contains("upload.json"), "{bad}");
        assert!(bad.to_string().contains("neither"), "{bad}");
    }
}
