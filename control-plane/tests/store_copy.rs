//! `fleetnode-cp store copy`: a redb store filled through the real server is copied into an
//! empty PostgreSQL database (of the tests' own throw-away cluster) by the real binary; a
//! server started on the copy shows the same fleet, its agents go on where they were, and the
//! audit log and rollouts are numbered on after the copied ones. A database holding a fleet,
//! and a store in use by a running server, are refused.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pg_support;

use std::path::Path;
use std::process::Output;

use common::{Agent, Harness, SimulatedAgent, closure};
use fleetnode_control_plane::store::copy::{CopyError, copy_to_postgres};
use fleetnode_wire::{AuditLog, EventAck, HostDetail, Revision, RolloutStatus};
use reqwest::{Method, StatusCode};

const BIN: &str = env!("CARGO_BIN_EXE_fleetnode-cp");
const HOSTS: [&str; 4] = ["web-01", "web-02", "web-03", "web-04"];

/// One host's agent: its token, its HTTP side and its simulated state.
struct Host {
    id: &'static str,
    token: String,
    sim: SimulatedAgent,
}

/// A redb server with a fleet: an operator, four hosts reporting (web-04 revoked), a target set
/// on web-01 and carried out, a rollout over web-02 and web-03 with web-02 converged and
/// web-03 still to act, and the audit entries all of that made.
async fn filled() -> (Harness, Vec<Host>) {
    let harness = Harness::start().await;
    let added = harness
        .admin(
            Method::POST,
            "/v1/admin/operators",
            Some(r#"{"name":"alice"}"#.into()),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.text);
    let mut hosts = Vec::new();
    for (i, id) in HOSTS.iter().enumerate() {
        let tags: &[&str] = if i == 0 { &["canary"] } else { &[] };
        let token = harness.add_host_tagged(id, tags).await;
        let sim = SimulatedAgent::started(&closure(id, 0), (1 << 63) + 30 + i as u64);
        let host = Host { id, token, sim };
        send_all(&agent(&harness, &host), &host.sim, 0).await;
        hosts.push(host);
    }
    let set = harness.set_target(&["web-01"], &closure("web-01", 1)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    let sent = hosts[0].sim.reported.len();
    hosts[0].sim.activate(1, &closure("web-01", 1));
    send_all(&agent(&harness, &hosts[0]), &hosts[0].sim, sent).await;

    let release: serde_json::Map<String, serde_json::Value> = ["web-02", "web-03"]
        .iter()
        .map(|h| ((*h).to_owned(), serde_json::json!(closure(h, 1))))
        .collect();
    let body = serde_json::json!({
        "release": { "hosts": release },
        "waves": [{"by": "percent", "percent": 100}],
        "bake_ms": 0,
    });
    let started = harness
        .admin(Method::POST, "/v1/admin/rollouts", Some(body.to_string()))
        .await;
    assert_eq!(started.status, StatusCode::CREATED, "{}", started.text);
    let sent = hosts[1].sim.reported.len();
    hosts[1].sim.activate(1, &closure("web-02", 1));
    send_all(&agent(&harness, &hosts[1]), &hosts[1].sim, sent).await;

    let revoked = harness
        .admin(Method::DELETE, "/v1/admin/hosts/web-04", None)
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.text);
    for host in &hosts[..3] {
        let beat = agent(&harness, host).heartbeat(&host.sim.heartbeat()).await;
        assert_eq!(beat.status, StatusCode::OK, "{}", beat.text);
    }
    (harness, hosts)
}

fn agent(harness: &Harness, host: &Host) -> Agent {
    harness.agent(host.id, &host.token)
}

/// Sends the agent's events from index `from` on, in batches of three, each acknowledged.
async fn send_all(agent: &Agent, sim: &SimulatedAgent, from: usize) {
    for chunk in sim.reported[from..].chunks(3) {
        let answer = agent.events(sim.stream, chunk).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let ack: EventAck = answer.json();
        assert_eq!(ack.acked_through, chunk.last().unwrap().seq);
    }
}

/// What an operator sees of the fleet: the host list, each host, the audit log, the rollout.
async fn view(harness: &Harness) -> (String, Vec<HostDetail>, AuditLog, RolloutStatus) {
    let list = harness.admin(Method::GET, "/v1/admin/hosts", None).await;
    assert_eq!(list.status, StatusCode::OK, "{}", list.text);
    let mut details = Vec::new();
    for id in HOSTS {
        details.push(harness.detail(id).await);
    }
    let audit = harness.admin(Method::GET, "/v1/admin/audit", None).await;
    assert_eq!(audit.status, StatusCode::OK, "{}", audit.text);
    let rollout = harness
        .admin(Method::GET, "/v1/admin/rollouts/1", None)
        .await;
    assert_eq!(rollout.status, StatusCode::OK, "{}", rollout.text);
    (list.text, details, audit.json(), rollout.json())
}

fn copy_command(from: &Path, url: &str) -> Output {
    std::process::Command::new(BIN)
        .args(["store", "copy", "--from"])
        .arg(from)
        .args(["--to", url])
        .env_remove("PGPASSFILE")
        .output()
        .unwrap()
}

#[tokio::test]
async fn a_copied_fleet_goes_on_on_postgres_where_it_was_on_redb() {
    let (mut redb, mut hosts) = filled().await;
    let (list, details, audit, rollout) = view(&redb).await;
    let events: usize = hosts.iter().map(|h| h.sim.reported.len()).sum();
    redb.stop().await;

    let db = pg_support::database();
    let output = copy_command(&redb.store, &db.url());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for (what, n) in [
        ("hosts", 4),
        ("events", events),
        ("heartbeats", 3),
        ("operators", 1),
        ("rollouts", 1),
        ("audit entries", audit.entries.len()),
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{what} ")))
            .unwrap_or_else(|| panic!("no {what} in {stdout}"));
        assert_eq!(
            line.split_whitespace().last(),
            Some(n.to_string().as_str()),
            "{stdout}"
        );
    }
    assert!(stdout.contains("checked:"), "{stdout}");

    let pg = Harness::start_on(&db.url()).await;
    let (list_after, details_after, audit_after, rollout_after) = view(&pg).await;
    assert_eq!(list_after, list);
    assert_eq!(details_after, details);
    assert_eq!(audit_after.entries, audit.entries);
    assert_eq!(rollout_after.rollout.id, rollout.rollout.id);
    assert_eq!(rollout_after.rollout.hosts, rollout.rollout.hosts);

    // The revoked host stays refused; the others go on: web-01 takes a new target, whose
    // revision follows the copied history, and its agent's next batch continues the log.
    let refused = agent(&pg, &hosts[3]).desired(None, 0).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text);
    let set = pg.set_target(&["web-01"], &closure("web-01", 2)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    let web01 = &mut hosts[0];
    let sent = web01.sim.reported.len();
    web01.sim.activate(2, &closure("web-01", 2));
    send_all(&agent(&pg, web01), &web01.sim, sent).await;
    let detail = pg.detail("web-01").await;
    assert_eq!(detail.desired.revision, Revision(2));
    assert_eq!(detail.mirror, web01.sim.state.host);
    assert!(!detail.row.diverged, "{:?}", detail.divergence);

    // web-03 carries out the copied rollout's directive on the new server.
    let web03 = &mut hosts[2];
    let sent = web03.sim.reported.len();
    web03.sim.activate(1, &closure("web-03", 1));
    send_all(&agent(&pg, web03), &web03.sim, sent).await;
    assert_eq!(pg.detail("web-03").await.mirror, web03.sim.state.host);

    // The audit log and the rollouts are numbered on after the copied ones.
    let last = audit.entries.last().unwrap().seq;
    let log: AuditLog = pg.admin(Method::GET, "/v1/admin/audit", None).await.json();
    let newest = log.entries.last().unwrap();
    assert_eq!(
        (newest.seq, newest.action.as_str()),
        (last + 1, "set-target")
    );
    let body = serde_json::json!({
        "release": { "hosts": { "web-02": closure("web-02", 2) } },
        "waves": [{"by": "percent", "percent": 100}],
        "bake_ms": 0,
    });
    let second = pg
        .admin(Method::POST, "/v1/admin/rollouts", Some(body.to_string()))
        .await;
    assert_eq!(second.status, StatusCode::CREATED, "{}", second.text);
    let second: RolloutStatus = second.json();
    assert_eq!(second.rollout.id.0, 2);
}

#[tokio::test]
async fn a_database_holding_a_fleet_is_refused_and_left_as_it_was() {
    let (mut redb, _hosts) = filled().await;
    redb.stop().await;
    let db = pg_support::database();
    let target = pg_support::store(&db).await;
    target
        .add_host(&pg_support::record("db-01"), &pg_support::initial())
        .await
        .unwrap();

    let refused = copy_to_postgres(&redb.store, &pg_support::options(&db.url()))
        .await
        .unwrap_err();
    assert!(matches!(refused, CopyError::NotEmpty { .. }), "{refused:?}");
    let message = refused.to_string();
    assert!(message.contains("holds 1 host"), "{message}");
    assert!(message.contains("nothing was written"), "{message}");
    let hosts = target.load().await.unwrap();
    assert_eq!(hosts.len(), 1);
    assert!(target.load_operators().await.unwrap().is_empty());
    assert!(target.load_rollouts().await.unwrap().is_empty());

    // The binary says the same and exits non-zero.
    let output = copy_command(&redb.store, &db.url());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not empty: it holds 1 host"), "{stderr}");
}

#[tokio::test]
async fn a_store_with_its_server_running_is_refused() {
    let harness = Harness::start().await;
    harness.add_host("web-01").await;
    let db = pg_support::database();

    let output = copy_command(&harness.store, &db.url());
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("open in another process"), "{stderr}");
    assert!(stderr.contains("stop the fleetnode-cp server"), "{stderr}");
    let target = pg_support::store(&db).await;
    assert!(target.load().await.unwrap().is_empty());

    let missing = copy_command(&harness.pki.dir.path().join("nothing.redb"), &db.url());
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("there is no store at"), "{stderr}");
}
