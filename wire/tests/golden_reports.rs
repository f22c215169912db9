//! Golden JSON of every report an event can carry (`report-<type>.json`), and of the two gap
//! causes: each report's fields as they travel, for docs/protocol.md and for anyone writing a
//! control plane. Checked like every golden file (parse, equal the example, re-encode to the
//! same bytes); `UPDATE_GOLDEN=1` rewrites them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeMap;

use fleetnode_state_machine::{
    HealthPolicy, LocalPolicy, ProbeBook, ProbeRecord, Reason, RejectReason, ResyncCause,
    SwitchAction, SwitchId, SwitchJob, SwitchPurpose, SwitchVerdict, Work,
};
use fleetnode_wire::*;
use support::check;
use support::examples::*;

const AT: Timestamp = Timestamp(1_700_000_000_000);

fn event(seq: u64, report: Report) -> OutboundEvent {
    OutboundEvent {
        seq,
        at: AT,
        report,
    }
}

fn nginx() -> ProbeId {
    ProbeId::parse("nginx").unwrap()
}

fn work() -> Work {
    Work {
        revision: Revision(7),
        target: new(),
        mode: ActivationMode::TestThenCommit,
        health: HealthPolicy {
            soak_ms: Millis(300_000),
            sustained_failure_ms: Millis(60_000),
            on_failure: FailurePolicy::Rollback,
        },
        previous: Some(old()),
    }
}

fn job(purpose: SwitchPurpose, closure: StorePath, action: SwitchAction) -> SwitchJob {
    SwitchJob {
        purpose,
        closure,
        action,
        set_profile: action != SwitchAction::Test,
    }
}

fn policy() -> LocalPolicy {
    LocalPolicy {
        probes: BTreeMap::from([(nginx(), ProbeMode::Enforce)]),
        ..LocalPolicy::default()
    }
}

/// One example of each report, by name, in the order of `Report::NAMES`.
fn examples() -> Vec<(&'static str, OutboundEvent)> {
    let switch_failed = Reason::SwitchFailed {
        exit_code: Some(1),
        output_tail: "error: the unit nginx.service failed\n".into(),
    };
    vec![
        (
            "recovered",
            event(
                1,
                Report::Recovered {
                    system: system(old()),
                    boot_id: Some("5f0c7b3e-4b3f-4c1e-9d52-0c6a1f7e2a10".into()),
                    store_reset: None,
                },
            ),
        ),
        (
            "policy-applied",
            event(2, Report::PolicyApplied { policy: policy() }),
        ),
        (
            "directive-recorded",
            event(
                3,
                Report::DirectiveRecorded {
                    directive: directive(),
                },
            ),
        ),
        ("paused", event(4, Report::Paused)),
        ("resumed", event(5, Report::Resumed)),
        (
            "already-converged",
            event(
                6,
                Report::AlreadyConverged {
                    revision: Revision(6),
                    target: old(),
                },
            ),
        ),
        (
            "work-started",
            event(7, Report::WorkStarted { work: work() }),
        ),
        ("realised", event(8, Report::Realised { target: new() })),
        (
            "activation-started",
            event(
                9,
                Report::ActivationStarted {
                    switch: SwitchId(9),
                    job: job(SwitchPurpose::Activate, new(), SwitchAction::Test),
                    deadline: Timestamp(1_700_000_900_000),
                },
            ),
        ),
        (
            "switch-ended",
            event(
                10,
                Report::SwitchEnded {
                    switch: SwitchId(9),
                    purpose: SwitchPurpose::Activate,
                    system: system(new()),
                    verdict: SwitchVerdict::Failed {
                        reason: switch_failed.clone(),
                    },
                },
            ),
        ),
        (
            "soak-started",
            event(
                11,
                Report::SoakStarted {
                    epoch: 4,
                    until: Timestamp(1_700_000_300_000),
                },
            ),
        ),
        (
            "deferred-until-boot",
            event(
                12,
                Report::DeferredUntilBoot {
                    reboot_requested: true,
                },
            ),
        ),
        (
            "probe-observed",
            event(
                13,
                Report::ProbeObserved {
                    epoch: 4,
                    probe: nginx(),
                    passed: true,
                    detail: "HTTP 200".into(),
                },
            ),
        ),
        (
            "commit-started",
            event(
                14,
                Report::CommitStarted {
                    switch: SwitchId(14),
                    job: job(SwitchPurpose::Commit, new(), SwitchAction::Boot),
                    deadline: Timestamp(1_700_000_900_000),
                },
            ),
        ),
        (
            "converged",
            event(
                15,
                Report::Converged {
                    revision: Revision(7),
                    target: new(),
                },
            ),
        ),
        (
            "rollback-started",
            event(
                16,
                Report::RollbackStarted {
                    switch: SwitchId(16),
                    job: job(SwitchPurpose::Rollback, old(), SwitchAction::Switch),
                    to: old(),
                    reason: Reason::RequestedByControlPlane,
                    abandoned: Some((new(), Revision(7))),
                    revision: Some(Revision(8)),
                    deadline: Timestamp(1_700_000_900_000),
                },
            ),
        ),
        (
            "reverted",
            event(
                17,
                Report::Reverted {
                    to: old(),
                    reason: Reason::RequestedByControlPlane,
                    abandoned: Some((new(), Revision(7))),
                },
            ),
        ),
        (
            "failed",
            event(
                18,
                Report::Failed {
                    reason: Reason::RollbackFailed {
                        cause: Box::new(switch_failed),
                    },
                    target: Some(new()),
                    halted: false,
                },
            ),
        ),
        (
            "superseded",
            event(
                19,
                Report::Superseded {
                    revision: Revision(7),
                    target: new(),
                },
            ),
        ),
        (
            "rollback-rejected",
            event(
                20,
                Report::RollbackRejected {
                    revision: Revision(9),
                    reason: RejectReason::AlreadyInPlace { to: old() },
                },
            ),
        ),
        (
            "snapshot",
            snapshot(ResyncCause::ControlPlaneLog { log_end: 12 }),
        ),
        (
            "gap",
            event(
                23,
                Report::Gap {
                    from_seq: 21,
                    cause: GapCause::Compacted { dropped: 3 },
                },
            ),
        ),
    ]
}

/// A snapshot of the host detail's mirror, with a failing probe.
fn snapshot(cause: ResyncCause) -> OutboundEvent {
    let probes = ProbeBook {
        records: BTreeMap::from([(
            nginx(),
            ProbeRecord {
                passed: true,
                failing_since: Some(Timestamp(1_699_999_990_000)),
            },
        )]),
    };
    event(
        22,
        Report::Snapshot {
            host: Box::new(mirror()),
            probes,
            cause,
        },
    )
}

#[test]
fn every_resync_cause_has_its_golden_file() {
    for (name, cause) in [
        (
            "ack-beyond-agent",
            ResyncCause::AckBeyondAgent { acked: 80 },
        ),
        ("dead-lettered", ResyncCause::DeadLettered { seq: 17 }),
    ] {
        check(&format!("report-snapshot-{name}"), snapshot(cause));
    }
}

#[test]
fn every_report_type_has_its_golden_file() {
    let examples = examples();
    let names: Vec<&str> = examples.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        names,
        Report::NAMES,
        "one example per report, in document order"
    );
    for (name, example) in examples {
        assert_eq!(example.report.name(), name);
        check(&format!("report-{name}"), example);
    }
}

#[test]
fn a_dead_lettered_event_travels_as_a_gap_with_the_refusal_code() {
    check(
        "report-gap-dead-lettered",
        event(
            24,
            Report::Gap {
                from_seq: 24,
                cause: GapCause::DeadLettered {
                    code: "invalid".into(),
                },
            },
        ),
    );
}

#[test]
fn every_rejection_reason_has_its_golden_file() {
    for (name, reason) in [
        (
            "unknown-generation",
            RejectReason::UnknownGeneration { to: new() },
        ),
        ("no-previous-generation", RejectReason::NoPreviousGeneration),
    ] {
        check(
            &format!("report-rollback-rejected-{name}"),
            event(
                20,
                Report::RollbackRejected {
                    revision: Revision(9),
                    reason,
                },
            ),
        );
    }
}
