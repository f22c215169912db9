//! The release manifest: which system closure each host of a release should run.
//!
//! CI writes it (typically from the `nixosConfigurations.<host>` outputs of a flake) and an
//! operator starts a rollout of it. Two shapes are read: fleetnode's own
//! `{"hosts": {"web-01": "/nix/store/…"}}` and Cachix Deploy's `deploy.json`
//! (`{"agents": {…}, "rollbackScript": {…}}`), so pipelines that already produce one work
//! unchanged. It is always written in the first shape.

use std::collections::BTreeMap;

use fleetnode_state_machine::{ActivationMode, HealthOverrides, StorePath};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::HostId;

/// Most hosts one release may name: a manifest of this many hosts stays under the 1 MiB body
/// cap of a request (a host id and a store path take about 120 bytes of JSON).
pub const MAX_RELEASE_HOSTS: usize = 5_000;

/// A release: the closure of every host in it, and how to activate them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(try_from = "ManifestFile")]
pub struct ReleaseManifest {
    /// The closure each host should run, by host.
    pub hosts: BTreeMap<HostId, StorePath>,
    /// How to activate; each host's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<ActivationMode>,
    /// Health overrides for every host of the release.
    #[serde(default, skip_serializing_if = "no_overrides")]
    pub health: HealthOverrides,
}

fn no_overrides(health: &HealthOverrides) -> bool {
    *health == HealthOverrides::default()
}

/// A manifest as written in a file: either shape.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    #[serde(default)]
    hosts: Option<BTreeMap<HostId, StorePath>>,
    /// Cachix Deploy's name for the same map.
    #[serde(default)]
    agents: Option<BTreeMap<HostId, StorePath>>,
    #[serde(default)]
    mode: Option<ActivationMode>,
    #[serde(default)]
    health: HealthOverrides,
    /// Cachix Deploy's post-deployment scripts. Accepted so a `deploy.json` parses, and
    /// ignored: fleetnode judges a generation by the agent's own health probes.
    #[serde(default, rename = "rollbackScript")]
    _rollback_script: Option<serde_json::Value>,
}

/// Why a manifest's shape was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Neither `hosts` nor `agents`.
    #[error(
        "a release manifest maps hosts to closures under \"hosts\" (or Cachix Deploy's \"agents\"); this one has neither"
    )]
    NoHosts,
    /// Both `hosts` and `agents`.
    #[error(
        "a release manifest has either \"hosts\" or Cachix Deploy's \"agents\", not both; keep one"
    )]
    BothShapes,
}

impl TryFrom<ManifestFile> for ReleaseManifest {
    type Error = ManifestError;

    fn try_from(file: ManifestFile) -> Result<Self, Self::Error> {
        let hosts = match (file.hosts, file.agents) {
            (Some(hosts), None) | (None, Some(hosts)) => hosts,
            (Some(_), Some(_)) => return Err(ManifestError::BothShapes),
            (None, None) => return Err(ManifestError::NoHosts),
        };
        Ok(Self {
            hosts,
            mode: file.mode,
            health: file.health,
        })
    }
}

impl ReleaseManifest {
    /// The closure of `host` in this release.
    pub fn closure(&self, host: &HostId) -> Option<&StorePath> {
        self.hosts.get(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-web-01";

    #[test]
    fn both_shapes_read_the_same_release() {
        let ours: ReleaseManifest =
            serde_json::from_str(&format!(r#"{{"hosts": {{"web-01": "{PATH}"}}}}"#)).unwrap();
        let cachix: ReleaseManifest = serde_json::from_str(&format!(
            r#"{{"agents": {{"web-01": "{PATH}"}}, "rollbackScript": {{"x86_64-linux": "{PATH}"}}}}"#
        ))
        .unwrap();
        assert_eq!(ours, cachix);
        let written = serde_json::to_string(&cachix).unwrap();
        assert!(written.contains("\"hosts\""), "{written}");
        assert!(!written.contains("agents"), "{written}");
    }

    #[test]
    fn a_manifest_names_what_is_wrong() {
        let cases = [
            ("{}".to_owned(), "has neither"),
            (
                format!(r#"{{"hosts": {{"a": "{PATH}"}}, "agents": {{"a": "{PATH}"}}}}"#),
                "not both",
            ),
            (format!(r#"{{"hosts": {{"Web_01": "{PATH}"}}}}"#), "Web_01"),
            (r#"{"hosts": {"web-01": "/tmp/x"}}"#.to_owned(), "/tmp/x"),
            (
                format!(r#"{{"hosts": {{"a": "{PATH}"}}, "mdoe": "switch"}}"#),
                "mdoe",
            ),
        ];
        for (text, needle) in cases {
            let error = serde_json::from_str::<ReleaseManifest>(&text)
                .unwrap_err()
                .to_string();
            assert!(error.contains(needle), "{text}: {error}");
        }
    }
}
