//! The configuration file as written: what serde reads, unknown keys refused.

use std::collections::BTreeMap;
use std::path::PathBuf;

use fleetnode_state_machine::{ActivationMode, FailurePolicy, ProbeMode};
use serde::Deserialize;

/// The configuration file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `https://` URL of the control plane, or a list of them (replicas, tried in order).
    pub control_plane_url: Option<UrlList>,
    /// This host's id (a DNS label).
    pub host_id: Option<String>,
    /// Name of a systemd credential holding the host token (under `$CREDENTIALS_DIRECTORY`).
    pub token_credential: Option<String>,
    /// File holding the host token.
    pub token_file: Option<PathBuf>,
    /// State directory.
    pub state_dir: Option<PathBuf>,
    /// `text` or `json`.
    pub log_format: Option<String>,
    /// Allow `http://` for tests and demos, loopback only.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// TLS settings.
    #[serde(default)]
    pub tls: RawTls,
    /// Activation settings.
    #[serde(default)]
    pub activation: RawActivation,
    /// Health defaults.
    #[serde(default)]
    pub health: RawHealth,
    /// Reboot policy.
    #[serde(default)]
    pub reboot: RawReboot,
    /// Heartbeat settings.
    #[serde(default)]
    pub heartbeat: RawHeartbeat,
    /// Local admin listener.
    #[serde(default)]
    pub admin: RawAdmin,
    /// Paths and commands of the NixOS backend.
    #[serde(default)]
    pub system: RawSystem,
    /// Health probes by name.
    #[serde(default)]
    pub probes: BTreeMap<String, RawProbe>,
}

/// `control_plane_url` as written: one URL, or a list of URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlList {
    /// The entries, in the order written.
    pub entries: Vec<String>,
    /// Whether it was written as a list (errors then name the entry by its index).
    pub is_list: bool,
}

impl<'de> Deserialize<'de> for UrlList {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UrlListVisitor)
    }
}

/// Reads a string or an array of strings, with a message naming both forms otherwise.
struct UrlListVisitor;

impl<'de> serde::de::Visitor<'de> for UrlListVisitor {
    type Value = UrlList;

    fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("a URL string or a list of URL strings")
    }

    fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<UrlList, E> {
        Ok(UrlList {
            entries: vec![value.to_owned()],
            is_list: false,
        })
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UrlList, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = seq.next_element::<String>()? {
            entries.push(entry);
        }
        Ok(UrlList {
            entries,
            is_list: true,
        })
    }
}

/// `[tls]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// Extra CA certificate(s) (PEM) to trust for the control plane.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client key file (PEM).
    pub key_file: Option<PathBuf>,
    /// Client key as a systemd credential name.
    pub key_credential: Option<String>,
}

/// `[activation]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawActivation {
    /// Default mode.
    pub mode: Option<ActivationMode>,
    /// Activation (and commit) timeout.
    pub timeout: Option<String>,
    /// Rollback timeout.
    pub rollback_timeout: Option<String>,
}

/// `[health]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// Soak time.
    pub soak: Option<String>,
    /// Sustained-failure threshold.
    pub sustained_failure: Option<String>,
    /// `rollback` or `halt`.
    pub on_failure: Option<FailurePolicy>,
}

/// `[reboot]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawReboot {
    /// May the agent reboot the host for boot-mode generations.
    #[serde(default)]
    pub allow: bool,
}

/// `[heartbeat]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHeartbeat {
    /// Interval.
    pub interval: Option<String>,
}

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Loopback address of the metrics listener.
    pub listen: Option<String>,
    /// Serve `/metrics`.
    pub metrics: Option<bool>,
    /// Path of the admin socket (status, pause, resume).
    pub socket: Option<PathBuf>,
    /// Group whose members may use the admin socket besides root.
    pub group: Option<String>,
}

/// `[system]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSystem {
    /// Root of the host's filesystem (fixtures point this at a fake root).
    pub root: Option<PathBuf>,
    /// The system profile.
    pub profile: Option<PathBuf>,
    /// `nix-store` command.
    pub nix_store: Option<String>,
    /// `nix-env` command.
    pub nix_env: Option<String>,
    /// `systemd-run` command.
    pub systemd_run: Option<String>,
    /// `systemctl` command.
    pub systemctl: Option<String>,
    /// Refuse closures without a signature from `trusted_public_keys`.
    #[serde(default)]
    pub require_signatures: bool,
    /// Trusted signing keys (`name:base64`).
    #[serde(default)]
    pub trusted_public_keys: Vec<String>,
}

/// `[probes.<name>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    /// `exec`, `http`, `tcp` or `systemd`.
    pub kind: Option<String>,
    /// `enforce` or `observe` (default enforce).
    pub mode: Option<ProbeMode>,
    /// Interval (default 10s, at least 1s).
    pub interval: Option<String>,
    /// Timeout (default 5s).
    pub timeout: Option<String>,
    /// exec: argv.
    pub command: Option<Vec<String>>,
    /// http: URL.
    pub url: Option<String>,
    /// http: expected status (default 200).
    pub expect_status: Option<u16>,
    /// http: substring the body must contain.
    pub body_contains: Option<String>,
    /// tcp: `host:port`.
    pub address: Option<String>,
    /// systemd: unit name.
    pub unit: Option<String>,
}
