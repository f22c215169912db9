//! The validated settings of each section of the file, key by key.

use std::net::SocketAddr;
use std::path::PathBuf;

use fleetnode_state_machine::{HealthPolicy, LocalPolicy, Millis};
use fleetnode_wire::HostId;

use super::{
    ConfigError, DEFAULT_ADMIN_LISTEN, DEFAULT_ADMIN_SOCKET, LogFormat, MIN_HEARTBEAT_INTERVAL,
    ProbeSpec, RawConfig, SecretSource, SystemConfig, TlsConfig, parse_duration,
};

pub(super) fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

/// A duration key, or its default when absent.
pub(super) fn duration(
    key: &str,
    value: &Option<String>,
    default: Millis,
) -> Result<Millis, ConfigError> {
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

/// `host_id`: this host's DNS-label id.
pub(super) fn host_id(raw: &RawConfig) -> Result<HostId, ConfigError> {
    raw.host_id
        .as_deref()
        .ok_or_else(|| invalid("host_id", "missing; set it to this host's id"))
        .and_then(|id| HostId::parse(id).map_err(|e| invalid("host_id", e.to_string())))
}

/// The host token and the TLS settings: at least one way to authenticate, and a client
/// certificate only with its key.
pub(super) fn authentication(
    raw: &RawConfig,
) -> Result<(Option<SecretSource>, TlsConfig), ConfigError> {
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
    let tls = TlsConfig {
        ca_file: raw.tls.ca_file.clone(),
        cert_file: raw.tls.cert_file.clone(),
        key,
    };
    Ok((token, tls))
}

/// `log_format`: `text` (the default) or `json`.
pub(super) fn log_format(raw: &RawConfig) -> Result<LogFormat, ConfigError> {
    match raw.log_format.as_deref() {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(invalid(
            "log_format",
            format!("{other:?} is not text or json"),
        )),
    }
}

/// `[activation]`, `[health]`, `[reboot]` and the probes' modes: what the state machine
/// decides with.
pub(super) fn policy(raw: &RawConfig, probes: &[ProbeSpec]) -> Result<LocalPolicy, ConfigError> {
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
    Ok(LocalPolicy {
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
    })
}

/// `heartbeat.interval`: at least [`MIN_HEARTBEAT_INTERVAL`].
pub(super) fn heartbeat_interval(raw: &RawConfig) -> Result<Millis, ConfigError> {
    let interval = duration(
        "heartbeat.interval",
        &raw.heartbeat.interval,
        Millis::from_secs(30),
    )?;
    if interval < MIN_HEARTBEAT_INTERVAL {
        return Err(invalid("heartbeat.interval", "must be at least 1s"));
    }
    Ok(interval)
}

/// `admin.listen`: a loopback address only. The listener serves nothing but `/metrics`, which
/// is read-only, yet it has no authentication and nothing beyond the host should reach it.
pub(super) fn admin_listen(raw: &RawConfig) -> Result<SocketAddr, ConfigError> {
    let listen = raw
        .admin
        .listen
        .as_deref()
        .unwrap_or(DEFAULT_ADMIN_LISTEN)
        .parse::<SocketAddr>()
        .map_err(|e| invalid("admin.listen", format!("{e}; expected ip:port")))?;
    if !listen.ip().is_loopback() {
        return Err(invalid(
            "admin.listen",
            format!(
                "{listen} is not a loopback address; the metrics listener has no authentication, so it only listens on 127.0.0.1 or [::1]"
            ),
        ));
    }
    Ok(listen)
}

/// `admin.socket`: an absolute path whose file name is a plain name.
pub(super) fn admin_socket(raw: &RawConfig) -> Result<PathBuf, ConfigError> {
    let path = raw
        .admin
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_ADMIN_SOCKET));
    if !path.is_absolute() || path.file_name().is_none() {
        return Err(invalid(
            "admin.socket",
            format!(
                "{} must be an absolute path to a file, such as {DEFAULT_ADMIN_SOCKET}",
                path.display()
            ),
        ));
    }
    // sun_path holds 108 bytes with the terminating NUL; longer paths cannot be bound.
    if path.as_os_str().len() > 107 {
        return Err(invalid(
            "admin.socket",
            format!(
                "{} is longer than the 107 bytes a Unix socket's path may have",
                path.display()
            ),
        ));
    }
    Ok(path)
}

/// `admin.group`: a group name as `groupadd` accepts it (resolved when the socket is bound, so
/// a group created after the configuration was checked still works).
pub(super) fn admin_group(raw: &RawConfig) -> Result<Option<String>, ConfigError> {
    let Some(name) = &raw.admin.group else {
        return Ok(None);
    };
    let mut bytes = name.bytes();
    let first_ok = bytes
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
    let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
    if !first_ok || !rest_ok || name.len() > 32 {
        return Err(invalid(
            "admin.group",
            format!(
                "{name:?} is not a group name: a lower-case letter or '_', then up to 31 lower-case letters, digits, '_' or '-'"
            ),
        ));
    }
    Ok(Some(name.clone()))
}

/// `[system]`: where the host's systems are and which commands act on them.
pub(super) fn system(raw: &RawConfig) -> Result<SystemConfig, ConfigError> {
    let defaults = SystemConfig::default();
    let absolute = |key: &str, value: &Option<PathBuf>, default: PathBuf| {
        let path = value.clone().unwrap_or(default);
        if path.is_absolute() {
            Ok(path)
        } else {
            Err(invalid(key, "must be an absolute path"))
        }
    };
    let command = |key: &str, value: &Option<String>, default: String| {
        let value = value.clone().unwrap_or(default);
        if value.is_empty() || value.contains('\0') {
            Err(invalid(key, "must name a command"))
        } else {
            Ok(value)
        }
    };
    let system = &raw.system;
    let root = absolute("system.root", &system.root, defaults.root)?;
    let profile = absolute("system.profile", &system.profile, defaults.profile)?;
    if system.require_signatures && system.trusted_public_keys.is_empty() {
        return Err(invalid(
            "system.trusted_public_keys",
            "require_signatures is set but no trusted key is listed",
        ));
    }
    Ok(SystemConfig {
        root,
        profile,
        nix_store: command("system.nix_store", &system.nix_store, defaults.nix_store)?,
        nix_env: command("system.nix_env", &system.nix_env, defaults.nix_env)?,
        systemd_run: command(
            "system.systemd_run",
            &system.systemd_run,
            defaults.systemd_run,
        )?,
        systemctl: command("system.systemctl", &system.systemctl, defaults.systemctl)?,
        require_signatures: system.require_signatures,
        trusted_public_keys: system.trusted_public_keys.clone(),
    })
}
