//! The agent's configuration file (TOML, default `/etc/fleetnode/agent.toml`).
//!
//! This is the contract with the NixOS module (`nix/module.nix` renders exactly these keys) and
//! with `docs/configuration.md`. Parsing goes from text to [`RawConfig`] (serde, unknown keys
//! refused so a typo is an error) and then to [`Config`], whose fields are validated types.
//! Every error names the offending key.

mod probe;
mod raw;
mod sections;
mod urls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fleetnode_state_machine::{LocalPolicy, Millis, ProbeId, ProbeMode};
use fleetnode_wire::HostId;

pub use raw::{
    RawActivation, RawAdmin, RawConfig, RawHealth, RawHeartbeat, RawProbe, RawReboot, RawSystem,
    RawTls, UrlList,
};
pub use urls::{ControlPlaneUrls, MAX_CONTROL_PLANE_URLS};

/// Parses a duration written for humans (`500ms`, `30s`, `5m`, `1h`, `1d`; a bare number is
/// seconds).
pub fn parse_duration(text: &str) -> Result<Millis, String> {
    Millis::parse(text)
}

/// Where the agent looks for its configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/fleetnode/agent.toml";
/// Default state directory (holds the redb store).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/fleetnode";
/// Default loopback address of the metrics listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9731";
/// Default path of the admin socket, in the agent's runtime directory.
pub const DEFAULT_ADMIN_SOCKET: &str = "/run/fleetnode/admin.sock";
/// Shortest probe interval accepted: probes are cheap but not free.
pub const MIN_PROBE_INTERVAL: Millis = Millis(1_000);
/// Shortest heartbeat interval accepted.
pub const MIN_HEARTBEAT_INTERVAL: Millis = Millis(1_000);

/// A configuration problem, naming the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The TOML is malformed or has an unknown key or a wrongly typed value.
    #[error("{message}")]
    Syntax {
        /// The parser's message, which names line, column and key.
        message: String,
    },
    /// A value is well-formed but not acceptable.
    #[error("{key}: {message}")]
    Invalid {
        /// Dotted path of the key, e.g. `probes.web.url`.
        key: String,
        /// What is wrong and what to do.
        message: String,
    },
}

/// Where the host token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file.
    File(PathBuf),
    /// A systemd credential name (under `$CREDENTIALS_DIRECTORY`).
    Credential(String),
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable (journald).
    Text,
    /// One JSON object per line.
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Control plane base URLs, at least one (validated: https, or http on loopback when
    /// allowed); the agent uses one at a time and moves to the next when it fails.
    pub control_plane: ControlPlaneUrls,
    /// This host.
    pub host_id: HostId,
    /// Host token source (absent only with a client certificate).
    pub token: Option<SecretSource>,
    /// State directory.
    pub state_dir: PathBuf,
    /// Log format.
    pub log_format: LogFormat,
    /// TLS.
    pub tls: TlsConfig,
    /// Decision policy handed to the state machine.
    pub policy: LocalPolicy,
    /// Heartbeat interval.
    pub heartbeat_interval: Millis,
    /// Loopback address of the metrics listener (`/metrics` only).
    pub admin_listen: SocketAddr,
    /// Serve `/metrics`; without it there is no TCP listener at all.
    pub metrics: bool,
    /// The admin socket: status, pause, resume; root's, and the admin group's when set.
    pub admin_socket: PathBuf,
    /// Group that may use the admin socket besides root (validated name, not yet resolved).
    pub admin_group: Option<String>,
    /// Backend paths and commands.
    pub system: SystemConfig,
    /// Probes.
    pub probes: Vec<ProbeSpec>,
}

/// Validated `[tls]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// Extra CA file.
    pub ca_file: Option<PathBuf>,
    /// Client certificate file.
    pub cert_file: Option<PathBuf>,
    /// Client key source.
    pub key: Option<SecretSource>,
}

/// Validated `[system]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemConfig {
    /// Filesystem root.
    pub root: PathBuf,
    /// System profile path (absolute, inside `root`).
    pub profile: PathBuf,
    /// `nix-store`.
    pub nix_store: String,
    /// `nix-env`.
    pub nix_env: String,
    /// `systemd-run`.
    pub systemd_run: String,
    /// `systemctl`.
    pub systemctl: String,
    /// Require signatures.
    pub require_signatures: bool,
    /// Trusted keys.
    pub trusted_public_keys: Vec<String>,
}

impl Default for SystemConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            profile: PathBuf::from("/nix/var/nix/profiles/system"),
            nix_store: "nix-store".into(),
            nix_env: "nix-env".into(),
            systemd_run: "systemd-run".into(),
            systemctl: "systemctl".into(),
            require_signatures: false,
            trusted_public_keys: Vec::new(),
        }
    }
}

/// One validated probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// Its name.
    pub id: ProbeId,
    /// Enforce or observe.
    pub mode: ProbeMode,
    /// How often it runs.
    pub interval: Millis,
    /// How long one run may take.
    pub timeout: Millis,
    /// What it checks.
    pub check: ProbeCheck,
}

/// What a probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeCheck {
    /// Run a program (argv, no shell); exit 0 passes.
    Exec {
        /// Program and arguments.
        argv: Vec<String>,
    },
    /// HTTP(S) GET.
    Http {
        /// URL.
        url: String,
        /// Expected status.
        expect_status: u16,
        /// Required body substring.
        body_contains: Option<String>,
    },
    /// TCP connect.
    Tcp {
        /// `host:port`.
        address: String,
    },
    /// A systemd unit is active.
    Systemd {
        /// Unit name.
        unit: String,
    },
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::parse(&text)
    }

    /// Parses and validates configuration text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            message: e.to_string(),
        })?;
        Self::from_raw(&raw)
    }

    /// Validates a parsed file; the error names the first offending key.
    pub fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let (token, tls) = sections::authentication(raw)?;
        let probes = raw
            .probes
            .iter()
            .map(|(name, raw)| probe::probe(name, raw))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            control_plane: urls::control_plane_urls(raw)?,
            host_id: sections::host_id(raw)?,
            token,
            state_dir: raw
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            log_format: sections::log_format(raw)?,
            tls,
            policy: sections::policy(raw, &probes)?,
            heartbeat_interval: sections::heartbeat_interval(raw)?,
            admin_listen: sections::admin_listen(raw)?,
            metrics: raw.admin.metrics.unwrap_or(true),
            admin_socket: sections::admin_socket(raw)?,
            admin_group: sections::admin_group(raw)?,
            system: sections::system(raw)?,
            probes,
        })
    }
}

#[cfg(test)]
mod tests;
