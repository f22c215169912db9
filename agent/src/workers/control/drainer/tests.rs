use std::sync::Arc;
use std::time::Duration;

use fleetnode_state_machine::{Event, GapCause, OutboundEvent, Report, State, Timestamp, step};
use fleetnode_wire::{ErrorCode, WorkerStatus};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{DrainerContext, run};
use crate::input::Input;
use crate::metrics::Metrics;
use crate::status::Workers;
use crate::store::{DeadLetterOutcome, Store};
use crate::workers::control::Client;
use crate::workers::control::testserver::{Failure, TestServer};

fn paused(seq: u64) -> OutboundEvent {
    OutboundEvent {
        seq,
        at: Timestamp(seq),
        report: Report::Paused,
    }
}

struct Harness {
    server: TestServer,
    store: Store,
    /// The state the store holds, as the event loop would keep it.
    state: State,
    /// Snapshots asked for.
    resyncs: u32,
    inputs: mpsc::Receiver<Input>,
    new_events: Arc<Notify>,
    workers: Workers,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), crate::input::WorkerError>>,
    _dir: tempfile::TempDir,
}

async fn start(queued: u64) -> Harness {
    start_with(1..=queued).await
}

/// The drainer over a queue holding `queued` (the events before it were acknowledged).
async fn start_with(queued: std::ops::RangeInclusive<u64>) -> Harness {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = server.config(dir.path());
    let mut store = Store::open(&config.state_dir).unwrap().store;
    let mut state = State::default();
    state.host.seq = *queued.end();
    let events: Vec<_> = queued.map(paused).collect();
    store.commit(&state, &events).unwrap();
    let kept = state.clone();
    let metrics = Arc::new(Metrics::new());
    let workers = Workers::new(metrics.clone());
    let new_events = Arc::new(Notify::new());
    let ctx = DrainerContext {
        client: Arc::new(Client::new(&config, metrics.clone()).unwrap()),
        reader: store.reader(),
        stream: store.stream(),
        new_events: new_events.clone(),
        workers: workers.clone(),
    };
    let (inputs_tx, inputs) = mpsc::channel(16);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(run(ctx, inputs_tx, cancel.clone()));
    Harness {
        server,
        store,
        state: kept,
        resyncs: 0,
        inputs,
        new_events,
        workers,
        metrics,
        cancel,
        task,
        _dir: dir,
    }
}

impl Harness {
    /// Plays the event loop's part for the drainer's inputs until the queue is empty.
    async fn reduce_until_empty(&mut self) {
        while self.store.stats().depth > 0 {
            let input = tokio::time::timeout(Duration::from_secs(600), self.inputs.recv())
                .await
                .expect("the drainer went quiet")
                .unwrap();
            self.handle(input);
        }
    }

    /// Plays the event loop's part for `span` of (paused) time.
    async fn serve_for(&mut self, span: Duration) {
        let until = tokio::time::Instant::now() + span;
        while let Ok(input) = tokio::time::timeout_at(until, self.inputs.recv()).await {
            self.handle(input.unwrap());
        }
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Acked { through } => {
                self.store.ack(through).unwrap();
            }
            Input::DeadLettered { seq, code, done } => {
                let outcome = self.store.dead_letter(seq, &code, Timestamp(9)).unwrap();
                assert!(matches!(outcome, DeadLetterOutcome::Moved(_)));
                self.new_events.notify_one();
                done.send(crate::input::Written::Done).unwrap();
            }
            Input::Resync {
                log_end,
                cause,
                done,
            } => {
                // What the event loop does: the state machine's snapshot, made durable.
                let event = Event::ResyncRequested { log_end, cause };
                let next = step(&self.state, event, Timestamp(10)).unwrap();
                self.store.commit(&next.state, &next.events).unwrap();
                self.state = next.state;
                self.resyncs += 1;
                if let Some(done) = done {
                    done.send(Some(self.state.host.seq)).unwrap();
                }
                self.new_events.notify_one();
            }
            other => panic!("unexpected input {other:?}"),
        }
    }

    async fn stop(self) {
        self.cancel.cancel();
        assert_eq!(self.task.await.unwrap(), Ok(()));
    }
}

#[tokio::test(start_paused = true)]
async fn delivers_the_queue_in_order_in_capped_batches() {
    let mut h = start(600).await;
    h.reduce_until_empty().await;
    {
        let r = h.server.lock();
        let sizes: Vec<usize> = r.batches.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![256, 256, 88]);
        let seqs: Vec<u64> = r.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=600).collect::<Vec<_>>());
        assert!(r.tokens.contains("Bearer s3cret-token"));
    }
    // An enqueue and a wake-up wake the idle drainer.
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(h.workers.list()[0].status, WorkerStatus::Idle);
    let mut state = State::default();
    state.host.seq = 601;
    h.store.commit(&state, &[paused(601)]).unwrap();
    h.new_events.notify_one();
    h.reduce_until_empty().await;
    assert_eq!(h.server.lock().events.last().map(|e| e.seq), Some(601));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_poisoned_event_is_dead_lettered_and_delivery_goes_on() {
    let mut h = start(5).await;
    h.server.lock().poison.insert(3);
    h.reduce_until_empty().await;
    {
        let r = h.server.lock();
        let seqs: Vec<u64> = r.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
        assert_eq!(
            r.events[2].report,
            Report::Gap {
                from_seq: 3,
                cause: GapCause::DeadLettered {
                    code: "invalid".into()
                }
            }
        );
        // The whole batch first, then one at a time up to the batch's end.
        assert_eq!(r.batches[0], vec![1, 2, 3, 4, 5]);
        assert_eq!(r.batches[1], vec![1]);
    }
    let letters = h.store.reader().dead_letters().unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event, paused(3));
    assert_eq!(letters[0].code, "invalid");
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn server_errors_back_off_and_lose_nothing() {
    let mut h = start(3).await;
    {
        let mut r = h.server.lock();
        r.fail_events.push_back(Failure {
            status: 503,
            code: ErrorCode::Unavailable,
            retry_after: Some(10),
        });
        r.fail_events.push_back(Failure {
            status: 500,
            code: ErrorCode::Internal,
            retry_after: None,
        });
        r.fail_events.push_back(Failure {
            status: 403,
            code: ErrorCode::Forbidden,
            retry_after: None,
        });
    }
    tokio::time::sleep(Duration::from_secs(9)).await;
    assert_eq!(h.server.lock().batches.len(), 1, "Retry-After not honoured");
    // 500: up to 2 s of jitter; 403: a full minute.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(h.server.lock().batches.len(), 3);
    tokio::time::sleep(Duration::from_secs(55)).await;
    assert_eq!(
        h.server.lock().batches.len(),
        3,
        "credential errors retried too fast"
    );
    h.reduce_until_empty().await;
    assert_eq!(h.server.lock().events.len(), 3);
    assert!(h.store.reader().dead_letters().unwrap().is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn retry_warnings_are_logged_under_the_drainers_own_target() {
    let (logs, _guard) = crate::testlog::Logs::capture();
    let mut h = start(1).await;
    h.server.lock().fail_events.push_back(Failure {
        status: 503,
        code: ErrorCode::Unavailable,
        retry_after: None,
    });
    h.reduce_until_empty().await;
    let warnings = logs.lines_with("control plane unavailable; retrying");
    assert_eq!(warnings.len(), 1, "{}", logs.text());
    assert!(warnings[0].contains("WARN"), "{}", warnings[0]);
    assert!(
        warnings[0].contains("fleetnode_agent::workers::control::drainer:"),
        "{}",
        warnings[0]
    );
    assert!(warnings[0].contains("first=1"), "{}", warnings[0]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn refusals_that_are_not_about_the_event_never_dead_letter_it() {
    let mut h = start(3).await;
    {
        let mut r = h.server.lock();
        // A proxy's "no such route" and a retired stream: about the path or the agent.
        r.fail_events.push_back(Failure {
            status: 404,
            code: ErrorCode::NotFound,
            retry_after: None,
        });
        r.fail_events.push_back(Failure {
            status: 409,
            code: ErrorCode::Conflict,
            retry_after: None,
        });
    }
    h.reduce_until_empty().await;
    assert_eq!(
        h.server.lock().events.len(),
        3,
        "every event delivered in the end"
    );
    assert!(h.store.reader().dead_letters().unwrap().is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_huge_retry_after_is_capped() {
    let h = start(1).await;
    h.server.lock().fail_events.push_back(Failure {
        status: 503,
        code: ErrorCode::Unavailable,
        retry_after: Some(86_400),
    });
    // The cap is the workers' backoff cap: a minute, as documented.
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert!(
        h.server.lock().batches.len() >= 2,
        "a day-long Retry-After parked delivery for more than a minute"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_ack_beyond_the_batch_is_refused_counted_and_delivery_goes_on() {
    let (logs, _guard) = crate::testlog::Logs::capture();
    // 300 queued: the first batch is 1 to 256, and 280 is beyond it (but not beyond the agent).
    let mut h = start(300).await;
    h.server.lock().acks.push_back(280);
    h.reduce_until_empty().await;
    let batches = h.server.lock().batches.clone();
    assert_eq!(batches[0], batches[1], "sent again");
    assert_eq!(batches[1][0], 1, "sent again");
    assert_eq!(h.server.lock().events.len(), 300);
    assert_eq!(h.resyncs, 0);
    let errors = logs.lines_with("acknowledged seqs this agent never sent");
    assert_eq!(errors.len(), 1, "{}", logs.text());
    assert!(errors[0].contains("acked_through=280"), "{}", errors[0]);
    let text = h.metrics.render();
    assert!(
        text.contains("fleetnode_agent_protocol_errors_total{kind=\"ack-beyond-batch\"} 1"),
        "{text}"
    );
    // Events queued later are delivered too (the old drainer waited for seq 281).
    let mut state = State::default();
    state.host.seq = 301;
    h.store.commit(&state, &[paused(301)]).unwrap();
    h.new_events.notify_one();
    h.reduce_until_empty().await;
    assert_eq!(h.server.lock().events.last().map(|e| e.seq), Some(301));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_zero_progress_ack_backs_off_from_the_base_and_a_new_event_wakes_it() {
    let mut h = start(3).await;
    h.server.lock().acks.push_back(0);
    tokio::time::sleep(super::BACKOFF_BASE + Duration::from_millis(100)).await;
    assert_eq!(
        h.server.lock().batches.len(),
        2,
        "not retried from the base"
    );
    h.reduce_until_empty().await;
    assert_eq!(h.server.lock().events.len(), 3);
    // Now the server keeps acknowledging nothing, and the backoff grows ...
    {
        let mut r = h.server.lock();
        // More than 100 s of backoff can use up.
        r.acks.extend([0; 1_000]);
    }
    let mut state = State::default();
    state.host.seq = 4;
    h.store.commit(&state, &[paused(4)]).unwrap();
    h.new_events.notify_one();
    tokio::time::sleep(Duration::from_secs(100)).await;
    let before = h.server.lock().batches.len();
    assert!(h.server.lock().acks.len() < 1_000, "not retried at all");
    // ... until a new event is queued: it goes out at once, with the one waiting.
    state.host.seq = 5;
    h.store.commit(&state, &[paused(5)]).unwrap();
    h.new_events.notify_one();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let batches = h.server.lock().batches.clone();
    assert!(batches.len() > before, "a new event did not wake it");
    assert_eq!(batches[before], vec![4, 5]);
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_content_code_under_another_status_never_dead_letters() {
    let mut h = start(2).await;
    {
        let mut r = h.server.lock();
        // A 409 or a 503 whose body says `invalid`/`malformed` is not a refusal of the event.
        r.fail_events.push_back(Failure {
            status: 409,
            code: ErrorCode::Invalid,
            retry_after: None,
        });
        r.fail_events.push_back(Failure {
            status: 503,
            code: ErrorCode::Malformed,
            retry_after: None,
        });
    }
    h.reduce_until_empty().await;
    let (events, batches) = {
        let r = h.server.lock();
        (r.events.len(), r.batches.clone())
    };
    assert_eq!(events, 2);
    assert!(batches.iter().all(|b| b == &vec![1, 2]), "{batches:?}");
    assert!(h.store.reader().dead_letters().unwrap().is_empty());
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn resync_required_sends_a_snapshot_and_delivery_goes_on_from_it() {
    // The agent holds 4 and 5 (1 to 3 were acknowledged); the control plane, restored from an
    // older backup, holds the stream up to seq 2 only.
    let mut h = start_with(4..=5).await;
    h.server.lock().resync_at = Some(2);
    h.reduce_until_empty().await;
    assert_eq!(h.resyncs, 1);
    let (batches, events) = {
        let r = h.server.lock();
        (r.batches.clone(), r.events.clone())
    };
    assert_eq!(batches, vec![vec![4, 5], vec![6]], "from the snapshot on");
    assert_eq!(events.len(), 1);
    assert!(matches!(events[0].report, Report::Snapshot { .. }));
    // Delivery goes on after it.
    let mut state = h.state.clone();
    state.host.seq = 7;
    h.store.commit(&state, &[paused(7)]).unwrap();
    h.state = state;
    h.new_events.notify_one();
    h.reduce_until_empty().await;
    assert_eq!(h.server.lock().events.last().map(|e| e.seq), Some(7));
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_ack_beyond_every_event_of_the_agent_is_never_applied_and_a_snapshot_follows() {
    let (logs, _guard) = crate::testlog::Logs::capture();
    let mut h = start(3).await;
    // A host restored from a VM snapshot: the control plane saw up to 40 of another history.
    h.server.lock().acks.push_back(40);
    h.reduce_until_empty().await;
    assert_eq!(h.resyncs, 1);
    let batches = h.server.lock().batches.clone();
    assert_eq!(
        batches.last(),
        Some(&vec![41]),
        "the snapshot is above the acknowledged seq: {batches:?}"
    );
    assert!(
        !logs.lines_with("refused and never applied").is_empty(),
        "{}",
        logs.text()
    );
    let text = h.metrics.render();
    assert!(
        text.contains("fleetnode_agent_protocol_errors_total{kind=\"ack-beyond-agent\"} 1"),
        "{text}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_resync_answer_to_a_snapshot_does_not_make_another() {
    let mut h = start_with(2..=2).await;
    {
        let mut r = h.server.lock();
        r.resync_at = Some(0);
        r.resync_snapshots_too = true;
    }
    h.serve_for(Duration::from_secs(150)).await;
    assert_eq!(h.resyncs, 1, "a second snapshot for a refused one");
    let batches = h.server.lock().batches.clone();
    let snapshots = batches.iter().filter(|b| b[0] == 3).count();
    assert!(
        (2..=4).contains(&snapshots),
        "retried at the slowest pace: {batches:?}"
    );
    h.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_dead_letter_the_store_could_not_write_is_asked_for_again_without_posting_again() {
    let mut h = start(3).await;
    h.server.lock().poison.insert(2);
    // Play the event loop until the dead letter is asked for, then answer that its write
    // failed.
    let done = loop {
        let input = h.inputs.recv().await.unwrap();
        match input {
            Input::DeadLettered { seq, done, .. } => {
                assert_eq!(seq, 2);
                break done;
            }
            other => h.handle(other),
        }
    };
    let posted = h.server.lock().batches.len();
    done.send(crate::input::Written::Failed).unwrap();
    let again = h.inputs.recv().await.unwrap();
    assert!(
        matches!(again, Input::DeadLettered { seq: 2, .. }),
        "{again:?}"
    );
    assert_eq!(
        h.server.lock().batches.len(),
        posted,
        "the refused event was posted again instead of its dead letter being asked for again"
    );
    h.handle(again);
    h.reduce_until_empty().await;
    let seqs: Vec<u64> = h.server.lock().events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(h.store.reader().dead_letters().unwrap().len(), 1);
    h.stop().await;
}
