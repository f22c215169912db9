use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{
    DesiredState, Directive, DirectiveKind, Event, HealthOverrides, StorePath,
};
use fleetnode_wire::ErrorCode;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::run;
use crate::input::Input;
use crate::metrics::Metrics;
use crate::workers::control::Client;
use crate::workers::control::testserver::{Failure, TestServer};

fn directive(revision: u64) -> Directive {
    Directive {
        revision: fleetnode_state_machine::Revision(revision),
        kind: DirectiveKind::Activate {
            target: StorePath::parse("/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system")
                .unwrap(),
            mode: None,
            health: HealthOverrides::default(),
        },
    }
}

struct Harness {
    server: TestServer,
    inputs: mpsc::Receiver<Input>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), crate::input::WorkerError>>,
    _dir: tempfile::TempDir,
}

async fn start() -> Harness {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let client =
        Arc::new(Client::new(&server.config(dir.path()), Arc::new(Metrics::new())).unwrap());
    let (inputs_tx, inputs) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(client, inputs_tx, cancel.clone()));
    Harness {
        server,
        inputs,
        cancel,
        task,
        _dir: dir,
    }
}

/// The next answer the worker passed on.
async fn next_desired(inputs: &mut mpsc::Receiver<Input>) -> DesiredState {
    match tokio::time::timeout(Duration::from_secs(120), inputs.recv()).await {
        Ok(Some(Input::Event(Event::DesiredObserved(desired)))) => desired,
        other => panic!("expected a desired state, got {other:?}"),
    }
}

/// The next answer that carries a directive (answers before it carry none).
async fn next_directive(inputs: &mut mpsc::Receiver<Input>) -> DesiredState {
    loop {
        let desired = next_desired(inputs).await;
        if desired.directive.is_some() {
            return desired;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn directives_arrive_at_once_and_changes_wake_the_poll() {
    let mut h = start().await;
    h.server.set_desired(|d| d.directive = Some(directive(1)));
    assert_eq!(
        next_directive(&mut h.inputs).await.directive,
        Some(directive(1))
    );
    // The agent now waits with the revision it knows; a change answers the waiting poll, and
    // the answer is passed on whole: what changed is the state machine's call.
    tokio::time::sleep(Duration::from_secs(5)).await;
    h.server.set_desired(|d| {
        d.directive = Some(directive(2));
        d.paused = true;
    });
    let desired = next_desired(&mut h.inputs).await;
    assert_eq!(desired.directive, Some(directive(2)));
    assert!(desired.paused);
    assert_eq!(desired, h.server.lock().desired);
    {
        let r = h.server.lock();
        assert_eq!(
            r.polls[0], None,
            "the first poll after a start knows nothing"
        );
        assert!(r.polls[1..].iter().all(Option::is_some));
        assert!(r.tokens.contains("Bearer s3cret-token"));
        assert!(!r.missing_protocol_header);
    }
    h.cancel.cancel();
    assert_eq!(h.task.await.unwrap(), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn an_idle_poll_waits_on_the_server_and_passes_on_each_answer() {
    let mut h = start().await;
    // Revision 1 with no directive: each answer is passed on as it is.
    tokio::time::sleep(Duration::from_secs(95)).await;
    let polls = h.server.lock().polls.len();
    // One immediate answer, then one poll per 30 s wait.
    assert!((3..=5).contains(&polls), "{polls} polls in 95 s");
    let mut answers = 0;
    while let Ok(input) = h.inputs.try_recv() {
        let Input::Event(Event::DesiredObserved(desired)) = input else {
            panic!("not an answer: {input:?}");
        };
        assert_eq!(desired.directive, None);
        answers += 1;
    }
    assert!(answers >= polls - 1, "{answers} answers for {polls} polls");
    h.cancel.cancel();
    assert_eq!(h.task.await.unwrap(), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn a_starting_control_plane_is_waited_for_honouring_retry_after() {
    let mut h = start().await;
    {
        let mut r = h.server.lock();
        for _ in 0..3 {
            r.fail_desired.push_back(Failure {
                status: 503,
                code: ErrorCode::Unavailable,
                retry_after: Some(20),
            });
        }
    }
    h.server.set_desired(|d| d.directive = Some(directive(1)));
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(
        h.server.lock().polls.len(),
        2,
        "Retry-After: 20 was not honoured"
    );
    assert!(!h.task.is_finished(), "the worker gave up on a 503");
    assert_eq!(
        next_directive(&mut h.inputs).await.directive,
        Some(directive(1))
    );
    assert!(h.server.lock().polls.len() >= 4);
    h.cancel.cancel();
    assert_eq!(h.task.await.unwrap(), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn refused_credentials_are_retried_at_the_slowest_pace() {
    let mut h = start().await;
    h.server.lock().fail_desired.push_back(Failure {
        status: 401,
        code: ErrorCode::Unauthorized,
        retry_after: None,
    });
    h.server.set_desired(|d| d.directive = Some(directive(1)));
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert_eq!(h.server.lock().polls.len(), 1);
    assert_eq!(
        next_directive(&mut h.inputs).await.directive,
        Some(directive(1))
    );
    h.cancel.cancel();
    assert_eq!(h.task.await.unwrap(), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn retry_warnings_are_logged_under_the_long_polls_own_target() {
    let (logs, _guard) = crate::testlog::Logs::capture();
    let mut h = start().await;
    h.server.lock().fail_desired.push_back(Failure {
        status: 503,
        code: ErrorCode::Unavailable,
        retry_after: Some(2),
    });
    h.server.set_desired(|d| d.directive = Some(directive(1)));
    next_directive(&mut h.inputs).await;
    let warnings = logs.lines_with("control plane unavailable; retrying");
    assert_eq!(warnings.len(), 1, "{}", logs.text());
    assert!(
        warnings[0].contains("fleetnode_agent::workers::control::longpoll:"),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].contains("retry_in_ms=2000"), "{}", warnings[0]);
    h.cancel.cancel();
    assert_eq!(h.task.await.unwrap(), Ok(()));
}

/// Seconds between the starts of consecutive polls, as the server saw them.
fn poll_gaps(h: &Harness) -> Vec<u64> {
    let r = h.server.lock();
    r.poll_times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_server_that_answers_at_once_is_polled_at_a_backed_off_pace() {
    let mut h = start().await;
    h.server.lock().answer_at_once = true;
    tokio::time::sleep(Duration::from_secs(200)).await;
    let gaps = poll_gaps(&h);
    // The first answer brings revision 1 (new: polled again at once); every later one repeats
    // it early, so the polls start 1, 2, 4, ... up to 60 s apart.
    assert!(gaps.len() >= 6, "{gaps:?}");
    assert_eq!(gaps[0], 0, "{gaps:?}");
    assert_eq!(&gaps[1..6], &[1, 2, 4, 8, 16], "{gaps:?}");
    assert!(gaps.iter().all(|gap| *gap <= 60), "{gaps:?}");
    assert!(h.server.lock().polls.len() < 15, "{gaps:?}");
    // Every answer is still passed on.
    while let Ok(input) = h.inputs.try_recv() {
        assert!(matches!(input, Input::Event(Event::DesiredObserved(_))));
    }
    // A new revision answers at once and resets the pace.
    h.server.set_desired(|d| d.directive = Some(directive(2)));
    assert_eq!(
        next_directive(&mut h.inputs).await.directive,
        Some(directive(2))
    );
    h.cancel.cancel();
    assert_eq!(h.task.await.unwrap(), Ok(()));
}

#[tokio::test(start_paused = true)]
async fn changed_true_with_the_known_revision_counts_as_no_news() {
    let h = start().await;
    {
        let mut r = h.server.lock();
        r.answer_at_once = true;
        r.claim_changed = true;
    }
    tokio::time::sleep(Duration::from_secs(30)).await;
    let gaps = poll_gaps(&h);
    assert!(gaps.len() >= 3, "{gaps:?}");
    assert_eq!(&gaps[1..3], &[1, 2], "{gaps:?}");
    h.cancel.cancel();
    assert_eq!(h.task.await.unwrap(), Ok(()));
}

#[test]
fn a_held_poll_or_a_new_revision_resets_the_pace() {
    use super::Pace;
    let mut pace = Pace::default();
    let early = Duration::from_millis(100);
    assert_eq!(pace.after_answer(false, early), Duration::from_millis(900));
    assert_eq!(
        pace.after_answer(false, early),
        Duration::from_millis(1_900)
    );
    assert_eq!(
        pace.after_answer(false, Duration::from_secs(30)),
        Duration::ZERO
    );
    assert_eq!(pace.after_answer(false, early), Duration::from_millis(900));
    assert_eq!(pace.after_answer(true, early), Duration::ZERO);
    for _ in 0..10 {
        pace.after_answer(false, Duration::ZERO);
    }
    assert_eq!(pace.after_answer(false, Duration::ZERO), super::PACE_MAX);
}

#[tokio::test(start_paused = true)]
async fn an_answer_of_another_major_version_is_not_read() {
    let (logs, _guard) = crate::testlog::Logs::capture();
    let mut h = start().await;
    h.server.lock().answer_version = Some("2.0");
    h.server.set_desired(|d| d.directive = Some(directive(1)));
    tokio::time::sleep(Duration::from_secs(59)).await;
    assert!(h.inputs.try_recv().is_err(), "a 2.0 answer was passed on");
    assert_eq!(h.server.lock().polls.len(), 1, "retried before the cap");
    let errors = logs.lines_with("another protocol version");
    assert_eq!(errors.len(), 1, "{}", logs.text());
    assert!(errors[0].contains("ERROR"), "{}", errors[0]);
    // The same major with another minor, or no header at all, is read.
    h.server.lock().answer_version = Some("1.9");
    assert_eq!(
        next_directive(&mut h.inputs).await.directive,
        Some(directive(1))
    );
    h.cancel.cancel();
    assert_eq!(h.task.await.unwrap(), Ok(()));
}
