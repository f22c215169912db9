//! Leases, fencing and rollouts in the PostgreSQL store, against a real PostgreSQL: two stores
//! (two pools) stand in for two replicas competing to drive the rollouts.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;

use std::collections::BTreeSet;
use std::time::Duration;

use fleetnode_control_plane::store::postgres::{Fence, PgError};
use fleetnode_wire::{
    Directive, DirectiveKind, Revision, Rollout, RolloutId, RolloutStatus, Timestamp,
};
use pg_support::{database, host, initial, record, store};

const LEASE: &str = "rollout-driver";
const MINUTE: Duration = Duration::from_secs(60);

/// A real rollout, as the operator API shows one.
fn rollout(id: u64) -> Rollout {
    let status: RolloutStatus = serde_json::from_str(include_str!(
        "../../wire/tests/golden/rollout-status-baking.json"
    ))
    .unwrap();
    Rollout {
        id: RolloutId(id),
        ..status.rollout
    }
}

fn directive(revision: u64) -> Directive {
    Directive {
        revision: Revision(revision),
        kind: DirectiveKind::Rollback { to: None },
    }
}

#[tokio::test]
async fn one_replica_drives_and_a_stale_fence_writes_nothing() {
    let db = database();
    let (a, b) = (store(&db).await, store(&db).await);
    a.add_host(&record("web-01"), &initial()).await.unwrap();
    let web = host("web-01");

    let first = a
        .acquire_lease(LEASE, "replica-a", MINUTE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.token, 1);
    assert_eq!(
        b.acquire_lease(LEASE, "replica-b", MINUTE).await.unwrap(),
        None,
        "held by a"
    );
    let changes = a
        .commit_rollout(
            &first,
            &rollout(1),
            &[(web.clone(), directive(1))],
            Timestamp(10),
        )
        .await
        .unwrap();
    assert_eq!(changes[0].record.cause, "rollout 1 rollback");

    // a stops renewing (killed, or cut off): its lease runs out and b takes over.
    a.renew_lease(&first, Duration::ZERO).await.unwrap();
    let second = b
        .acquire_lease(LEASE, "replica-b", MINUTE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(second.token, 2);

    // a comes back with its old token: refused, and nothing of its decision is written.
    let error = a
        .commit_rollout(
            &first,
            &rollout(1),
            &[(web.clone(), directive(2))],
            Timestamp(20),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            PgError::Fenced {
                token: 1,
                current: Some(2),
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("nothing was written"), "{error}");
    assert_eq!(a.desired_history(&web).await.unwrap().len(), 1);
    let error = a.renew_lease(&first, MINUTE).await.unwrap_err();
    assert!(matches!(error, PgError::Fenced { .. }), "{error:?}");

    // A decision taken on an outdated desired state is refused whole: decide again.
    let error = b
        .commit_rollout(
            &second,
            &rollout(1),
            &[(web.clone(), directive(5))],
            Timestamp(30),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            PgError::StaleDecision {
                next: 2,
                decided: 5,
                ..
            }
        ),
        "{error:?}"
    );
    b.commit_rollout(
        &second,
        &rollout(1),
        &[(web.clone(), directive(2))],
        Timestamp(30),
    )
    .await
    .unwrap();
    let history: Vec<u64> = b
        .desired_history(&web)
        .await
        .unwrap()
        .iter()
        .map(|r| r.desired.revision.0)
        .collect();
    assert_eq!(history, [1, 2], "each directive once");
    assert_eq!(a.load_rollouts().await.unwrap(), vec![rollout(1)]);

    // Released, the lease is free at once, with a higher token.
    b.release_lease(&second).await.unwrap();
    let third = a
        .acquire_lease(LEASE, "replica-a", MINUTE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(third.token, 3);
    let error = b
        .commit_rollout(&second, &rollout(1), &[], Timestamp(40))
        .await
        .unwrap_err();
    assert!(matches!(error, PgError::Fenced { .. }), "{error:?}");
}

#[tokio::test]
async fn a_fence_never_taken_is_refused() {
    let db = database();
    let store = store(&db).await;
    let forged = Fence {
        lease: LEASE.into(),
        holder: "nobody".into(),
        token: 1,
    };
    let error = store
        .commit_rollout(&forged, &rollout(1), &[], Timestamp(1))
        .await
        .unwrap_err();
    assert!(
        matches!(error, PgError::Fenced { current: None, .. }),
        "{error:?}"
    );
    assert!(store.load_rollouts().await.unwrap().is_empty());
    let error = store.renew_lease(&forged, MINUTE).await.unwrap_err();
    assert!(matches!(error, PgError::Fenced { .. }), "{error:?}");
}

#[tokio::test]
async fn rollout_numbers_are_distinct_across_replicas_and_above_every_stored_one() {
    let db = database();
    let (a, b) = (store(&db).await, store(&db).await);
    let fence = a
        .acquire_lease(LEASE, "replica-a", MINUTE)
        .await
        .unwrap()
        .unwrap();
    a.commit_rollout(&fence, &rollout(7), &[], Timestamp(1))
        .await
        .unwrap();
    let asks: Vec<_> = [a.clone(), b.clone()]
        .into_iter()
        .cycle()
        .take(10)
        .map(|store| tokio::spawn(async move { store.next_rollout_id().await.unwrap() }))
        .collect();
    let mut ids = BTreeSet::new();
    for ask in asks {
        ids.insert(ask.await.unwrap().0);
    }
    assert_eq!(ids.len(), 10, "{ids:?}");
    assert!(ids.iter().all(|id| *id > 7), "{ids:?}");
}
