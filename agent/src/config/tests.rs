//! Tests of the configuration contract: defaults, every key, and errors that name the key.

use fleetnode_state_machine::{ActivationMode, FailurePolicy};

use super::*;

const MINIMAL: &str = r#"
control_plane_url = "https://cp.example.org:8443"
host_id = "web-01"
token_credential = "token"
"#;

fn err(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

#[test]
fn minimal_config_takes_documented_defaults() {
    let c = Config::parse(MINIMAL).unwrap();
    assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(c.heartbeat_interval, Millis::from_secs(30));
    assert_eq!(c.policy.default_mode, ActivationMode::TestThenCommit);
    assert_eq!(c.policy.health.soak_ms, Millis::from_secs(300));
    assert_eq!(c.policy.health.on_failure, FailurePolicy::Rollback);
    assert_eq!(c.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
    assert_eq!(c.token, Some(SecretSource::Credential("token".into())));
    assert_eq!(c.system, SystemConfig::default());
    assert!(c.metrics);
    assert_eq!(c.admin_socket, PathBuf::from(DEFAULT_ADMIN_SOCKET));
    assert_eq!(c.admin_group, None);
}

#[test]
fn full_config_parses() {
    let text = format!(
        "{MINIMAL}{}",
        r#"
log_format = "json"
[tls]
ca_file = "/etc/fleetnode/ca.pem"
cert_file = "/etc/fleetnode/host.pem"
key_credential = "tls-key"
[activation]
mode = "switch"
timeout = "10m"
rollback_timeout = "5m"
[health]
soak = "2m"
sustained_failure = "30s"
on_failure = "halt"
[reboot]
allow = true
[heartbeat]
interval = "15s"
[admin]
listen = "127.0.0.1:9999"
metrics = false
socket = "/run/fleetnode-test/admin.sock"
group = "fleetnode-admin"
[system]
root = "/tmp/root"
require_signatures = true
trusted_public_keys = ["cache:abc="]
[probes.web]
kind = "http"
url = "https://localhost/health"
body_contains = "ok"
[probes.sshd]
kind = "systemd"
unit = "sshd.service"
mode = "observe"
interval = "30s"
[probes.check]
kind = "exec"
command = ["/bin/true"]
[probes.db]
kind = "tcp"
address = "127.0.0.1:5432"
"#
    );
    let c = Config::parse(&text).unwrap();
    assert_eq!(c.log_format, LogFormat::Json);
    assert_eq!(c.policy.default_mode, ActivationMode::Switch);
    assert_eq!(c.policy.activation_timeout_ms, Millis::from_secs(600));
    assert_eq!(c.policy.rollback_timeout_ms, Millis::from_secs(300));
    assert_eq!(c.policy.health.on_failure, FailurePolicy::Halt);
    assert!(c.policy.reboot_allowed);
    assert_eq!(c.probes.len(), 4);
    assert_eq!(
        c.policy.probes.get(&ProbeId::parse("sshd").unwrap()),
        Some(&ProbeMode::Observe)
    );
    assert!(!c.metrics);
    assert_eq!(
        c.admin_socket,
        PathBuf::from("/run/fleetnode-test/admin.sock")
    );
    assert_eq!(c.admin_group.as_deref(), Some("fleetnode-admin"));
    assert_eq!(c.heartbeat_interval, Millis::from_secs(15));
}

#[test]
fn errors_name_the_key() {
    let cases = [
        ("host_id = \"x\"\ntoken_file = \"/t\"", "control_plane_url"),
        (
            "control_plane_url = \"http://cp.example.org\"\nhost_id = \"a\"\ntoken_file = \"/t\"",
            "control_plane_url",
        ),
        (
            "control_plane_url = \"https://cp\"\nhost_id = \"Bad Host\"\ntoken_file = \"/t\"",
            "host_id",
        ),
        (
            "control_plane_url = \"https://cp\"\nhost_id = \"a\"",
            "token_credential",
        ),
        (
            &format!("{MINIMAL}[probes.web]\nkind = \"http\"\nunit = \"x\""),
            "probes.web.unit",
        ),
        (
            &format!("{MINIMAL}[probes.web]\nkind = \"http\""),
            "probes.web.url",
        ),
        (
            &format!("{MINIMAL}[probes.web]\nkind = \"ftp\""),
            "probes.web.kind",
        ),
        (
            &format!(
                "{MINIMAL}[probes.web]\nkind = \"exec\"\ncommand = [\"/x\"]\ninterval = \"10ms\""
            ),
            "probes.web.interval",
        ),
        (
            &format!("{MINIMAL}[health]\nsoak = \"5 fortnights\""),
            "health.soak",
        ),
        (
            &format!("{MINIMAL}[admin]\nlisten = \"nowhere\""),
            "admin.listen",
        ),
        (
            &format!("{MINIMAL}[tls]\ncert_file = \"/c\""),
            "tls.cert_file",
        ),
        (
            &format!("{MINIMAL}[admin]\nlisten = \"0.0.0.0:9731\""),
            "admin.listen",
        ),
        (
            &format!("{MINIMAL}[admin]\nsocket = \"admin.sock\""),
            "admin.socket",
        ),
        (
            &format!(
                "{MINIMAL}[admin]\nsocket = \"/run/{}/a.sock\"",
                "x".repeat(120)
            ),
            "admin.socket",
        ),
        (
            &format!("{MINIMAL}[admin]\ngroup = \"Admins\""),
            "admin.group",
        ),
        (
            &format!("{MINIMAL}[admin]\ngroup = \"ops:wheel\""),
            "admin.group",
        ),
        (&format!("{MINIMAL}[admin]\ngroup = \"\""), "admin.group"),
    ];
    for (text, key) in cases {
        let message = err(text);
        assert!(message.starts_with(key), "{key}: {message}");
    }
}

#[test]
fn unknown_keys_are_refused() {
    let message = err(&format!("{MINIMAL}colour = \"blue\""));
    assert!(message.contains("colour"), "{message}");
    let message = err(&format!("{MINIMAL}[health]\nsoak_time = \"1m\""));
    assert!(message.contains("soak_time"), "{message}");
}

#[test]
fn insecure_http_is_loopback_only() {
    let text = "control_plane_url = \"http://127.0.0.1:8080\"\nhost_id = \"a\"\ntoken_file = \"/t\"\nallow_insecure_http = true";
    assert!(Config::parse(text).is_ok());
    let text = text.replace("127.0.0.1", "10.0.0.1");
    assert!(err(&text).contains("loopback"));
}

#[test]
fn durations_parse() {
    assert_eq!(parse_duration("500ms"), Ok(Millis(500)));
    assert_eq!(parse_duration("30s"), Ok(Millis(30_000)));
    assert_eq!(parse_duration("30"), Ok(Millis(30_000)));
    assert_eq!(parse_duration("5m"), Ok(Millis(300_000)));
    assert_eq!(parse_duration("2h"), Ok(Millis(7_200_000)));
    assert!(parse_duration("").is_err());
    assert!(parse_duration("5w").is_err());
    assert!(parse_duration("99999999999999999h").is_err());
}

#[test]
fn one_url_or_a_list_of_urls() {
    let tail = "host_id = \"a\"\ntoken_file = \"/t\"\n";
    let one = Config::parse(&format!("control_plane_url = \"https://cp:8443/\"\n{tail}")).unwrap();
    assert_eq!(one.control_plane.as_slice(), ["https://cp:8443"]);
    let list = Config::parse(&format!(
        "control_plane_url = [\"https://cp-1:8443\", \"https://cp-2:8443/fleet/\"]\n{tail}"
    ))
    .unwrap();
    assert_eq!(
        list.control_plane.as_slice(),
        ["https://cp-1:8443", "https://cp-2:8443/fleet"]
    );
    assert_eq!(list.control_plane.first(), "https://cp-1:8443");
    assert_eq!(
        list.control_plane.to_string(),
        "https://cp-1:8443, https://cp-2:8443/fleet"
    );
    let single = Config::parse(&format!("control_plane_url = [\"https://cp\"]\n{tail}")).unwrap();
    assert_eq!(single.control_plane.as_slice(), ["https://cp"]);
}

#[test]
fn each_listed_url_is_checked_and_named() {
    let tail = "host_id = \"a\"\ntoken_file = \"/t\"\n";
    let cases = [
        (
            "[\"https://cp-1\", \"http://cp-2\"]",
            "control_plane_url[1]: \"http://cp-2\" uses plain http://",
        ),
        (
            "[\"cp-1:8443\"]",
            "control_plane_url[0]: \"cp-1:8443\" must start with https://",
        ),
        (
            "[\"https://cp-1\", \"https://cp-2\", \"https:///x\"]",
            "control_plane_url[2]: \"https:///x\" has no host name",
        ),
        (
            "[\"https://cp-1\", \"https://cp-1/\"]",
            "control_plane_url[1]: \"https://cp-1/\" repeats control_plane_url[0]",
        ),
        ("[]", "control_plane_url: the list is empty"),
        (
            "\"ftp://cp\"",
            "control_plane_url: \"ftp://cp\" must start with https://",
        ),
    ];
    for (value, expected) in cases {
        let message = err(&format!("control_plane_url = {value}\n{tail}"));
        assert!(message.starts_with(expected), "{value}: {message}");
    }
    let many = (0..=MAX_CONTROL_PLANE_URLS)
        .map(|i| format!("\"https://cp-{i}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let message = err(&format!("control_plane_url = [{many}]\n{tail}"));
    assert!(message.contains("at most 16"), "{message}");
    // Not a string nor a list of strings: the parser says which forms it takes.
    for (value, expected) in [
        ("8443", "expected a URL string or a list of URL strings"),
        (
            "{ url = \"https://cp\" }",
            "expected a URL string or a list of URL strings",
        ),
        ("[8443]", "invalid type: integer `8443`, expected a string"),
    ] {
        let message = err(&format!("control_plane_url = {value}\n{tail}"));
        assert!(message.contains("control_plane_url"), "{value}: {message}");
        assert!(message.contains(expected), "{value}: {message}");
    }
}

#[test]
fn insecure_http_applies_to_every_listed_url() {
    let text = "control_plane_url = [\"http://127.0.0.1:8080\", \"http://[::1]:8080\", \"http://localhost:9\"]\nhost_id = \"a\"\ntoken_file = \"/t\"\nallow_insecure_http = true";
    assert_eq!(
        Config::parse(text).unwrap().control_plane.as_slice().len(),
        3
    );
    let text = text.replace("localhost", "10.0.0.1");
    let message = err(&text);
    assert!(
        message.starts_with("control_plane_url[2]: \"http://10.0.0.1:9\" is not on loopback"),
        "{message}"
    );
}
