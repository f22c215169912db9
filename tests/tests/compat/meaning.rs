//! The frozen answers mean to the current agent what they meant when they were frozen: each
//! value read into its typed field, with its unit, and each error classified as then. A changed
//! meaning (a span read in other units, a code classified otherwise, a directive kind read as
//! another) fails here even when the JSON still parses.

use fleetnode_state_machine::{ActivationMode, DirectiveKind, FailurePolicy, Millis, Revision};
use fleetnode_wire::{
    AgentStatus, DesiredAnswer, ErrorBody, ErrorCode, EventAck, HeartbeatAck, RetryClass,
    Timestamp, classify, decode,
};
use serde::de::DeserializeOwned;

use crate::frozen::{Example, of};

fn read<T: DeserializeOwned + fleetnode_wire::Validate>(example: &Example) -> T {
    decode(&example.bytes).unwrap_or_else(|e| panic!("{}: {e}", example.name()))
}

#[test]
fn every_frozen_control_plane_answer_means_what_it_meant() {
    let answers = of("control-plane");
    assert!(!answers.is_empty());
    for example in &answers {
        let name = example.name();
        match example.stem.as_str() {
            "desired-answer" => {
                let answer: DesiredAnswer = read(example);
                assert!(answer.changed, "{name}");
                assert_eq!(answer.desired.revision, Revision(7), "{name}");
                assert!(!answer.desired.paused, "{name}");
                let directive = answer.desired.directive.expect("a directive");
                assert_eq!(directive.revision, Revision(7), "{name}");
                match directive.kind {
                    DirectiveKind::Activate {
                        target,
                        mode,
                        health,
                    } => {
                        assert!(
                            target.as_str().ends_with("-nixos-system-web-01-24.11"),
                            "{name}"
                        );
                        assert_eq!(mode, Some(ActivationMode::TestThenCommit), "{name}");
                        assert_eq!(health.soak_ms, Some(Millis(300_000)), "{name}: 5 minutes");
                        assert_eq!(health.sustained_failure_ms, None, "{name}");
                        assert_eq!(health.on_failure, Some(FailurePolicy::Rollback), "{name}");
                    }
                    other => panic!("{name}: read as {other:?}"),
                }
            }
            "desired-answer-rollback" => {
                let answer: DesiredAnswer = read(example);
                assert_eq!(answer.desired.revision, Revision(8), "{name}");
                assert!(answer.desired.paused, "{name}");
                match answer.desired.directive.expect("a directive").kind {
                    DirectiveKind::Rollback { to: Some(to) } => {
                        assert!(
                            to.as_str().ends_with("-nixos-system-web-01-24.05"),
                            "{name}"
                        )
                    }
                    other => panic!("{name}: read as {other:?}"),
                }
            }
            "event-ack" => {
                let ack: EventAck = read(example);
                assert_eq!(ack.acked_through, 46, "{name}");
            }
            "heartbeat-ack" => {
                let ack: HeartbeatAck = read(example);
                assert_eq!(ack.desired_revision, Revision(7), "{name}");
            }
            "error-body" => {
                let body: ErrorBody = read(example);
                assert_eq!(body.code, ErrorCode::Unavailable, "{name}");
                assert_eq!(body.retry_after_secs, Some(2), "{name}");
                assert_eq!(
                    classify(503, Some(body.code)),
                    RetryClass::Transient,
                    "{name}: a 503 is retried with backoff"
                );
            }
            other => panic!("{name}: no meaning is checked for {other}; add it here"),
        }
    }
    // The classification of every code a frozen control plane may answer with, as frozen.
    for (status, code, class) in [
        (400, ErrorCode::Malformed, RetryClass::Content),
        (422, ErrorCode::Invalid, RetryClass::Content),
        (413, ErrorCode::TooLarge, RetryClass::Content),
        (401, ErrorCode::Unauthorized, RetryClass::Credentials),
        (
            426,
            ErrorCode::ProtocolVersionUnsupported,
            RetryClass::Version,
        ),
        (409, ErrorCode::ResyncRequired, RetryClass::Resync),
        (409, ErrorCode::Conflict, RetryClass::Permanent),
        (429, ErrorCode::RateLimited, RetryClass::Transient),
    ] {
        assert_eq!(classify(status, Some(code)), class, "{status} {code:?}");
    }
}

#[test]
fn the_frozen_heartbeats_mean_the_same_instant_and_queue_age() {
    for example in of("agent")
        .iter()
        .filter(|e| e.stem.starts_with("agent-status") || e.stem.starts_with("heartbeat"))
    {
        let status: AgentStatus = read(example);
        assert_eq!(
            status.at,
            Timestamp(1_700_000_030_000),
            "{}",
            example.name()
        );
        // 1.0 says when the oldest event happened; the first documents said how old it was
        // (1.5 s): both are the same instant.
        if status.queue.depth > 0 {
            assert_eq!(
                status.queue.oldest_at,
                Some(Timestamp(1_700_000_028_500)),
                "{}",
                example.name()
            );
        }
    }
}
