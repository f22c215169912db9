//! Examples shared by the golden tests of the agent's messages and of the reports.

use std::collections::BTreeMap;

use fleetnode_state_machine::{
    LocalPolicy, Reason, SwitchAction, SwitchId, SwitchJob, SwitchPurpose, SwitchVerdict,
};
use fleetnode_wire::*;

pub const HASH_A: &str = "0123456789abcdfghijklmnpqrsvwxyz";
pub const HASH_B: &str = "zyxwvsrqpnmlkjihgfdcba9876543210";

pub fn path(hash: &str, name: &str) -> StorePath {
    StorePath::parse(&format!("/nix/store/{hash}-{name}")).unwrap()
}

pub fn old() -> StorePath {
    path(HASH_A, "nixos-system-web-01-24.05")
}

pub fn new() -> StorePath {
    path(HASH_B, "nixos-system-web-01-24.11")
}

pub fn host() -> HostId {
    HostId::parse("web-01").unwrap()
}

pub fn directive() -> Directive {
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

pub fn desired() -> DesiredState {
    DesiredState {
        revision: Revision(7),
        directive: Some(directive()),
        paused: false,
    }
}

pub fn system(current: StorePath) -> SystemView {
    SystemView {
        current: Some(current),
        booted: Some(old()),
        profile: Some(old()),
    }
}

pub fn events() -> Vec<OutboundEvent> {
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

pub fn status() -> AgentStatus {
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

pub fn row() -> HostRow {
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

pub fn mirror() -> fleetnode_state_machine::Host {
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
