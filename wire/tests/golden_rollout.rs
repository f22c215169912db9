//! Golden JSON of the rollout messages (see `golden.rs` for how golden files work).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use fleetnode_wire::*;
use support::check;

const HASH_NEW: &str = "zyxwvsrqpnmlkjihgfdcba9876543210";
const HASH_OLD: &str = "0123456789abcdfghijklmnpqrsvwxyz";
const AT: u64 = 1_700_000_000_000;

fn host(n: usize) -> HostId {
    HostId::parse(&format!("web-{n:02}")).unwrap()
}

fn closure(hash: &str, n: usize) -> StorePath {
    StorePath::parse(&format!("/nix/store/{hash}-nixos-system-web-{n:02}-24.11")).unwrap()
}

fn release(hosts: usize) -> ReleaseManifest {
    ReleaseManifest {
        hosts: (1..=hosts)
            .map(|n| (host(n), closure(HASH_NEW, n)))
            .collect(),
        mode: Some(ActivationMode::Switch),
        health: HealthOverrides {
            soak_ms: Some(Millis(120_000)),
            sustained_failure_ms: None,
            on_failure: None,
        },
    }
}

fn at(offset_secs: u64) -> Timestamp {
    Timestamp(AT + offset_secs * 1000)
}

fn waves() -> Vec<Wave> {
    vec![
        Wave {
            spec: WaveSpec::Tag {
                tag: Tag::parse("canary").unwrap(),
            },
            hosts: vec![host(1)],
        },
        Wave {
            spec: WaveSpec::Percent { percent: 60 },
            hosts: vec![host(2), host(3)],
        },
        Wave {
            spec: WaveSpec::Percent { percent: 100 },
            hosts: vec![host(4), host(5)],
        },
    ]
}

fn progress(wave: usize, state: HostState, rollback: Option<HostRollback>) -> HostProgress {
    HostProgress {
        wave,
        state,
        previous: Some(closure(HASH_OLD, wave + 1)),
        rollback,
        window_opens_at: None,
    }
}

fn rollout(phase: RolloutPhase, hosts: BTreeMap<HostId, HostProgress>) -> Rollout {
    Rollout {
        id: RolloutId(3),
        release: release(5),
        waves: waves(),
        bake_ms: Millis(600_000),
        max_failures: FailureBudget::Count { count: 0 },
        allowed_failures: 0,
        on_halt: OnHalt::Rollback,
        offline_deadline_ms: Millis(600_000),
        phase,
        hosts,
        rollback: None,
        created_at: at(0),
        clock: at(700),
    }
}

fn row(n: usize, phase: PhaseKind, current: StorePath) -> HostRow {
    HostRow {
        id: host(n),
        tags: if n == 1 {
            vec![Tag::parse("canary").unwrap()]
        } else {
            Vec::new()
        },
        phase,
        current: Some(current),
        target: Some(closure(HASH_NEW, n)),
        desired_revision: Revision(12),
        last_seen: Some(at(699)),
        offline: false,
        diverged: false,
        paused: false,
        revoked: false,
    }
}

#[test]
fn release_manifest() {
    check("release-manifest", release(2));
}

#[test]
fn release_manifest_in_the_cachix_deploy_shape_reads_as_the_same_release() {
    let file = support::golden_dir()
        .join("release-manifest-cachix")
        .with_extension("json");
    let text = std::fs::read_to_string(file).unwrap();
    let parsed: ReleaseManifest = decode(text.as_bytes()).unwrap();
    let expected = ReleaseManifest {
        mode: None,
        health: HealthOverrides::default(),
        ..release(2)
    };
    assert_eq!(parsed, expected);
}

#[test]
fn start_rollout() {
    check(
        "start-rollout",
        StartRollout {
            release: release(2),
            waves: vec![
                WaveSpec::Tag {
                    tag: Tag::parse("canary").unwrap(),
                },
                WaveSpec::Count { count: 10 },
                WaveSpec::Percent { percent: 100 },
            ],
            bake_ms: Millis(600_000),
            max_failures: FailureBudget::Percent { percent: 5 },
            on_halt: OnHalt::Rollback,
            offline_deadline_ms: Millis(300_000),
        },
    );
}

#[test]
fn rollout_status_baking() {
    let converged = |wave: usize, n: u64| {
        progress(
            wave,
            HostState::Converged {
                revision: Revision(12),
                assigned_at: at(n * 100),
                at: at(n * 100 + 60),
            },
            None,
        )
    };
    let hosts = BTreeMap::from([
        (host(1), converged(0, 0)),
        (host(2), converged(1, 1)),
        (host(3), converged(1, 1)),
        (host(4), progress(2, HostState::Pending, None)),
        (host(5), progress(2, HostState::Pending, None)),
    ]);
    let phase = RolloutPhase::Running(Progress {
        wave: 1,
        baking_until: Some(at(760)),
    });
    check(
        "rollout-status-baking",
        RolloutStatus {
            rollout: rollout(phase, hosts),
            hosts: vec![row(1, PhaseKind::Converged, closure(HASH_NEW, 1))],
        },
    );
}

#[test]
fn rollout_status_waiting_for_a_window() {
    let mut waiting = progress(0, HostState::Pending, None);
    waiting.previous = None;
    waiting.window_opens_at = Some(at(7_200));
    let mut later = progress(1, HostState::Pending, None);
    later.previous = None;
    let hosts = BTreeMap::from([(host(1), waiting), (host(2), later)]);
    let phase = RolloutPhase::Running(Progress {
        wave: 0,
        baking_until: None,
    });
    check(
        "rollout-status-waiting-for-window",
        RolloutStatus {
            rollout: rollout(phase, hosts),
            hosts: vec![row(1, PhaseKind::Converged, closure(HASH_OLD, 1))],
        },
    );
}

#[test]
fn rollout_status_halted_and_rolled_back() {
    let hosts = BTreeMap::from([
        (
            host(1),
            progress(
                0,
                HostState::Converged {
                    revision: Revision(12),
                    assigned_at: at(0),
                    at: at(60),
                },
                Some(HostRollback::Done {
                    revision: Revision(13),
                    at: at(690),
                }),
            ),
        ),
        (
            host(2),
            progress(
                1,
                HostState::Failed {
                    revision: Revision(12),
                    assigned_at: at(600),
                    at: at(640),
                    kind: FailureKind::Reverted,
                    detail: "enforce probe nginx failed for 1m".into(),
                },
                Some(HostRollback::Skipped {
                    why: "its agent already went back by itself".into(),
                }),
            ),
        ),
        (
            host(3),
            progress(
                1,
                HostState::InFlight {
                    revision: Revision(12),
                    assigned_at: at(600),
                },
                Some(HostRollback::Sent {
                    to: Some(closure(HASH_OLD, 2)),
                    revision: Revision(13),
                }),
            ),
        ),
        (
            host(4),
            progress(
                2,
                HostState::TakenOut {
                    at: at(620),
                    why: "set-target --force".into(),
                },
                None,
            ),
        ),
        (host(5), progress(2, HostState::Pending, None)),
    ]);
    let phase = RolloutPhase::Halted(Halted {
        wave: 1,
        at: at(640),
        failures: 1,
        cause: "web-02 reverted: enforce probe nginx failed for 1m".into(),
    });
    let mut halted = rollout(phase, hosts);
    halted.rollback = Some(RollbackOrder {
        at: at(640),
        by: RollbackCause::Halt,
    });
    check(
        "rollout-status-halted",
        RolloutStatus {
            rollout: halted,
            hosts: vec![row(2, PhaseKind::Reverted, closure(HASH_OLD, 2))],
        },
    );
}

#[test]
fn rollout_list() {
    check(
        "rollout-list",
        RolloutList {
            rollouts: vec![RolloutSummary {
                id: RolloutId(3),
                phase: "running".into(),
                wave: 1,
                waves: 3,
                counts: HostCounts {
                    pending: 2,
                    in_flight: 1,
                    converged: 2,
                    ..HostCounts::default()
                },
                allowed_failures: 0,
                created_at: at(0),
            }],
        },
    );
}
