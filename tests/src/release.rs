//! Releases for a fleet: the closure each host gets, and the manifest CI would write for it.

use std::collections::BTreeMap;
use std::path::Path;

use fleetnode_state_machine::{DirectiveKind, Report, StorePath};
use fleetnode_wire::{HostDetail, HostId, ReleaseManifest};

use crate::process::write_file;
use crate::{HarnessError, Result};

/// A release: the closure each host gets, added to each host's store.
#[derive(Debug, Clone)]
pub struct Release {
    /// By host id.
    pub closures: BTreeMap<String, StorePath>,
}

impl Release {
    /// The closure of `host`; panics when the release has none for it (a scenario naming a
    /// host it did not set up).
    pub fn of(&self, host: &str) -> &StorePath {
        &self.closures[host]
    }
}

/// How many directives to activate `target` the host recorded, from its reported events.
pub fn activations_of(detail: &HostDetail, target: &StorePath) -> usize {
    detail
        .recent_events
        .iter()
        .filter(|e| match &e.report {
            Report::DirectiveRecorded { directive } => matches!(
                &directive.kind,
                DirectiveKind::Activate { target: t, .. } if t == target
            ),
            _ => false,
        })
        .count()
}

/// The two shapes of a manifest file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// `{"hosts": {…}}`.
    Hosts,
    /// Cachix Deploy's `{"agents": {…}}`.
    CachixDeploy,
}

impl Release {
    /// Writes the release manifest to `file`, in `shape`.
    pub fn write(&self, file: &Path, shape: Shape) -> Result<std::path::PathBuf> {
        let hosts = self
            .closures
            .iter()
            .map(|(id, path)| {
                let id = HostId::parse(id).map_err(|e| HarnessError::Setup {
                    what: "a release manifest".into(),
                    message: e.to_string(),
                })?;
                Ok((id, path.clone()))
            })
            .collect::<Result<BTreeMap<_, _>>>()?;
        let manifest = ReleaseManifest {
            hosts,
            mode: None,
            health: Default::default(),
        };
        let mut value = serde_json::to_value(&manifest).map_err(|e| HarnessError::Setup {
            what: "a release manifest".into(),
            message: e.to_string(),
        })?;
        if shape == Shape::CachixDeploy
            && let Some(object) = value.as_object_mut()
            && let Some(hosts) = object.remove("hosts")
        {
            object.insert("agents".into(), hosts);
        }
        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
        write_file(file, &text, 0o644)?;
        Ok(file.to_owned())
    }
}
