use std::fs;

use fleetnode_state_machine::{GapCause, OutboundEvent, ProbeId, Report, State, Timestamp};
use redb::{Database, TableDefinition};

use super::*;

fn probe_event(seq: u64, name: &str) -> OutboundEvent {
    OutboundEvent {
        seq,
        at: Timestamp(1_000 + seq),
        report: Report::ProbeObserved {
            epoch: 0,
            probe: ProbeId::parse(name).unwrap(),
            passed: seq.is_multiple_of(2),
            detail: "checked".into(),
        },
    }
}

fn paused(seq: u64) -> OutboundEvent {
    OutboundEvent {
        seq,
        at: Timestamp(1_000 + seq),
        report: Report::Paused,
    }
}

fn state_at(seq: u64) -> State {
    let mut state = State::default();
    state.host.seq = seq;
    state.clock = Timestamp(1_000 + seq);
    state
}

#[test]
fn a_fresh_store_persists_state_and_queue_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let opened = Store::open(dir.path()).unwrap();
    assert!(opened.reset.is_none());
    assert_eq!(opened.state, State::default());
    let mut store = opened.store;
    let stream = store.stream();
    let events: Vec<_> = (1..=3).map(paused).collect();
    store.commit(&state_at(3), &events).unwrap();
    assert_eq!(store.stats().depth, 3);
    assert_eq!(store.stats().oldest_at, Some(Timestamp(1_001)));
    drop(store);

    let opened = Store::open(dir.path()).unwrap();
    assert!(opened.reset.is_none());
    assert_eq!(opened.state, state_at(3));
    assert_eq!(opened.store.stream(), stream);
    assert_eq!(opened.store.stats().depth, 3);
    let batch = opened.store.reader().batch_after(0, 10, 1 << 20).unwrap();
    assert_eq!(batch, events);
}

#[test]
fn acknowledged_events_leave_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap().store;
    let events: Vec<_> = (1..=5).map(paused).collect();
    store.commit(&state_at(5), &events).unwrap();
    assert_eq!(store.ack(3).unwrap(), 3);
    assert_eq!(store.ack(3).unwrap(), 0);
    let reader = store.reader();
    let rest = reader.batch_after(0, 10, 1 << 20).unwrap();
    assert_eq!(rest, events[3..].to_vec());
    assert_eq!(store.stats().depth, 2);
    assert_eq!(store.stats().oldest_at, Some(Timestamp(1_004)));
    // Batches respect the event and byte limits but always carry at least one event.
    assert_eq!(reader.batch_after(3, 1, 1 << 20).unwrap().len(), 1);
    assert_eq!(reader.batch_after(3, 10, 1).unwrap().len(), 1);
    assert!(reader.batch_after(5, 10, 1 << 20).unwrap().is_empty());
}

#[test]
fn a_dead_letter_is_replaced_by_a_gap_under_the_same_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap().store;
    store.commit(&state_at(2), &[paused(1), paused(2)]).unwrap();
    let outcome = store.dead_letter(2, "invalid", Timestamp(5_000)).unwrap();
    let gap = OutboundEvent {
        seq: 2,
        at: Timestamp(1_002),
        report: Report::Gap {
            from_seq: 2,
            cause: GapCause::DeadLettered {
                code: "invalid".into(),
            },
        },
    };
    assert_eq!(outcome, DeadLetterOutcome::Moved(gap.clone()));
    assert_eq!(store.reader().get(2).unwrap(), Some(gap));
    assert_eq!(store.stats().dead_letters, 1);
    let letters = store.reader().dead_letters().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event, paused(2));
    // Asking again, or for an event no longer queued, changes nothing.
    assert_eq!(
        store.dead_letter(2, "invalid", Timestamp(5_001)).unwrap(),
        DeadLetterOutcome::NotQueued
    );
    assert_eq!(
        store.dead_letter(9, "invalid", Timestamp(5_001)).unwrap(),
        DeadLetterOutcome::NotQueued
    );
    assert_eq!(store.stats().dead_letters, 1);
}

#[test]
fn a_full_queue_compacts_probe_observations_and_keeps_lifecycle_events() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap().store;
    let total = QUEUE_MAX_EVENTS + 10;
    let events: Vec<_> = (1..=total)
        .map(|seq| match seq % 1000 {
            0 => paused(seq),
            _ if seq % 2 == 0 => probe_event(seq, "web"),
            _ => probe_event(seq, "db"),
        })
        .collect();
    let report = store.commit(&state_at(total), &events).unwrap();
    assert!(report.compacted > 0);
    assert!(!report.over_cap);
    let queue = store
        .reader()
        .batch_after(0, usize::MAX, usize::MAX)
        .unwrap();
    assert_eq!(store.stats().depth, queue.len() as u64);
    // Every lifecycle event survives, with the latest observation of each probe.
    let lifecycle = queue.iter().filter(|e| e.report == Report::Paused).count();
    assert_eq!(lifecycle as u64, total / 1000);
    let last_web = queue
        .iter()
        .rev()
        .find(|e| e.report.name() == "probe-observed");
    assert!(last_web.is_some());
    assert!(queue.iter().any(|e| e.seq == total));
    assert!(queue.iter().any(|e| e.seq == total - 1));
    // The gaps and survivors cover every seq from 1 to the end without holes.
    let mut next = 1;
    for event in &queue {
        let first = match &event.report {
            Report::Gap { from_seq, .. } => *from_seq,
            _ => event.seq,
        };
        assert_eq!(first, next, "hole before {}", event.seq);
        next = event.seq + 1;
    }
    assert_eq!(next, total + 1);
}

#[test]
fn a_queue_of_lifecycle_events_grows_past_the_cap() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap().store;
    let total = QUEUE_MAX_EVENTS + 1;
    let events: Vec<_> = (1..=total).map(paused).collect();
    let report = store.commit(&state_at(total), &events).unwrap();
    assert_eq!(report.compacted, 0);
    assert!(report.over_cap);
    assert_eq!(store.stats().depth, total);
}

fn assert_reset(dir: &std::path::Path, expect: &str) {
    let opened = Store::open(dir).unwrap();
    let reason = opened.reset.expect("store reset reported");
    assert!(reason.contains(expect), "{reason}");
    assert_eq!(opened.state, State::default());
    let aside: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.starts_with("agent.redb.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(reason.contains(&aside[0]), "{reason}");
    // The fresh store works and reopens cleanly.
    let mut store = opened.store;
    store.commit(&state_at(1), &[paused(1)]).unwrap();
    drop(store);
    let again = Store::open(dir).unwrap();
    assert!(again.reset.is_none());
    assert_eq!(again.state, state_at(1));
}

#[test]
fn garbage_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(STORE_FILE), vec![0x5a; 64 * 1024]).unwrap();
    assert_reset(dir.path(), "unreadable");
}

#[test]
fn a_truncated_store_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = Store::open(dir.path()).unwrap().store;
    store.commit(&state_at(2), &[paused(1), paused(2)]).unwrap();
    drop(store);
    let path = dir.path().join(STORE_FILE);
    let len = fs::metadata(&path).unwrap().len();
    let file = fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(len / 3).unwrap();
    drop(file);
    assert_reset(dir.path(), "unreadable");
}

#[test]
fn a_newer_schema_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let db = Database::create(dir.path().join(STORE_FILE)).unwrap();
    let write = db.begin_write().unwrap();
    {
        let meta: TableDefinition<&str, u64> = TableDefinition::new("meta");
        let mut table = write.open_table(meta).unwrap();
        table.insert("schema_version", SCHEMA_VERSION + 1).unwrap();
    }
    write.commit().unwrap();
    drop(db);
    assert_reset(dir.path(), "schema version 2");
}

#[test]
fn an_undecodable_state_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(dir.path()).unwrap());
    let db = Database::create(dir.path().join(STORE_FILE)).unwrap();
    let write = db.begin_write().unwrap();
    {
        let state: TableDefinition<&str, &[u8]> = TableDefinition::new("state");
        let mut table = write.open_table(state).unwrap();
        table
            .insert("current", b"{\"host\":42}".as_slice())
            .unwrap();
    }
    write.commit().unwrap();
    drop(db);
    assert_reset(dir.path(), "cannot be decoded");
}

#[test]
fn a_store_open_elsewhere_is_not_touched() {
    let dir = tempfile::tempdir().unwrap();
    let first = Store::open(dir.path()).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(dir.path().join(STORE_FILE).exists());
    drop(first);
}
