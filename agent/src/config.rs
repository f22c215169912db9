//! The agent's configuration file (TOML, default `/etc/fleetnode/agent.toml`).
//!
//! This is the contract with the NixOS module (`nix/module.nix` renders exactly these keys) and
//! with `docs/configuration.md`. Parsing goes from text to [`RawConfig`] (serde, unknown keys
//! refused so a typo is an error) and then to [`Config`], whose fields are validated types.
//! Every error names the offending key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fleetnode_state_machine::{
    ActivationMode, FailurePolicy, HealthPolicy, LocalPolicy, Millis, ProbeId, ProbeMode,
};
use fleetnode_wire::HostId;
use serde::Deserialize;

/// Where the agent looks for its configuration by default.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/fleetnode/agent.toml";
/// Default state directory (holds the redb store).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/fleetnode";
/// Default local admin listener.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9731";
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

/// The configuration file as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// `https://` URL of the control plane.
    pub control_plane_url: Option<String>,
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
    /// Listen address (loopback recommended).
    pub listen: Option<String>,
    /// Serve `/metrics`.
    pub metrics: Option<bool>,
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
    /// Control plane base URL (validated: https, or http on loopback when allowed).
    pub control_plane_url: String,
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
    /// Admin listener address.
    pub admin_listen: SocketAddr,
    /// Serve `/metrics`.
    pub metrics: bool,
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

/// Parses a duration such as `500ms`, `30s`, `5m`, `1h` (a bare number is seconds).
pub fn parse_duration(text: &str) -> Result<Millis, String> {
    Millis::parse(text)
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

fn duration(key: &str, value: &Option<String>, default: Millis) -> Result<Millis, ConfigError> {
    match value {
        None => Ok(default),
        Some(text) => parse_duration(text).map_err(|message| invalid(key, message)),
    }
}

fn credential_name(key: &str, name: &str) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with('.');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(invalid(
            key,
            "a credential name is [A-Za-z0-9_.-]+ as given to LoadCredential=",
        ))
    }
}

fn secret_source(
    file_key: &str,
    file: &Option<PathBuf>,
    cred_key: &str,
    cred: &Option<String>,
) -> Result<Option<SecretSource>, ConfigError> {
    match (file, cred) {
        (Some(_), Some(_)) => Err(invalid(
            cred_key,
            format!("set either {file_key} or {cred_key}, not both"),
        )),
        (Some(path), None) => Ok(Some(SecretSource::File(path.clone()))),
        (None, Some(name)) => Ok(Some(SecretSource::Credential(credential_name(
            cred_key, name,
        )?))),
        (None, None) => Ok(None),
    }
}

/// Checks the control plane URL: `https://host[:port][/path]`, or `http://` to a loopback
/// address when explicitly allowed.
fn control_plane_url(raw: &RawConfig) -> Result<String, ConfigError> {
    let key = "control_plane_url";
    let url = raw
        .control_plane_url
        .as_deref()
        .ok_or_else(|| invalid(key, "missing; set it to the control plane's https:// URL"))?;
    let url = url.trim_end_matches('/');
    if let Some(rest) = url.strip_prefix("https://") {
        if rest.is_empty() || rest.starts_with('/') {
            return Err(invalid(key, "has no host name"));
        }
        return Ok(url.to_owned());
    }
    if let Some(rest) = url.strip_prefix("http://") {
        if !raw.allow_insecure_http {
            return Err(invalid(
                key,
                "plain http:// is refused; use https:// (allow_insecure_http = true exists for loopback tests only)",
            ));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        let host = authority
            .rsplit_once(':')
            .map_or(authority, |(host, _)| host)
            .trim_matches(|c| c == '[' || c == ']');
        let loopback = host == "localhost"
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !loopback {
            return Err(invalid(
                key,
                "allow_insecure_http only permits loopback addresses (127.0.0.1, ::1, localhost)",
            ));
        }
        return Ok(url.to_owned());
    }
    Err(invalid(key, "must start with https://"))
}

fn probe(name: &str, raw: &RawProbe) -> Result<ProbeSpec, ConfigError> {
    let key = |field: &str| format!("probes.{name}.{field}");
    let id = ProbeId::parse(name).map_err(|e| invalid(format!("probes.{name}"), e.to_string()))?;
    if name == ProbeId::CONTROL_PLANE {
        return Err(invalid(
            format!("probes.{name}"),
            "the name control-plane is reserved for the built-in reachability probe",
        ));
    }
    let interval = duration(&key("interval"), &raw.interval, Millis::from_secs(10))?;
    if interval < MIN_PROBE_INTERVAL {
        return Err(invalid(key("interval"), "must be at least 1s"));
    }
    let timeout = duration(&key("timeout"), &raw.timeout, Millis::from_secs(5))?;
    if timeout.0 == 0 {
        return Err(invalid(key("timeout"), "must be more than zero"));
    }
    let kind = raw
        .kind
        .as_deref()
        .ok_or_else(|| invalid(key("kind"), "missing; one of exec, http, tcp, systemd"))?;
    let fields: [(&str, bool); 6] = [
        ("command", raw.command.is_some()),
        ("url", raw.url.is_some()),
        ("expect_status", raw.expect_status.is_some()),
        ("body_contains", raw.body_contains.is_some()),
        ("address", raw.address.is_some()),
        ("unit", raw.unit.is_some()),
    ];
    let allowed: &[&str] = match kind {
        "exec" => &["command"],
        "http" => &["url", "expect_status", "body_contains"],
        "tcp" => &["address"],
        "systemd" => &["unit"],
        other => {
            return Err(invalid(
                key("kind"),
                format!("unknown kind {other:?}; one of exec, http, tcp, systemd"),
            ));
        }
    };
    if let Some((field, _)) = fields
        .iter()
        .find(|(field, set)| *set && !allowed.contains(field))
    {
        return Err(invalid(
            key(field),
            format!("does not apply to a {kind} probe"),
        ));
    }
    let required = |field: &str| invalid(key(field), format!("required for a {kind} probe"));
    let check = match kind {
        "exec" => {
            let argv = raw.command.clone().ok_or_else(|| required("command"))?;
            match argv.first() {
                None => return Err(invalid(key("command"), "must name a program")),
                Some(program) if program.is_empty() => {
                    return Err(invalid(key("command"), "must name a program"));
                }
                Some(_) => {}
            }
            if argv.iter().any(|arg| arg.contains('\0')) {
                return Err(invalid(key("command"), "must not contain NUL bytes"));
            }
            ProbeCheck::Exec { argv }
        }
        "http" => {
            let url = raw.url.clone().ok_or_else(|| required("url"))?;
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(invalid(key("url"), "must start with http:// or https://"));
            }
            let expect_status = raw.expect_status.unwrap_or(200);
            if !(100..=599).contains(&expect_status) {
                return Err(invalid(
                    key("expect_status"),
                    "must be an HTTP status (100-599)",
                ));
            }
            ProbeCheck::Http {
                url,
                expect_status,
                body_contains: raw.body_contains.clone(),
            }
        }
        "tcp" => {
            let address = raw.address.clone().ok_or_else(|| required("address"))?;
            if address
                .rsplit_once(':')
                .is_none_or(|(_, port)| port.parse::<u16>().is_err())
            {
                return Err(invalid(key("address"), "must be host:port"));
            }
            ProbeCheck::Tcp { address }
        }
        _systemd => {
            let unit = raw.unit.clone().ok_or_else(|| required("unit"))?;
            if unit.is_empty() || unit.starts_with('-') || unit.contains(['/', '\0']) {
                return Err(invalid(key("unit"), "is not a unit name"));
            }
            ProbeCheck::Systemd { unit }
        }
    };
    Ok(ProbeSpec {
        id,
        mode: raw.mode.unwrap_or(ProbeMode::Enforce),
        interval,
        timeout,
        check,
    })
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

    /// Validates a parsed file.
    pub fn from_raw(raw: &RawConfig) -> Result<Self, ConfigError> {
        let control_plane_url = control_plane_url(raw)?;
        let host_id = raw
            .host_id
            .as_deref()
            .ok_or_else(|| invalid("host_id", "missing; set it to this host's id"))
            .and_then(|id| HostId::parse(id).map_err(|e| invalid("host_id", e.to_string())))?;
        let token = secret_source(
            "token_file",
            &raw.token_file,
            "token_credential",
            &raw.token_credential,
        )?;
        let key = secret_source(
            "tls.key_file",
            &raw.tls.key_file,
            "tls.key_credential",
            &raw.tls.key_credential,
        )?;
        if raw.tls.cert_file.is_some() != key.is_some() {
            return Err(invalid(
                "tls.cert_file",
                "a client certificate needs its key (tls.key_file or tls.key_credential) and the other way round",
            ));
        }
        if token.is_none() && raw.tls.cert_file.is_none() {
            return Err(invalid(
                "token_credential",
                "no authentication configured: set token_credential or token_file, or a client certificate",
            ));
        }
        let log_format = match raw.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid(
                    "log_format",
                    format!("{other:?} is not text or json"),
                ));
            }
        };
        let defaults = LocalPolicy::default();
        let health = HealthPolicy {
            soak_ms: duration("health.soak", &raw.health.soak, defaults.health.soak_ms)?,
            sustained_failure_ms: duration(
                "health.sustained_failure",
                &raw.health.sustained_failure,
                defaults.health.sustained_failure_ms,
            )?,
            on_failure: raw.health.on_failure.unwrap_or(defaults.health.on_failure),
        };
        let probes = raw
            .probes
            .iter()
            .map(|(name, probe_raw)| probe(name, probe_raw))
            .collect::<Result<Vec<_>, _>>()?;
        let policy = LocalPolicy {
            default_mode: raw.activation.mode.unwrap_or(defaults.default_mode),
            health,
            activation_timeout_ms: duration(
                "activation.timeout",
                &raw.activation.timeout,
                defaults.activation_timeout_ms,
            )?,
            rollback_timeout_ms: duration(
                "activation.rollback_timeout",
                &raw.activation.rollback_timeout,
                defaults.rollback_timeout_ms,
            )?,
            reboot_allowed: raw.reboot.allow,
            probes: probes.iter().map(|p| (p.id.clone(), p.mode)).collect(),
        };
        let heartbeat_interval = duration(
            "heartbeat.interval",
            &raw.heartbeat.interval,
            Millis::from_secs(30),
        )?;
        if heartbeat_interval < MIN_HEARTBEAT_INTERVAL {
            return Err(invalid("heartbeat.interval", "must be at least 1s"));
        }
        let admin_listen = raw
            .admin
            .listen
            .as_deref()
            .unwrap_or(DEFAULT_ADMIN_LISTEN)
            .parse::<SocketAddr>()
            .map_err(|e| invalid("admin.listen", format!("{e}; expected ip:port")))?;
        if !admin_listen.ip().is_loopback() {
            return Err(invalid(
                "admin.listen",
                format!(
                    "{admin_listen} is not a loopback address; the admin listener has no authentication (pause, resume), so it only listens on 127.0.0.1 or [::1]"
                ),
            ));
        }
        let system_defaults = SystemConfig::default();
        let root = raw.system.root.clone().unwrap_or(system_defaults.root);
        if !root.is_absolute() {
            return Err(invalid("system.root", "must be an absolute path"));
        }
        let profile = raw
            .system
            .profile
            .clone()
            .unwrap_or(system_defaults.profile);
        if !profile.is_absolute() {
            return Err(invalid("system.profile", "must be an absolute path"));
        }
        if raw.system.require_signatures && raw.system.trusted_public_keys.is_empty() {
            return Err(invalid(
                "system.trusted_public_keys",
                "require_signatures is set but no trusted key is listed",
            ));
        }
        let command = |key: &str, value: &Option<String>, default: String| {
            let value = value.clone().unwrap_or(default);
            if value.is_empty() || value.contains('\0') {
                Err(invalid(key, "must name a command"))
            } else {
                Ok(value)
            }
        };
        let system = SystemConfig {
            root,
            profile,
            nix_store: command(
                "system.nix_store",
                &raw.system.nix_store,
                system_defaults.nix_store,
            )?,
            nix_env: command(
                "system.nix_env",
                &raw.system.nix_env,
                system_defaults.nix_env,
            )?,
            systemd_run: command(
                "system.systemd_run",
                &raw.system.systemd_run,
                system_defaults.systemd_run,
            )?,
            systemctl: command(
                "system.systemctl",
                &raw.system.systemctl,
                system_defaults.systemctl,
            )?,
            require_signatures: raw.system.require_signatures,
            trusted_public_keys: raw.system.trusted_public_keys.clone(),
        };
        Ok(Self {
            control_plane_url,
            host_id,
            token,
            state_dir: raw
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            log_format,
            tls: TlsConfig {
                ca_file: raw.tls.ca_file.clone(),
                cert_file: raw.tls.cert_file.clone(),
                key,
            },
            policy,
            heartbeat_interval,
            admin_listen,
            metrics: raw.admin.metrics.unwrap_or(true),
            system,
            probes,
        })
    }
}

#[cfg(test)]
mod tests;
