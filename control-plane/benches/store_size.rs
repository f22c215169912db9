//! How big the store grows: a fleet's year at one deployment a day, as retention leaves it, on
//! both stores, measured on a sample fleet and scaled to the asked size.
//!
//! With the default retention a year leaves, per host: the last 90 days of events (one
//! deployment's events a day, as the real state machine reports them, through the real
//! ingestion path), 100 desired-state history entries, the mirror and the latest heartbeat
//! (replaced every 30 s, so one row however many were sent); and fleet-wide one audit entry per
//! rollout and the rollouts themselves (never pruned). The sample's hosts go through the
//! fleet's own operations on a redb file and on a throw-away PostgreSQL database; the store's
//! size on disk is then read (the redb file; `pg_database_size` after `VACUUM`) and scaled
//! linearly by hosts. The rollout and audit records are measured on one rollout of the sample
//! and scaled by hosts and by 365.
//!
//! `cargo bench -p fleetnode-control-plane --bench store_size -- --sample 500 --fleet 10000`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetnode_control_plane::ManualClock;
use fleetnode_control_plane::fleet::{
    Credentials, DesiredChangeRequest, Fleet, Settings, StoreLocation,
};
use fleetnode_control_plane::metrics::Metrics;
use fleetnode_fixtures::postgres::{Cluster, ClusterOptions};
use fleetnode_fixtures::simulated::SimulatedAgent;
use fleetnode_wire::{AddHost, EventBatch, HostId, SetTarget, StorePath, Timestamp};
use tokio_util::sync::CancellationToken;

const DAYS_OF_EVENTS: u64 = 90;
const HISTORY_DEPTH: u64 = 100;
const ROLLOUTS_A_YEAR: u64 = 365;

struct Args {
    sample: usize,
    fleet: usize,
}

fn args() -> Args {
    let mut args = Args {
        sample: 500,
        fleet: 10_000,
    };
    let mut words = std::env::args().skip(1);
    while let Some(word) = words.next() {
        match word.as_str() {
            "--sample" => args.sample = words.next().and_then(|n| n.parse().ok()).unwrap(),
            "--fleet" => args.fleet = words.next().and_then(|n| n.parse().ok()).unwrap(),
            // cargo bench passes --bench.
            _ => {}
        }
    }
    args
}

fn closure(host: usize, n: u64) -> StorePath {
    let hash: String = format!("{host:016}{n:016}")
        .chars()
        .map(|c| match c {
            '0' => 'a',
            '1' => 'b',
            other => other,
        })
        .collect();
    StorePath::parse(&format!("/nix/store/{hash}-nixos-system-host-{host}-{n}")).unwrap()
}

async fn open(location: &StoreLocation, clock: Arc<ManualClock>) -> Arc<Fleet> {
    let settings = Settings {
        heartbeat_interval: Duration::from_secs(30),
        waiters_per_host: 4,
        clock,
        metrics: Arc::new(Metrics::new()),
        shutdown: CancellationToken::new(),
        lease_ttl: Duration::from_secs(15),
        windows: Default::default(),
    };
    Fleet::open(location, settings).await.unwrap().0
}

/// One host's retained year: its events of the last 90 days (one deployment a day), 100
/// desired-state changes, and its latest heartbeat.
async fn host_year(fleet: Arc<Fleet>, n: usize, start: Timestamp) {
    let id = format!("host-{n:05}");
    let token = fleet
        .add_host(AddHost {
            id: HostId::parse(&id).unwrap(),
            tags: Vec::new(),
        })
        .await
        .unwrap();
    let entry = fleet
        .authorize_host(&id, Credentials::Token(token.expose()))
        .unwrap();
    let stream = (1u64 << 63) + n as u64;
    let mut sim = SimulatedAgent::started_at(&closure(n, 0), stream, start);
    let mut sent = 0;
    for day in 1..=DAYS_OF_EVENTS {
        sim.activate(day, &closure(n, day % 3 + 1));
        let batch = EventBatch {
            stream,
            events: sim.reported[sent..].to_vec(),
        };
        sent = sim.reported.len();
        fleet.ingest(&entry, batch).await.unwrap();
    }
    for revision in 0..HISTORY_DEPTH {
        let request: SetTarget = serde_json::from_value(serde_json::json!({
            "selector": { "by": "hosts", "hosts": [id] },
            "target": closure(n, revision % 3 + 1).to_string(),
        }))
        .unwrap();
        let change = DesiredChangeRequest::SetTarget {
            request,
            force: true,
        };
        fleet.change_desired(change).await.unwrap();
    }
    fleet.heartbeat(&entry, sim.heartbeat()).await.unwrap();
}

async fn fill(fleet: &Arc<Fleet>, sample: usize, start: Timestamp) -> Duration {
    let began = Instant::now();
    let tasks: Vec<_> = (0..sample)
        .map(|n| tokio::spawn(host_year(fleet.clone(), n, start)))
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    began.elapsed()
}

fn mib(bytes: f64) -> String {
    format!("{:.1} MiB", bytes / 1_048_576.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = args();
    let scale = args.fleet as f64 / args.sample as f64;
    let start = Timestamp(1_700_000_000_000);
    println!(
        "store size: a sample of {} hosts, each with {DAYS_OF_EVENTS} days of events at one deployment a day, {HISTORY_DEPTH} desired-state entries and its latest heartbeat; scaled to {} hosts",
        args.sample, args.fleet
    );

    // redb.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("size.redb");
    let clock = Arc::new(ManualClock::new(start));
    let fleet = open(&StoreLocation::Redb(path.clone()), clock.clone()).await;
    let took = fill(&fleet, args.sample, start).await;
    let events_per_host = {
        let id = HostId::parse("host-00000").unwrap();
        let detail = fleet.host_detail(&id).await.unwrap();
        detail.mirror.seq
    };
    drop(fleet);
    let redb_bytes = std::fs::metadata(&path).unwrap().len() as f64;

    // PostgreSQL.
    let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
    let db = cluster.database().unwrap();
    let fleet = open(&StoreLocation::parse(&db.url(), None), clock.clone()).await;
    let pg_took = fill(&fleet, args.sample, start).await;
    cluster.psql(db.name(), "VACUUM ANALYZE").unwrap();
    let pg_bytes: f64 = cluster
        .psql(db.name(), "SELECT pg_database_size(current_database())")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let empty = cluster.database().unwrap();
    drop(open(&StoreLocation::parse(&empty.url(), None), clock.clone()).await);
    let pg_empty: f64 = cluster
        .psql(empty.name(), "SELECT pg_database_size(current_database())")
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // One rollout over the whole sample, and its audit entry's host list, scaled.
    let rollout_json = {
        let hosts: serde_json::Map<String, serde_json::Value> = (0..args.sample)
            .map(|n| {
                (
                    format!("host-{n:05}"),
                    serde_json::Value::String(closure(n, 9).to_string()),
                )
            })
            .collect();
        let request = serde_json::from_value(serde_json::json!({
            "release": { "hosts": hosts },
            "waves": [ { "by": "percent", "percent": 10 }, { "by": "percent", "percent": 100 } ],
        }))
        .unwrap();
        let (fleet2, driver) = {
            let settings = Settings {
                heartbeat_interval: Duration::from_secs(30),
                waiters_per_host: 4,
                clock: clock.clone(),
                metrics: Arc::new(Metrics::new()),
                shutdown: CancellationToken::new(),
                lease_ttl: Duration::from_secs(15),
                windows: Default::default(),
            };
            drop(fleet);
            Fleet::open(&StoreLocation::parse(&db.url(), None), settings)
                .await
                .unwrap()
        };
        let driving = tokio::spawn(fleetnode_control_plane::fleet::rollouts::run(
            fleet2.clone(),
            driver,
        ));
        let status = fleet2.start_rollout(request).await.unwrap();
        driving.abort();
        serde_json::to_vec(&status.rollout).unwrap().len() as f64
    };
    let audit_hosts = args.sample as f64 * ("host-00000".len() + 3) as f64;
    let fleet_wide = (rollout_json + audit_hosts) * scale * ROLLOUTS_A_YEAR as f64;

    println!("  events per host kept (90 deployments): {events_per_host}");
    println!(
        "  redb:       sample {} in {:.1} s; per host {}; {} hosts: {}",
        mib(redb_bytes),
        took.as_secs_f64(),
        mib(redb_bytes / args.sample as f64),
        args.fleet,
        mib(redb_bytes * scale)
    );
    println!(
        "  PostgreSQL: sample {} (an empty database {}) in {:.1} s; per host {}; {} hosts: {}",
        mib(pg_bytes),
        mib(pg_empty),
        pg_took.as_secs_f64(),
        mib((pg_bytes - pg_empty) / args.sample as f64),
        args.fleet,
        mib(pg_empty + (pg_bytes - pg_empty) * scale)
    );
    println!(
        "  a year of rollouts (one a day over the whole fleet, never pruned) and their audit entries: {} for {} hosts (one rollout record: {} for {} hosts)",
        mib(fleet_wide),
        args.fleet,
        mib(rollout_json),
        args.sample
    );
}
