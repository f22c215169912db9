//! Event ingestion, the mirror, heartbeats, divergence and offline detection, over HTTPS.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Harness, SimulatedAgent, closure};
use fleetnode_wire::{
    EventAck, HeartbeatAck, HostList, MAX_BODY_BYTES, Millis, PhaseKind, Report, Revision,
};
use reqwest::{Method, StatusCode};

const STREAM: u64 = 77;

#[tokio::test]
async fn the_mirror_equals_the_state_the_agent_reached() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    let agent = harness.agent("web-01", &token);

    let mut sim = SimulatedAgent::started(&closure("web-01", 0), STREAM);
    sim.activate(1, &closure("web-01", 1));
    sim.rollback(2);
    let kinds: Vec<&str> = sim.reported.iter().map(|e| e.report.name()).collect();
    assert!(kinds.contains(&"converged"), "{kinds:?}");
    assert!(kinds.contains(&"reverted"), "{kinds:?}");

    // Delivered in uneven batches, as an agent's queue would.
    for chunk in sim.reported.chunks(3) {
        let answer = agent.events(STREAM, chunk).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let ack: EventAck = answer.json();
        assert_eq!(ack.acked_through, chunk.last().unwrap().seq);
    }

    let detail = harness.detail("web-01").await;
    assert_eq!(detail.mirror, sim.state.host);
    assert_eq!(detail.row.phase, PhaseKind::Reverted);
    assert_eq!(detail.row.current, Some(closure("web-01", 0)));
    assert!(!detail.row.diverged);
    assert_eq!(detail.recent_events, sim.reported);
}

#[tokio::test]
async fn duplicates_are_acknowledged_and_gaps_stop_application() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    let agent = harness.agent("web-01", &token);
    let mut sim = SimulatedAgent::started(&closure("web-01", 0), STREAM);
    sim.activate(1, &closure("web-01", 1));
    let events = sim.reported.clone();
    assert!(events.len() >= 8, "{events:?}");

    let ack: EventAck = agent.events(STREAM, &events[..3]).await.json();
    assert_eq!(ack.acked_through, 3);

    // The same events again, with the next two: the duplicates are skipped.
    let ack: EventAck = agent.events(STREAM, &events[..5]).await.json();
    assert_eq!(ack.acked_through, 5);

    // A batch that begins beyond seq 6 does not continue the log: nothing is stored, and the
    // agent is asked for a snapshot, told where the log ends.
    let answer = agent.events(STREAM, &events[6..8]).await;
    assert_eq!(answer.status, StatusCode::CONFLICT, "{}", answer.text);
    assert_eq!(answer.code(), "resync_required");
    let body: serde_json::Value = answer.json();
    assert_eq!(body["seq"], 5);
    let detail = harness.detail("web-01").await;
    assert_eq!(detail.mirror.seq, 5);
    assert_eq!(detail.recent_events, events[..5].to_vec());

    // A gap in the middle of a batch: applied up to the gap.
    let mixed = vec![events[5].clone(), events[7].clone()];
    let ack: EventAck = agent.events(STREAM, &mixed).await.json();
    assert_eq!(ack.acked_through, 6);

    // The agent resends from the ack: everything arrives, the mirror is exact.
    let ack: EventAck = agent.events(STREAM, &events[6..]).await.json();
    assert_eq!(ack.acked_through, events.last().unwrap().seq);
    let detail = harness.detail("web-01").await;
    assert_eq!(detail.mirror, sim.state.host);
    assert_eq!(detail.recent_events, events);
}

#[tokio::test]
async fn a_report_that_does_not_fit_is_kept_and_flags_the_host() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    let agent = harness.agent("web-01", &token);
    let sim = SimulatedAgent::started(&closure("web-01", 0), STREAM);
    let mut events = sim.reported.clone();
    let next = events.last().unwrap().seq + 1;
    // "Realised" while idle: the two sides disagree.
    events.push(fleetnode_wire::OutboundEvent {
        seq: next,
        at: sim.now,
        report: Report::Realised {
            target: closure("web-01", 1),
        },
    });
    let ack: EventAck = agent.events(STREAM, &events).await.json();
    assert_eq!(ack.acked_through, next, "delivery is never blocked");
    let detail = harness.detail("web-01").await;
    assert!(detail.row.diverged);
    let why = detail.divergence.unwrap();
    assert!(why.contains("realised"), "{why}");
    assert_eq!(detail.recent_events.len(), events.len());
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused_and_the_server_keeps_serving() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    let agent = harness.agent("web-01", &token);

    let answer = agent.post_raw("events", b"{not json".to_vec()).await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    assert_eq!(answer.code(), "malformed");

    let answer = agent
        .post_raw("events", br#"{"stream":1,"events":[]}"#.to_vec())
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.code(), "invalid");
    assert!(
        answer.text.contains("at least one event"),
        "{}",
        answer.text
    );

    let huge = vec![b' '; MAX_BODY_BYTES + 10];
    let answer = agent.post_raw("events", huge).await;
    assert_eq!(answer.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(answer.code(), "too_large");

    let answer = agent
        .post_raw("heartbeat", br#"{"phase":"x"}"#.to_vec())
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{}", answer.text);

    // Still serving, and nothing was stored.
    let sim = SimulatedAgent::started(&closure("web-01", 0), STREAM);
    let ack: EventAck = agent.events(STREAM, &sim.reported).await.json();
    assert_eq!(ack.acked_through, sim.state.host.seq);
}

#[tokio::test]
async fn a_new_stream_starts_a_new_mirror_and_an_old_one_is_refused() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    let agent = harness.agent("web-01", &token);
    let mut old = SimulatedAgent::started(&closure("web-01", 0), 1);
    old.activate(1, &closure("web-01", 1));
    agent.events(1, &old.reported).await;

    // The agent's store was reset: it starts over at seq 1 on the generation it runs.
    let fresh = SimulatedAgent::started(&closure("web-01", 1), 2);
    let ack: EventAck = agent.events(2, &fresh.reported).await.json();
    assert_eq!(ack.acked_through, fresh.state.host.seq);
    assert_eq!(harness.detail("web-01").await.mirror, fresh.state.host);

    let stray = agent.events(1, &old.reported).await;
    assert_eq!(stray.status, StatusCode::CONFLICT, "{}", stray.text);
    assert_eq!(harness.detail("web-01").await.mirror, fresh.state.host);
}

#[tokio::test]
async fn a_disagreeing_heartbeat_flags_divergence_until_it_agrees_again() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    let agent = harness.agent("web-01", &token);
    let mut sim = SimulatedAgent::started(&closure("web-01", 0), STREAM);
    sim.activate(1, &closure("web-01", 1));
    agent.events(STREAM, &sim.reported).await;

    let answer = agent.heartbeat(&sim.heartbeat()).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    let ack: HeartbeatAck = answer.json();
    assert_eq!(ack.desired_revision, Revision(0));
    assert!(!harness.detail("web-01").await.row.diverged);

    let mut lying = sim.heartbeat();
    lying.phase = PhaseKind::Failed;
    lying.system.current = Some(closure("web-01", 2));
    agent.heartbeat(&lying).await;
    let detail = harness.detail("web-01").await;
    assert!(detail.row.diverged);
    let why = detail.divergence.unwrap();
    assert!(
        why.contains("\"failed\"") && why.contains("\"converged\""),
        "{why}"
    );
    assert!(why.contains("current system"), "{why}");

    // While events are still on their way, nothing can be concluded: the flag stays.
    let mut behind = lying.clone();
    behind.last_seq += 1;
    agent.heartbeat(&behind).await;
    assert!(harness.detail("web-01").await.row.diverged);

    agent.heartbeat(&sim.heartbeat()).await;
    let detail = harness.detail("web-01").await;
    assert!(!detail.row.diverged);
    assert_eq!(detail.divergence, None);
}

#[tokio::test]
async fn a_host_is_offline_after_three_missed_heartbeats() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    let agent = harness.agent("web-01", &token);
    let sim = SimulatedAgent::started(&closure("web-01", 0), STREAM);

    let rows = |list: HostList| list.hosts.into_iter().next().unwrap();
    let never: HostList = harness
        .admin(Method::GET, "/v1/admin/hosts", None)
        .await
        .json();
    assert!(rows(never).offline, "a host never seen is offline");

    agent.heartbeat(&sim.heartbeat()).await;
    let seen: HostList = harness
        .admin(Method::GET, "/v1/admin/hosts", None)
        .await
        .json();
    let row = rows(seen);
    assert!(!row.offline);
    assert_eq!(row.last_seen, Some(common::START));

    // Three intervals exactly: still online; a moment later: offline.
    harness.clock.advance(Millis(90_000));
    let list: HostList = harness
        .admin(Method::GET, "/v1/admin/hosts", None)
        .await
        .json();
    assert!(!rows(list).offline);
    harness.clock.advance(Millis(1));
    let list: HostList = harness
        .admin(Method::GET, "/v1/admin/hosts", None)
        .await
        .json();
    assert!(rows(list).offline);

    let metrics = harness.admin(Method::GET, "/metrics", None).await;
    assert!(
        metrics.text.contains("fleetnode_cp_hosts_offline 1"),
        "{}",
        metrics.text
    );

    agent.heartbeat(&sim.heartbeat()).await;
    let list: HostList = harness
        .admin(Method::GET, "/v1/admin/hosts", None)
        .await
        .json();
    assert!(!rows(list).offline);
}

#[tokio::test]
async fn metrics_count_hosts_events_and_requests_by_route_template() {
    let harness = Harness::start().await;
    let token = harness.add_host("web-01").await;
    harness.add_host("db-01").await;
    let agent = harness.agent("web-01", &token);
    let mut sim = SimulatedAgent::started(&closure("web-01", 0), STREAM);
    sim.activate(1, &closure("web-01", 1));
    agent.events(STREAM, &sim.reported).await;
    agent.desired(None, 0).await;

    let text = harness.admin(Method::GET, "/metrics", None).await.text;
    let expect = [
        format!("fleetnode_cp_events_ingested_total {}", sim.reported.len()),
        "fleetnode_cp_hosts{phase=\"converged\"} 1".to_owned(),
        "fleetnode_cp_hosts{phase=\"idle\"} 1".to_owned(),
        "fleetnode_cp_hosts_diverged 0".to_owned(),
        "fleetnode_cp_longpoll_waiters 0".to_owned(),
        "fleetnode_cp_http_requests_total{route=\"/v1/agent/hosts/{host}/desired\",method=\"GET\",status=\"200\"} 1".to_owned(),
        "fleetnode_cp_http_request_duration_seconds_count{route=\"/v1/agent/hosts/{host}/events\",method=\"POST\"} 1".to_owned(),
    ];
    for line in expect {
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
    assert!(!text.contains("web-01"), "raw paths must not become labels");
}
