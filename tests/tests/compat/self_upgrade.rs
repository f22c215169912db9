//! The agent upgrades itself through the fleet like any other change: a release whose closures
//! carry a new agent goes out in a rollout whose first wave is the canary; every host that
//! converged on it restarts into the agent it carries (the agent exits after the commit, and its
//! service starts the new definition), and the new agent goes on from the same store, stream and
//! mirror.
//!
//! The fleet starts on the tree's agent as built; the release carries the same agent as a new
//! store path, which is what a new agent version is to the host. (The latest release's own agent
//! is not the starting point: its check resolves `/nix/store` links on the machine rather than
//! under the agent's configured root, so it cannot see an upgrade in a test root.)

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetnode_tests::binaries;
use fleetnode_tests::fleet::Member;
use fleetnode_tests::{Fleet, FleetOptions, HarnessError, Result, Shape};
use fleetnode_wire::{HostId, HostState, RolloutPhase};

/// Only a safety net: how long a host may take to restart into the new agent.
const RESTART_DEADLINE: Duration = Duration::from_secs(90);

#[test]
fn the_agent_upgrades_itself_through_a_rollout_with_a_canary_wave() {
    if let Err(error) = scenario() {
        panic!("{error}");
    }
}

fn scenario() -> Result<()> {
    let agent = binaries::locate(binaries::AGENT)?;
    let mut fleet = Fleet::start(FleetOptions {
        agents_as_services: true,
        ..FleetOptions::hosts(2, 1)
    })?;
    let release = fleet.release("gen-2-new-agent", &[])?;
    let mut carried = BTreeMap::new();
    for member in &fleet.members {
        let path = carry_agent(member, release.of(member.id()).as_str(), &agent)?;
        carried.insert(member.id().to_owned(), path);
    }
    let manifest = fleet.write_manifest(&release, "agent-upgrade", Shape::Hosts)?;
    let started =
        fleet.start_rollout(&manifest, &["--waves", "tag:canary,100%", "--bake", "1s"])?;
    let id = started.rollout.id;
    let canary: Vec<String> = started.rollout.waves[0]
        .hosts
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(canary, ["web-01"], "the canary wave");

    let done = fleet.wait_rollout(id, "to settle", |s| s.rollout.is_settled())?;
    let report = fleet.report(Some(id));
    assert!(
        matches!(done.rollout.phase, RolloutPhase::Completed(_)),
        "{report}"
    );
    assert_eq!(done.rollout.counts().converged, 2, "{report}");
    // The rest of the fleet got the new agent only after the canary converged on it and baked.
    let converged = |host: &str| match &done.rollout.hosts[&HostId::parse(host).unwrap()].state {
        HostState::Converged {
            assigned_at, at, ..
        } => (*assigned_at, *at),
        other => panic!("{host}: {other:?}\n{report}"),
    };
    let (_, canary_converged) = converged("web-01");
    let (assigned, _) = converged("web-02");
    assert!(
        assigned >= canary_converged.plus(done.rollout.bake_ms),
        "web-02 was given the new agent before the canary baked\n{report}"
    );

    for index in 0..fleet.members.len() {
        let host = fleet.members[index].id().to_owned();
        wait_restarted(&mut fleet.members[index])?;
        let member = &fleet.members[index];
        assert_eq!(
            member.agent.binary(),
            carried[&host],
            "{host} runs the carried agent"
        );
        let log = std::fs::read_to_string(member.agent.log()).unwrap_or_default();
        assert!(
            log.contains("exiting so systemd starts the new version"),
            "{host}: {log}"
        );
        // The new agent starts from the same store and stream: its start is the next event
        // after the convergence, and the mirror follows it.
        let detail = fleet.wait_for_host(&host, "to report the new agent's start", |d| {
            let names: Vec<&str> = d.recent_events.iter().map(|e| e.report.name()).collect();
            let converged = names.iter().rposition(|n| *n == "converged");
            let started = names.iter().rposition(|n| *n == "recovered");
            matches!((converged, started), (Some(c), Some(s)) if s > c) && d.divergence.is_none()
        })?;
        assert_eq!(
            detail.row.current.as_ref(),
            Some(release.of(&host)),
            "{host}"
        );
        assert_eq!(detail.row.phase.name(), "converged", "{host}");
        let seqs: Vec<u64> = detail.recent_events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=detail.mirror.seq).collect::<Vec<_>>(),
            "{host}: nothing lost"
        );
    }
    Ok(())
}

/// Puts `agent` into the host's store as a package of its own and links it from the closure
/// `closure` where the live generation's agent is looked for (`sw/bin/fleetnode-agent`), as
/// NixOS does; returns where the host runs it from.
fn carry_agent(member: &Member, closure: &str, agent: &Path) -> Result<PathBuf> {
    let root = member.root();
    let package = root.missing_closure("fleetnode-agent-new");
    let bin = root.host_path(package.as_str()).join("bin");
    let binary = bin.join("fleetnode-agent");
    let link = root.host_path(closure).join("sw/bin");
    let io = HarnessError::io(format!("put the new agent into {}", bin.display()));
    std::fs::create_dir_all(&bin)
        .and_then(|()| {
            std::fs::hard_link(agent, &binary)
                .or_else(|_| std::fs::copy(agent, &binary).map(|_| ()))
        })
        .and_then(|()| std::fs::create_dir_all(&link))
        .and_then(|()| {
            std::os::unix::fs::symlink(
                format!("{package}/bin/fleetnode-agent"),
                link.join("fleetnode-agent"),
            )
        })
        .map_err(io)?;
    Ok(binary)
}

/// Waits until the host's agent exited and was started again as its service.
fn wait_restarted(member: &mut Member) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < RESTART_DEADLINE {
        member.agent.check_running()?;
        if member.agent.service_restarts() > 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(HarnessError::Unexpected {
        what: format!("{} never restarted into the new agent", member.id()),
        report: member.agent.log_tail(30),
    })
}
