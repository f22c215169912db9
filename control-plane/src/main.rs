//! `fleetnode-cp`: the reference fleetnode control plane and its operator CLI.

use std::process::ExitCode;

use clap::Parser;
use fleetnode_control_plane::cli::{Cli, Command, run};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The server logs at info by default; client commands only print their results and
    // errors unless RUST_LOG asks for more.
    let default_level = match cli.command {
        Command::Serve(_) => "info",
        _ => "warn",
    };
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fleetnode-cp: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // Every error's message already carries its cause.
            eprintln!("fleetnode-cp: {error}");
            ExitCode::FAILURE
        }
    }
}
