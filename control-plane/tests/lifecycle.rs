//! Start-up and restarts: 503 until the store is open, an unreadable store is a clear error,
//! and a restart on the same store loses nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, SimulatedAgent, closure, wait_for_waiters};
use fleetnode_control_plane::{ServeError, start};
use fleetnode_wire::{DesiredAnswer, DesiredChanged, HostList, MAX_WAIT_SECS, Revision};
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn a_restart_on_the_same_store_loses_nothing_and_agents_reconnect() {
    let mut harness = Harness::start().await;
    let token = harness.add_host_tagged("web-01", &["web"]).await;
    harness.add_host("db-01").await;
    let agent = harness.agent("web-01", &token);
    let mut sim = SimulatedAgent::started(&closure("web-01", 0), 9);
    sim.activate(1, &closure("web-01", 1));
    harness.set_target(&["web-01"], &closure("web-01", 1)).await;
    agent.events(9, &sim.reported).await;
    agent.heartbeat(&sim.heartbeat()).await;
    let before_list: HostList = harness
        .admin(Method::GET, "/v1/admin/hosts", None)
        .await
        .json();
    let before = harness.detail("web-01").await;

    // A long-poll waiting while the server stops is answered, not dropped.
    let poll = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.desired(Some(1), MAX_WAIT_SECS).await })
    };
    wait_for_waiters(&harness, 1).await;
    harness.stop().await;
    let answer: DesiredAnswer = poll.await.unwrap().json();
    assert!(!answer.changed);

    harness.boot().await;
    harness.wait_ready().await;
    let agent = harness.agent("web-01", &token);
    let after_list: HostList = harness
        .admin(Method::GET, "/v1/admin/hosts", None)
        .await
        .json();
    assert_eq!(after_list, before_list);
    assert_eq!(harness.detail("web-01").await, before);
    assert_eq!(harness.detail("web-01").await.mirror, sim.state.host);

    // The agent reconnects with its token and what it knew; the seqs go on.
    let answer: DesiredAnswer = agent.desired(Some(1), 0).await.json();
    assert!(!answer.changed);
    assert_eq!(answer.desired.revision, Revision(1));
    let duplicate = agent.events(9, &sim.reported).await;
    assert_eq!(duplicate.status, StatusCode::OK);
    // Revisions continue from the stored history.
    let changed: DesiredChanged = harness
        .set_target(&["web-01"], &closure("web-01", 2))
        .await
        .json();
    assert_eq!(changed.hosts[0].revision, Revision(2));
}

#[tokio::test]
async fn requests_get_503_with_retry_after_until_the_store_opens() {
    let mut harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    harness.stop().await;

    // Another process holds the store: the server listens, answers 503 and keeps trying.
    let holder = redb::Database::create(&harness.store).unwrap();
    harness.boot().await;
    for path in ["/healthz", "/v1/admin/hosts"] {
        let answer = harness.admin(Method::GET, path, None).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(answer.code(), "unavailable");
        assert_eq!(answer.headers["retry-after"], "1");
        assert!(answer.text.contains("cp.redb"), "{}", answer.text);
    }
    let agent = harness.agent("web-01", &token);
    let answer = agent.desired(None, 0).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(answer.headers.contains_key("retry-after"));

    drop(holder);
    harness.wait_ready().await;
    let answer = agent.desired(None, 0).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
}

#[tokio::test]
async fn an_unreadable_store_stops_the_server_with_an_error_naming_the_file() {
    let harness = Harness::start().await;
    let path = harness.pki.dir.path().join("garbage.redb");
    std::fs::write(&path, vec![0x5a_u8; 64 * 1024]).unwrap();
    let mut options = harness.options();
    options.store = path.clone().into();
    let server = start(options).await.unwrap();
    let error = server.wait().await.unwrap_err();
    assert!(matches!(error, ServeError::Store(_)), "{error:?}");
    let text = error.to_string();
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[tokio::test]
async fn after_a_restore_the_next_revision_outnumbers_what_the_agent_knows() {
    let mut harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    let backup = harness.pki.dir.path().join("backup.redb");
    // Back up (server stopped), then the fleet moves on: revision 1 reaches the agent.
    harness.stop().await;
    std::fs::copy(&harness.store, &backup).unwrap();
    harness.boot().await;
    harness.wait_ready().await;
    harness.set_target(&["web-01"], &closure("web-01", 1)).await;
    let mut sim = SimulatedAgent::started(&closure("web-01", 0), 4);
    sim.activate(1, &closure("web-01", 1));

    // Restore the backup: the server is back at revision 0, the agent knows revision 1.
    harness.stop().await;
    std::fs::copy(&backup, &harness.store).unwrap();
    harness.boot().await;
    harness.wait_ready().await;
    let agent = harness.agent("web-01", &token);
    agent.heartbeat(&sim.heartbeat()).await;
    assert_eq!(harness.detail("web-01").await.desired.revision, Revision(0));

    let changed: DesiredChanged = harness
        .set_target(&["web-01"], &closure("web-01", 2))
        .await
        .json();
    assert_eq!(changed.hosts[0].revision, Revision(2));
    let answer: DesiredAnswer = agent.desired(Some(1), 0).await.json();
    assert!(answer.changed);
    assert_eq!(answer.desired.directive.unwrap().revision, Revision(2));
}
