//! The desired-state long-poll: level-triggered, non-consuming, woken at once by a change.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Harness, closure, wait_for_waiters};
use fleetnode_wire::{DesiredAnswer, DesiredChanged, DirectiveKind, MAX_WAIT_SECS, Revision};
use reqwest::{Method, StatusCode};

#[tokio::test]
async fn a_waiting_poll_gets_the_new_directive_as_soon_as_a_target_is_set() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    let agent = harness.agent("web-01", &token);

    let first: DesiredAnswer = agent.desired(None, 0).await.json();
    assert!(first.changed);
    assert_eq!(first.desired.revision, Revision(0));
    assert_eq!(first.desired.directive, None);

    // Wait as long as the protocol allows: only a change can end this poll with changed=true.
    let poll = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.desired(Some(0), MAX_WAIT_SECS).await })
    };
    wait_for_waiters(&harness, 1).await;
    let set = harness.set_target(&["web-01"], &closure("web-01", 1)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    let changed: DesiredChanged = set.json();
    assert_eq!(changed.hosts[0].revision, Revision(1));

    let answer: DesiredAnswer = poll.await.unwrap().json();
    assert!(answer.changed);
    assert_eq!(answer.desired.revision, Revision(1));
    let directive = answer.desired.directive.unwrap();
    assert_eq!(directive.revision, Revision(1));
    assert!(matches!(
        directive.kind,
        DirectiveKind::Activate { ref target, .. } if *target == closure("web-01", 1)
    ));
}

#[tokio::test]
async fn a_lost_answer_loses_nothing() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    let agent = harness.agent("web-01", &token);

    // The agent's request times out (its response is lost) while the target is set.
    let impatient = agent.clone();
    let poll = tokio::spawn(async move {
        impatient
            .request(Method::GET, "desired")
            .query(&[("known", "0"), ("wait", "300")])
            .timeout(Duration::from_millis(300))
            .send()
            .await
    });
    wait_for_waiters(&harness, 1).await;
    harness.set_target(&["web-01"], &closure("web-01", 1)).await;
    // Whether the answer made it or not, the agent asks again with what it knew.
    let _ = poll.await.unwrap();
    wait_for_waiters(&harness, 0).await;

    let again: DesiredAnswer = agent.desired(Some(0), MAX_WAIT_SECS).await.json();
    assert!(again.changed);
    assert_eq!(again.desired.revision, Revision(1));
    // Reading consumed nothing: the same answer again.
    let third: DesiredAnswer = agent.desired(Some(0), MAX_WAIT_SECS).await.json();
    assert_eq!(third, again);
}

#[tokio::test]
async fn a_poll_with_the_current_revision_ends_unchanged_at_its_wait_limit() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    let agent = harness.agent("web-01", &token);
    let answer: DesiredAnswer = agent.desired(Some(0), 1).await.json();
    assert!(!answer.changed);
    assert_eq!(answer.desired.revision, Revision(0));
}

#[tokio::test]
async fn pause_resume_and_rollback_each_bump_the_revision_and_wake_polls() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    let agent = harness.agent("web-01", &token);
    harness.set_target(&["web-01"], &closure("web-01", 1)).await;

    let poll = {
        let agent = agent.clone();
        tokio::spawn(async move { agent.desired(Some(1), MAX_WAIT_SECS).await })
    };
    wait_for_waiters(&harness, 1).await;
    let paused = harness
        .admin(Method::POST, "/v1/admin/hosts/web-01/pause", None)
        .await;
    assert_eq!(paused.status, StatusCode::OK, "{}", paused.text);
    let answer: DesiredAnswer = poll.await.unwrap().json();
    assert!(answer.changed && answer.desired.paused);
    assert_eq!(answer.desired.revision, Revision(2));
    // The directive is kept through the hold.
    assert_eq!(answer.desired.directive.unwrap().revision, Revision(1));

    // Pausing again changes nothing.
    let again: DesiredChanged = harness
        .admin(Method::POST, "/v1/admin/hosts/web-01/pause", None)
        .await
        .json();
    assert!(again.hosts.is_empty());

    let resumed: DesiredChanged = harness
        .admin(Method::POST, "/v1/admin/hosts/web-01/resume", None)
        .await
        .json();
    assert_eq!(resumed.hosts[0].revision, Revision(3));

    let rollback = harness
        .admin(
            Method::POST,
            "/v1/admin/hosts/web-01/rollback",
            Some(format!(r#"{{"to":"{}"}}"#, closure("web-01", 0))),
        )
        .await;
    assert_eq!(rollback.status, StatusCode::OK, "{}", rollback.text);
    let now: DesiredAnswer = agent.desired(Some(3), 0).await.json();
    assert_eq!(now.desired.revision, Revision(4));
    let directive = now.desired.directive.unwrap();
    assert_eq!(directive.revision, Revision(4));
    assert_eq!(
        directive.kind,
        DirectiveKind::Rollback {
            to: Some(closure("web-01", 0))
        }
    );
}

#[tokio::test]
async fn too_many_waiting_polls_for_one_host_get_429() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    let agent = harness.agent("web-01", &token);
    let mut polls = Vec::new();
    for _ in 0..fleetnode_control_plane::server::DEFAULT_WAITERS_PER_HOST {
        let agent = agent.clone();
        polls.push(tokio::spawn(async move {
            agent.desired(Some(0), MAX_WAIT_SECS).await
        }));
    }
    wait_for_waiters(&harness, 4).await;
    let refused = agent.desired(Some(0), MAX_WAIT_SECS).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.code(), "rate_limited");
    assert!(refused.headers.contains_key("retry-after"));

    // A change answers every waiting poll.
    harness.set_target(&["web-01"], &closure("web-01", 1)).await;
    for poll in polls {
        let answer: DesiredAnswer = poll.await.unwrap().json();
        assert!(answer.changed);
    }
}

#[tokio::test]
async fn targets_select_hosts_by_tag_and_all() {
    let harness = Harness::start().await;
    harness.add_host_tagged("web-01", &["web"]).await;
    harness.add_host_tagged("web-02", &["web"]).await;
    harness.add_host_tagged("db-01", &["db"]).await;
    let by_tag = harness
        .admin(
            Method::POST,
            "/v1/admin/targets",
            Some(
                serde_json::json!({
                    "selector": {"by": "tag", "tag": "web"},
                    "target": closure("web-01", 1),
                    "mode": "switch",
                    "health": {"soak_ms": 60000},
                })
                .to_string(),
            ),
        )
        .await;
    let changed: DesiredChanged = by_tag.json();
    let hosts: Vec<String> = changed.hosts.iter().map(|h| h.host.to_string()).collect();
    assert_eq!(hosts, ["web-01", "web-02"]);

    let all: DesiredChanged = harness
        .admin(
            Method::POST,
            "/v1/admin/targets",
            Some(
                serde_json::json!({"selector": {"by": "all"}, "target": closure("db-01", 2)})
                    .to_string(),
            ),
        )
        .await
        .json();
    let revisions: Vec<(String, u64)> = all
        .hosts
        .iter()
        .map(|h| (h.host.to_string(), h.revision.0))
        .collect();
    assert_eq!(
        revisions,
        [
            ("db-01".to_owned(), 1),
            ("web-01".to_owned(), 2),
            ("web-02".to_owned(), 2)
        ]
    );

    // Naming an unknown host changes nothing at all.
    let refused = harness
        .set_target(&["web-01", "nope"], &closure("web-01", 0))
        .await;
    assert_eq!(refused.status, StatusCode::NOT_FOUND, "{}", refused.text);
    assert_eq!(harness.detail("web-01").await.desired.revision, Revision(2));
}
