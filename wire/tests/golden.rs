//! Golden JSON of every wire message: the format cannot drift without a file changing.
//!
//! Each file under `tests/golden/` must parse (through the same `decode` the servers use),
//! re-encode to exactly the same pretty JSON, and equal the example built here. Run with
//! `UPDATE_GOLDEN=1` to rewrite the files after an intended format change, then review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fleetnode_state_machine::Reason;
use fleetnode_wire::*;

mod support;
use support::check;
use support::examples::*;

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
    check(
        "host-list",
        HostList {
            hosts: vec![row()],
            next_cursor: Some("web-01".into()),
        },
    );
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
    let source = concat!(
        include_str!("golden.rs"),
        include_str!("golden_rollout.rs"),
        include_str!("golden_reports.rs")
    );
    for name in names {
        let stem = name.trim_end_matches(".json");
        // Report files are named `report-<name>` (and `report-rollback-rejected-<reason>`,
        // `report-snapshot-<cause>`)
        // after the name in their example's table.
        let candidates = [
            Some(stem),
            stem.strip_prefix("report-"),
            stem.strip_prefix("report-rollback-rejected-"),
            stem.strip_prefix("report-snapshot-"),
        ];
        assert!(
            candidates
                .iter()
                .flatten()
                .any(|c| source.contains(&format!("\"{c}\""))),
            "{name} is not checked by any test"
        );
    }
}
