//! Operators and the audit log in the PostgreSQL store, against a real PostgreSQL: one log for
//! every replica, numbered without gaps, read with the same filter as the redb store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod pg_support;

use fleetnode_control_plane::store::postgres::PgError;
use fleetnode_control_plane::store::{AuditFilter, OperatorRecord};
use fleetnode_wire::{AuditEntry, OperatorName, Timestamp};
use pg_support::{database, host, store};

fn operator(name: &str) -> OperatorRecord {
    OperatorRecord {
        name: OperatorName::parse(name).unwrap(),
        token_sha256: "ab".repeat(32),
        added_at: Timestamp(1),
        added_by: "admin".into(),
        revoked_at: None,
    }
}

fn entry(at: u64, hosts: &[&str]) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at: Timestamp(at),
        who: "alice".into(),
        action: "set-target".into(),
        subject: None,
        hosts: hosts.iter().map(|h| host(h)).collect(),
        status: 200,
        outcome: "ok".into(),
    }
}

#[tokio::test]
async fn an_operator_is_added_once_and_revoked_for_every_replica() {
    let db = database();
    let (a, b) = (store(&db).await, store(&db).await);
    a.add_operator(&operator("alice")).await.unwrap();
    let error = b.add_operator(&operator("alice")).await.unwrap_err();
    assert!(
        matches!(error, PgError::DuplicateOperator { .. }),
        "{error:?}"
    );
    b.add_operator(&operator("bob")).await.unwrap();
    let mut revoked = operator("alice");
    revoked.revoked_at = Some(Timestamp(5));
    b.put_operator(&revoked).await.unwrap();
    assert_eq!(
        a.load_operators().await.unwrap(),
        vec![revoked, operator("bob")]
    );
}

#[tokio::test]
async fn replicas_append_to_one_log_without_gaps_and_read_it_filtered() {
    let db = database();
    let replicas = [store(&db).await, store(&db).await];
    let appends: Vec<_> = (0..20u64)
        .map(|i| {
            let store = replicas[(i % 2) as usize].clone();
            let hosts: &[&str] = if i % 3 == 0 { &["web-01"] } else { &["web-02"] };
            let entry = entry(100 + i, hosts);
            tokio::spawn(async move { store.append_audit(entry).await.unwrap().seq })
        })
        .collect();
    let mut seqs = Vec::new();
    for append in appends {
        seqs.push(append.await.unwrap());
    }
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>());

    let (all, truncated) = replicas[0]
        .audit(&AuditFilter::default(), 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 20);
    assert!(!truncated);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq), "oldest first");

    let (newest, truncated) = replicas[1].audit(&AuditFilter::default(), 5).await.unwrap();
    assert_eq!(
        newest.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [16, 17, 18, 19, 20]
    );
    assert!(truncated);

    let web01 = AuditFilter {
        host: Some(host("web-01")),
        since: None,
        who: None,
    };
    let (entries, truncated) = replicas[1].audit(&web01, 100).await.unwrap();
    assert_eq!(entries.len(), 7, "{entries:?}");
    assert!(entries.iter().all(|e| e.hosts == vec![host("web-01")]));
    assert!(!truncated);

    let (mine, _) = replicas[0]
        .audit(&AuditFilter::default(), 100)
        .await
        .unwrap();
    let cutoff = mine.iter().find(|e| e.seq == 11).unwrap().at;
    let since = AuditFilter {
        host: None,
        since: Some(cutoff),
        who: None,
    };
    let (entries, _) = replicas[0].audit(&since, 100).await.unwrap();
    assert!(entries.iter().all(|e| e.at >= cutoff));
    assert_eq!(
        entries.len(),
        mine.iter().filter(|e| e.at >= cutoff).count()
    );

    // By principal: every entry is alice's, none bob's.
    let by = |who: &str| AuditFilter {
        who: Some(who.to_owned()),
        ..AuditFilter::default()
    };
    let (alice, _) = replicas[1].audit(&by("alice"), 100).await.unwrap();
    assert_eq!(alice.len(), 20);
    let (bob, _) = replicas[1].audit(&by("bob"), 100).await.unwrap();
    assert!(bob.is_empty(), "{bob:?}");
}
