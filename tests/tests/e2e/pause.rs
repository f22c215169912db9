//! A paused host records directives but starts nothing until it is resumed.

use std::collections::BTreeSet;

use fleetnode_state_machine::Phase;
use fleetnode_tests::{Harness, Health};

use crate::common::{commands_on, run};

/// Heartbeats to see after the directive arrived before concluding nothing started.
const QUIET_HEARTBEATS: usize = 3;

#[test]
fn a_paused_host_starts_nothing_until_resumed() {
    run(|| {
        let mut h = Harness::start()?;
        let gen1 = h.initial().clone();
        let gen2 = h.add_closure("nixos-system-web-01-gen-2", Health::Healthy)?;

        h.pause()?;
        h.wait_for("the host to be paused", |d| d.mirror.paused)?;
        let revision = h.set_target(&gen2, &["--soak", "3s"])?;

        // The agent provably has the directive: it recorded it, so the mirror shows it.
        h.wait_for("the directive recorded", |d| {
            d.mirror
                .desired
                .as_ref()
                .map(|directive| directive.revision)
                == Some(revision)
        })?;
        // A few heartbeats later, still nothing started.
        let mut seen = BTreeSet::new();
        let detail = h.wait_for("more heartbeats from the paused host", |d| {
            if let Some(heartbeat) = &d.last_heartbeat
                && heartbeat.desired_revision == Some(revision)
            {
                seen.insert(heartbeat.at);
            }
            seen.len() > QUIET_HEARTBEATS
        })?;
        let report = h.report(Some(&detail));
        assert_eq!(detail.mirror.phase, Phase::Idle, "{report}");
        assert_eq!(detail.mirror.handled, None, "{report}");
        assert!(detail.mirror.paused && detail.row.paused, "{report}");
        let heartbeat = detail.last_heartbeat.as_ref().unwrap();
        assert_eq!(heartbeat.phase.name(), "idle", "{report}");
        assert_eq!(heartbeat.handled_revision, None, "{report}");
        assert_eq!(h.root().current(), Some(gen1.clone()), "{report}");
        let log = h.root().command_log();
        assert!(commands_on(&log, "nix-store", &gen2).is_empty(), "{log:?}");
        let status = h.agent_status()?;
        assert_eq!(status["paused"], true, "{status:#}");
        assert_eq!(status["phase"], "idle", "{status:#}");

        // Resumed: the waiting directive runs to the end.
        h.resume()?;
        let detail = h.wait_settled(revision, "converged")?;
        assert!(!detail.mirror.paused);
        assert_eq!(h.root().current(), Some(gen2.clone()));
        assert_eq!(h.root().boot_entry(), Some(gen2));
        Ok(())
    })
}
