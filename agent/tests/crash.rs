//! Crash test: the real agent runtime (the `fleetnode-crash-harness` binary of the `testing`
//! feature, on an in-memory host) is killed with SIGKILL at random moments, again and again on the same state
//! directory. After each kill the store must reopen cleanly, hold every event the harness
//! reported as committed, and hold a gap-free seq range that matches the saved state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use fleetnode_agent::store::Store;

const ROUNDS: usize = 8;

fn random_below(limit: u64) -> u64 {
    getrandom::u64().unwrap() % limit
}

#[test]
fn every_committed_event_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let mut total_printed = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fleetnode-crash-harness"))
            .arg("--state-dir")
            .arg(&state_dir)
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line.parse::<u64>().unwrap()).is_err() {
                    break;
                }
            }
        });
        // Let it commit at least one event, then kill it at a random moment.
        let first = rx.recv_timeout(Duration::from_secs(30)).expect("no commit");
        std::thread::sleep(Duration::from_millis(20 + random_below(400)));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        let mut printed: Vec<u64> = vec![first];
        printed.extend(rx.try_iter());
        total_printed += printed.len();

        let opened = Store::open(&state_dir).unwrap();
        assert!(
            opened.reset.is_none(),
            "round {round}: store reset: {:?}",
            opened.reset
        );
        let last = opened.state.host.seq;
        let queue = opened
            .store
            .reader()
            .batch_after(0, usize::MAX, usize::MAX)
            .unwrap();
        let seqs: Vec<u64> = queue.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=last).collect::<Vec<_>>(),
            "round {round}: the queue is not the gap-free range up to the saved state's seq"
        );
        for seq in &printed {
            assert!(
                *seq <= last,
                "round {round}: seq {seq} was reported committed but the store ends at {last}"
            );
        }
        // Each start records a `recovered` event, so the harness made progress every round.
        let recovered = queue
            .iter()
            .filter(|e| e.report.name() == "recovered")
            .count();
        assert_eq!(recovered, round + 1, "round {round}");
    }
    assert!(total_printed > ROUNDS, "the harness committed too little");
}
