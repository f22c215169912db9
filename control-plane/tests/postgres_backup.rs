//! Online backups of the PostgreSQL store (docs/control-plane.md, "Backups of a PostgreSQL
//! store"): Debian's real `pg_dump -Fc` taken while the server runs mid-deployment, the agents
//! going on, then the dump restored with `pg_restore` into a recreated database under a
//! restarted server. The agents whose acknowledged events the dump lacks are asked for
//! snapshots (the resync protocol), the one that was not ahead simply goes on, and every mirror
//! ends exactly what the agent holds.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pg_support;

use std::path::Path;
use std::process::Command;

use common::{Agent, Harness, SimulatedAgent, closure};
use fleetnode_fixtures::postgres::{Cluster, Database, SUPERUSER, find_bindir, shared};
use fleetnode_state_machine::{Event, ResyncCause};
use fleetnode_wire::{EventAck, OutboundEvent, Revision};
use reqwest::StatusCode;

const HOSTS: [&str; 3] = ["web-01", "web-02", "web-03"];

/// Runs a client program of the cluster's own PostgreSQL version against `db`'s cluster.
fn pg_tool(cluster: &Cluster, program: &str, args: &[&str]) {
    let binary = find_bindir().unwrap().join(program);
    let output = Command::new(&binary)
        .arg("-h")
        .arg(cluster.socket_dir())
        .args(["-p", &cluster.port().to_string(), "-U", SUPERUSER])
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{} {args:?}: {}",
        binary.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn dump(cluster: &Cluster, db: &Database, file: &Path) {
    let file = file.to_str().unwrap();
    pg_tool(cluster, "pg_dump", &["-Fc", "-d", db.name(), "-f", file]);
}

/// Replaces the database by the dump: dropped (with whatever is still connected), created
/// again empty, restored.
fn restore(cluster: &Cluster, db: &Database, file: &Path) {
    let name = db.name();
    cluster
        .psql("postgres", &format!("DROP DATABASE {name} WITH (FORCE)"))
        .unwrap();
    cluster
        .psql("postgres", &format!("CREATE DATABASE {name}"))
        .unwrap();
    pg_tool(
        cluster,
        "pg_restore",
        &["--exit-on-error", "-d", name, file.to_str().unwrap()],
    );
}

/// Sends the agent's events from index `from` on, in batches of two, each acknowledged.
async fn send(agent: &Agent, sim: &SimulatedAgent, from: usize) {
    send_range(agent, sim.stream, &sim.reported[from..]).await;
}

async fn send_range(agent: &Agent, stream: u64, events: &[OutboundEvent]) {
    for chunk in events.chunks(2) {
        let answer = agent.events(stream, chunk).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
        let ack: EventAck = answer.json();
        assert_eq!(ack.acked_through, chunk.last().unwrap().seq);
    }
}

#[tokio::test]
async fn an_older_dump_restored_under_live_agents_ends_with_every_mirror_exact() {
    let cluster = shared().unwrap();
    let db = pg_support::database();
    let mut harness = Harness::start_on(&db.url()).await;
    let mut fleet = Vec::new();
    for (i, id) in HOSTS.iter().enumerate() {
        let token = harness.add_host(id).await;
        let sim = SimulatedAgent::started(&closure(id, 0), (1 << 63) + 50 + i as u64);
        send(&harness.agent(id, &token), &sim, 0).await;
        let sent = sim.reported.len();
        fleet.push((*id, token, sim, sent));
    }
    let set = harness.set_target(&HOSTS, &closure("all", 1)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);

    // Mid-deployment: each agent has reported half of its activation when the dump is taken.
    for (id, token, sim, sent) in &mut fleet {
        let before = sim.reported.len();
        sim.activate(1, &closure("all", 1));
        let half = before + (sim.reported.len() - before) / 2;
        let agent = harness.agent(id, token);
        send_range(&agent, sim.stream, &sim.reported[*sent..half]).await;
        *sent = half;
    }
    let backup = harness.pki.dir.path().join("fleet.dump");
    dump(cluster, &db, &backup);
    let at_dump: Vec<u64> = {
        let mut seqs = Vec::new();
        for id in HOSTS {
            seqs.push(harness.detail(id).await.mirror.seq);
        }
        seqs
    };

    // The agents go on: web-01 and web-02 finish (acknowledged, then forgotten by the agent),
    // web-01 even takes a second target; web-03 keeps the rest of its events queued.
    for (id, token, sim, sent) in &mut fleet[..2] {
        send(&harness.agent(id, token), sim, *sent).await;
        *sent = sim.reported.len();
    }
    let set = harness.set_target(&["web-01"], &closure("web-01", 2)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    let (id, token, sim, sent) = &mut fleet[0];
    sim.activate(2, &closure("web-01", 2));
    send(&harness.agent(id, token), sim, *sent).await;
    *sent = sim.reported.len();

    // The database is lost and restored from the older dump under a restarted server.
    harness.stop().await;
    restore(cluster, &db, &backup);
    harness.boot().await;
    harness.wait_ready().await;
    for (id, seq) in HOSTS.iter().zip(&at_dump) {
        assert_eq!(harness.detail(id).await.mirror.seq, *seq, "{id} restored");
    }

    // web-01 and web-02 have nothing queued and are ahead of the restored log: their
    // heartbeats are answered with resync_required, and they send snapshots.
    for (id, token, sim, sent) in &mut fleet[..2] {
        let agent = harness.agent(id, token);
        let answer = agent.heartbeat(&sim.heartbeat()).await;
        assert_eq!(answer.status, StatusCode::CONFLICT, "{id}: {}", answer.text);
        assert_eq!(answer.code(), "resync_required");
        let body: serde_json::Value = answer.json();
        let log_end = body["seq"].as_u64().unwrap();
        assert!(log_end < sim.state.host.seq, "{id}: {log_end}");
        sim.feed(Event::ResyncRequested {
            log_end,
            cause: ResyncCause::ControlPlaneLog { log_end },
        });
        send(&agent, sim, *sent).await;
        *sent = sim.reported.len();
    }
    // web-03's queued events continue the restored log as they are.
    let (id, token, sim, sent) = &mut fleet[2];
    send(&harness.agent(id, token), sim, *sent).await;

    for (id, token, sim, _) in &fleet {
        let detail = harness.detail(id).await;
        assert_eq!(detail.mirror, sim.state.host, "{id}");
        assert!(!detail.row.diverged, "{id}: {:?}", detail.divergence);
        let beat = harness.agent(id, token).heartbeat(&sim.heartbeat()).await;
        assert_eq!(beat.status, StatusCode::OK, "{id}: {}", beat.text);
    }

    // The restored desired state of web-01 is older than what its agent carried out; the next
    // change is numbered above that, so the agent takes it.
    let set = harness.set_target(&["web-01"], &closure("web-01", 1)).await;
    assert_eq!(set.status, StatusCode::OK, "{}", set.text);
    let detail = harness.detail("web-01").await;
    assert_eq!(detail.desired.revision, Revision(3));
    let (id, token, sim, sent) = &mut fleet[0];
    sim.activate(3, &closure("web-01", 1));
    send(&harness.agent(id, token), sim, *sent).await;
    assert_eq!(harness.detail("web-01").await.mirror, sim.state.host);
}
