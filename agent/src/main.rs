//! `fleetnode-agent`: see `docs/configuration.md` and `fleetnode-agent --help`.

fn main() -> std::process::ExitCode {
    eprintln!("fleetnode-agent: the command-line interface is not built yet");
    std::process::ExitCode::FAILURE
}
