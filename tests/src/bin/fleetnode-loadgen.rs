//! `fleetnode-loadgen`: many simulated agents against one real `fleetnode-cp` (the binary next
//! to this one), over TLS from one process. Build both in release mode:
//! `cargo build --release -p fleetnode-control-plane -p fleetnode-tests --bin fleetnode-cp --bin fleetnode-loadgen`,
//! then `./target/release/fleetnode-loadgen --hosts 19000` (add `--postgres` for a PostgreSQL
//! store, and `--replicas 3` for three control planes on it). `docs/performance.md` has the
//! figures.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use fleetnode_tests::load::{Options, run};

/// Simulated agents against one real control plane.
#[derive(Debug, Parser)]
#[command(name = "fleetnode-loadgen", about, long_about = None)]
struct Args {
    /// Simulated hosts, each with its own loopback source address (127.10.x.y).
    #[arg(long, default_value_t = 1000)]
    hosts: usize,
    /// Heartbeat interval of every host, in seconds.
    #[arg(long, default_value_t = 30)]
    heartbeat_secs: u64,
    /// How long the fleet is watched at rest, in seconds.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Full-fleet dispatch rounds.
    #[arg(long, default_value_t = 5)]
    dispatches: usize,
    /// Event batches each host delivers in the ingestion phase.
    #[arg(long, default_value_t = 2)]
    batches: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 8)]
    batch_events: usize,
    /// Hosts delivering events at once (each holds a connection while it delivers, beside its
    /// long-poll: keep hosts + senders + 300 heartbeats under the open-file limit).
    #[arg(long, default_value_t = 500)]
    senders: usize,
    /// Worker threads of the load generator.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Where the control plane's files go (default: a temporary directory, removed after).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Store on PostgreSQL instead of a redb file: a throw-away cluster of Debian's
    /// `postgresql` is started for the run (in a temporary directory, `fsync` on).
    #[arg(long)]
    postgres: bool,
    /// Control-plane processes on the one database (with `--postgres`); host `n` talks to
    /// replica `n % replicas` only.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Single-host changes timed in the wake-up phase, of each kind (through another replica
    /// and through the host's own).
    #[arg(long, default_value_t = 200)]
    wakeups: usize,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let options = Options {
        hosts: args.hosts,
        heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
        idle: Duration::from_secs(args.idle_secs),
        dispatches: args.dispatches,
        batches: args.batches,
        batch_events: args.batch_events.clamp(1, fleetnode_wire::MAX_BATCH_EVENTS),
        senders: args.senders.max(1),
        threads: args.threads.max(1),
        work_dir: args.work_dir,
        postgres: args.postgres,
        replicas: args.replicas.max(1),
        wakeups: args.wakeups,
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fleetnode-loadgen: {error}");
            ExitCode::FAILURE
        }
    }
}
