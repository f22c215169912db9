//! Untrusted input is refused with a clear error, never a crash.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fleetnode_wire::*;

const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";

fn probe_event(seq: u64, detail: String) -> serde_json::Value {
    serde_json::json!({
        "seq": seq, "at": 1,
        "report": {"type": "probe-observed", "epoch": 1, "probe": "web", "passed": true, "detail": detail}
    })
}

#[test]
fn bad_store_paths_never_become_store_paths() {
    for bad in [
        "/nix/store/../../etc/passwd",
        "/tmp/evil",
        "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-a/../b",
    ] {
        let body = serde_json::json!({"selector": {"by": "all"}, "target": bad});
        let err = decode::<SetTarget>(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.code(), ErrorCode::Malformed, "{bad}");
        assert!(err.to_string().contains("store path"), "{err}");
    }
}

#[test]
fn unknown_fields_are_tolerated() {
    let body = r#"{"changed":false,"future_field":[1,2],"desired":{"revision":3,"paused":false,"extra":{}}}"#;
    let answer: DesiredAnswer = decode(body.as_bytes()).unwrap();
    assert!(!answer.changed);
    assert_eq!(answer.desired.revision, Revision(3));
}

#[test]
fn unknown_directive_kinds_are_a_clear_error() {
    let body =
        r#"{"changed":true,"desired":{"revision":3,"directive":{"revision":3,"kind":"wipe"}}}"#;
    let err = decode::<DesiredAnswer>(body.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("unknown variant `wipe`"), "{err}");
}

#[test]
fn oversized_bodies_lists_and_strings_are_refused() {
    let huge = vec![b' '; MAX_BODY_BYTES + 1];
    let err = decode::<EventBatch>(&huge).unwrap_err();
    assert_eq!(err.code(), ErrorCode::TooLarge);

    let events: Vec<_> = (1..=(MAX_BATCH_EVENTS as u64 + 1))
        .map(|seq| probe_event(seq, String::new()))
        .collect();
    let body = serde_json::json!({ "stream": 1, "events": events }).to_string();
    let err = decode::<EventBatch>(body.as_bytes()).unwrap_err();
    assert_eq!(err.code(), ErrorCode::TooLarge, "{err}");

    let body = serde_json::json!({ "stream": 1, "events": [probe_event(1, "x".repeat(5000))] })
        .to_string();
    let err = decode::<EventBatch>(body.as_bytes()).unwrap_err();
    assert!(err.to_string().contains("detail"), "{err}");
}

#[test]
fn batches_must_be_ordered_and_non_empty() {
    let body = serde_json::json!({ "stream": 1, "events": [probe_event(2, String::new()), probe_event(1, String::new())] });
    let err = decode::<EventBatch>(body.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("ascending"), "{err}");
    let err = decode::<EventBatch>(br#"{"stream":1,"events":[]}"#).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Invalid);
    let body = serde_json::json!({ "stream": 1, "events": [probe_event(0, String::new())] });
    assert!(decode::<EventBatch>(body.to_string().as_bytes()).is_err());
}

#[test]
fn heartbeat_phase_must_be_known() {
    let body = serde_json::json!({
        "agent_version": "0.1.0", "at": 1, "phase": "dancing", "paused": false,
        "system": {}, "stream": 1, "last_seq": 0, "queue": {"depth": 0, "bytes": 0, "dead_letters": 0}
    });
    let err = decode::<AgentStatus>(body.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("dancing"), "{err}");
}

#[test]
fn host_ids_in_bodies_are_validated() {
    let err = decode::<AddHost>(br#"{"id":"Web 01"}"#).unwrap_err();
    assert!(err.to_string().contains("host id"), "{err}");
    let ok: AddHost = decode(br#"{"id":"web-01"}"#).unwrap();
    assert!(ok.tags.is_empty());
    let store = format!("/nix/store/{HASH}-x");
    let body = serde_json::json!({"selector": {"by": "hosts", "hosts": []}, "target": store});
    assert!(decode::<SetTarget>(body.to_string().as_bytes()).is_err());
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    for body in [
        &b""[..],
        b"null",
        b"[]",
        b"{",
        b"\xff\xfe",
        b"{\"events\": 5}",
    ] {
        let err = decode::<EventBatch>(body).unwrap_err();
        assert!(matches!(
            err.code(),
            ErrorCode::Malformed | ErrorCode::Invalid
        ));
    }
}
