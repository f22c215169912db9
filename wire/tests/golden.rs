//! Golden JSON of every wire message: the format cannot drift without a file changing.
//!
//! Each file under `tests/golden/` must parse (through the same `decode` the servers use),
//! re-encode to exactly the same pretty JSON, and equal the example built here. Run with
//! `UPDATE_GOLDEN=1` to rewrite the files after an intended format change, then review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use fleetnode_state_machine::{
    LocalPolicy, Reason, SwitchAction, SwitchId, SwitchJob, SwitchPurpose, SwitchVerdict,
};
use fleetnode_wire::*;

mod support;
use support::check;

const HASH_A: &str = "0123456789abcdfghijklmnpqrsvwxyz";
const HASH_B: &str = "zyxwvsrqpnmlkjihgfdcba9876543210";

fn path(hash: &str, name: &str) -> StorePath {
    StorePath::parse(&format!("/nix/store/{hash}-{name}")).unwrap()
}

fn old() -> StorePath {
    path(HASH_A, "nixos-system-web-01-24.05")
}

fn new() -> StorePath {
    path(HASH_B, "nixos-system-web-01-24.11")
}

fn host() -> HostId {
    HostId::parse("web-01").unwrap()
}

fn directive() -> Directive {
    Directive {
        revision: Revision(7),
        kind: DirectiveKind::Activate {
            target: new(),
            mode: Some(ActivationMode::TestThenCommit),
            health: HealthOverrides {
                soak_ms: Some(Millis(300_000)),
                sustained_failure_ms: None,
                on_failure: Some(FailurePolicy::Rollback),
            },
        },
    }
}

fn desired() -> DesiredState {
    DesiredState {
        revision: Revision(7),
        directive: Some(directive()),
        paused: false,
    }
}

fn system(current: StorePath) -> SystemView {
    SystemView {
        current: Some(current),
        booted: Some(old()),
        profile: Some(old()),
    }
}

fn events() -> Vec<OutboundEvent> {
    let at = Timestamp(1_700_000_000_000);
    let reports = vec![
        Report::DirectiveRecorded {
            directive: directive(),
        },
        Report::ActivationStarted {
            switch: SwitchId(41),
            job: SwitchJob {
                purpose: SwitchPurpose::Activate,
                closure: new(),
                action: SwitchAction::Test,
                set_profile: false,
            },
            deadline: Timestamp(1_700_000_900_000),
        },
        Report::SwitchEnded {
            switch: SwitchId(41),
            purpose: SwitchPurpose::Activate,
            system: system(new()),
            verdict: SwitchVerdict::SucceededWithWarnings {
                output_tail: "warning: the following units failed: foo.service\n".into(),
            },
        },
        Report::ProbeObserved {
            epoch: 3,
            probe: ProbeId::parse("nginx").unwrap(),
            passed: false,
            detail: "HTTP 502 from https://localhost/health".into(),
        },
        Report::RollbackStarted {
            switch: SwitchId(44),
            job: SwitchJob {
                purpose: SwitchPurpose::Rollback,
                closure: old(),
                action: SwitchAction::Test,
                set_profile: false,
            },
            to: old(),
            reason: Reason::ProbeFailed {
                probe: ProbeId::parse("nginx").unwrap(),
                failing_for: Millis(60_000),
            },
            abandoned: Some((new(), Revision(7))),
            revision: None,
            deadline: Timestamp(1_700_000_960_000),
        },
        Report::Gap {
            from_seq: 45,
            cause: GapCause::Compacted { dropped: 2 },
        },
    ];
    let seqs = [40, 41, 42, 43, 44, 46];
    reports
        .into_iter()
        .zip(seqs)
        .map(|(report, seq)| OutboundEvent { seq, at, report })
        .collect()
}

fn status() -> AgentStatus {
    AgentStatus {
        agent_version: "0.1.0".into(),
        at: Timestamp(1_700_000_030_000),
        phase: PhaseKind::Soaking,
        reason: None,
        paused: false,
        handled_revision: Some(Revision(7)),
        desired_revision: Some(Revision(7)),
        target: Some(new()),
        system: system(new()),
        stream: 0x5eed_f1ee_7000_0001,
        last_seq: 44,
        probe_epoch: 3,
        queue: QueueSummary {
            depth: 2,
            bytes: 912,
            oldest_at: Some(Timestamp(1_700_000_028_500)),
            dead_letters: 0,
        },
        probes: vec![ProbeSummary {
            probe: ProbeId::parse("nginx").unwrap(),
            mode: ProbeMode::Enforce,
            passing: Some(true),
            detail: "HTTP 200".into(),
        }],
        workers: vec![WorkerSummary {
            name: "longpoll".into(),
            status: WorkerStatus::Running,
            restarts: 0,
            last_error: None,
        }],
        next_deadline: Some(NextDeadline {
            at: Timestamp(1_700_000_300_000),
            kind: DeadlineKind::SoakEnd,
        }),
    }
}

fn row() -> HostRow {
    HostRow {
        id: host(),
        tags: vec![Tag::parse("prod").unwrap()],
        phase: PhaseKind::Soaking,
        current: Some(new()),
        target: Some(new()),
        desired_revision: Revision(7),
        last_seen: Some(Timestamp(1_700_000_031_000)),
        offline: false,
        diverged: false,
        paused: false,
        revoked: false,
    }
}

fn mirror() -> fleetnode_state_machine::Host {
    fleetnode_state_machine::Host {
        seq: 3,
        system: system(old()),
        known_good: vec![old()],
        desired: Some(directive()),
        policy: LocalPolicy {
            probes: BTreeMap::from([(ProbeId::parse("nginx").unwrap(), ProbeMode::Enforce)]),
            ..LocalPolicy::default()
        },
        ..Default::default()
    }
}

#[test]
fn desired_answer() {
    check(
        "desired-answer",
        DesiredAnswer {
            changed: true,
            desired: desired(),
        },
    );
}

#[test]
fn desired_state_rollback() {
    check(
        "desired-state-rollback",
        DesiredState {
            revision: Revision(8),
            directive: Some(Directive {
                revision: Revision(8),
                kind: DirectiveKind::Rollback { to: Some(old()) },
            }),
            paused: true,
        },
    );
}

#[test]
fn event_batch() {
    check(
        "event-batch",
        EventBatch {
            stream: 0x5eed_f1ee_7000_0001,
            events: events(),
        },
    );
}

#[test]
fn event_ack() {
    check("event-ack", EventAck { acked_through: 46 });
}

#[test]
fn agent_status() {
    check("agent-status", status());
    // A failed host says why, and a deadline tied to a probe names it.
    let failed = AgentStatus {
        phase: PhaseKind::Failed,
        reason: Some(Reason::SwitchNotLaunched {
            error: "Failed to connect to bus: No such file or directory".into(),
        }),
        next_deadline: Some(NextDeadline {
            at: Timestamp(1_700_000_090_000),
            kind: DeadlineKind::SustainedFailure {
                probe: ProbeId::parse("nginx").unwrap(),
            },
        }),
        ..status()
    };
    check("agent-status-failed", failed);
}

#[test]
fn heartbeat_ack() {
    check(
        "heartbeat-ack",
        HeartbeatAck {
            desired_revision: Revision(7),
        },
    );
}

#[test]
fn error_body() {
    check(
        "error-body",
        ErrorBody {
            code: ErrorCode::Unavailable,
            message: "the store is opening; retry shortly".into(),
            retry_after_secs: Some(2),
            seq: None,
        },
    );
}

#[test]
fn add_host() {
    check(
        "add-host",
        AddHost {
            id: host(),
            tags: vec![Tag::parse("prod").unwrap(), Tag::parse("eu").unwrap()],
        },
    );
}

#[test]
fn host_added() {
    check(
        "host-added",
        HostAdded {
            id: host(),
            token: Secret::new("fnt_3q2+7w-example-token"),
        },
    );
}

#[test]
fn set_target_by_each_selector() {
    let selectors = [
        (
            "set-target-hosts",
            Selector::Hosts {
                hosts: vec![host()],
            },
        ),
        (
            "set-target-tag",
            Selector::Tag {
                tag: Tag::parse("prod").unwrap(),
            },
        ),
        ("set-target-all", Selector::All),
    ];
    for (name, selector) in selectors {
        check(
            name,
            SetTarget {
                selector,
                target: new(),
                mode: Some(ActivationMode::Switch),
                health: HealthOverrides {
                    soak_ms: Some(Millis(600_000)),
                    sustained_failure_ms: Some(Millis(120_000)),
                    on_failure: Some(FailurePolicy::Halt),
                },
            },
        );
    }
}

#[test]
fn desired_changed() {
    check(
        "desired-changed",
        DesiredChanged {
            hosts: vec![HostRevision {
                host: host(),
                revision: Revision(7),
            }],
        },
    );
}

#[test]
fn rollback_request() {
    check("rollback-request", RollbackRequest { to: Some(old()) });
}

#[test]
fn host_list() {
    check("host-list", HostList { hosts: vec![row()] });
}

#[test]
fn host_detail() {
    check(
        "host-detail",
        HostDetail {
            row: row(),
            desired: desired(),
            mirror: mirror(),
            divergence: None,
            last_heartbeat: Some(status()),
            recent_events: events(),
        },
    );
}

#[test]
fn every_golden_file_is_checked() {
    let dir = support::golden_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let source = concat!(include_str!("golden.rs"), include_str!("golden_rollout.rs"));
    for name in names {
        let stem = name.trim_end_matches(".json");
        assert!(
            source.contains(&format!("\"{stem}\"")),
            "{name} is not checked by any test"
        );
    }
}
