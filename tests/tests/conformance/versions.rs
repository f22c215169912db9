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
