//! A switch that meets another switch (a manual `nixos-rebuild`) holding the switch lock: it
//! is launched again once the lock may be free, and never counted as a failure.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use fleetnode_state_machine::*;
use support::*;

fn activating(sim: &mut Sim) -> (SwitchId, SwitchJob) {
    sim.activate(1);
    let out = sim.realised(1);
    run_switch(&out)
}

#[test]
fn a_switch_not_started_for_a_held_lock_is_launched_again_under_its_id() {
    let mut sim = Sim::new();
    let (switch, job) = activating(&mut sim);
    let out = sim.step(Event::SwitchFinished {
        switch,
        end: SwitchEnd::LockHeld,
        system: committed_on(&closure(0)),
    });
    assert!(out.events.is_empty(), "no failure is reported: {out:?}");
    assert!(
        out.commands.is_empty(),
        "nothing ran, nothing to release: {out:?}"
    );
    assert_eq!(sim.phase(), "activating");
    let due = sim.state.clock.plus(SWITCH_LOCK_RETRY);
    assert_eq!(
        sim.state.next_deadline(),
        Some((due, DeadlineKind::SwitchRelaunch))
    );
    assert!(sim.advance(SWITCH_LOCK_RETRY.0 - 1).is_empty());
    let out = sim.advance(1);
    assert_eq!(out.commands, vec![Command::RunSwitch { switch, job }]);
    assert!(sim.state.relaunch.is_none());
    // It then runs and ends as usual.
    sim.switch_done(live(&closure(1), &closure(0)));
    assert_eq!(sim.phase(), "soaking");
}

#[test]
fn a_switch_that_lost_the_race_for_the_lock_is_launched_again() {
    let mut sim = Sim::new();
    let (switch, job) = activating(&mut sim);
    // Real switch-to-configuration exits non-zero (1 or 11, by version) with this message.
    for code in [1, 11] {
        let out = sim.step(Event::SwitchFinished {
            switch,
            end: exited(
                code,
                "Could not acquire lock - Resource temporarily unavailable\n",
            ),
            system: committed_on(&closure(0)),
        });
        assert!(out.events.is_empty());
        let out = sim.advance(SWITCH_LOCK_RETRY.0);
        assert_eq!(
            out.commands,
            vec![Command::RunSwitch {
                switch,
                job: job.clone()
            }]
        );
    }
    // Exit 4 is the system switched with failed units, whatever their logs say.
    let mut sim4 = Sim::new();
    let (switch4, _) = activating(&mut sim4);
    sim4.step(Event::SwitchFinished {
        switch: switch4,
        end: exited(
            4,
            "warning: the following units failed: app.service\napp[12]: Could not acquire lock on /var/lib/app\n",
        ),
        system: live(&closure(1), &closure(0)),
    });
    assert_eq!(sim4.phase(), "soaking");
    assert!(sim4.state.relaunch.is_none());
    // The same message with exit 0 is no refusal.
    sim.step(Event::SwitchFinished {
        switch,
        end: exited(0, "Could not acquire lock"),
        system: live(&closure(1), &closure(0)),
    });
    assert_eq!(sim.phase(), "soaking");
}

#[test]
fn the_deadline_still_counts_while_the_lock_is_held() {
    let mut sim = Sim::new();
    let (switch, _) = activating(&mut sim);
    let mut waited = 0;
    while waited + SWITCH_LOCK_RETRY.0 < ACTIVATION_TIMEOUT {
        sim.step(Event::SwitchFinished {
            switch,
            end: SwitchEnd::LockHeld,
            system: committed_on(&closure(0)),
        });
        sim.advance(SWITCH_LOCK_RETRY.0);
        waited += SWITCH_LOCK_RETRY.0;
    }
    sim.step(Event::SwitchFinished {
        switch,
        end: SwitchEnd::LockHeld,
        system: committed_on(&closure(0)),
    });
    let out = sim.advance(ACTIVATION_TIMEOUT - waited);
    assert!(out.commands.contains(&Command::AbortSwitch { switch }));
    assert_eq!(sim.phase(), "rolling-back");
    assert_eq!(
        reason_of_rollback(&sim),
        Reason::SwitchTimedOut {
            after: Millis(ACTIVATION_TIMEOUT)
        }
    );
    assert!(sim.state.relaunch.is_none());
    // The relaunch that was pending never runs.
    let out = sim.advance(SWITCH_LOCK_RETRY.0);
    assert!(
        !out.commands
            .iter()
            .any(|c| matches!(c, Command::RunSwitch { switch: s, .. } if *s == switch))
    );
}

fn reason_of_rollback(sim: &Sim) -> Reason {
    match &sim.state.host.phase {
        Phase::RollingBack(r) => r.reason.clone(),
        other => panic!("expected rolling-back, got {other:?}"),
    }
}

#[test]
fn recovery_finds_the_refusal_in_the_unit_and_launches_again() {
    let mut sim = Sim::new();
    let (switch, job) = activating(&mut sim);
    let unit = UnitState::Exited(SwitchExit {
        code: Some(1),
        output_tail: "Could not acquire lock".into(),
    });
    let out = sim.restart(committed_on(&closure(0)), false, Some(unit));
    assert!(out.commands.contains(&Command::ReleaseSwitch { switch }));
    assert_eq!(sim.phase(), "activating");
    let out = sim.advance(SWITCH_LOCK_RETRY.0);
    assert_eq!(out.commands, vec![Command::RunSwitch { switch, job }]);
}

#[test]
fn switch_ends_name_their_purpose_and_units_lost_or_never_started_fail() {
    let mut sim = Sim::new();
    let (switch, _) = activating(&mut sim);
    let out = sim.step(Event::SwitchFinished {
        switch,
        end: SwitchEnd::Vanished,
        system: committed_on(&closure(0)),
    });
    let ended = out
        .events
        .iter()
        .find_map(|ev| match &ev.report {
            Report::SwitchEnded {
                purpose, verdict, ..
            } => Some((*purpose, verdict.clone())),
            _ => None,
        })
        .unwrap();
    assert_eq!(ended.0, SwitchPurpose::Activate);
    assert_eq!(
        ended.1,
        SwitchVerdict::Failed {
            reason: Reason::SwitchVanished
        }
    );

    let mut sim = Sim::new();
    sim.converge_on(1);
    let out = sim.rollback(Some(0));
    let (switch, _) = run_switch(&out);
    let out = sim.step(Event::SwitchFinished {
        switch,
        end: SwitchEnd::NotLaunched {
            error: "Failed to connect to bus".into(),
        },
        system: committed_on(&closure(1)),
    });
    let purposes: Vec<(SwitchPurpose, String)> = out
        .events
        .iter()
        .filter_map(|ev| match &ev.report {
            Report::SwitchEnded { purpose, .. } => Some((*purpose, ev.report.to_string())),
            _ => None,
        })
        .collect();
    assert_eq!(purposes.len(), 1);
    assert_eq!(purposes[0].0, SwitchPurpose::Rollback);
    assert!(
        purposes[0].1.contains("Failed to connect to bus"),
        "{}",
        purposes[0].1
    );
    assert_eq!(sim.phase(), "failed");
}

#[test]
fn a_relaunch_for_a_switch_no_longer_in_flight_is_dropped() {
    // Only a state written by another build could hold such a relaunch; it launches nothing.
    for phase in ["activating", "committing", "rolling-back"] {
        let mut sim = Sim::new();
        match phase {
            "activating" => {
                activating(&mut sim);
            }
            "committing" => {
                sim.activate(1);
                sim.realised(1);
                sim.switch_done(live(&closure(1), &closure(0)));
                sim.all_pass();
                sim.advance(SOAK);
            }
            _ => {
                sim.converge_on(1);
                sim.rollback(Some(0));
            }
        }
        assert_eq!(sim.phase(), phase);
        let running = sim.switch();
        let at = sim.state.clock;
        sim.state.relaunch = Some(Relaunch {
            switch: SwitchId(running.0 + 100),
            at,
        });
        let out = sim.advance(SWITCH_LOCK_RETRY.0);
        assert!(
            !out.commands
                .iter()
                .any(|c| matches!(c, Command::RunSwitch { .. })),
            "{phase}: {out:?}"
        );
        assert_eq!(sim.state.relaunch, None, "{phase}");
        // The running switch's own relaunch does launch it, with its phase's job.
        sim.state.relaunch = Some(Relaunch {
            switch: running,
            at: sim.state.clock,
        });
        let out = sim.advance(1);
        let (launched, job) = run_switch(&out);
        assert_eq!(launched, running);
        let expected = match phase {
            "activating" => SwitchPurpose::Activate,
            "committing" => SwitchPurpose::Commit,
            _ => SwitchPurpose::Rollback,
        };
        assert_eq!(job.purpose, expected, "{phase}");
    }
}
