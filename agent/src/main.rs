//! `fleetnode-agent`: see `docs/configuration.md` and `fleetnode-agent --help`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};
use fleetnode_agent::config::{
    Config, ConfigError, DEFAULT_ADMIN_SOCKET, DEFAULT_CONFIG_PATH, LogFormat,
};
use fleetnode_agent::runtime::agent;
use fleetnode_agent::runtime::eventloop::Exit;
use fleetnode_agent::system::NixosSystem;
use fleetnode_agent::{cli, logging, systemd};
use tokio_util::sync::CancellationToken;

/// The fleetnode agent: keeps this NixOS host on the generation its control plane assigns.
#[derive(Debug, Parser)]
#[command(name = "fleetnode-agent", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the agent (as the systemd service does).
    Run {
        /// Configuration file.
        #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
        /// Log format; overrides `log_format` in the configuration.
        #[arg(long, value_enum)]
        log_format: Option<Format>,
    },
    /// Show the running agent's status (phase, target, current, queue, probes, workers).
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Validate a configuration file and explain every problem.
    CheckConfig {
        /// The file to check.
        path: PathBuf,
    },
    /// Put the host on hold: directives are recorded but nothing new starts.
    Pause {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Lift the hold.
    Resume {
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// Configuration file (to find `admin.socket`).
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// The agent's admin socket; overrides the configuration.
    #[arg(long)]
    socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Run { config, log_format } => run(&config, log_format),
        Command::CheckConfig { path } => check_config(&path),
        Command::Status { json, admin } => admin_command(&admin, "GET", "/status", |body| {
            let status: fleetnode_wire::AgentStatus =
                fleetnode_wire::decode(body).map_err(|e| e.to_string())?;
            if json {
                Ok(serde_json::to_string_pretty(&status).unwrap_or_default())
            } else {
                Ok(cli::render_status(&status))
            }
        }),
        Command::Pause { admin } => admin_command(&admin, "POST", "/pause", hold_answer),
        Command::Resume { admin } => admin_command(&admin, "POST", "/resume", hold_answer),
    }
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    // One thread runs the event loop and every worker. At rest the agent then wakes only for
    // its own timers and sockets, never to hand a message from one runtime thread to another
    // (two workers and the main thread took twice the wake-ups, docs/performance.md). The cost:
    // the event loop's store commit (one fsync) holds the other tasks for its length, which
    // delays a probe or a poll by milliseconds and decides nothing. Blocking work (reading a
    // switch's log, the boot marker) still goes to the blocking pool.
    tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(8)
        .enable_all()
        .build()
}

fn explain(error: &ConfigError) -> String {
    match error {
        ConfigError::Read { .. } => format!("{error}"),
        ConfigError::Syntax { .. } => {
            format!("{error}\n(check the key named above against docs/configuration.md)")
        }
        ConfigError::Invalid { key, .. } => {
            format!("{error}\n(the offending key is `{key}`; see docs/configuration.md)")
        }
    }
}

fn run(path: &Path, log_format: Option<Format>) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!(
                "fleetnode-agent: invalid configuration {}: {}",
                path.display(),
                explain(&e)
            );
            return ExitCode::from(2);
        }
    };
    let format = match log_format {
        Some(Format::Json) => LogFormat::Json,
        Some(Format::Text) => LogFormat::Text,
        None => config.log_format,
    };
    logging::init(format);
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let cancel = CancellationToken::new();
        tokio::spawn(stop_on_signal(cancel.clone()));
        let system = Arc::new(NixosSystem::new(
            config.system.clone(),
            config.state_dir.clone(),
        ));
        tracing::info!(version = env!("CARGO_PKG_VERSION"), host = %config.host_id,
            control_plane = %config.control_plane, "fleetnode-agent starting");
        match agent::run(config, system, cancel, systemd::watchdog_period()).await {
            Ok(Exit::Stopped) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Ok(Exit::Restart(why)) => {
                tracing::info!(why, "exiting so systemd starts the new version");
                ExitCode::SUCCESS
            }
            Err(e) => {
                tracing::error!(error = %e, "the agent cannot run");
                ExitCode::FAILURE
            }
        }
    })
}

/// Cancels on SIGTERM or SIGINT.
async fn stop_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the agent with SIGKILL");
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(
        signal = name,
        "shutting down; a running activation is left to finish"
    );
    cancel.cancel();
}

fn check_config(path: &Path) -> ExitCode {
    match Config::load(path) {
        Ok(c) => {
            let probes: Vec<String> = c
                .probes
                .iter()
                .map(|p| format!("{} ({:?})", p.id, p.mode).to_lowercase())
                .collect();
            println!("{}: valid", path.display());
            println!("  host:          {}", c.host_id);
            println!("  control plane: {}", c.control_plane);
            println!("  state dir:     {}", c.state_dir.display());
            println!("  mode:          {}", c.policy.default_mode);
            println!("  soak:          {}", c.policy.health.soak_ms);
            println!("  heartbeat:     {}", c.heartbeat_interval);
            println!("  admin socket:  {}", c.admin_socket.display());
            if let Some(group) = &c.admin_group {
                println!("  admin group:   {group}");
            }
            if c.metrics {
                println!("  metrics:       http://{}/metrics", c.admin_listen);
            } else {
                println!("  metrics:       off");
            }
            println!(
                "  probes:        {}",
                if probes.is_empty() {
                    "none (control-plane only)".to_owned()
                } else {
                    probes.join(", ")
                }
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: invalid\n{}", path.display(), explain(&e));
            ExitCode::FAILURE
        }
    }
}

fn admin_socket(args: &AdminArgs) -> PathBuf {
    if let Some(socket) = &args.socket {
        return socket.clone();
    }
    match Config::load(&args.config) {
        Ok(config) => config.admin_socket,
        Err(e) => {
            eprintln!(
                "note: cannot use {} ({e}); trying {DEFAULT_ADMIN_SOCKET}",
                args.config.display()
            );
            PathBuf::from(DEFAULT_ADMIN_SOCKET)
        }
    }
}

fn admin_command(
    args: &AdminArgs,
    method: &str,
    path: &str,
    render: impl FnOnce(&[u8]) -> Result<String, String>,
) -> ExitCode {
    let socket = admin_socket(args);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("fleetnode-agent: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::admin_request(&socket, method, path)) {
        Ok((status, body)) if (200..300).contains(&status) => match render(&body) {
            Ok(text) => {
                println!("{}", text.trim_end());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("fleetnode-agent: unreadable answer from the agent: {e}");
                ExitCode::FAILURE
            }
        },
        Ok((status, body)) => {
            eprintln!(
                "fleetnode-agent: the agent answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("fleetnode-agent: {e}");
            ExitCode::FAILURE
        }
    }
}

fn hold_answer(body: &[u8]) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    match (
        value.get("paused").and_then(serde_json::Value::as_bool),
        value.get("requested"),
    ) {
        (Some(true), None) => Ok("paused: nothing new starts until resumed".into()),
        (Some(false), None) => Ok("resumed".into()),
        _ => Ok(format!(
            "requested; the agent has not confirmed yet: {value}"
        )),
    }
}
