//! The version header, the token, and what the agent does with answers of other versions.

use serde_json::json;

use crate::world::{TOKEN, World};

#[test]
fn every_request_is_versioned_and_an_answer_without_the_header_is_read() {
    let mut w = World::start(|s| s.version = None);
    // Events are taken and heartbeats acknowledged although no answer carries the header.
    let seq = w.wait_for("a heartbeat showing every event delivered", |s| {
        let (_, last) = s.heartbeats.last()?;
        (last.last_seq > 0 && last.last_seq == s.acked() && last.queue.depth == 0)
            .then_some(last.last_seq)
    });
    assert!(seq >= 2, "recovered and policy-applied at least");
    let s = w.server.lock();
    assert!(!s.seen("desired").is_empty());
    for seen in &s.seen {
        assert_eq!(
            seen.version.as_deref(),
            Some(fleetnode_wire::protocol_version().as_str()),
            "{seen:?}"
        );
        assert_eq!(
            seen.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str()),
            "{seen:?}"
        );
    }
}

#[test]
fn an_answer_of_another_major_version_is_not_read() {
    let mut w = World::start(|s| {
        s.desired_version = Some("2.0");
        s.desired = json!({"revision": 5, "paused": true});
    });
    // The agent polls, gets a 2.0 answer saying "paused", and does not take it: three
    // heartbeats later it is still not paused and has not asked again.
    w.wait_for("three heartbeats", |s| {
        (s.heartbeats.len() >= 3).then_some(())
    });
    let s = w.server.lock();
    assert_eq!(
        s.seen("desired").len(),
        1,
        "retried before the slowest pace"
    );
    for (_, status) in &s.heartbeats {
        assert!(!status.paused, "a 2.0 answer was read");
        assert_eq!(status.desired_revision, None);
    }
    drop(s);
    let log = w.log();
    assert!(log.contains("another protocol version"), "{log}");
    assert!(log.contains("ERROR"), "{log}");
}

#[test]
fn a_control_plane_of_another_major_version_is_named_in_the_log_and_status_and_the_host_stays() {
    let mut w = World::start(|s| s.version = Some("2.0"));
    let gen1 = w.root.current();
    let gen2 = w.closure("nixos-system-web-01-gen-2");
    w.server
        .set_desired(json!({"revision": 5, "paused": false, "directive": {
        "revision": 5, "kind": "activate", "target": gen2.as_str()}}));
    // Every answer says 2.0: the heartbeat's failure feeds the control-plane probe, whose
    // detail the local status shows.
    let detail = wait_for_status(&w, |status| {
        let probes = status["probes"].as_array()?;
        let probe = probes.iter().find(|p| p["probe"] == "control-plane")?;
        (probe["passing"] == false).then(|| probe["detail"].as_str().unwrap_or("").to_owned())
    });
    assert!(detail.contains("another protocol version"), "{detail}");
    assert!(detail.contains("major version 2"), "{detail}");
    let log = w.log();
    assert!(
        log.contains("speaks another protocol major version"),
        "{log}"
    );
    assert!(
        log.contains("upgrade the agent or the control plane"),
        "{log}"
    );
    // Retried at the slowest pace, never given up.
    assert!(log.contains("retry_in_ms=60000"), "{log}");
    // The directive of the 2.0 answer was not taken: the host stays as it is.
    let status = w.agent.status().unwrap();
    assert_eq!(status["phase"], "idle", "{status:#}");
    assert_eq!(
        status["desired_revision"],
        serde_json::Value::Null,
        "{status:#}"
    );
    assert_eq!(w.root.current(), gen1);
    assert!(w.agent.check_running().is_ok());
}

/// Polls the agent's local status until `check` finds what it looks for (the 90 s limit is
/// only a safety net).
fn wait_for_status<T>(w: &World, mut check: impl FnMut(&serde_json::Value) -> Option<T>) -> T {
    let mut last = serde_json::Value::Null;
    for _ in 0..1800 {
        if let Ok(status) = w.agent.status() {
            if let Some(found) = check(&status) {
                return found;
            }
            last = status;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!(
        "the status never showed it: {last:#}\n{}",
        w.agent.log_tail(40)
    );
}
