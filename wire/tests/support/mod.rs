//! The golden-file check shared by the golden tests.

#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::path::PathBuf;

use fleetnode_wire::{Validate, decode};

pub mod examples;

/// The directory of the golden files.
pub fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Checks one golden file against an example value: it parses through the servers' `decode`,
/// equals the example, and re-encodes to the same bytes. `UPDATE_GOLDEN=1` rewrites it.
pub fn check<T>(name: &str, example: T)
where
    T: serde::Serialize + serde::de::DeserializeOwned + Validate + PartialEq + std::fmt::Debug,
{
    let file = golden_dir().join(format!("{name}.json"));
    let pretty = serde_json::to_string_pretty(&example).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&file, &pretty).unwrap();
    }
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e}; run with UPDATE_GOLDEN=1", file.display()));
    let parsed: T = decode(text.as_bytes()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(parsed, example, "{name}: golden file and example differ");
    let again = serde_json::to_string_pretty(&parsed).unwrap() + "\n";
    assert_eq!(again, text, "{name}: re-encoding changed the bytes");
}
