//! The ticker: sleeps until the state's next deadline and sends a `Tick`. It never wakes when
//! nothing is due.

use fleetnode_state_machine::{Event, Timestamp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::input::{Input, InputSender, WorkerError};

/// Runs until `cancel`. `deadline` is the reducer's published next deadline.
pub async fn run(
    mut deadline: watch::Receiver<Option<Timestamp>>,
    clock: Clock,
    inputs: InputSender,
    cancel: CancellationToken,
) -> Result<(), WorkerError> {
    // The deadline a tick was already sent for: wait for the reducer to move past it rather
    // than sending it again.
    let mut ticked: Option<Timestamp> = None;
    loop {
        let next = *deadline.borrow_and_update();
        let due = next.filter(|at| Some(*at) != ticked);
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Ok(()),
            changed = deadline.changed() => {
                if changed.is_err() {
                    return stopped(&cancel);
                }
            }
            () = sleep_until(due, &clock) => {
                if inputs.send(Input::Event(Event::Tick)).await.is_err() {
                    return stopped(&cancel);
                }
                ticked = due;
            }
        }
    }
}

async fn sleep_until(due: Option<Timestamp>, clock: &Clock) {
    match due {
        Some(at) => tokio::time::sleep_until(clock.instant_at(at)).await,
        None => std::future::pending().await,
    }
}

fn stopped(cancel: &CancellationToken) -> Result<(), WorkerError> {
    if cancel.is_cancelled() {
        Ok(())
    } else {
        Err(WorkerError::new("the reducer stopped"))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ticks_once_at_each_deadline_and_sleeps_otherwise() {
        let clock = Clock::anchored_at(10_000, Timestamp(0));
        let (deadline_tx, deadline_rx) = watch::channel(None);
        let (inputs, mut rx) = tokio::sync::mpsc::channel(8);
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(deadline_rx, clock, inputs, cancel.clone()));
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(rx.try_recv().is_err(), "ticked with nothing due");

        let now = clock.now();
        deadline_tx.send_replace(Some(now.plus(fleetnode_state_machine::Millis(5_000))));
        tokio::time::sleep(Duration::from_millis(4_999)).await;
        assert!(rx.try_recv().is_err(), "ticked early");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(matches!(rx.try_recv(), Ok(Input::Event(Event::Tick))));
        // The same deadline does not tick again while the reducer has not moved on.
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(rx.try_recv().is_err(), "ticked twice for one deadline");
        // A deadline in the past ticks at once.
        deadline_tx.send_replace(Some(Timestamp(1)));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert!(matches!(rx.try_recv(), Ok(Input::Event(Event::Tick))));
        cancel.cancel();
        assert_eq!(task.await.unwrap(), Ok(()));
    }
}
