//! The PostgreSQL store's hosts, desired-state changes and group-committed ingestion, against a
//! real PostgreSQL; two stores (two pools) stand in for two replicas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;

use fleetnode_control_plane::mirror::{Mirror, Refused};
use fleetnode_control_plane::store::postgres::{
    GroupOutcome, GroupWrite, PgError, PgGroupWriter, PgStore,
};
use fleetnode_wire::{DesiredState, Directive, DirectiveKind, HostId, Revision, Timestamp};
use pg_support::{batch, database, event, heartbeat, host, initial, record, store};

fn rollback(revision: Revision) -> DesiredState {
    DesiredState {
        revision,
        directive: Some(Directive {
            revision,
            kind: DirectiveKind::Rollback { to: None },
        }),
        paused: false,
    }
}

#[tokio::test]
async fn a_host_is_added_once_revoked_and_loaded_back() {
    let db = database();
    let (a, b) = (store(&db).await, store(&db).await);
    a.add_host(&record("web-01"), &initial()).await.unwrap();
    let error = b.add_host(&record("web-01"), &initial()).await.unwrap_err();
    assert!(
        matches!(&error, PgError::DuplicateHost { host } if host.as_str() == "web-01"),
        "{error:?}"
    );
    b.add_host(&record("web-02"), &initial()).await.unwrap();

    let mut revoked = record("web-01");
    revoked.revoked = true;
    revoked.revoked_at = Some(Timestamp(2_000));
    b.put_host(&revoked).await.unwrap();
    let error = b.put_host(&record("web-09")).await.unwrap_err();
    assert!(matches!(error, PgError::UnknownHost { .. }), "{error:?}");

    let loaded = a.load().await.unwrap();
    let ids: Vec<&str> = loaded.iter().map(|h| h.record.id.as_str()).collect();
    assert_eq!(ids, ["web-01", "web-02"]);
    assert_eq!(loaded[0].record, revoked);
    assert_eq!(loaded[1].record, record("web-02"));
    assert_eq!(loaded[1].desired, initial());
    assert_eq!(loaded[1].mirror, Mirror::default());
    assert!(loaded[1].heartbeat.is_none());
}

#[tokio::test]
async fn a_desired_change_outnumbers_what_each_host_reported_and_keeps_its_history() {
    let db = database();
    let (a, b) = (store(&db).await, store(&db).await);
    for id in ["web-01", "web-02", "web-03"] {
        a.add_host(&record(id), &initial()).await.unwrap();
    }
    // web-02's agent reports knowing revision 7 (a database restored from an older backup).
    let mut status = heartbeat(1, 0, 0);
    status.desired_revision = Some(Revision(7));
    let outcome = a
        .commit_group(&[GroupWrite::Heartbeat {
            host: host("web-02"),
            status: Box::new(status),
            received_at: Timestamp(5),
        }])
        .await
        .unwrap();
    assert!(
        matches!(outcome[0], GroupOutcome::Heartbeat(_)),
        "{outcome:?}"
    );

    let selection = [host("web-02"), host("web-01")];
    let changed = b
        .change_desired(&selection, "rollback", Timestamp(10), |_, revision| {
            Some(rollback(revision))
        })
        .await
        .unwrap();
    let revisions: Vec<(&str, u64)> = changed
        .iter()
        .map(|c| (c.host.as_str(), c.record.desired.revision.0))
        .collect();
    assert_eq!(revisions, [("web-01", 1), ("web-02", 8)]);
    let loaded = a.load().await.unwrap();
    assert_eq!(loaded[0].desired, rollback(Revision(1)));
    assert_eq!(loaded[1].desired, rollback(Revision(8)));
    assert_eq!(loaded[2].desired, initial(), "web-03 was not selected");

    // A change function may leave a host alone; a second change goes above the first.
    let changed = a
        .change_desired(&selection, "pause", Timestamp(11), |current, revision| {
            (current.revision == Revision(1)).then(|| DesiredState {
                paused: true,
                ..rollback(revision)
            })
        })
        .await
        .unwrap();
    assert_eq!(changed.len(), 1);
    assert_eq!(changed[0].record.desired.revision, Revision(2));
    let history = b.desired_history(&host("web-01")).await.unwrap();
    let causes: Vec<(&str, u64)> = history
        .iter()
        .map(|r| (r.cause.as_str(), r.desired.revision.0))
        .collect();
    assert_eq!(causes, [("rollback", 1), ("pause", 2)]);

    // An unknown or a revoked host refuses the whole change.
    let error = a
        .change_desired(
            &[host("web-01"), host("nope")],
            "pause",
            Timestamp(12),
            |_, r| Some(rollback(r)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&error, PgError::UnknownHost { host } if host.as_str() == "nope"),
        "{error:?}"
    );
    let mut revoked = record("web-03");
    revoked.revoked = true;
    a.put_host(&revoked).await.unwrap();
    let error = a
        .change_desired(
            &[host("web-01"), host("web-03")],
            "pause",
            Timestamp(12),
            |_, r| Some(rollback(r)),
        )
        .await
        .unwrap_err();
    assert!(matches!(error, PgError::Revoked { .. }), "{error:?}");
    assert_eq!(
        b.desired_history(&host("web-01")).await.unwrap().len(),
        2,
        "nothing written"
    );
}

#[tokio::test]
async fn a_group_of_many_hosts_is_applied_as_the_single_server_does() {
    let db = database();
    let store = store(&db).await;
    for id in ["web-01", "web-02"] {
        store.add_host(&record(id), &initial()).await.unwrap();
    }
    let mut revoked = record("web-03");
    revoked.revoked = true;
    store.add_host(&revoked, &initial()).await.unwrap();
    let writes = vec![
        GroupWrite::Batch {
            host: host("web-02"),
            batch: batch(5, 1..=3),
        },
        GroupWrite::Batch {
            host: host("web-01"),
            batch: batch(9, 1..=2),
        },
        // The same host again in the group: applied after its first batch, duplicates skipped.
        GroupWrite::Batch {
            host: host("web-02"),
            batch: batch(5, 2..=4),
        },
        // A gap: nothing of it is written.
        GroupWrite::Batch {
            host: host("web-01"),
            batch: batch(9, 7..=8),
        },
        // Nothing queued, yet the agent says it emitted seq 6: ask for a snapshot.
        GroupWrite::Heartbeat {
            host: host("web-01"),
            status: Box::new(heartbeat(9, 6, 0)),
            received_at: Timestamp(50),
        },
        GroupWrite::Batch {
            host: host("web-03"),
            batch: batch(1, 1..=1),
        },
        GroupWrite::Batch {
            host: host("web-04"),
            batch: batch(1, 1..=1),
        },
    ];
    let outcomes = store.commit_group(&writes).await.unwrap();
    let GroupOutcome::Applied(first) = &outcomes[0] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(first.acked_through, 3);
    let GroupOutcome::Applied(again) = &outcomes[2] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(again.acked_through, 4);
    assert_eq!(again.stored.iter().map(|e| e.seq).collect::<Vec<_>>(), [4]);
    assert!(
        matches!(
            outcomes[3],
            GroupOutcome::Refused(Refused::Resync {
                first: 7,
                log_end: 2,
                ..
            })
        ),
        "{outcomes:?}"
    );
    let GroupOutcome::Heartbeat(beat) = &outcomes[4] else {
        panic!("{outcomes:?}")
    };
    assert_eq!(beat.resync_from, Some(2));
    assert_eq!(beat.desired_revision, Revision(0));
    assert_eq!(outcomes[5], GroupOutcome::Revoked);
    assert_eq!(outcomes[6], GroupOutcome::UnknownHost);

    let loaded = store.load().await.unwrap();
    let expected = Mirror::default().apply(&batch(5, 1..=4)).unwrap().mirror;
    assert_eq!(loaded[1].mirror, expected);
    assert_eq!(
        loaded[0].heartbeat.as_ref().unwrap().received_at,
        Timestamp(50)
    );
    assert_eq!(
        loaded[2].mirror,
        Mirror::default(),
        "a revoked host's batch is not applied"
    );
    let events = store.recent_events(&host("web-02"), 5, 3).await.unwrap();
    assert_eq!(events, vec![event(2), event(3), event(4)]);
}

#[tokio::test]
async fn two_replicas_ingesting_overlapping_batches_store_each_event_once_in_order() {
    const LAST: u64 = 300;
    let db = database();
    let replicas = [store(&db).await, store(&db).await];
    replicas[0]
        .add_host(&record("web-01"), &initial())
        .await
        .unwrap();
    let tasks: Vec<_> = replicas
        .iter()
        .cloned()
        .enumerate()
        .map(|(n, store)| tokio::spawn(send_overlapping(store, n as u64, LAST)))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let events = replicas[1]
        .recent_events(&host("web-01"), 1, 10_000)
        .await
        .unwrap();
    let all = batch(1, 1..=LAST);
    assert_eq!(events, all.events, "every event once, in order");
    let loaded = replicas[0].load().await.unwrap();
    let expected = Mirror::default().apply(&all).unwrap().mirror;
    assert_eq!(loaded[0].mirror, expected);
}

/// Sends windows of the host's events that overlap each other and those of the other replica:
/// each starts a little before what this replica last saw acknowledged.
async fn send_overlapping(store: PgStore, replica: u64, last: u64) {
    let mut acked = 0;
    let mut round = 0;
    while acked < last {
        round += 1;
        let start = acked.saturating_sub(3 + (round + replica) % 5).max(1);
        let end = (acked + 2 + (round * 7 + replica * 3) % 11).min(last);
        let write = GroupWrite::Batch {
            host: host("web-01"),
            batch: batch(1, start..=end),
        };
        match &store.commit_group(&[write]).await.unwrap()[0] {
            GroupOutcome::Applied(applied) => acked = applied.acked_through,
            other => panic!("replica {replica}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn unknown_hosts_in_a_selection_are_named() {
    let db = database();
    let store = store(&db).await;
    let error = store
        .change_desired(
            &[HostId::parse("ghost").unwrap()],
            "set-target",
            Timestamp(1),
            |_, r| Some(rollback(r)),
        )
        .await
        .unwrap_err();
    assert_eq!(error.to_string(), "host ghost is not registered");
}

#[tokio::test]
async fn many_hosts_through_two_replicas_group_writers_lose_and_repeat_nothing() {
    const HOSTS: usize = 24;
    const BATCHES: u64 = 12;
    let db = database();
    let replicas = [store(&db).await, store(&db).await];
    let ids: Vec<String> = (0..HOSTS).map(|i| format!("node-{i:02}")).collect();
    for id in &ids {
        replicas[0].add_host(&record(id), &initial()).await.unwrap();
    }
    let writers = std::sync::Arc::new([
        PgGroupWriter::start(replicas[0].clone()),
        PgGroupWriter::start(replicas[1].clone()),
    ]);
    let agents: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let writers = writers.clone();
            let id = host(id);
            tokio::spawn(async move {
                for round in 0..BATCHES {
                    // Each batch goes to the other replica than the last, and repeats the
                    // previous batch's last event.
                    let writer = &writers[(n + round as usize) % 2];
                    let seqs = (round * 3).max(1)..=round * 3 + 3;
                    let write = GroupWrite::Batch {
                        host: id.clone(),
                        batch: batch(2, seqs),
                    };
                    let outcome = writer.write(write).await.unwrap();
                    let GroupOutcome::Applied(applied) = outcome else {
                        panic!("{outcome:?}")
                    };
                    assert_eq!(applied.acked_through, round * 3 + 3);
                    let beat = GroupWrite::Heartbeat {
                        host: id.clone(),
                        status: Box::new(heartbeat(2, round * 3 + 3, 0)),
                        received_at: Timestamp(round),
                    };
                    let outcome = writer.write(beat).await.unwrap();
                    let GroupOutcome::Heartbeat(beat) = outcome else {
                        panic!("{outcome:?}")
                    };
                    assert_eq!(beat.resync_from, None);
                }
            })
        })
        .collect();
    for agent in agents {
        agent.await.unwrap();
    }
    let all = batch(2, 1..=BATCHES * 3);
    let expected = Mirror::default().apply(&all).unwrap().mirror;
    for stored in replicas[1].load().await.unwrap() {
        assert_eq!(stored.mirror, expected, "{}", stored.record.id);
        let events = replicas[0]
            .recent_events(&stored.record.id, 2, 1000)
            .await
            .unwrap();
        assert_eq!(events, all.events, "{}", stored.record.id);
    }
    let Ok(writers) = std::sync::Arc::try_unwrap(writers) else {
        panic!("writers still shared")
    };
    for writer in writers {
        writer.close().await;
    }
}
