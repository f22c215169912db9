//! The control plane loses its place in the host's events (docs/protocol.md, "Resync"): it is
//! restored from an older copy of its store, or its store is lost and the host added again.
//! The agent sends a snapshot, the mirror restarts from it, and every event after it arrives.

use fleetnode_state_machine::{GapCause, Host, OutboundEvent, Phase, Report, State, mirror};
use fleetnode_tests::{Harness, Health, Options};
use fleetnode_wire::HostDetail;

use crate::common::run;

#[test]
fn a_control_plane_restored_from_an_older_copy_mid_deployment_resyncs() {
    run(|| {
        let mut h = Harness::start()?;
        let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        let gen3 = h.add_closure("nixos-system-web-01-gen-3", Health::Healthy)?;
        let deployed = h.set_target(&gen2, &["--soak", "1s"])?;
        h.wait_settled(deployed, "converged")?;

        // The backup: a copy of the store, taken while the control plane is stopped.
        let store = h.cp.files().store.clone();
        let backup = h.work_dir().join("backup.redb");
        h.cp.stop()?;
        copy(&store, &backup)?;
        h.cp.start_again()?;
        let backed_up = h.detail()?.mirror.seq;

        // Mid-deployment the control plane is restored from the backup: it has lost every
        // event since, which the agent no longer holds.
        let next = h.set_target(&gen3, &["--soak", "12s"])?;
        let soaking = h.wait_for("the mirror soaking gen-3", |d| {
            d.row.phase.name() == "soaking" && d.mirror.seq > backed_up
        })?;
        h.wait_for_agent("every event acknowledged", |s| {
            s["queue"]["depth"] == 0 && s["last_seq"].as_u64() >= Some(soaking.mirror.seq)
        })?;
        h.cp.stop()?;
        copy(&backup, &store)?;
        h.cp.start_again()?;
        assert_eq!(
            h.detail()?.mirror.seq,
            backed_up,
            "the restored store is the old one"
        );

        let detail = h.wait_for("the mirror to follow the deployment again", |d| {
            d.mirror.handled == Some(next) && d.mirror.seq > soaking.mirror.seq
        })?;
        assert!(
            snapshot_seq(&detail).is_some(),
            "{}",
            h.report(Some(&detail))
        );
        let settled = h.wait_for(
            "converged on gen-3",
            |d| matches!(&d.mirror.phase, Phase::Converged(c) if c.target == gen3),
        )?;
        assert_mirror_is_the_agent(&mut h, &settled)?;
        Ok(())
    })
}

#[test]
fn a_lost_store_and_the_host_added_again_resync() {
    run(|| {
        let mut h = Harness::start()?;
        let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        let gen3 = h.add_closure("nixos-system-web-01-gen-3", Health::Healthy)?;
        let deployed = h.set_target(&gen2, &["--soak", "1s"])?;
        h.wait_settled(deployed, "converged")?;
        h.wait_for_agent("every event acknowledged", |s| s["queue"]["depth"] == 0)?;

        // The store is lost; the operator adds the host again and installs its new token.
        h.cp.stop()?;
        std::fs::remove_file(&h.cp.files().store).map_err(io("delete the store"))?;
        h.cp.start_again()?;
        let token = h.work_dir().join(format!("{}.token", h.host()));
        std::fs::remove_file(&token).map_err(io("remove the old token"))?;
        let host = h.host().to_owned();
        h.cp(&[
            "add-host",
            &host,
            "--token-file",
            &token.display().to_string(),
        ])?;
        h.agent.stop()?;
        h.agent.start()?;

        let detail = h.wait_for(
            "the mirror restarted from a snapshot",
            |d| matches!(&d.mirror.phase, Phase::Converged(c) if c.target == gen2),
        )?;
        assert!(
            snapshot_seq(&detail).is_some(),
            "{}",
            h.report(Some(&detail))
        );
        assert_eq!(detail.mirror.handled, Some(deployed));
        assert_mirror_is_the_agent(&mut h, &detail)?;

        // Delivery goes on: the next deployment is followed event by event.
        let next = h.set_target(&gen3, &["--soak", "1s"])?;
        assert!(
            next > deployed,
            "the new store's revision is above the host's"
        );
        let settled = h.wait_settled(next, "converged")?;
        assert_mirror_is_the_agent(&mut h, &settled)?;
        Ok(())
    })
}

#[test]
fn a_refused_lifecycle_event_is_dead_lettered_and_a_snapshot_makes_the_mirror_exact() {
    run(|| {
        // A control plane that refuses every activation-started report.
        let mut h = Harness::start_with(Options {
            refuse_report: Some("activation-started"),
            ..Options::default()
        })?;
        let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;
        let deployed = h.set_target(&gen2, &["--soak", "1s"])?;
        let settled = h.wait_for("converged on gen-2", |d| {
            matches!(&d.mirror.phase, Phase::Converged(c) if c.target == gen2)
                && d.mirror.handled == Some(deployed)
        })?;
        let report = h.report(Some(&settled));
        // The refused event's place holds its dead-letter gap, and a snapshot follows it.
        let letter = settled
            .recent_events
            .iter()
            .find(|e| {
                matches!(&e.report, Report::Gap { cause: GapCause::DeadLettered { code }, .. }
                    if code == "invalid")
            })
            .unwrap_or_else(|| panic!("no dead-letter gap: {report}"));
        let snapshot = snapshot_seq(&settled).unwrap_or_else(|| panic!("no snapshot: {report}"));
        assert!(snapshot > letter.seq, "{report}");
        let status = h.agent_status()?;
        assert_eq!(status["queue"]["dead_letters"], 1, "{status:#}");
        assert_mirror_is_the_agent(&mut h, &settled)?;
        Ok(())
    })
}

/// The seq of the newest snapshot among the recent events.
fn snapshot_seq(detail: &HostDetail) -> Option<u64> {
    detail
        .recent_events
        .iter()
        .rev()
        .find(|e| matches!(e.report, Report::Snapshot { .. }))
        .map(|e| e.seq)
}

/// The mirror equals the agent, and nothing was lost after the snapshot: the events from it on
/// rebuild the mirror exactly.
fn assert_mirror_is_the_agent(h: &mut Harness, detail: &HostDetail) -> fleetnode_tests::Result<()> {
    let seq = detail.mirror.seq;
    let status = h.wait_for_agent("the agent's status at the mirror's seq", |s| {
        s["last_seq"].as_u64() == Some(seq) && s["queue"]["depth"] == 0
    })?;
    let report = h.report(Some(detail));
    let host = &detail.mirror;
    assert_eq!(status["phase"], host.phase.name(), "{report}");
    assert_eq!(
        status["handled_revision"].as_u64(),
        host.handled.map(|r| r.0),
        "{report}"
    );
    assert_eq!(status["paused"], host.paused, "{report}");
    let current = status["system"]["current"].as_str();
    assert_eq!(
        current,
        host.system.current.as_ref().map(|p| p.as_str()),
        "{report}"
    );
    assert_eq!(detail.divergence, None, "{report}");
    let from = snapshot_seq(detail).expect("a snapshot among the recent events");
    let after: Vec<&OutboundEvent> = detail
        .recent_events
        .iter()
        .filter(|e| e.seq >= from)
        .collect();
    let seqs: Vec<u64> = after.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (from..=seq).collect::<Vec<_>>(),
        "gap-free after the snapshot: {report}"
    );
    assert_eq!(&replay_from(&after), host, "{report}");
    Ok(())
}

fn replay_from(events: &[&OutboundEvent]) -> Host {
    let mut state = State::default();
    for event in events {
        mirror::apply(&mut state, event)
            .unwrap_or_else(|e| panic!("event {} does not apply: {e}", event.seq));
    }
    state.host
}

fn copy(from: &std::path::Path, to: &std::path::Path) -> fleetnode_tests::Result<()> {
    std::fs::copy(from, to).map(|_| ()).map_err(io(format!(
        "copy {} to {}",
        from.display(),
        to.display()
    )))
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> fleetnode_tests::HarnessError {
    fleetnode_tests::HarnessError::io(what)
}
