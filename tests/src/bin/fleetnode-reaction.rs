//! `fleetnode-reaction`: how soon a real agent acts on an operator's call. A real
//! `fleetnode-cp` and a real `fleetnode-agent` (the binaries next to this one) on a fake root;
//! the bench calls the operator API itself (pause, then resume, in turn; no CLI process) and
//! reads the agent's first event after each call (`paused` or `resumed`) from the control
//! plane. The latency is the event's own time (the agent's clock, in whole milliseconds, taken
//! when its event loop received the answer) less the time just before the call, plus 1 ms for
//! the truncation, so it errs on the slow side.
//!
//! `--load-hosts N` first connects N simulated hosts (see `fleetnode-loadgen`) to the same
//! control plane, so the agent is one host among N + 1.
//!
//! `cargo build --release --workspace --bins && ./target/release/fleetnode-reaction`

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use fleetnode_state_machine::Report;
use fleetnode_tests::harness::Options;
use fleetnode_tests::load::measure::{median, quantile};
use fleetnode_tests::load::{Fleet, Operator};
use fleetnode_tests::{Harness, HarnessError, Result};
use fleetnode_wire::{HostDetail, decode};
use hyper::{Method, StatusCode};

/// Reaction latency: operator API call to the agent's first event.
#[derive(Debug, Parser)]
#[command(name = "fleetnode-reaction", about, long_about = None)]
struct Args {
    /// Calls measured (pause and resume in turn).
    #[arg(long, default_value_t = 1000)]
    repetitions: usize,
    /// Simulated hosts connected to the same control plane during the measurement.
    #[arg(long, default_value_t = 0)]
    load_hosts: usize,
}

/// How often the bench looks for the event (the event carries its own time, so this only
/// decides how soon the next call can go).
const LOOK_EVERY: Duration = Duration::from_millis(5);
/// Longest one call may take to show its event.
const EVENT_DEADLINE: Duration = Duration::from_secs(30);

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fleetnode-reaction: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let mut options = Options::default();
    options.timings.heartbeat = "30s".into();
    options.timings.probe_interval = "10s".into();
    let harness = Harness::start_with(options)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(HarnessError::io("start the runtime"))?;
    runtime.block_on(measure(&harness, args))
}

async fn measure(harness: &Harness, args: &Args) -> Result<()> {
    let operator = Operator::of(&harness.cp)?;
    let fleet = match args.load_hosts {
        0 => None,
        n => Some(Fleet::start(&operator, "load", n, Duration::from_secs(30)).await?),
    };
    println!(
        "fleetnode-reaction: {} calls, agent {} among {} hosts",
        args.repetitions,
        harness.host(),
        args.load_hosts + 1
    );
    let mut link = operator.link().await?;
    let detail_path = format!("/v1/admin/hosts/{}", harness.host());
    let mut last_seq = detail(&mut link, &operator, &detail_path).await?.mirror.seq;
    let mut latencies = Vec::with_capacity(args.repetitions);
    for call in 0..args.repetitions {
        let pause = call % 2 == 0;
        let action = if pause { "pause" } else { "resume" };
        let path = format!("/v1/admin/hosts/{}/{action}", harness.host());
        let before = wall_ms();
        let answer = link
            .request(Method::POST, &path, operator.token(), None, false)
            .await
            .map_err(|e| failed(action, e))?;
        if answer.status != StatusCode::OK {
            return Err(failed(action, String::from_utf8_lossy(&answer.body)));
        }
        let started = std::time::Instant::now();
        let at = loop {
            let seen = detail(&mut link, &operator, &detail_path).await?;
            let first = seen.recent_events.iter().find(|e| e.seq > last_seq);
            if let Some(event) = first {
                let expected = matches!(
                    (&event.report, pause),
                    (Report::Paused, true) | (Report::Resumed, false)
                );
                if !expected {
                    return Err(failed(
                        action,
                        format!("first event was {:?}", event.report),
                    ));
                }
                last_seq = seen.recent_events.last().map_or(event.seq, |e| e.seq);
                break event.at.0;
            }
            if started.elapsed() > EVENT_DEADLINE {
                return Err(failed(action, "no event from the agent"));
            }
            tokio::time::sleep(LOOK_EVERY).await;
        };
        latencies.push(Duration::from_secs_f64(
            ((at as f64 + 1.0) - before).max(0.0) / 1000.0,
        ));
    }
    latencies.sort();
    let ms: Vec<f64> = latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    println!(
        "operator call -> agent's first event: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms (median {:.1} ms)",
        quantile(&latencies, 0.5).as_secs_f64() * 1000.0,
        quantile(&latencies, 0.9).as_secs_f64() * 1000.0,
        quantile(&latencies, 0.99).as_secs_f64() * 1000.0,
        ms.last().copied().unwrap_or(0.0),
        median(&ms)
    );
    if let Some(fleet) = fleet {
        let errors = fleet.stop().await;
        println!("simulated hosts: {errors} failed exchanges (each retried)");
    }
    Ok(())
}

async fn detail(
    link: &mut fleetnode_tests::load::link::Link,
    operator: &Operator,
    path: &str,
) -> Result<HostDetail> {
    let answer = link
        .request(Method::GET, path, operator.token(), None, false)
        .await
        .map_err(|e| failed("host detail", e))?;
    decode(&answer.body).map_err(|e| failed("host detail", e))
}

fn wall_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

fn failed(what: &str, error: impl std::fmt::Display) -> HarnessError {
    HarnessError::Setup {
        what: format!("the reaction bench ({what})"),
        message: error.to_string(),
    }
}
