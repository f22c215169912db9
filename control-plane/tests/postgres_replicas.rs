//! Control-plane replicas on one PostgreSQL database (a throw-away cluster of the tests' own),
//! over real HTTPS: each serves every endpoint; a host's writes serialise in the database; a
//! change made through one wakes long-polls on another; trust is shared; the rollout driver
//! moves to another replica when the driving one stops; an approval reaches the driving one.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pg_support;

use std::time::Duration;

use common::{Harness, SimulatedAgent, closure, wait_for_waiters};
use fleetnode_wire::{
    DesiredAnswer, EventAck, HeartbeatAck, HostId, MAX_WAIT_SECS, PhaseKind, Revision,
    RolloutStatus,
};
use reqwest::{Method, StatusCode};

/// Above i64::MAX, as half of all agents' random stream ids are.
const STREAM: u64 = 0x8000_0000_0000_0009;

#[tokio::test]
async fn one_replica_serves_agents_and_operators_and_keeps_everything_across_a_restart() {
    let db = pg_support::database();
    let mut replica = Harness::start_on(&db.url()).await;
    let token = replica.add_host("web-01").await;
    let agent = replica.agent("web-01", &token);
    let set = replica.set_target(&["web-01"], &closure("web-01", 1)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);

    let mut sim = SimulatedAgent::started(&closure("web-01", 0), STREAM);
    sim.activate(1, &closure("web-01", 1));
    for chunk in sim.reported.chunks(3) {
        let answer = agent.events(STREAM, chunk).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let ack: EventAck = answer.json();
        assert_eq!(ack.acked_through, chunk.last().unwrap().seq);
    }
    let beat = agent.heartbeat(&sim.heartbeat()).await;
    assert_eq!(beat.status, StatusCode::OK, "{}", beat.text);
    let ack: HeartbeatAck = beat.json();
    assert_eq!(ack.desired_revision, Revision(1));

    replica.restart().await;
    let detail = replica.detail("web-01").await;
    assert_eq!(detail.mirror, sim.state.host);
    assert_eq!(detail.row.phase, PhaseKind::Converged);
    assert!(!detail.row.diverged, "{:?}", detail.divergence);
    assert_eq!(detail.recent_events, sim.reported);
    assert_eq!(detail.desired.revision, Revision(1));
    let metrics = replica.admin(Method::GET, "/metrics", None).await;
    assert_eq!(metrics.status, StatusCode::OK, "{}", metrics.text);
    assert!(
        metrics
            .text
            .contains("fleetnode_cp_hosts{phase=\"converged\"} 1"),
        "{}",
        metrics.text
    );
}

#[tokio::test]
async fn a_change_through_one_replica_wakes_a_long_poll_waiting_on_another() {
    let db = pg_support::database();
    let a = Harness::start_on(&db.url()).await;
    let b = Harness::start_on(&db.url()).await;
    let token = a.add_host("web-01").await;
    let on_b = b_agent(&b, "web-01", &token).await;

    let first: DesiredAnswer = on_b.desired(None, 0).await.json();
    assert_eq!(first.desired.revision, Revision(0));
    let poll = {
        let on_b = on_b.clone();
        tokio::spawn(async move { on_b.desired(Some(0), MAX_WAIT_SECS).await })
    };
    wait_for_waiters(&b, 1).await;
    let set = a.set_target(&["web-01"], &closure("web-01", 1)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);

    // Only a change ends this poll with changed=true before its wait runs out.
    let answer: DesiredAnswer = poll.await.unwrap().json();
    assert!(answer.changed);
    assert_eq!(answer.desired.revision, Revision(1));
}

#[tokio::test]
async fn a_host_revoked_through_one_replica_is_refused_by_the_other() {
    let db = pg_support::database();
    let a = Harness::start_on(&db.url()).await;
    let b = Harness::start_on(&db.url()).await;
    let token = a.add_host("web-01").await;
    let on_b = b_agent(&b, "web-01", &token).await;

    let revoked = a
        .admin(Method::DELETE, "/v1/admin/hosts/web-01", None)
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text);
    let refused = eventually(|| async {
        let answer = on_b.desired(None, 0).await;
        (answer.status == StatusCode::UNAUTHORIZED).then_some(answer)
    })
    .await;
    assert_eq!(refused.code(), "unauthorized");
}

#[tokio::test]
async fn batches_split_over_two_replicas_make_one_exact_mirror() {
    let db = pg_support::database();
    let a = Harness::start_on(&db.url()).await;
    let b = Harness::start_on(&db.url()).await;
    let token = a.add_host("web-01").await;
    let on_a = a.agent("web-01", &token);
    let on_b = b_agent(&b, "web-01", &token).await;

    let mut sim = SimulatedAgent::started(&closure("web-01", 0), STREAM);
    for revision in 1..=4 {
        sim.activate(revision, &closure("web-01", 1 + (revision % 2) as usize));
    }
    let events = &sim.reported;
    // The agent fails over mid-batch: each batch goes to one replica and again, overlapping,
    // to the other.
    let mut start = 0;
    while start < events.len() {
        let end = (start + 4).min(events.len());
        let first: EventAck = on_a.events(STREAM, &events[start..end]).await.json();
        assert_eq!(first.acked_through, events[end - 1].seq);
        let again_from = start.saturating_sub(2);
        let second: EventAck = on_b.events(STREAM, &events[again_from..end]).await.json();
        assert_eq!(second.acked_through, events[end - 1].seq);
        start = end;
    }
    for replica in [&a, &b] {
        let detail = replica.detail("web-01").await;
        assert_eq!(detail.mirror, sim.state.host);
        assert!(!detail.row.diverged, "{:?}", detail.divergence);
    }
    let store = pg_support::store(&db).await;
    let stored = store
        .recent_events(&HostId::parse("web-01").unwrap(), STREAM, 10_000)
        .await
        .unwrap();
    assert_eq!(&stored, events, "every event once, in order");
}

#[tokio::test]
async fn rollout_commands_reach_the_driving_replica_and_the_rollouts_move_when_it_stops() {
    let db = pg_support::database();
    let mut a = Harness::start_on(&db.url()).await;
    // A holds the rollout lease before B starts: B never drives while A lives.
    rollout_lease_held(&db).await;
    let b = Harness::start_on(&db.url()).await;
    let mut tokens = Vec::new();
    for id in ["web-01", "web-02"] {
        tokens.push(a.add_host(id).await);
    }
    let request = serde_json::json!({
        "release": { "hosts": {
            "web-01": closure("web-01", 1).to_string(),
            "web-02": closure("web-02", 1).to_string(),
        } },
        "waves": [ { "by": "count", "count": 1 }, { "by": "percent", "percent": 100 } ],
        "bake_ms": 0,
    });
    // A drives (it took the lease first); commands sent to B are forwarded to it.
    let answer = b
        .admin(
            Method::POST,
            "/v1/admin/rollouts",
            Some(request.to_string()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let started: RolloutStatus = answer.json();
    let id = started.rollout.id;
    for action in ["pause", "resume"] {
        let answer = b
            .admin(
                Method::POST,
                &format!("/v1/admin/rollouts/{id}/{action}"),
                None,
            )
            .await;
        assert_eq!(answer.status, StatusCode::OK, "{action}: {}", answer.text);
    }
    let unknown = b
        .admin(Method::POST, "/v1/admin/rollouts/99/pause", None)
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.text);
    let canary = started.rollout.waves[0].hosts[0].clone();
    let second = started.rollout.waves[1].hosts[0].clone();

    // A stops; B takes the lease over and goes on with the rollout.
    a.stop().await;
    let index = |host: &HostId| usize::from(host.as_str() != "web-01");
    converge(&b, &canary, &tokens[index(&canary)]).await;
    let moved = eventually(|| async {
        let detail = b.detail(second.as_str()).await;
        (detail.desired.revision == Revision(1)).then_some(detail)
    })
    .await;
    assert!(moved.desired.directive.is_some());

    // Each host got its directive once.
    let store = pg_support::store(&db).await;
    for host in [&canary, &second] {
        let history = store.desired_history(host).await.unwrap();
        assert_eq!(history.len(), 1, "{host}: {history:?}");
    }
}

#[tokio::test]
async fn an_approval_sent_to_a_replica_that_does_not_drive_lets_exactly_the_waiting_wave_start() {
    let db = pg_support::database();
    let a = Harness::start_on(&db.url()).await;
    rollout_lease_held(&db).await;
    let b = Harness::start_on(&db.url()).await;
    for id in ["web-01", "web-02"] {
        a.add_host(id).await;
    }
    let request = serde_json::json!({
        "release": { "hosts": {
            "web-01": closure("web-01", 1).to_string(),
            "web-02": closure("web-02", 1).to_string(),
        } },
        "waves": [ { "by": "count", "count": 1 }, { "by": "percent", "percent": 100 } ],
        "bake_ms": 0,
        "require_approval": "always",
    });
    let answer = b
        .admin(
            Method::POST,
            "/v1/admin/rollouts",
            Some(request.to_string()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{}", answer.text);
    let started: RolloutStatus = answer.json();
    let id = started.rollout.id;
    assert!(
        started.rollout.awaiting_approval.is_some(),
        "{:?}",
        started.rollout
    );
    let canary = started.rollout.waves[0].hosts[0].clone();
    let second = started.rollout.waves[1].hosts[0].clone();
    assert!(b.detail(canary.as_str()).await.desired.directive.is_none());

    // Approved through B, carried out by A: the canary's wave starts, and only it.
    let path = format!("/v1/admin/rollouts/{id}/approve");
    let approved = b.admin(Method::POST, &path, None).await;
    assert_eq!(approved.status, StatusCode::OK, "{}", approved.text);
    let status: RolloutStatus = approved.json();
    assert_eq!(status.rollout.approved_wave, Some(0));
    eventually(|| async {
        let detail = b.detail(canary.as_str()).await;
        detail.desired.directive.is_some().then_some(())
    })
    .await;
    assert!(b.detail(second.as_str()).await.desired.directive.is_none());
    let again = b.admin(Method::POST, &path, None).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.text);

    // One audit log: both approvals, as answered, whichever replica is asked.
    let log: fleetnode_wire::AuditLog = a.admin(Method::GET, "/v1/admin/audit", None).await.json();
    let outcomes: Vec<&str> = log
        .entries
        .iter()
        .filter(|e| e.action == "rollout-approve")
        .map(|e| e.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["ok", "conflict"], "{log:#?}");
}

/// Waits until a replica holds the rollout lease.
async fn rollout_lease_held(db: &fleetnode_fixtures::postgres::Database) {
    eventually(|| async {
        let held = fleetnode_fixtures::postgres::shared()
            .unwrap()
            .psql(
                db.name(),
                "SELECT count(*) FROM leases WHERE name = 'rollouts' AND holder IS NOT NULL",
            )
            .unwrap();
        (held.trim() == "1").then_some(())
    })
    .await;
}

/// The agent of `host` talking to replica `b`, once `b` knows the host (added through another
/// replica, it arrives by notification).
async fn b_agent(b: &Harness, host: &str, token: &str) -> common::Agent {
    let agent = b.agent(host, token);
    eventually(|| async {
        let answer = agent.desired(None, 0).await;
        (answer.status == StatusCode::OK).then_some(())
    })
    .await;
    agent
}

/// Reports the host through `replica` as converged on its directive.
async fn converge(replica: &Harness, host: &HostId, token: &str) {
    let agent = replica.agent(host.as_str(), token);
    let answer: DesiredAnswer = eventually(|| async {
        let answer: DesiredAnswer = agent.desired(Some(0), 0).await.json();
        answer.changed.then_some(answer)
    })
    .await;
    let mut sim = SimulatedAgent::started(&closure(host.as_str(), 0), STREAM);
    sim.answer(answer.desired.directive.unwrap());
    let ack = agent.events(STREAM, &sim.reported).await;
    assert_eq!(ack.status, StatusCode::OK, "{}", ack.text);
    let beat = agent.heartbeat(&sim.heartbeat()).await;
    assert_eq!(beat.status, StatusCode::OK, "{}", beat.text);
}

/// What `probe` gives once it gives something, asked every 50 ms for up to 30 s (changes
/// between replicas travel by notification; nothing here measures how fast).
async fn eventually<T, F, Fut>(mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..600 {
        if let Some(value) = probe().await {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the replicas never agreed");
}
