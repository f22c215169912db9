//! The committed JSON Schema (`docs/schema/`) is what the wire types generate: a change of a
//! message that is not in the schema files fails here. `UPDATE_SCHEMA=1` rewrites them; review
//! the diff like any change of the protocol.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;

use fleetnode_wire::schema::{messages, render};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/schema")
}

#[test]
fn the_committed_schema_is_what_the_types_generate() {
    let update = std::env::var_os("UPDATE_SCHEMA").is_some();
    let mut stale = Vec::new();
    for message in messages() {
        let file = dir().join(format!("{}.schema.json", message.name));
        let generated = render(&message.schema);
        if update {
            std::fs::create_dir_all(dir()).unwrap();
            std::fs::write(&file, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        if committed != generated {
            stale.push(file.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "these schema files differ from the wire types (run with UPDATE_SCHEMA=1 and review the diff): {stale:?}"
    );
}

#[test]
fn every_schema_file_belongs_to_a_message() {
    let known: BTreeSet<String> = messages()
        .iter()
        .map(|m| format!("{}.schema.json", m.name))
        .collect();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(known.contains(&name), "docs/schema/{name} is no message");
    }
}

#[test]
fn every_report_type_is_in_the_event_batch_schema() {
    let batch = messages()
        .into_iter()
        .find(|m| m.name == "event-batch")
        .unwrap();
    let text = render(&batch.schema);
    for name in fleetnode_wire::Report::NAMES {
        assert!(
            text.contains(&format!("\"const\": \"{name}\"")),
            "report {name} is missing from the event-batch schema"
        );
    }
}
