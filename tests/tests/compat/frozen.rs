//! The frozen examples: where they are, which current type reads each, and the check that
//! reading one with the current type keeps every field it carried.

use std::path::{Path, PathBuf};

use fleetnode_wire::{
    AddHost, AddOperator, AgentStatus, AuditLog, DesiredAnswer, DesiredChanged, ErrorBody,
    EventAck, EventBatch, HeartbeatAck, HostAdded, HostDetail, HostList, OperatorAdded,
    OperatorList, OutboundEvent, ReleaseManifest, RollbackRequest, RolloutList, RolloutStatus,
    SetTarget, StartRollout, Validate, decode, encode,
};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Who sends the messages of a directory of frozen examples.
pub const DIRECTIONS: [&str; 4] = [
    "agent",
    "control-plane",
    "operator-request",
    "operator-answer",
];

/// One frozen example.
#[derive(Debug, Clone)]
pub struct Example {
    /// `protocol-<major>.<minor>`.
    pub version: String,
    /// One of [`DIRECTIONS`].
    pub direction: &'static str,
    /// The file's name without `.json`.
    pub stem: String,
    /// The file.
    pub path: PathBuf,
    /// Its bytes, as frozen.
    pub bytes: Vec<u8>,
}

impl Example {
    /// Its JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", self.path.display()))
    }

    /// `version/direction/stem`, for messages.
    pub fn name(&self) -> String {
        format!("{}/{}/{}", self.version, self.direction, self.stem)
    }
}

/// The directory of every frozen version.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("compat")
}

/// Every frozen example of every version, in a stable order.
pub fn all() -> Vec<Example> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("protocol-"))
        })
        .collect();
    versions.sort();
    assert!(
        !versions.is_empty(),
        "no frozen version under {}",
        root().display()
    );
    let mut examples = Vec::new();
    for version in versions {
        let name = version.file_name().unwrap().to_string_lossy().into_owned();
        for direction in DIRECTIONS {
            let dir = version.join(direction);
            let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .map(|entry| entry.unwrap().path())
                .collect();
            files.sort();
            for path in files {
                let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
                let bytes = std::fs::read(&path).unwrap();
                examples.push(Example {
                    version: name.clone(),
                    direction,
                    stem,
                    path,
                    bytes,
                });
            }
        }
    }
    examples
}

/// Every example of `direction`.
pub fn of(direction: &str) -> Vec<Example> {
    all()
        .into_iter()
        .filter(|e| e.direction == direction)
        .collect()
}

/// Reads `example` with the current type of its message (through the same `decode` both
/// sides use: size cap, parse, validation) and encodes it again.
pub fn reread(example: &Example) -> Result<Value, String> {
    let stem = example.stem.as_str();
    let bytes = &example.bytes;
    let prefix = |p: &str| stem == p || stem.starts_with(&format!("{p}-"));
    match example.direction {
        "agent" if prefix("report") => again::<OutboundEvent>(bytes),
        "agent" if prefix("agent-status") || prefix("heartbeat") => again::<AgentStatus>(bytes),
        "agent" if stem == "event-batch" => again::<EventBatch>(bytes),
        "control-plane" if prefix("desired-answer") => again::<DesiredAnswer>(bytes),
        "control-plane" if stem == "event-ack" => again::<EventAck>(bytes),
        "control-plane" if stem == "heartbeat-ack" => again::<HeartbeatAck>(bytes),
        "control-plane" | "operator-answer" if stem == "error-body" => again::<ErrorBody>(bytes),
        "operator-request" if stem == "add-host" => again::<AddHost>(bytes),
        "operator-request" if prefix("set-target") => again::<SetTarget>(bytes),
        "operator-request" if stem == "rollback-request" => again::<RollbackRequest>(bytes),
        "operator-request" if stem == "start-rollout" => again::<StartRollout>(bytes),
        "operator-request" if prefix("release-manifest") => again::<ReleaseManifest>(bytes),
        "operator-request" if stem == "add-operator" => again::<AddOperator>(bytes),
        "operator-answer" if stem == "host-added" => again::<HostAdded>(bytes),
        "operator-answer" if stem == "desired-changed" => again::<DesiredChanged>(bytes),
        "operator-answer" if stem == "host-list" => again::<HostList>(bytes),
        "operator-answer" if stem == "host-detail" => again::<HostDetail>(bytes),
        "operator-answer" if prefix("rollout-status") => again::<RolloutStatus>(bytes),
        "operator-answer" if stem == "rollout-list" => again::<RolloutList>(bytes),
        "operator-answer" if stem == "operator-added" => again::<OperatorAdded>(bytes),
        "operator-answer" if stem == "operator-list" => again::<OperatorList>(bytes),
        "operator-answer" if stem == "audit-log" => again::<AuditLog>(bytes),
        _ => panic!(
            "no reader for the frozen example {}: name it after its message and add it to \
             frozen::reread",
            example.name()
        ),
    }
}

fn again<T: DeserializeOwned + Validate + serde::Serialize>(bytes: &[u8]) -> Result<Value, String> {
    let value: T = decode(bytes).map_err(|e| e.to_string())?;
    serde_json::from_slice(&encode(&value)).map_err(|e| e.to_string())
}

/// What a frozen example says once the changes its protocol documents are applied: Cachix
/// Deploy's `agents` is read as `hosts` and its `rollbackScript` is ignored.
pub fn as_documented(example: &Example) -> Value {
    let mut value = example.json();
    if example.stem == "release-manifest-cachix"
        && let Some(object) = value.as_object_mut()
    {
        if let Some(agents) = object.remove("agents") {
            object.insert("hosts".into(), agents);
        }
        object.remove("rollbackScript");
    }
    value
}

/// Every place where `current` lost or changed a value of `frozen`: a missing field, another
/// value, another length. A frozen `null` counts as absent. Fields only `current` has (later
/// minors' optional ones) are not differences.
pub fn lost(frozen: &Value, current: &Value, at: &str, out: &mut Vec<String>) {
    match (frozen, current) {
        (Value::Object(old), Value::Object(new)) => {
            for (key, value) in old {
                let here = format!("{at}.{key}");
                match new.get(key) {
                    Some(now) => lost(value, now, &here, out),
                    None if value.is_null() => {}
                    None => out.push(format!("{here}: missing (was {value})")),
                }
            }
        }
        (Value::Array(old), Value::Array(new)) => {
            if old.len() != new.len() {
                out.push(format!("{at}: {} items, was {}", new.len(), old.len()));
            }
            for (i, (value, now)) in old.iter().zip(new).enumerate() {
                lost(value, now, &format!("{at}[{i}]"), out);
            }
        }
        (old, new) if old == new => {}
        (old, new) => out.push(format!("{at}: {new}, was {old}")),
    }
}

#[test]
fn every_frozen_example_is_read_by_the_current_types_and_keeps_every_field() {
    let examples = all();
    assert!(
        examples.len() >= 50,
        "only {} frozen examples",
        examples.len()
    );
    let mut failures = Vec::new();
    for example in &examples {
        match reread(example) {
            Ok(current) => {
                let mut differences = Vec::new();
                lost(&as_documented(example), &current, "$", &mut differences);
                if !differences.is_empty() {
                    failures.push(format!("{}: {}", example.name(), differences.join("; ")));
                }
            }
            Err(error) => failures.push(format!("{}: refused: {error}", example.name())),
        }
    }
    assert!(
        failures.is_empty(),
        "frozen examples the current code no longer reads as they were written (a released \
         message changed in place: add a field as optional, keep the old name, see \
         docs/protocol.md \"Compatibility\"):\n{}",
        failures.join("\n")
    );
}

#[test]
fn the_difference_check_sees_a_renamed_a_lost_and_a_changed_field() {
    let frozen =
        serde_json::json!({"at": 1, "queue": {"depth": 2}, "probes": [1, 2], "gone": null});
    let mut out = Vec::new();
    lost(
        &frozen,
        &serde_json::json!({"sent": 1, "queue": {"depth": 3}, "probes": [1]}),
        "$",
        &mut out,
    );
    assert_eq!(
        out,
        [
            "$.at: missing (was 1)",
            "$.probes: 1 items, was 2",
            "$.queue.depth: 3, was 2"
        ]
    );
}

/// FNV-1a, 64 bits: enough to see that a file changed (this guards against edits, not attacks).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Every file under `dir`, relative to it, sorted.
fn files_under(dir: &Path, prefix: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let relative = prefix.join(path.file_name().unwrap());
        if path.is_dir() {
            files_under(&path, &relative, out);
        } else {
            out.push(relative);
        }
    }
}

#[test]
fn no_frozen_file_was_edited_added_or_removed_since_its_release() {
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root())
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_dir())
        .collect();
    versions.sort();
    assert!(!versions.is_empty());
    for version in versions {
        let listed = std::fs::read_to_string(version.join("FROZEN"))
            .unwrap_or_else(|e| panic!("{}/FROZEN: {e}", version.display()));
        let mut expected: Vec<(String, String)> = listed
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .map(|line| {
                let (hash, file) = line.split_once("  ").expect("<hash>  <file>");
                (file.to_owned(), hash.to_owned())
            })
            .collect();
        expected.sort();
        let mut files = Vec::new();
        files_under(&version, Path::new(""), &mut files);
        files.retain(|file| file != Path::new("FROZEN"));
        files.sort();
        let found: Vec<(String, String)> = files
            .iter()
            .map(|file| {
                let bytes = std::fs::read(version.join(file)).unwrap();
                (
                    file.display().to_string(),
                    format!("{:016x}", fnv1a(&bytes)),
                )
            })
            .collect();
        assert_eq!(
            found,
            expected,
            "{}: frozen files differ from what was released (FROZEN lists them); a released \
             example is never edited, added or removed",
            version.display()
        );
    }
}
