//! The long-poll: answers without news are paced; a directive that is absent or null is none.

use std::time::Duration;

use fleetnode_wire::PhaseKind;
use serde_json::json;

use crate::world::World;

#[test]
fn answers_that_bring_no_new_revision_are_paced() {
    // Every poll is answered at once with the revision the agent knows, and `changed: true`:
    // the agent judges by the revision, so each of these is an early answer without news.
    let mut w = World::start(|s| {
        s.answer_at_once = true;
        s.claim_changed = true;
    });
    let polls = w.wait_for("five polls", |s| {
        let polls = s.seen("desired");
        (polls.len() >= 5).then_some(polls)
    });
    // Poll 1 brings revision 1 (new), poll 2 follows at once; then at least 1, 2, 4 s apart
    // (halved here: the server sees arrivals, the agent paces starts).
    for (k, pace) in [(2, 1_000u64), (3, 2_000), (4, 4_000)] {
        let gap = polls[k].at - polls[k - 1].at;
        assert!(
            gap >= Duration::from_millis(pace / 2),
            "poll {} came {gap:?} after the one before",
            k + 1
        );
    }
    // A new revision is taken at the next poll.
    w.server.set_desired(json!({"revision": 2, "paused": true}));
    w.wait_for("the hold taken from revision 2", |s| {
        s.heartbeats.last().filter(|(_, h)| h.paused).map(|_| ())
    });
}

#[test]
fn a_directive_absent_or_null_is_none_and_a_directive_is_carried_out() {
    let mut w = World::start(|s| s.desired = json!({"revision": 3}));
    w.wait_for("a heartbeat at rest", |s| {
        s.heartbeats
            .iter()
            .find(|(_, h)| h.last_seq > 0 && h.phase == PhaseKind::Idle)
            .map(|_| ())
    });
    w.server
        .set_desired(json!({"revision": 4, "paused": false, "directive": null}));
    w.wait_for("the agent to poll with revision 4", |s| {
        (s.seen("desired").len() >= 3).then_some(())
    });
    let target = w.closure("nixos-system-web-01-gen-2");
    w.server.set_desired(json!({
        "revision": 5,
        "directive": {"revision": 5, "kind": "activate", "target": target.as_str(),
                      "mode": "switch", "health": {"soak_ms": 1000}},
    }));
    let status = w.wait_for("converged on the target", |s| {
        s.heartbeats
            .iter()
            .map(|(_, h)| h)
            .find(|h| h.phase == PhaseKind::Converged)
            .cloned()
    });
    assert_eq!(
        status.target.as_ref(),
        Some(&target),
        "the heartbeat's target"
    );
    assert_eq!(status.handled_revision.map(|r| r.0), Some(5));
    let s = w.server.lock();
    // Before the directive: at rest, nothing handled, no target.
    let before: Vec<_> = s
        .heartbeats
        .iter()
        .map(|(_, h)| h)
        .take_while(|h| h.desired_revision.is_none())
        .collect();
    assert!(!before.is_empty());
    for h in before {
        assert_eq!(h.phase, PhaseKind::Idle);
        assert_eq!(h.target, None);
        assert_eq!(h.handled_revision, None);
    }
    // While soaking, the target was the work's.
    for (_, h) in &s.heartbeats {
        if h.phase == PhaseKind::Soaking {
            assert_eq!(h.target.as_ref(), Some(&target));
        }
    }
}
