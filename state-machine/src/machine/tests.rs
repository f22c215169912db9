//! The timeout path is total: a deadline that falls due always moves the machine.

use super::*;
use crate::error::Bug;
use crate::evolve::EvolveError;
use crate::phase::{Activating, Soaking};
use crate::policy::{ActivationMode, HealthPolicy};
use crate::reason::Reason;
use crate::state::{Relaunch, Work};
use crate::types::{Revision, StorePath};

fn target() -> StorePath {
    StorePath::parse("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system-new").unwrap()
}

fn work() -> Work {
    Work {
        revision: Revision(3),
        target: target(),
        mode: ActivationMode::TestThenCommit,
        health: HealthPolicy::default(),
        previous: None,
    }
}

/// A host switching (switch 7, deadline at 100) whose lock-held switch is due for a relaunch.
fn switching() -> State {
    let mut state = State {
        clock: Timestamp(50),
        ..State::default()
    };
    state.host.seq = 7;
    state.host.phase = Phase::Activating(Activating {
        work: work(),
        switch: SwitchId(7),
        deadline: Timestamp(100),
    });
    state.relaunch = Some(Relaunch {
        switch: SwitchId(7),
        at: Timestamp(60),
    });
    state
}

fn bug() -> TransitionError {
    Bug::Inconsistent(EvolveError {
        report: "commit-started",
        phase: "activating",
    })
    .into()
}

#[test]
fn a_deadline_whose_transition_fails_fails_the_host_with_the_error_and_aborts_the_switch() {
    let before = switching();
    let after = deadline_failed(&before, Timestamp(200), &bug());
    let Phase::Failed(failed) = &after.state.host.phase else {
        panic!("the host did not fail: {:?}", after.state.host.phase);
    };
    let Reason::DeadlineFailed { error } = &failed.reason else {
        panic!("wrong reason: {:?}", failed.reason);
    };
    assert!(
        error.contains("report commit-started cannot apply in phase activating"),
        "{error}"
    );
    assert_eq!(failed.target, Some(target()));
    assert!(!failed.halted);
    // One fact, the next seq, at the time of the tick.
    assert_eq!(after.events.len(), 1);
    assert_eq!(after.events[0].seq, 8);
    assert_eq!(after.events[0].at, Timestamp(200));
    assert_eq!(after.state.host.seq, 8);
    assert!(matches!(after.events[0].report, Report::Failed { .. }));
    // The switch in flight is stopped and nothing is relaunched.
    assert!(
        after.commands.contains(&Command::AbortSwitch {
            switch: SwitchId(7)
        }),
        "{:?}",
        after.commands
    );
    assert!(
        !after
            .commands
            .iter()
            .any(|c| matches!(c, Command::RunSwitch { .. })),
        "{:?}",
        after.commands
    );
    assert_eq!(after.state.relaunch, None);
    // Nothing is left to fall due: the shell sleeps until the next input.
    assert_eq!(after.state.clock, Timestamp(200));
    assert_eq!(after.state.next_deadline(), None);
    // What the control plane's mirror applies gives the same host.
    let mut mirror = before.clone();
    for event in &after.events {
        crate::evolve(&mut mirror, event).unwrap();
    }
    assert_eq!(mirror.host.phase, after.state.host.phase);
}

#[test]
fn a_failed_deadline_keeps_time_moving_forward() {
    let before = switching();
    // A tick older than the clock is taken as the clock.
    let after = deadline_failed(&before, Timestamp(10), &bug());
    assert_eq!(after.state.clock, Timestamp(50));
    assert_eq!(after.events[0].at, Timestamp(50));
    // A soaking host has no switch to abort; its target is named all the same.
    let mut soaking = State::default();
    soaking.host.phase = Phase::Soaking(Soaking {
        work: work(),
        until: Timestamp(100),
    });
    let after = deadline_failed(&soaking, Timestamp(200), &bug());
    assert!(
        !after
            .commands
            .iter()
            .any(|c| matches!(c, Command::AbortSwitch { .. })),
        "{:?}",
        after.commands
    );
    let Phase::Failed(failed) = &after.state.host.phase else {
        panic!("{:?}", after.state.host.phase);
    };
    assert_eq!(failed.target, Some(target()));
}

#[test]
fn a_tick_is_never_refused_and_is_the_timeout() {
    let before = switching();
    for now in [
        Timestamp(0),
        Timestamp(59),
        Timestamp(60),
        Timestamp(100),
        Timestamp(500),
    ] {
        let ticked = step(&before, Event::Tick, now).expect("a tick was refused");
        assert_eq!(ticked, timeout(&before, now));
    }
    // The switch's deadline passed: the machine moved (no known-good, so it fails).
    let after = timeout(&before, Timestamp(100));
    assert!(matches!(after.state.host.phase, Phase::Failed(_)));
    assert!(after.commands.contains(&Command::AbortSwitch {
        switch: SwitchId(7)
    }));
}
