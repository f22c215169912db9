//! The agent's own rules for host ids and probe names, held against the table that the NixOS
//! modules' rules (`nix/rules.nix`) are held against too: `nix/tests/names.json`, evaluated in
//! CI by `.ci/nix-check.sh` through `nix/tests/rules.nix`.
//!
//! Each name is given to the real `fleetnode-agent check-config`, once as `host_id` and once as
//! a probe's name. Where the table says the agent accepts a name, the check must pass; where it
//! gives a reason, the check must fail on that key with that reason. So when the agent starts
//! accepting, refusing or explaining a name differently, this test fails until the table, and
//! then `nix/rules.nix`, follow: a module configuration cannot evaluate to one the agent refuses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

use fleetnode_tests::binaries;
use serde::Deserialize;
use toml::{Table, Value};

/// The shared table, relative to this crate.
const TABLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../nix/tests/names.json");

#[derive(Debug, Deserialize)]
struct NameTable {
    names: Vec<Row>,
}

/// One name: `null` where the agent accepts it, else the reason it gives.
#[derive(Debug, Deserialize)]
struct Row {
    name: String,
    host_id: Option<String>,
    probe: Option<String>,
}

#[test]
fn the_agent_refuses_exactly_the_names_the_module_refuses() {
    let text = std::fs::read_to_string(TABLE).expect("read nix/tests/names.json");
    let table: NameTable = serde_json::from_str(&text).expect("parse nix/tests/names.json");
    assert!(
        table.names.len() >= 20,
        "nix/tests/names.json has lost its rows: {} left",
        table.names.len()
    );
    let agent = binaries::locate(binaries::AGENT).expect("the agent binary");
    let dir = tempfile::tempdir().expect("temporary directory");

    let mut disagreements = Vec::new();
    for (index, row) in table.names.iter().enumerate() {
        let as_host = check_config(
            &agent,
            &dir.path().join(format!("host-{index}.toml")),
            config(&row.name, None),
        );
        if let Some(problem) = disagreement("host_id", row.host_id.as_deref(), &as_host) {
            disagreements.push(format!("host id {:?}: {problem}", row.name));
        }
        let as_probe = check_config(
            &agent,
            &dir.path().join(format!("probe-{index}.toml")),
            config("web-01", Some(&row.name)),
        );
        let key = format!("probes.{}", row.name);
        if let Some(problem) = disagreement(&key, row.probe.as_deref(), &as_probe) {
            disagreements.push(format!("probe name {:?}: {problem}", row.name));
        }
    }
    assert!(
        disagreements.is_empty(),
        "the agent and nix/tests/names.json disagree; update the table and nix/rules.nix \
         together:\n{}",
        disagreements.join("\n")
    );
}

/// A configuration that is valid but for `host_id` and, when given, one probe's name.
fn config(host_id: &str, probe: Option<&str>) -> Table {
    let mut config = Table::new();
    config.insert(
        "control_plane_url".into(),
        Value::from("https://cp.example.org"),
    );
    config.insert("host_id".into(), Value::from(host_id));
    config.insert("token_credential".into(), Value::from("token"));
    if let Some(name) = probe {
        let mut tcp = Table::new();
        tcp.insert("kind".into(), Value::from("tcp"));
        tcp.insert("address".into(), Value::from("127.0.0.1:22"));
        let mut probes = Table::new();
        probes.insert(name.to_owned(), Value::Table(tcp));
        config.insert("probes".into(), Value::Table(probes));
    }
    config
}

/// What `check-config` said: whether it passed, and its stderr.
struct Checked {
    passed: bool,
    stderr: String,
}

fn check_config(agent: &Path, file: &Path, config: Table) -> Checked {
    std::fs::write(file, toml::to_string(&config).expect("render TOML")).expect("write config");
    let output = Command::new(agent)
        .arg("check-config")
        .arg(file)
        .output()
        .expect("run fleetnode-agent check-config");
    Checked {
        passed: output.status.success(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Why `checked` does not match the table's `expected` reason for `key`, if it does not.
fn disagreement(key: &str, expected: Option<&str>, checked: &Checked) -> Option<String> {
    match (expected, checked.passed) {
        (None, true) => None,
        (None, false) => Some(format!(
            "the table says accepted, the agent refuses it: {}",
            checked.stderr.trim()
        )),
        (Some(why), true) => Some(format!("the table says {why:?}, the agent accepts it")),
        // The reason ends the agent's message, so the end of a line must follow it.
        (Some(why), false)
            if checked.stderr.contains(&format!("{key}: "))
                && checked.stderr.contains(&format!(": {why}\n")) =>
        {
            None
        }
        (Some(why), false) => Some(format!(
            "the table says {key}: {why:?}, the agent says: {}",
            checked.stderr.trim()
        )),
    }
}
