//! Faults of replicas on one PostgreSQL database, each with real `fleetnode-cp` processes, a
//! real agent on a fake root (its `control_plane_url` listing the replicas) and a throw-away
//! PostgreSQL: a replica killed during ingestion, the replica driving a rollout killed mid-wave,
//! PostgreSQL stopped hard under traffic, and replicas starting together on an empty database.

use std::time::Duration;

use fleetnode_fixtures::fakeroot::Behaviour;
use fleetnode_fixtures::postgres::{Cluster, ClusterOptions, shared};
use fleetnode_tests::Health;
use fleetnode_tests::replicas::{Address, Replicas};

use crate::common::{assert_gap_free, replay, run};

/// The events a database holds for a host's stream, as `seq` numbers in order.
fn stored_seqs(cluster: &Cluster, database: &str) -> Vec<u64> {
    cluster
        .psql(
            database,
            "SELECT seq FROM events WHERE host = 'web-01' ORDER BY stream, seq",
        )
        .unwrap()
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect()
}

#[test]
fn a_replica_killed_during_ingestion_loses_and_repeats_nothing() {
    run(|| {
        let cluster = shared().unwrap();
        let db = cluster.database().unwrap();
        let mut r = Replicas::start_on_database(
            2,
            &[Address::Server(0), Address::Server(1)],
            &db.url(),
            &[],
        )?;
        let gen2 = r.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        r.root()
            .behaviour(&gen2, Behaviour::SucceedAfter(Duration::from_secs(3)));
        let revision = r.set_target(&gen2, &["--soak", "2s"])?;
        r.wait_for_agent("the directive received", |status| {
            status["desired_revision"] == revision.0 && status["phase"] == "activating"
        })?;
        // A crash, mid-deployment: whatever it was ingesting gets no answer.
        r.servers[0].kill()?;
        let detail = r.wait_for("the host converged, reported through replica 1", |d| {
            d.mirror.handled == Some(revision) && d.mirror.phase.is_at_rest()
        })?;
        let report = r.report();
        let status = r.wait_for_agent("the queue to drain", |s| s["queue"]["depth"] == 0)?;
        let recorded = status["last_seq"].as_u64().unwrap();
        assert_gap_free(&detail.recent_events);
        assert_eq!(replay(&detail.recent_events), detail.mirror, "{report}");
        // Every event once, in order: 1..=last with nothing missing or repeated.
        let seqs = stored_seqs(cluster, db.name());
        assert_eq!(seqs, (1..=recorded).collect::<Vec<_>>(), "{report}");
        Ok(())
    })
}

#[test]
fn the_replica_driving_a_rollout_killed_mid_wave_is_taken_over() {
    run(|| {
        let cluster = shared().unwrap();
        let db = cluster.database().unwrap();
        let mut r = Replicas::start_on_database(
            2,
            &[Address::Server(1), Address::Server(0)],
            &db.url(),
            &["--lease-ttl", "3s"],
        )?;
        // Replica 0 started first and holds the rollout lease.
        let holder = cluster
            .psql(
                db.name(),
                "SELECT holder FROM leases WHERE name = 'rollouts'",
            )
            .unwrap();
        let pid = r.servers[0].pid().unwrap();
        assert!(holder.contains(&format!("/{pid}/")), "{holder}");

        let gen2 = r.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        r.root()
            .behaviour(&gen2, Behaviour::SucceedAfter(Duration::from_secs(3)));
        let manifest = r.work_dir().join("release.json");
        let release = serde_json::json!({ "hosts": { "web-01": gen2.to_string() } });
        std::fs::write(&manifest, release.to_string()).unwrap();
        let manifest = manifest.display().to_string();
        // Through replica 1, which forwards the command to replica 0.
        r.servers[1].cli(&["rollout", "start", &manifest, "--bake", "1s"])?;
        r.wait_for_agent("the directive received", |status| {
            status["phase"] == "activating"
        })?;
        r.servers[0].kill()?;

        let listed = r.wait_for_rollout(1, "completed")?;
        let report = r.report();
        assert!(listed.contains("completed"), "{listed}\n{report}");
        let directives = cluster
            .psql(
                db.name(),
                "SELECT count(*) FROM desired_history WHERE host = 'web-01'",
            )
            .unwrap();
        assert_eq!(
            directives.trim(),
            "1",
            "one directive, issued once\n{report}"
        );
        let holder = cluster
            .psql(
                db.name(),
                "SELECT holder FROM leases WHERE name = 'rollouts'",
            )
            .unwrap();
        let pid = r.servers[1].pid().unwrap();
        assert!(holder.contains(&format!("/{pid}/")), "{holder}\n{report}");
        Ok(())
    })
}

#[test]
fn postgres_stopped_hard_under_traffic_is_ridden_out() {
    run(|| {
        let cluster = Cluster::start(&ClusterOptions::default()).unwrap();
        let db = cluster.database().unwrap();
        let mut r = Replicas::start_on_database(1, &[Address::Server(0)], &db.url(), &[])?;
        let gen2 = r.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        r.root()
            .behaviour(&gen2, Behaviour::SucceedAfter(Duration::from_secs(2)));
        let revision = r.set_target(&gen2, &["--soak", "2s"])?;
        r.wait_for_agent("the directive received", |status| {
            status["desired_revision"] == revision.0
        })?;
        cluster.stop_hard().unwrap();
        // While the database is away the replica acknowledges nothing: it answers 503.
        let refused = r.servers[0].cli(&["hosts"]).unwrap_err().to_string();
        assert!(refused.contains("cannot reach its database"), "{refused}");
        // The agent goes on with its switch and queues what it reports.
        r.wait_for_agent("the switch done while the database is away", |status| {
            status["queue"]["depth"].as_u64().unwrap_or(0) > 0
        })?;
        cluster.start_again().unwrap();
        let detail = r.wait_for("the host converged once the database is back", |d| {
            d.mirror.handled == Some(revision) && d.row.phase.name() == "converged"
        })?;
        let report = r.report();
        let status = r.wait_for_agent("the queue to drain", |s| s["queue"]["depth"] == 0)?;
        let recorded = status["last_seq"].as_u64().unwrap();
        assert_gap_free(&detail.recent_events);
        assert_eq!(replay(&detail.recent_events), detail.mirror, "{report}");
        let seqs = stored_seqs(&cluster, db.name());
        assert_eq!(seqs, (1..=recorded).collect::<Vec<_>>(), "{report}");
        Ok(())
    })
}

#[test]
fn replicas_started_together_on_an_empty_database_migrate_once_and_all_serve() {
    run(|| {
        let cluster = shared().unwrap();
        let db = cluster.database().unwrap();
        let binary = fleetnode_tests::binaries::locate(fleetnode_tests::binaries::CONTROL_PLANE)?;
        let work = tempfile::tempdir().unwrap();
        let mut files = fleetnode_tests::harness::server_files(work.path())?;
        files.store = db.url().into();
        // Both start at the same moment, each waiting until it serves.
        let starts: Vec<_> = (0..2)
            .map(|index| {
                let mut files = files.clone();
                files.log = work.path().join(format!("control-plane-{index}.log"));
                let binary = binary.clone();
                std::thread::spawn(move || {
                    fleetnode_tests::control_plane::ControlPlane::start_with(
                        binary,
                        files,
                        "30s",
                        "info",
                        &[],
                        fleetnode_tests::control_plane::Readiness::Serving,
                    )
                })
            })
            .collect();
        let mut servers = Vec::new();
        for start in starts {
            servers.push(start.join().expect("a start thread")?);
        }
        // Both serve, and between them the schema was created once.
        let mut applied = 0;
        for server in &servers {
            server.cli(&["hosts"])?;
            let log = std::fs::read_to_string(server.log()).unwrap();
            let line = log
                .lines()
                .find(|line| line.contains("database schema up to date"))
                .unwrap_or_else(|| panic!("no schema line in:\n{log}"));
            let count = line
                .split("migrations_applied=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<i64>().ok())
                .unwrap_or_else(|| panic!("no count in {line}"));
            applied += count;
        }
        let versions = cluster
            .psql(db.name(), "SELECT count(*) FROM fleetnode_schema")
            .unwrap();
        assert_eq!(applied.to_string(), versions.trim());
        assert!(applied > 0);
        Ok(())
    })
}
