//! The latest release against the tree: its agent against the current control plane, and the
//! current agent against its control plane, each through a deployment, a failed deployment
//! rolled back and an operator rollback, with nothing lost and the mirror exact; and the
//! release's control plane replaced by the tree's on the same store while its agent runs; and
//! each release's operator command line against the other's server.
//!
//! The release's binaries are built from its commit (`tests/compat/releases.toml`) once and
//! cached outside the repository (`fleetnode_tests::old_release`); the first run builds them
//! (a few minutes), later runs find them.

use std::path::PathBuf;

use fleetnode_fixtures::fakeroot::Behaviour;
use fleetnode_state_machine::{Phase, Reason, State, mirror};
use fleetnode_tests::{Harness, HarnessError, Health, Options, Result, old_release};

const FAILED_OUTPUT: &str = "activating the configuration...\nerror: gen-3 does not start";

#[test]
fn the_latest_releases_agent_works_with_the_current_control_plane() {
    let release = old_release::binaries().unwrap_or_else(|e| panic!("{e}"));
    run(Options {
        agent_binary: Some(release.agent),
        ..Options::default()
    });
}

#[test]
fn the_current_agent_works_with_the_latest_releases_control_plane() {
    let release = old_release::binaries().unwrap_or_else(|e| panic!("{e}"));
    run(Options {
        control_plane_binary: Some(release.control_plane),
        ..Options::default()
    });
}

fn run(options: Options) {
    let which = describe(&options.agent_binary, &options.control_plane_binary);
    if let Err(error) = scenario(options) {
        panic!("{which}: {error}");
    }
}

fn describe(agent: &Option<PathBuf>, cp: &Option<PathBuf>) -> String {
    let name = |binary: &Option<PathBuf>| {
        binary.as_ref().map_or("the tree's".to_owned(), |b| {
            format!("the release's ({})", b.display())
        })
    };
    format!("agent {}, control plane {}", name(agent), name(cp))
}

fn scenario(options: Options) -> Result<()> {
    let mut h = Harness::start_with(options)?;
    let gen1 = h.initial().clone();

    // A failed deployment, rolled back to generation 1.
    let broken = h.add_closure("nixos-system-web-01-broken", Health::Healthy)?;
    h.root().behaviour(
        &broken,
        Behaviour::Fail {
            exit_code: 1,
            output: FAILED_OUTPUT.to_owned(),
        },
    );
    let failed = h.set_target(&broken, &["--soak", "2s"])?;
    let detail = h.wait_settled(failed, "reverted")?;
    match &detail.mirror.phase {
        Phase::Reverted(reverted) => {
            expect(reverted.to == gen1, "reverted to generation 1", &h)?;
            expect(
                reverted.abandoned == Some(broken.clone()),
                "the broken one abandoned",
                &h,
            )?;
        }
        other => return Err(unexpected(&format!("not reverted: {other:?}"), &h)),
    }
    expect(
        h.root().current() == Some(gen1.clone()),
        "generation 1 live again",
        &h,
    )?;

    // A deployment.
    let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
    let deployed = h.set_target(&gen2, &["--soak", "2s"])?;
    h.wait_settled(deployed, "converged")?;
    expect(h.root().current() == Some(gen2.clone()), "gen-2 live", &h)?;
    expect(
        h.root().boot_entry() == Some(gen2.clone()),
        "gen-2 the boot entry",
        &h,
    )?;

    // An operator's rollback: back to where the deployment started.
    let rollback = h.rollback()?;
    let detail = h.wait_settled(rollback, "reverted")?;
    match &detail.mirror.phase {
        Phase::Reverted(reverted) => {
            expect(reverted.to == gen1, "rolled back to generation 1", &h)?;
            expect(
                reverted.reason == Reason::RequestedByControlPlane,
                "the operator's reason",
                &h,
            )?;
        }
        other => return Err(unexpected(&format!("not reverted: {other:?}"), &h)),
    }
    expect(
        h.root().current() == Some(gen1.clone()),
        "generation 1 live",
        &h,
    )?;
    expect(
        h.root().boot_entry() == Some(gen1.clone()),
        "generation 1 the boot entry",
        &h,
    )?;
    expect(
        detail.row.current == Some(gen1.clone()),
        "the control plane shows generation 1",
        &h,
    )?;

    exact(&mut h)
}

/// Nothing lost, the mirror exact: every event the agent emitted is in the control plane's log,
/// once and in order, nothing was dead-lettered, and replaying the log gives the mirror.
fn exact(h: &mut Harness) -> Result<()> {
    let status = h.agent_status()?;
    let last_seq = status["last_seq"].as_u64().unwrap_or(0);
    let detail = h.wait_for("every event delivered", |d| {
        d.mirror.seq >= last_seq && d.divergence.is_none()
    })?;
    let status = h.agent_status()?;
    expect(
        status["queue"]["depth"] == 0,
        "the agent's queue is empty",
        h,
    )?;
    expect(
        status["queue"]["dead_letters"] == 0,
        "nothing dead-lettered",
        h,
    )?;
    expect(
        status["last_seq"].as_u64() == Some(detail.mirror.seq),
        "the mirror at the agent's last seq",
        h,
    )?;
    expect(
        status["phase"] == detail.mirror.phase.name(),
        "the same phase on both sides",
        h,
    )?;
    let seqs: Vec<u64> = detail.recent_events.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=detail.mirror.seq).collect();
    expect(
        seqs == expected,
        "the control plane holds every seq from 1, once",
        h,
    )?;
    let mut replayed = State::default();
    for event in &detail.recent_events {
        mirror::apply(&mut replayed, event)
            .map_err(|e| unexpected(&format!("event {} applies: {e}", event.seq), h))?;
    }
    expect(
        replayed.host == detail.mirror,
        "replaying the log gives the mirror",
        h,
    )?;
    Ok(())
}

fn expect(holds: bool, what: &str, h: &Harness) -> Result<()> {
    if holds {
        Ok(())
    } else {
        Err(unexpected(what, h))
    }
}

fn unexpected(what: &str, h: &Harness) -> HarnessError {
    HarnessError::Unexpected {
        what: format!("expected: {what}"),
        report: h.report(None),
    }
}

#[test]
fn the_control_plane_upgraded_in_place_keeps_its_store_and_its_hosts() {
    let release = old_release::binaries().unwrap_or_else(|e| panic!("{e}"));
    let tree = fleetnode_tests::binaries::locate(fleetnode_tests::binaries::CONTROL_PLANE)
        .unwrap_or_else(|e| panic!("{e}"));
    let upgraded = || -> Result<()> {
        // The whole fleet on the release, as before an upgrade.
        let mut h = Harness::start_with(Options {
            agent_binary: Some(release.agent.clone()),
            control_plane_binary: Some(release.control_plane.clone()),
            ..Options::default()
        })?;
        let gen1 = h.initial().clone();
        let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        let deployed = h.set_target(&gen2, &["--soak", "2s"])?;
        h.wait_settled(deployed, "converged")?;

        // The control plane is replaced by the tree's, on the same store, while the agent runs.
        h.cp.stop()?;
        h.cp.replace_binary(tree.clone());
        h.cp.start_again()?;
        let gen3 = h.add_closure("nixos-system-web-01-gen-3", Health::Healthy)?;
        let deployed = h.set_target(&gen3, &["--soak", "2s"])?;
        expect(deployed.0 > 1, "the revision goes on from the store's", &h)?;
        h.wait_settled(deployed, "converged")?;
        let rollback = h.rollback()?;
        let detail = h.wait_settled(rollback, "reverted")?;
        expect(
            detail.row.current == Some(gen2.clone()),
            "back on gen-2",
            &h,
        )?;
        expect(h.root().current() == Some(gen2), "gen-2 live", &h)?;
        expect(
            detail.mirror.known_good.contains(&gen1),
            "the history kept",
            &h,
        )?;
        exact(&mut h)
    };
    if let Err(error) = upgraded() {
        panic!(
            "release {} upgraded in place: {error}",
            release.release.version
        );
    }
}

#[test]
fn the_current_operator_cli_works_with_the_latest_releases_control_plane_and_the_reverse() {
    let release = old_release::binaries().unwrap_or_else(|e| panic!("{e}"));
    let tree = fleetnode_tests::binaries::locate(fleetnode_tests::binaries::CONTROL_PLANE)
        .unwrap_or_else(|e| panic!("{e}"));
    for (server, cli, which) in [
        (
            Some(release.control_plane.clone()),
            tree.clone(),
            "the tree's CLI, the release's server",
        ),
        (
            None,
            release.control_plane.clone(),
            "the release's CLI, the tree's server",
        ),
    ] {
        let operated = || -> Result<()> {
            let mut h = Harness::start_with(Options {
                control_plane_binary: server,
                ..Options::default()
            })?;
            // Only the command line changes: the running server stays.
            h.cp.replace_binary(cli);
            let gen1 = h.initial().clone();
            let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
            let deployed = h.set_target(&gen2, &["--soak", "2s"])?;
            h.wait_settled(deployed, "converged")?;
            h.pause()?;
            h.resume()?;
            let rollback = h.rollback()?;
            let detail = h.wait_settled(rollback, "reverted")?;
            expect(
                detail.row.current == Some(gen1),
                "rolled back to generation 1",
                &h,
            )?;
            let hosts = h.cp(&["hosts"])?;
            expect(hosts.stdout.contains("web-01"), "the host listed", &h)?;
            let audit = h.cp(&["audit", "--host", "web-01"])?;
            expect(
                audit.stdout.contains("rollback"),
                "the rollback audited",
                &h,
            )?;
            exact(&mut h)
        };
        if let Err(error) = operated() {
            panic!("{which}: {error}");
        }
    }
}
