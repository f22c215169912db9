//! The agent's durable store, measured against the file system it lives on.
//!
//! 1. Commit: a reducer step's write (the state and the two events of a typical transition,
//!    durable before it returns) against a raw baseline on the same file system, in the same
//!    run: appending the same number of bytes to a file with `write` + `fdatasync`. Rounds
//!    alternate which goes first; each round's ratio is commit rate / baseline rate.
//! 2. Drain and ack: a queue of 10,000 events read in the drainer's batches and acknowledged
//!    batch by batch, as the event loop does.
//! 3. Open after `kill -9`: a child process fills a store with 100,000 queued events and is
//!    killed with SIGKILL while it holds the store open; each round opens a fresh copy of the
//!    file it left (a warm page cache, as after a restart without a reboot) until the store is
//!    ready (the state loaded and the queue counted).
//!
//! `cargo bench -p fleetnode-agent --bench store [-- --rounds N --commits N]`; the figures are
//! in docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fleetnode_agent::store::{STORE_FILE, Store};
use fleetnode_state_machine::{
    Directive, DirectiveKind, HealthOverrides, Millis, OutboundEvent, ProbeId, ProbeMode, Report,
    Revision, State, StorePath, SwitchId, SwitchPurpose, SwitchVerdict, SystemView, Timestamp,
};

/// Set in the child that fills a store and waits to be killed.
const CHILD_ENV: &str = "FLEETNODE_STORE_BENCH_FILL";
/// Events the killed child leaves queued.
const CRASH_QUEUE: u64 = 100_000;
/// Events per transaction while the child fills its store.
const FILL_CHUNK: u64 = 1_000;
/// Events drained per round.
const DRAIN_QUEUE: u64 = 10_000;
/// The drainer's batch (the wire's cap) and byte budget.
const DRAIN_BATCH: usize = fleetnode_wire::MAX_BATCH_EVENTS;
const DRAIN_BYTES: usize = fleetnode_agent::workers::control::drainer::BATCH_MAX_BYTES;

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        fill_and_wait(Path::new(&dir));
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let option = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map_or(default, |v| v.parse().expect("a number"))
    };
    let rounds = option("--rounds", 5);
    let commits = option("--commits", 300);
    let work = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    println!("store bench in {} ({rounds} rounds)", work.path().display());
    commit_against_baseline(work.path(), rounds, commits);
    drain_and_ack(work.path(), rounds);
    open_after_kill(work.path(), rounds);
}

fn commit_against_baseline(work: &Path, rounds: usize, commits: usize) {
    println!("\n## commit (state + 2 events, durable) vs write+fdatasync append, {commits} each");
    println!("round  baseline/s  commit/s  ratio");
    let (mut base_rates, mut commit_rates, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let dir = work.join(format!("commit-{round}"));
        let mut store = Store::open(&dir).unwrap().store;
        let mut state = converged_state();
        let step_bytes = {
            let events = transition(&mut state.clone());
            serde_json::to_vec(&state).unwrap().len()
                + events
                    .iter()
                    .map(|e| serde_json::to_vec(e).unwrap().len())
                    .sum::<usize>()
        };
        let run_store = |store: &mut Store, state: &mut State| {
            let started = Instant::now();
            for _ in 0..commits {
                let events = transition(state);
                store.commit(state, &events).unwrap();
            }
            commits as f64 / started.elapsed().as_secs_f64()
        };
        let run_base = || baseline(&dir.join("append.log"), step_bytes, commits);
        let (base, commit) = if round % 2 == 0 {
            let base = run_base();
            (base, run_store(&mut store, &mut state))
        } else {
            let commit = run_store(&mut store, &mut state);
            (run_base(), commit)
        };
        println!(
            "{round:>5}  {base:>10.0}  {commit:>8.0}  {:>5.2}",
            commit / base
        );
        base_rates.push(base);
        commit_rates.push(commit);
        ratios.push(commit / base);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    println!(
        "median {:>10.0}  {:>8.0}  {:>5.2}",
        median(&mut base_rates),
        median(&mut commit_rates),
        median(&mut ratios)
    );
}

/// Appends `bytes`-sized records to a fresh file, each made durable with `fdatasync`.
fn baseline(path: &Path, bytes: usize, count: usize) -> f64 {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(path)
        .unwrap();
    let record = vec![b'x'; bytes];
    let started = Instant::now();
    for _ in 0..count {
        file.write_all(&record).unwrap();
        file.sync_data().unwrap();
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(path).unwrap();
    rate
}

fn drain_and_ack(work: &Path, rounds: usize) {
    println!("\n## drain and ack, {DRAIN_QUEUE} queued events, batches of {DRAIN_BATCH}");
    println!("round  events/s");
    let mut rates = Vec::new();
    for round in 0..rounds {
        let dir = work.join(format!("drain-{round}"));
        let mut store = Store::open(&dir).unwrap().store;
        let mut state = converged_state();
        let events = queue_of(&mut state, DRAIN_QUEUE);
        store.commit(&state, &events).unwrap();
        let reader = store.reader();
        let started = Instant::now();
        let mut acked = 0;
        loop {
            let batch = reader.batch_after(acked, DRAIN_BATCH, DRAIN_BYTES).unwrap();
            let Some(last) = batch.last() else { break };
            acked = last.seq;
            store.ack(acked).unwrap();
        }
        let rate = DRAIN_QUEUE as f64 / started.elapsed().as_secs_f64();
        assert_eq!(store.stats().depth, 0);
        println!("{round:>5}  {rate:>8.0}");
        rates.push(rate);
        drop(store);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    println!("median {:>8.0}", median(&mut rates));
}

fn open_after_kill(work: &Path, rounds: usize) {
    let crashed = work.join("crashed");
    std::fs::create_dir_all(&crashed).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_ENV, &crashed)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "filled", "the filling child failed");
    // Child::kill sends SIGKILL: the store is left open, exactly as after `kill -9`.
    child.kill().unwrap();
    child.wait().unwrap();
    let size = std::fs::metadata(crashed.join(STORE_FILE)).unwrap().len();
    println!(
        "\n## open after kill -9: {CRASH_QUEUE} queued events, a {:.1} MiB file",
        size as f64 / 1048576.0
    );
    println!("round  open ms  (of which redb's own open and repair, ms)");
    let mut times = Vec::new();
    let mut repairs = Vec::new();
    for round in 0..rounds {
        let raw = work.join(format!("raw-{round}"));
        std::fs::create_dir_all(&raw).unwrap();
        std::fs::copy(crashed.join(STORE_FILE), raw.join(STORE_FILE)).unwrap();
        let started = Instant::now();
        let db = redb::Database::open(raw.join(STORE_FILE)).unwrap();
        repairs.push(ms(started.elapsed()));
        drop(db);
        std::fs::remove_dir_all(&raw).unwrap();
        let dir = work.join(format!("open-{round}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(crashed.join(STORE_FILE), dir.join(STORE_FILE)).unwrap();
        let started = Instant::now();
        let opened = Store::open(&dir).unwrap();
        let took = started.elapsed();
        assert!(opened.reset.is_none(), "the crashed store was moved aside");
        assert_eq!(opened.store.stats().depth, CRASH_QUEUE);
        println!("{round:>5}  {:>7.1}  {:>6.1}", ms(took), repairs[round]);
        times.push(ms(took));
        drop(opened);
        std::fs::remove_dir_all(&dir).unwrap();
    }
    println!(
        "median {:>7.1}  {:>6.1}",
        median(&mut times),
        median(&mut repairs)
    );
}

/// The child: fills a store and waits, holding it open, to be killed.
fn fill_and_wait(dir: &Path) {
    let mut store = Store::open(dir).unwrap().store;
    let mut state = converged_state();
    let mut left = CRASH_QUEUE;
    while left > 0 {
        let events = queue_of(&mut state, left.min(FILL_CHUNK));
        left -= events.len() as u64;
        store.commit(&state, &events).unwrap();
    }
    println!("filled");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// A host converged on its second generation, two probes configured.
fn converged_state() -> State {
    let mut state = State::default();
    let host = &mut state.host;
    host.seq = 40;
    host.policy.probes = BTreeMap::from([
        (ProbeId::parse("web").unwrap(), ProbeMode::Enforce),
        (ProbeId::parse("metrics").unwrap(), ProbeMode::Observe),
    ]);
    host.policy.activation_timeout_ms = Millis::from_secs(900);
    host.system = committed(1);
    host.known_good = vec![closure(0), closure(1)];
    host.desired = Some(Directive {
        revision: Revision(7),
        kind: DirectiveKind::Activate {
            target: closure(1),
            mode: None,
            health: HealthOverrides::default(),
        },
    });
    host.handled = Some(Revision(7));
    host.boot_id = Some("5f0c1a7e-6b1d-4f4e-9a53-2d6c1c9b9e11".into());
    state.clock = Timestamp(1_790_000_000_000);
    state
}

/// The two events of a typical transition (a switch ended, the soak began), advancing `state`.
fn transition(state: &mut State) -> Vec<OutboundEvent> {
    let first = state.host.seq + 1;
    state.host.seq += 2;
    state.clock = Timestamp(state.clock.0 + 1_000);
    let at = state.clock;
    vec![
        OutboundEvent {
            seq: first,
            at,
            report: Report::SwitchEnded {
                switch: SwitchId(first - 1),
                purpose: SwitchPurpose::Activate,
                system: committed(1),
                verdict: SwitchVerdict::Succeeded,
            },
        },
        OutboundEvent {
            seq: first + 1,
            at,
            report: Report::SoakStarted {
                epoch: first,
                until: Timestamp(at.0 + 300_000),
            },
        },
    ]
}

/// `count` lifecycle events (never compacted), advancing `state`.
fn queue_of(state: &mut State, count: u64) -> Vec<OutboundEvent> {
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap());
    while (out.len() as u64) < count {
        out.extend(transition(state));
    }
    out.truncate(usize::try_from(count).unwrap());
    state.host.seq = out.last().map_or(state.host.seq, |e| e.seq);
    out
}

fn closure(n: usize) -> StorePath {
    const HASHES: [&str; 2] = [
        "0123456789abcdfghijklmnpqrsvwxyz",
        "zyxwvsrqpnmlkjihgfdcba9876543210",
    ];
    StorePath::parse(&format!("/nix/store/{}-nixos-system-web-{n}", HASHES[n])).unwrap()
}

fn committed(n: usize) -> SystemView {
    SystemView {
        current: Some(closure(n)),
        booted: Some(closure(n)),
        profile: Some(closure(n)),
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
