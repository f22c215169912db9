//! Wake-ups across replicas through the PostgreSQL store, against a real PostgreSQL: a change
//! committed through one store reaches the subscription of another, and a subscription whose
//! connection was killed comes back by itself and says that everything must be read again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;

use std::time::Duration;

use fleetnode_control_plane::store::OperatorRecord;
use fleetnode_control_plane::store::postgres::{LISTENER_NAME, Subscription, Wake};
use fleetnode_fixtures::postgres::shared;
use fleetnode_wire::{DesiredState, OperatorName, Revision, Timestamp};
use pg_support::{database, host, initial, record, store};

/// The next wake-up. The bound turns a lost notification into a failure instead of a hang;
/// it is not a measurement.
async fn next(subscription: &mut Subscription) -> Wake {
    tokio::time::timeout(Duration::from_secs(30), subscription.recv())
        .await
        .expect("a wake-up arrives")
        .expect("the subscription is open")
}

fn paused(revision: fleetnode_wire::Revision) -> DesiredState {
    DesiredState {
        revision,
        directive: None,
        paused: true,
    }
}

#[tokio::test]
async fn a_change_through_one_replica_wakes_the_other() {
    let db = database();
    let (a, b) = (store(&db).await, store(&db).await);
    let mut wakes = a.subscribe().await.unwrap();

    b.add_host(&record("web-01"), &initial()).await.unwrap();
    b.add_host(&record("web-02"), &initial()).await.unwrap();
    assert_eq!(next(&mut wakes).await, Wake::Hosts(vec![host("web-01")]));
    assert_eq!(next(&mut wakes).await, Wake::Hosts(vec![host("web-02")]));

    b.change_desired(
        &[host("web-02"), host("web-01")],
        "pause",
        Timestamp(1),
        |_, r| Some(paused(r)),
    )
    .await
    .unwrap();
    let Wake::Desired(changed) = next(&mut wakes).await else {
        panic!("a desired-state wake-up was expected");
    };
    // Each named with the revision committed, so the replica that made the change can tell
    // its view already holds it.
    assert_eq!(
        changed,
        vec![
            (host("web-01"), Some(Revision(1))),
            (host("web-02"), Some(Revision(1)))
        ]
    );
    let changed: Vec<_> = changed.into_iter().map(|(host, _)| host).collect();
    // What the woken replica reads for them is the new state.
    let reread = a.hosts(&changed).await.unwrap();
    assert!(
        reread
            .iter()
            .all(|h| h.desired.paused && h.desired.revision.0 == 1)
    );
    assert_eq!(reread.len(), 2);

    let mut revoked = record("web-01");
    revoked.revoked = true;
    b.put_host(&revoked).await.unwrap();
    assert_eq!(next(&mut wakes).await, Wake::Hosts(vec![host("web-01")]));

    let alice = OperatorName::parse("alice").unwrap();
    b.add_operator(&OperatorRecord {
        name: alice.clone(),
        token_sha256: "cd".repeat(32),
        added_at: Timestamp(1),
        added_by: "admin".into(),
        revoked_at: None,
    })
    .await
    .unwrap();
    assert_eq!(next(&mut wakes).await, Wake::Operators(vec![alice]));

    // A change that changes nothing notifies nobody; a rolled-back one neither.
    b.change_desired(&[host("web-02")], "pause", Timestamp(2), |_, _| None)
        .await
        .unwrap();
    b.add_host(&record("web-02"), &initial()).await.unwrap_err();
    b.add_host(&record("web-03"), &initial()).await.unwrap();
    assert_eq!(next(&mut wakes).await, Wake::Hosts(vec![host("web-03")]));

    // A dropped subscription closes its connection.
    assert_eq!(listeners(db.name()), 1);
    drop(wakes);
    for _ in 0..300 {
        if listeners(db.name()) == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the dropped subscription's connection is still open");
}

/// How many listening connections the database has.
fn listeners(database: &str) -> usize {
    shared()
        .unwrap()
        .psql(
            database,
            &format!(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = '{LISTENER_NAME}'"
            ),
        )
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_lost_notification_connection_comes_back_and_asks_for_a_resync() {
    let db = database();
    let (a, b) = (store(&db).await, store(&db).await);
    a.add_host(&record("web-01"), &initial()).await.unwrap();
    let mut wakes = b.subscribe().await.unwrap();

    let killed = shared()
        .unwrap()
        .psql(
            db.name(),
            &format!(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = '{LISTENER_NAME}'"
            ),
        )
        .unwrap();
    assert_eq!(killed.trim(), "1", "one listening connection was killed");
    // Changed while nobody listened: covered by the resync.
    a.change_desired(&[host("web-01")], "pause", Timestamp(1), |_, r| {
        Some(paused(r))
    })
    .await
    .unwrap();
    let mut seen = Vec::new();
    loop {
        let wake = next(&mut wakes).await;
        let resync = wake == Wake::Resync;
        seen.push(wake);
        if resync {
            break;
        }
    }
    assert!(
        seen[..seen.len() - 1]
            .iter()
            .all(|w| *w == Wake::Desired(vec![(host("web-01"), Some(Revision(1)))])),
        "{seen:?}"
    );
    // Listening again: a later change arrives as itself.
    a.change_desired(&[host("web-01")], "resume", Timestamp(2), |_, r| {
        Some(DesiredState {
            paused: false,
            ..paused(r)
        })
    })
    .await
    .unwrap();
    assert_eq!(
        next(&mut wakes).await,
        Wake::Desired(vec![(host("web-01"), Some(Revision(2)))])
    );
}
