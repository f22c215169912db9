//! Unit tests of `evolve` and its bookkeeping.

use super::*;
use crate::report::GapCause;
use crate::state::Work;
use crate::state::{Activating, Realising};
use crate::types::{ProbeId, SwitchId};

fn path(n: usize) -> StorePath {
    // Distinct valid hashes: the number in base 32 over the nix alphabet, padded.
    let alphabet = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut hash = vec![b'0'; 32];
    let mut rest = n;
    for slot in hash.iter_mut().rev() {
        *slot = alphabet[rest % 32];
        rest /= 32;
    }
    let hash = String::from_utf8(hash).unwrap();
    StorePath::parse(&format!("/nix/store/{hash}-system")).unwrap()
}

#[test]
fn known_good_keeps_the_newest_sixteen_without_duplicates() {
    let mut host = Host::default();
    for n in 0..KNOWN_GOOD_CAP {
        remember_good(&mut host, &path(n));
    }
    let good = &host.known_good;
    assert_eq!(good.len(), KNOWN_GOOD_CAP, "exactly the cap is kept");
    assert_eq!(good[0], path(0));
    remember_good(&mut host, &path(3));
    let good = &host.known_good;
    assert_eq!(good.len(), KNOWN_GOOD_CAP);
    assert_eq!(
        good.last(),
        Some(&path(3)),
        "re-remembering moves it to the end"
    );
    remember_good(&mut host, &path(99));
    let good = &host.known_good;
    assert_eq!(good.len(), KNOWN_GOOD_CAP);
    assert!(!good.contains(&path(0)), "the oldest is forgotten first");
    assert_eq!(good.last(), Some(&path(99)));
}

#[test]
fn quarantine_forgets_the_lowest_revisions_first() {
    let mut host = Host::default();
    for n in 0..QUARANTINE_CAP {
        quarantine(&mut host, &path(n), Revision(100 + n as u64));
    }
    assert_eq!(
        host.quarantine.len(),
        QUARANTINE_CAP,
        "exactly the cap is kept"
    );
    quarantine(&mut host, &path(500), Revision(1_000));
    let map = &host.quarantine;
    assert_eq!(map.len(), QUARANTINE_CAP);
    assert!(!map.contains_key(&path(0)), "lowest revision dropped");
    assert!(map.contains_key(&path(1)));
    assert_eq!(map.get(&path(500)), Some(&Revision(1_000)));
}

fn event(report: Report) -> OutboundEvent {
    OutboundEvent {
        seq: 1,
        at: Timestamp(0),
        report,
    }
}

fn realising(target: StorePath) -> State {
    let mut state = State::default();
    state.host.phase = Phase::Realising(Realising {
        work: Work {
            revision: Revision(3),
            target,
            mode: crate::ActivationMode::TestThenCommit,
            health: crate::HealthPolicy::default(),
            previous: None,
        },
    });
    state
}

#[test]
fn facts_that_do_not_fit_the_phase_are_refused() {
    let mut state = realising(path(1));
    let wrong_target = event(Report::Realised { target: path(2) });
    assert!(evolve(&mut state, &wrong_target).is_err());
    let right_target = event(Report::Realised { target: path(1) });
    assert!(evolve(&mut state, &right_target).is_ok());

    let wrong_revision = event(Report::Superseded {
        revision: Revision(2),
        target: path(1),
    });
    assert!(evolve(&mut state, &wrong_revision).is_err());
    assert_eq!(state.host.phase.name(), "realising");
    let right = event(Report::Superseded {
        revision: Revision(3),
        target: path(1),
    });
    assert!(evolve(&mut state, &right).is_ok());
    assert_eq!(state.host.phase, Phase::Idle);

    let mut activating = State::default();
    activating.host.phase = Phase::Activating(Activating {
        work: Work {
            revision: Revision(3),
            target: path(1),
            mode: crate::ActivationMode::TestThenCommit,
            health: crate::HealthPolicy::default(),
            previous: None,
        },
        switch: SwitchId(4),
        deadline: Timestamp(9),
    });
    let superseded = event(Report::Superseded {
        revision: Revision(3),
        target: path(1),
    });
    assert!(
        evolve(&mut activating, &superseded).is_err(),
        "a running switch is never superseded"
    );
}

#[test]
fn only_probe_observations_may_be_compacted() {
    let probe = Report::ProbeObserved {
        epoch: 1,
        probe: ProbeId::control_plane(),
        passed: true,
        detail: String::new(),
    };
    assert!(!probe.is_lifecycle());
    assert!(Report::Paused.is_lifecycle());
    let gap = Report::Gap {
        from_seq: 1,
        cause: GapCause::Compacted { dropped: 1 },
    };
    assert!(gap.is_lifecycle(), "a gap marker itself is never dropped");
}
