//! The PostgreSQL store across a database stopped hard (`pg_ctl stop -m immediate`, a crash to
//! its clients) and started again: while it is down every operation fails as "unavailable" and
//! nothing is acknowledged; afterwards the same store serves again by itself, everything
//! committed before is there, and its subscription asks for a resync.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;

use std::time::Duration;

use fleetnode_control_plane::store::postgres::{GroupWrite, PgStore, Wake};
use fleetnode_fixtures::postgres::{Cluster, ClusterOptions};
use fleetnode_wire::{DesiredState, Timestamp};
use pg_support::{batch, host, initial, options, record};

#[tokio::test]
async fn a_store_rides_out_a_database_crash() {
    let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    let db = cluster.database().unwrap();
    let store = PgStore::connect(&options(&db.url())).await.unwrap();
    store.add_host(&record("web-01"), &initial()).await.unwrap();
    let write = || GroupWrite::Batch {
        host: host("web-01"),
        batch: batch(1, 1..=3),
    };
    store.commit_group(&[write()]).await.unwrap();
    let mut wakes = store.subscribe().await.unwrap();

    cluster.stop_hard().unwrap();
    let error = store.load().await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    let error = store.commit_group(&[write()]).await.unwrap_err();
    assert!(error.is_unavailable(), "{error:?}");
    assert!(
        error.to_string().contains("cannot reach the database"),
        "{error}"
    );

    cluster.start_again().unwrap();
    // The pool replaces its broken connections by itself; the bound only turns a store that
    // never recovers into a failure instead of a hang.
    let mut loaded = None;
    for _ in 0..300 {
        match store.load().await {
            Ok(hosts) => {
                loaded = Some(hosts);
                break;
            }
            Err(error) => {
                assert!(error.is_unavailable(), "{error:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let loaded = loaded.expect("the store serves again after the database is back");
    assert_eq!(
        loaded[0].mirror.state.host.seq, 3,
        "what was committed before the crash is kept"
    );

    let wake = tokio::time::timeout(Duration::from_secs(30), wakes.recv())
        .await
        .expect("the subscription comes back");
    assert_eq!(wake, Some(Wake::Resync));
    store
        .change_desired(
            &[host("web-01")],
            "pause",
            Timestamp(1),
            |current, revision| {
                Some(DesiredState {
                    revision,
                    paused: true,
                    ..current.clone()
                })
            },
        )
        .await
        .unwrap();
    let wake = tokio::time::timeout(Duration::from_secs(30), wakes.recv())
        .await
        .expect("a later change arrives");
    let Some(Wake::Desired(changed)) = wake else {
        panic!("a desired-state wake-up was expected, not {wake:?}");
    };
    let changed: Vec<_> = changed.into_iter().map(|(host, _)| host).collect();
    assert_eq!(changed, vec![host("web-01")]);
}
