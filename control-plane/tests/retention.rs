//! Retention on the redb store: old events, deep desired-state history and old audit entries
//! are pruned in batches; what an operator still reads stays; a dry run removes nothing; a
//! second pass finds nothing more.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod pg_support;

use std::sync::Arc;
use std::time::Duration;

use common::{START, closure};
use fleetnode_control_plane::ManualClock;
use fleetnode_control_plane::fleet::retention::PassReport;
use fleetnode_control_plane::fleet::{
    Credentials, DesiredChangeRequest, DriverStart, Fleet, Retention, Settings, StoreLocation,
    rollouts,
};
use fleetnode_control_plane::metrics::Metrics;
use fleetnode_control_plane::store::EXAMINE_PER_BATCH;
use fleetnode_fixtures::simulated::SimulatedAgent;
use fleetnode_wire::{
    AddHost, AuditEntry, EventBatch, HostId, MAX_RECENT_EVENTS, Millis, StartRollout, Timestamp,
};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

const DAY: u64 = 86_400_000;
/// Above i64::MAX, as half of all agents' random stream ids are.
const STREAM: u64 = u64::MAX - 40;

struct Open {
    fleet: Arc<Fleet>,
    driver: Option<DriverStart>,
    clock: Arc<ManualClock>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    _place: Place,
}

/// Where a test's store lives; held only to be dropped (removed) with the test.
#[allow(dead_code)]
enum Place {
    Redb(TempDir),
    Postgres(fleetnode_fixtures::postgres::Database),
}

/// Runs a test on a redb file and on a PostgreSQL database.
macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn redb() {
                    super::$test(super::Store::Redb).await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$test(super::Store::Postgres).await;
                }
            }
        )*
    };
}

on_both_stores!(
    old_events_go_in_batches_but_the_newest_of_each_host_stay,
    young_events_and_those_of_recent_rollouts_stay_however_old,
    a_replaced_stream_goes_whole_once_old,
    the_desired_history_keeps_its_newest_entries_and_the_state_in_force,
    audit_entries_older_than_the_limit_go_and_younger_ones_stay,
);

/// Which store a test runs on.
#[derive(Clone, Copy)]
enum Store {
    Redb,
    Postgres,
}

async fn open(store: Store) -> Open {
    let (place, location) = match store {
        Store::Redb => {
            let dir = TempDir::new().unwrap();
            let location = StoreLocation::Redb(dir.path().join("cp.redb"));
            (Place::Redb(dir), location)
        }
        Store::Postgres => {
            let db = pg_support::database();
            let location = StoreLocation::parse(&db.url(), None);
            (Place::Postgres(db), location)
        }
    };
    let clock = Arc::new(ManualClock::new(START));
    let metrics = Arc::new(Metrics::new());
    let shutdown = CancellationToken::new();
    let settings = Settings {
        heartbeat_interval: Duration::from_secs(30),
        waiters_per_host: 4,
        clock: clock.clone(),
        metrics: metrics.clone(),
        shutdown: shutdown.clone(),
        lease_ttl: Duration::from_secs(15),
        windows: Default::default(),
    };
    let (fleet, driver) = Fleet::open(&location, settings).await.unwrap();
    Open {
        fleet,
        driver: Some(driver),
        clock,
        metrics,
        shutdown,
        _place: place,
    }
}

fn policy() -> Retention {
    Retention {
        events: None,
        desired_history: None,
        audit: None,
        interval: Duration::from_secs(3600),
        dry_run: false,
    }
}

async fn add(fleet: &Fleet, id: &str) -> String {
    let request = AddHost {
        id: HostId::parse(id).unwrap(),
        tags: Vec::new(),
    };
    fleet.add_host(request).await.unwrap().expose().to_owned()
}

/// A host that went through `deployments` deployments (each several events) starting at
/// `START`, all delivered; returns the events.
async fn deployed(fleet: &Fleet, id: &str, stream: u64, deployments: u64) -> usize {
    let token = add(fleet, id).await;
    let entry = fleet
        .authorize_host(id, Credentials::Token(&token))
        .unwrap();
    let mut sim = SimulatedAgent::started_at(&closure(id, 0), stream, START);
    for revision in 1..=deployments {
        sim.activate(revision, &closure(id, 1 + (revision % 2) as usize));
    }
    let batch = EventBatch {
        stream,
        events: sim.reported.clone(),
    };
    let ack = fleet.ingest(&entry, batch).await.unwrap();
    assert_eq!(ack.acked_through, sim.reported.len() as u64);
    sim.reported.len()
}

async fn old_events_go_in_batches_but_the_newest_of_each_host_stay(store: Store) {
    let open = open(store).await;
    let fleet = &open.fleet;
    // Enough events that one pass needs several batches.
    let mut total = 0;
    for id in ["web-01", "web-02"] {
        total += deployed(fleet, id, STREAM, 160).await;
    }
    assert!(total > EXAMINE_PER_BATCH, "{total} events");
    let before = fleet
        .host_detail(&HostId::parse("web-01").unwrap())
        .await
        .unwrap();
    // Every event is now older than 90 days.
    open.clock.advance(Millis(100 * DAY));
    let events = Retention {
        events: Some(Duration::from_millis(90 * DAY)),
        ..policy()
    };

    let dry = fleet
        .prune(&Retention {
            dry_run: true,
            ..events
        })
        .await
        .unwrap();
    let kept = 2 * MAX_RECENT_EVENTS as u64;
    assert_eq!(dry.events, total as u64 - kept);
    let metrics = open
        .metrics
        .render(&Default::default(), &Default::default());
    assert!(
        metrics.contains(&format!(
            "fleetnode_cp_retention_dry_run_prunable{{kind=\"events\"}} {}",
            dry.events
        )),
        "{metrics}"
    );

    // The dry run removed nothing: the real pass removes the same.
    let real = fleet.prune(&events).await.unwrap();
    assert_eq!(real.events, dry.events);
    let metrics = open
        .metrics
        .render(&Default::default(), &Default::default());
    assert!(
        metrics.contains(&format!(
            "fleetnode_cp_retention_pruned_total{{kind=\"events\"}} {}",
            real.events
        )),
        "{metrics}"
    );
    // What `fleetnode-cp host` shows is what it showed before, and the mirror is untouched.
    let after = fleet
        .host_detail(&HostId::parse("web-01").unwrap())
        .await
        .unwrap();
    assert_eq!(after.recent_events, before.recent_events);
    assert_eq!(after.mirror, before.mirror);
    assert_eq!(fleet.prune(&events).await.unwrap(), PassReport::default());
}

async fn young_events_and_those_of_recent_rollouts_stay_however_old(store: Store) {
    let mut open = open(store).await;
    let fleet = open.fleet.clone();
    let young = deployed(&fleet, "web-01", STREAM, 30).await;
    let in_rollout = deployed(&fleet, "web-02", STREAM, 30).await;
    // web-02 is in a rollout started at the beginning: its events stay, however old.
    let driver = tokio::spawn(rollouts::run(fleet.clone(), open.driver.take().unwrap()));
    let request: StartRollout = serde_json::from_value(serde_json::json!({
        "release": { "hosts": { "web-02": closure("web-02", 2).to_string() } }
    }))
    .unwrap();
    fleet.start_rollout(request).await.unwrap();
    let events = Retention {
        events: Some(Duration::from_millis(90 * DAY)),
        ..policy()
    };
    // Nothing is 90 days old yet.
    assert_eq!(fleet.prune(&events).await.unwrap(), PassReport::default());

    open.clock.advance(Millis(100 * DAY));
    // Every event of web-01 but its newest is old; none of web-02's go.
    let report = fleet.prune(&events).await.unwrap();
    assert_eq!(report.events, young as u64 - MAX_RECENT_EVENTS as u64);
    assert!(in_rollout > MAX_RECENT_EVENTS);

    // A year later the rollout is still among the newest: still kept.
    open.clock.advance(Millis(365 * DAY));
    assert_eq!(fleet.prune(&events).await.unwrap().events, 0);
    open.shutdown.cancel();
    driver.await.unwrap();
}

async fn a_replaced_stream_goes_whole_once_old(store: Store) {
    let open = open(store).await;
    let fleet = &open.fleet;
    let token = add(fleet, "web-01").await;
    let entry = fleet
        .authorize_host("web-01", Credentials::Token(&token))
        .unwrap();
    let mut first = SimulatedAgent::started_at(&closure("web-01", 0), STREAM, START);
    for revision in 1..=5 {
        first.activate(revision, &closure("web-01", 1));
    }
    let batch = EventBatch {
        stream: STREAM,
        events: first.reported.clone(),
    };
    fleet.ingest(&entry, batch).await.unwrap();
    // The agent's store was reset: it reports a new stream; the old one is history.
    let second = SimulatedAgent::started_at(&closure("web-01", 1), STREAM + 1, START);
    assert!(second.reported.len() < MAX_RECENT_EVENTS);
    let batch = EventBatch {
        stream: STREAM + 1,
        events: second.reported.clone(),
    };
    fleet.ingest(&entry, batch).await.unwrap();

    open.clock.advance(Millis(100 * DAY));
    let events = Retention {
        events: Some(Duration::from_millis(90 * DAY)),
        ..policy()
    };
    let report = fleet.prune(&events).await.unwrap();
    assert_eq!(report.events, first.reported.len() as u64);
    let detail = fleet
        .host_detail(&HostId::parse("web-01").unwrap())
        .await
        .unwrap();
    assert_eq!(detail.recent_events, second.reported);
}

async fn the_desired_history_keeps_its_newest_entries_and_the_state_in_force(store: Store) {
    let open = open(store).await;
    let fleet = &open.fleet;
    add(fleet, "web-01").await;
    let host = HostId::parse("web-01").unwrap();
    for n in 0..10 {
        let change = DesiredChangeRequest::Hold {
            host: host.clone(),
            paused: n % 2 == 0,
        };
        fleet.change_desired(change).await.unwrap();
    }
    let history = Retention {
        desired_history: Some(3),
        ..policy()
    };
    let dry = fleet
        .prune(&Retention {
            dry_run: true,
            ..history
        })
        .await
        .unwrap();
    assert_eq!(dry.desired_history, 7);
    assert_eq!(fleet.prune(&history).await.unwrap().desired_history, 7);
    assert_eq!(fleet.prune(&history).await.unwrap().desired_history, 0);
    let detail = fleet.host_detail(&host).await.unwrap();
    assert_eq!(detail.desired.revision.0, 10);
    assert!(!detail.desired.paused);
}

async fn audit_entries_older_than_the_limit_go_and_younger_ones_stay(store: Store) {
    let open = open(store).await;
    let fleet = &open.fleet;
    for n in 0..5 {
        fleet.record_audit(entry(&open, n)).await.unwrap();
    }
    open.clock.advance(Millis(400 * DAY));
    for n in 5..8 {
        fleet.record_audit(entry(&open, n)).await.unwrap();
    }
    let audit = Retention {
        audit: Some(Duration::from_millis(365 * DAY)),
        ..policy()
    };
    assert_eq!(fleet.prune(&audit).await.unwrap().audit, 5);
    let log = fleet.audit(Default::default()).await.unwrap();
    let kept: Vec<&str> = log.entries.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(kept, ["action-5", "action-6", "action-7"]);
}

fn entry(open: &Open, n: u64) -> AuditEntry {
    AuditEntry {
        seq: 0,
        at: Timestamp(open.clock_now()),
        who: "admin".to_owned(),
        action: format!("action-{n}"),
        subject: None,
        hosts: Vec::new(),
        status: 200,
        outcome: "ok".to_owned(),
    }
}

impl Open {
    fn clock_now(&self) -> u64 {
        use fleetnode_control_plane::Clock;
        self.clock.now().0
    }
}
