//! `fleetnode-footprint`: what a real agent costs its host at rest. A real `fleetnode-cp` and a
//! real `fleetnode-agent` (the binaries next to this one) on a fake root: the long-poll answered
//! every 30 s, a heartbeat every 30 s, acknowledged, and two probes every 10 s (the harness's
//! exec probe and a TCP probe of the control plane's port). After a warm-up, the agent's
//! `/proc/<pid>` is read every second for the window: resident memory, CPU time (user + system,
//! its children excluded) and the context switches of every thread, which bound its wake-ups
//! from above (each wake-up of a thread is at least one switch). A thread of the blocking pool
//! that starts and ends within the window counts with what it had at its last look.
//!
//! `cargo build --release --workspace --bins && ./target/release/fleetnode-footprint`

use std::io::Write as _;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use fleetnode_tests::harness::Options;
use fleetnode_tests::load::measure::{Sample, thread_switch_counts};
use fleetnode_tests::{Harness, HarnessError, Result};

/// The agent's footprint at rest against a live control plane.
#[derive(Debug, Parser)]
#[command(name = "fleetnode-footprint", about, long_about = None)]
struct Args {
    /// Seconds of warm-up before the window.
    #[arg(long, default_value_t = 60)]
    warmup_secs: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 600)]
    window_secs: u64,
}

/// How often the agent is looked at during the window.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fleetnode-footprint: {error}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<()> {
    let mut options = Options::default();
    options.timings.heartbeat = "30s".into();
    options.timings.probe_interval = "10s".into();
    let mut harness = Harness::start_with(options)?;
    // The second probe: the control plane's port, over TCP.
    harness.agent.stop()?;
    let probe = format!(
        "\n[probes.control-plane-port]\nkind = \"tcp\"\naddress = \"127.0.0.1:{}\"\ninterval = \"10s\"\n",
        harness.cp.port()
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(harness.agent.config())
        .and_then(|mut file| file.write_all(probe.as_bytes()))
        .map_err(HarnessError::io(
            "add the second probe to the agent's configuration",
        ))?;
    harness.agent.start()?;
    let pid = harness.agent.pid().ok_or_else(|| gone(&harness))?;
    println!(
        "fleetnode-footprint: agent pid {pid}, warm-up {} s, window {} s",
        args.warmup_secs, args.window_secs
    );
    std::thread::sleep(Duration::from_secs(args.warmup_secs));
    let first = Sample::of(pid).ok_or_else(|| gone(&harness))?;
    let end = Instant::now() + Duration::from_secs(args.window_secs);
    let mut peak = first.rss_kib;
    let mut last = first;
    let mut threads = thread_switch_counts(pid);
    let (threads_at_start, switches_at_start) = (threads.len(), threads.values().sum::<u64>());
    while Instant::now() < end {
        std::thread::sleep(SAMPLE_EVERY.min(end.saturating_duration_since(Instant::now())));
        harness.agent.check_running()?;
        last = Sample::of(pid).ok_or_else(|| gone(&harness))?;
        peak = peak.max(last.rss_kib);
        for (tid, switches) in thread_switch_counts(pid) {
            let seen = threads.entry(tid).or_default();
            *seen = (*seen).max(switches);
        }
    }
    let switches = threads.values().sum::<u64>() - switches_at_start;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(HarnessError::io("read the agent's status"))?;
    let seconds = last.at.duration_since(first.at).as_secs_f64();
    println!(
        "RSS: {} KiB at the end, {peak} KiB at most during the window (started at {} KiB); {}",
        last.rss_kib,
        first.rss_kib,
        ["VmHWM:", "RssAnon:", "RssFile:", "Threads:"]
            .iter()
            .filter_map(|name| status.lines().find(|l| l.starts_with(name)))
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "CPU: {:.3} s over {seconds:.0} s: {:.3}% of a core",
        last.cpu_seconds_since(&first),
        last.cores_since(&first) * 100.0
    );
    println!(
        "wake-ups (context switches of every thread, ended ones included): {switches} over \
         {seconds:.0} s: {:.2} per second; {} threads seen, {} of them started in the window",
        switches as f64 / seconds,
        threads.len(),
        threads.len() - threads_at_start
    );
    println!("resident by mapping: {}", by_mapping(pid));
    let detail = harness.detail()?;
    println!(
        "the control plane saw the host: phase {}, last seen {:?}",
        detail.row.phase.name(),
        detail.row.last_seen
    );
    Ok(())
}

/// Resident KiB of each mapped file (and of anonymous memory) from `/proc/<pid>/smaps`, largest
/// first: where the resident set goes.
fn by_mapping(pid: u32) -> String {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return "(smaps unreadable)".into();
    };
    let mut sizes: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut current = String::from("[anonymous]");
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            current = fields
                .get(5)
                .map_or("[anonymous]", |name| {
                    name.rsplit('/').next().unwrap_or(name)
                })
                .to_owned();
        } else if fields.first() == Some(&"Rss:") {
            let kib: u64 = fields.get(1).and_then(|v| v.parse().ok()).unwrap_or(0);
            *sizes.entry(current.clone()).or_default() += kib;
        }
    }
    let mut sizes: Vec<(String, u64)> = sizes.into_iter().filter(|(_, kib)| *kib > 0).collect();
    sizes.sort_by_key(|entry| std::cmp::Reverse(entry.1));
    sizes
        .iter()
        .map(|(name, kib)| format!("{name} {kib} KiB"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn gone(harness: &Harness) -> HarnessError {
    HarnessError::Setup {
        what: "the agent under measurement".into(),
        message: format!(
            "it is not running; its log:\n{}",
            harness.agent.log_tail(30)
        ),
    }
}
