//! `[probes.<name>]`: one health probe, checked by its kind.

use fleetnode_state_machine::{Millis, ProbeId, ProbeMode};

use super::sections::{duration, invalid};
use super::{ConfigError, MIN_PROBE_INTERVAL, ProbeCheck, ProbeSpec, RawProbe};

/// The kinds of probes and the keys each one takes.
const KINDS: [(&str, &[&str]); 4] = [
    ("exec", &["command"]),
    ("http", &["url", "expect_status", "body_contains"]),
    ("tcp", &["address"]),
    ("systemd", &["unit"]),
];

/// Validates the probe `name`; the error names the offending key (`probes.<name>.<key>`).
pub(super) fn probe(name: &str, raw: &RawProbe) -> Result<ProbeSpec, ConfigError> {
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
    only_keys_of(kind, raw, &key)?;
    let required = |field: &str| invalid(key(field), format!("required for a {kind} probe"));
    let check = match kind {
        "exec" => exec(
            raw.command.clone().ok_or_else(|| required("command"))?,
            &key,
        )?,
        "http" => http(raw, raw.url.clone().ok_or_else(|| required("url"))?, &key)?,
        "tcp" => tcp(
            raw.address.clone().ok_or_else(|| required("address"))?,
            &key,
        )?,
        _systemd => systemd(raw.unit.clone().ok_or_else(|| required("unit"))?, &key)?,
    };
    Ok(ProbeSpec {
        id,
        mode: raw.mode.unwrap_or(ProbeMode::Enforce),
        interval,
        timeout,
        check,
    })
}

/// Refuses an unknown kind, and a key set that belongs to another kind.
fn only_keys_of(
    kind: &str,
    raw: &RawProbe,
    key: &impl Fn(&str) -> String,
) -> Result<(), ConfigError> {
    let allowed = KINDS
        .iter()
        .find(|(name, _)| *name == kind)
        .map(|(_, keys)| *keys)
        .ok_or_else(|| {
            invalid(
                key("kind"),
                format!("unknown kind {kind:?}; one of exec, http, tcp, systemd"),
            )
        })?;
    let set: [(&str, bool); 6] = [
        ("command", raw.command.is_some()),
        ("url", raw.url.is_some()),
        ("expect_status", raw.expect_status.is_some()),
        ("body_contains", raw.body_contains.is_some()),
        ("address", raw.address.is_some()),
        ("unit", raw.unit.is_some()),
    ];
    match set
        .iter()
        .find(|(field, is_set)| *is_set && !allowed.contains(field))
    {
        Some((field, _)) => Err(invalid(
            key(field),
            format!("does not apply to a {kind} probe"),
        )),
        None => Ok(()),
    }
}

fn exec(argv: Vec<String>, key: &impl Fn(&str) -> String) -> Result<ProbeCheck, ConfigError> {
    if argv.first().is_none_or(String::is_empty) {
        return Err(invalid(key("command"), "must name a program"));
    }
    if argv.iter().any(|arg| arg.contains('\0')) {
        return Err(invalid(key("command"), "must not contain NUL bytes"));
    }
    Ok(ProbeCheck::Exec { argv })
}

fn http(
    raw: &RawProbe,
    url: String,
    key: &impl Fn(&str) -> String,
) -> Result<ProbeCheck, ConfigError> {
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
    Ok(ProbeCheck::Http {
        url,
        expect_status,
        body_contains: raw.body_contains.clone(),
    })
}

fn tcp(address: String, key: &impl Fn(&str) -> String) -> Result<ProbeCheck, ConfigError> {
    if address
        .rsplit_once(':')
        .is_none_or(|(_, port)| port.parse::<u16>().is_err())
    {
        return Err(invalid(key("address"), "must be host:port"));
    }
    Ok(ProbeCheck::Tcp { address })
}

fn systemd(unit: String, key: &impl Fn(&str) -> String) -> Result<ProbeCheck, ConfigError> {
    if unit.is_empty() || unit.starts_with('-') || unit.contains(['/', '\0']) {
        return Err(invalid(key("unit"), "is not a unit name"));
    }
    Ok(ProbeCheck::Systemd { unit })
}
