//! Event delivery: acknowledgements outside the batch, the one rule of what splits a batch,
//! `Retry-After`, and the queue as heartbeats describe it.

use std::time::Duration;

use fleetnode_wire::ErrorCode;

use crate::server::{EventsAnswer, Scripted, is_dead_letter_gap};
use crate::world::World;

#[test]
fn an_ack_below_the_batch_drops_nothing_and_one_beyond_the_agent_is_never_applied() {
    let mut w = World::start(|s| {
        s.events_answers.push_back(EventsAnswer::Ack(0));
        s.events_answers.push_back(EventsAnswer::Ack(1_000));
    });
    let batches = w.wait_for("three batches", |s| {
        (s.batches.len() >= 3).then(|| s.batches.clone())
    });
    assert_eq!(batches[0][0], 1);
    assert_eq!(batches[1][0], 1, "an ack of 0 dropped events: {batches:?}");
    // 1000 is beyond every seq the agent has: refused, and a snapshot above it follows (an
    // event the agent recorded meanwhile may ride in the same batch, after it).
    assert_eq!(batches[2].first(), Some(&1_001), "{batches:?}");
    w.wait_for("everything delivered", |s| {
        let (_, h) = s.heartbeats.last()?;
        (h.queue.depth == 0 && h.last_seq == s.acked()).then_some(())
    });
    let log = w.log();
    assert!(log.contains("acknowledged nothing of the batch"), "{log}");
    assert!(log.contains("beyond every event this agent has"), "{log}");
    let s = w.server.lock();
    let snapshot = s.log.iter().find(|e| e.seq == 1_001).cloned();
    assert!(
        matches!(
            snapshot.map(|e| e.report),
            Some(fleetnode_wire::Report::Snapshot { .. })
        ),
        "{:?}",
        s.log
    );
}

#[test]
fn only_a_content_refusal_splits_a_batch_and_dead_letters_an_event() {
    let mut w = World::start(|s| {
        // Not about the content: a 503 whose body says `malformed`.
        s.events_answers
            .push_back(EventsAnswer::Fail(Scripted::error(
                503,
                ErrorCode::Malformed,
            )));
        s.poison.insert(2);
    });
    let letter = w.wait_for("the dead letter's gap stored", |s| {
        s.log.iter().find(|e| e.seq == 2).cloned()
    });
    assert!(is_dead_letter_gap(&letter, "invalid"), "{letter:?}");
    let status = w.wait_for("a heartbeat counting the dead letter", |s| {
        s.heartbeats
            .iter()
            .map(|(_, h)| h)
            .find(|h| h.queue.dead_letters == 1)
            .cloned()
    });
    assert_eq!(status.queue.dead_letters, 1);
    let s = w.server.lock();
    let batches = &s.batches;
    assert!(batches[0].len() >= 2, "{batches:?}");
    // The 503 refused the whole batch and it came again whole (with what was queued since);
    // the 422 split it into single events up to its end.
    assert!(batches[1].starts_with(&batches[0]), "{batches:?}");
    let end = *batches[1].last().unwrap();
    let split: Vec<&Vec<u64>> = batches[2..].iter().take_while(|b| b[0] <= end).collect();
    assert!(split.iter().all(|b| b.len() == 1), "{batches:?}");
    assert_eq!(split[0], &vec![1], "{batches:?}");
    assert_eq!(split[1], &vec![2], "{batches:?}");
}

#[test]
fn retry_after_the_header_wins_and_an_http_date_gives_way_to_the_body() {
    let mut w = World::start(|s| {
        let mut header = Scripted::error(503, ErrorCode::Unavailable);
        header.header_retry = Some("3");
        header.body_retry = Some(40);
        let mut date = Scripted::error(503, ErrorCode::Unavailable);
        date.header_retry = Some("Wed, 21 Oct 2026 07:28:00 GMT");
        date.body_retry = Some(3);
        s.heartbeat_answers.extend([header, date]);
        // Delivery waits too while the control plane is unavailable: the heartbeats show
        // events waiting.
        for _ in 0..3 {
            let mut busy = Scripted::error(503, ErrorCode::Unavailable);
            busy.header_retry = Some("2");
            s.events_answers.push_back(EventsAnswer::Fail(busy));
        }
    });
    let beats = w.wait_for("four heartbeats", |s| {
        (s.heartbeats.len() >= 4).then(|| s.heartbeats.clone())
    });
    // The heartbeat interval is 1 s; each refused one asked for 3 s (the header over the
    // body's 40 s, then the body's 3 s over an HTTP-date).
    for k in [1, 2] {
        let gap = beats[k].0 - beats[k - 1].0;
        assert!(
            gap >= Duration::from_millis(2_500),
            "heartbeat {k}: {gap:?}"
        );
        assert!(gap < Duration::from_secs(40), "heartbeat {k}: {gap:?}");
    }
    // Every heartbeat says when the oldest waiting event happened, or null for none.
    let mut waiting = 0;
    for (_, h) in &beats {
        match h.queue.oldest_at {
            Some(oldest) => {
                assert!(h.queue.depth > 0, "{h:?}");
                assert!(oldest <= h.at, "{h:?}");
                waiting += 1;
            }
            None => assert_eq!(h.queue.depth, 0, "{h:?}"),
        }
    }
    assert!(waiting > 0, "no heartbeat saw events waiting");
    let s = w.server.lock();
    let batches = s.seen("events");
    assert!(batches.len() >= 2);
    let gap = batches[1].at - batches[0].at;
    assert!(
        gap >= Duration::from_millis(1_500),
        "events retried after {gap:?}"
    );
}
