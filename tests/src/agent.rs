//! `fleetnode-agent run` as a child process, with a configuration generated for a fake root.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleetnode_fixtures::fakeroot::FakeRoot;
use toml::{Table, Value};

use crate::control_plane::{ControlPlane, free_port};
use crate::harness::probe_script;
use crate::process::{Process, log_tail, write_file};
use crate::{HarnessError, Result};

/// How long SIGTERM may take to stop the agent.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Name of the exec probe that checks the live generation (`[probes.<name>]`).
pub const PROBE_NAME: &str = "generation-healthy";

/// The agent's timings: short, so a scenario takes seconds, and well inside the limits the
/// agent accepts (probes and heartbeats at least every second).
#[derive(Debug, Clone)]
pub struct Timings {
    /// `health.soak`.
    pub soak: String,
    /// `health.sustained_failure`.
    pub sustained_failure: String,
    /// `heartbeat.interval`.
    pub heartbeat: String,
    /// The exec probe's interval.
    pub probe_interval: String,
    /// `activation.timeout` and `activation.rollback_timeout`.
    pub activation_timeout: String,
}

impl Default for Timings {
    fn default() -> Self {
        Self {
            soak: "3s".into(),
            sustained_failure: "2s".into(),
            heartbeat: "1s".into(),
            probe_interval: "1s".into(),
            activation_timeout: "60s".into(),
        }
    }
}

/// What goes into the agent's configuration besides the fake root's `[system]`.
#[derive(Debug, Clone)]
pub struct AgentSetup {
    /// `host_id`.
    pub host: String,
    /// `control_plane_url`: one URL is written as a string, several as a list.
    pub urls: Vec<String>,
    /// `token_file` (left out of the configuration when `client_identity` is set).
    pub token_file: PathBuf,
    /// `tls.cert_file` and `tls.key_file`: with them the agent authenticates by its client
    /// certificate alone (mutual TLS), without a token.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// `tls.ca_file`.
    pub ca_file: PathBuf,
    /// `admin.listen` (metrics).
    pub admin: SocketAddr,
    /// `admin.socket` (status, pause, resume).
    pub socket: PathBuf,
    /// The exec probe's program.
    pub probe: PathBuf,
    /// Timings.
    pub timings: Timings,
}

/// What an agent for `host` on `root` needs to reach `cp`: its probe script (written to
/// `probe`), a free metrics port on loopback and an admin socket next to the probe.
pub fn agent_setup(
    cp: &ControlPlane,
    root: &FakeRoot,
    host: &str,
    token_file: PathBuf,
    probe: PathBuf,
    timings: &Timings,
) -> Result<AgentSetup> {
    write_file(&probe, &probe_script(root.root())?, 0o755)?;
    Ok(AgentSetup {
        host: host.to_owned(),
        urls: vec![cp.url()],
        token_file,
        client_identity: None,
        ca_file: cp.files().ca.clone(),
        admin: SocketAddr::from(([127, 0, 0, 1], free_port()?)),
        socket: probe.with_file_name(format!("{host}-admin.sock")),
        probe,
        timings: timings.clone(),
    })
}

/// A `fleetnode-agent run` process (started, killed and started again at will).
#[derive(Debug)]
pub struct Agent {
    binary: PathBuf,
    config: PathBuf,
    admin: SocketAddr,
    log: PathBuf,
    log_filter: String,
    process: Option<Process>,
    service: Option<PathBuf>,
    restarts: u32,
}

impl Agent {
    /// Writes the configuration to `config` (checked with `fleetnode-agent check-config`) and
    /// returns a handle; the agent is not started yet.
    pub fn configure(
        binary: PathBuf,
        root: &FakeRoot,
        setup: &AgentSetup,
        config: PathBuf,
        log: PathBuf,
    ) -> Result<Self> {
        let text = render_config(root, setup)?;
        write_file(&config, &text, 0o644)?;
        let agent = Self {
            binary,
            config,
            admin: setup.admin,
            log,
            log_filter: "info".to_owned(),
            process: None,
            service: None,
            restarts: 0,
        };
        agent.check_config()?;
        Ok(agent)
    }

    /// Starts the agent (nothing when it runs).
    pub fn start(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let mut command = Command::new(&self.binary);
        command
            .arg("run")
            .arg("--config")
            .arg(&self.config)
            .env("RUST_LOG", &self.log_filter)
            // The log is a file: no colour codes in it.
            .env("NO_COLOR", "1")
            // Not under systemd: no readiness or watchdog notifications, no credentials, and
            // no self-restart after a commit (that rule applies to the systemd service only).
            .env_remove("INVOCATION_ID")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("CREDENTIALS_DIRECTORY");
        if self.service.is_some() {
            // What tells the agent it runs as the systemd service (see `run_as_service`).
            command.env("INVOCATION_ID", "0123456789abcdef0123456789abcdef");
        }
        self.process = Some(Process::spawn("fleetnode-agent", command, &self.log)?);
        Ok(())
    }

    /// From the next start on, runs the agent as its systemd service would run on the fake
    /// root `root`: `INVOCATION_ID` is set, so after a commit the agent exits to restart into
    /// the agent the live generation carries; and when it exits cleanly, [`Agent::check_running`]
    /// starts it again, as `Restart=always` does, from the binary the live generation carries
    /// (`<root>/run/current-system/sw/bin/fleetnode-agent`) when there is one, else the same.
    pub fn run_as_service(&mut self, root: &Path) {
        self.service = Some(root.to_owned());
    }

    /// The binary the agent runs (or ran last).
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// How often the agent exited cleanly and was started again as a service.
    pub fn service_restarts(&self) -> u32 {
        self.restarts
    }

    /// Sets `RUST_LOG` for the next start (`trace` logs everything).
    pub fn set_log_filter(&mut self, filter: &str) {
        filter.clone_into(&mut self.log_filter);
    }

    /// The agent's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// SIGKILLs the agent: no shutdown, no flush (a crash).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill()?;
        }
        Ok(())
    }

    /// Stops the agent with SIGTERM.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.terminate(STOP_GRACE)?;
        }
        Ok(())
    }

    /// Whether the agent process runs.
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|process| process.exit_status().is_none())
    }

    /// An error when the agent was started and has exited since.
    ///
    /// Run as a service ([`Agent::run_as_service`]), an agent that exited cleanly is started
    /// again instead.
    pub fn check_running(&mut self) -> Result<()> {
        let Some(process) = self.process.as_mut() else {
            return Ok(());
        };
        let exited_cleanly = process.exit_status().is_some_and(|status| status.success());
        match &self.service {
            Some(root) if exited_cleanly => {
                if let Some(binary) = carried_agent(root) {
                    self.binary = binary;
                }
                self.process = None;
                self.restarts += 1;
                self.start()
            }
            _ => process.check_running(),
        }
    }

    /// The agent's own view, from `fleetnode-agent status --json` (its admin socket).
    pub fn status(&self) -> Result<serde_json::Value> {
        let shown = "fleetnode-agent status --json".to_owned();
        let output = Command::new(&self.binary)
            .args(["status", "--json", "--config"])
            .arg(&self.config)
            .output()
            .map_err(HarnessError::io(format!("run `{shown}`")))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            return Err(HarnessError::Command {
                command: shown,
                status: output.status.to_string(),
                stdout,
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        serde_json::from_str(&stdout).map_err(|e| HarnessError::Unreadable {
            command: shown,
            message: e.to_string(),
            output: stdout,
        })
    }

    /// The agent's Prometheus metrics, from its loopback listener.
    pub fn metrics(&self) -> Result<String> {
        use std::io::{Read as _, Write as _};
        let what = format!("read the agent's metrics at {}", self.admin);
        let mut stream =
            std::net::TcpStream::connect(self.admin).map_err(HarnessError::io(what.clone()))?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .map_err(HarnessError::io(what.clone()))?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(HarnessError::io(what))?;
        Ok(answer)
    }

    /// The configuration file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The metrics listener's address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The agent's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The end of the agent's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }

    fn check_config(&self) -> Result<()> {
        let output = Command::new(&self.binary)
            .arg("check-config")
            .arg(&self.config)
            .output()
            .map_err(HarnessError::io("run `fleetnode-agent check-config`"))?;
        if output.status.success() {
            return Ok(());
        }
        Err(HarnessError::Command {
            command: format!("fleetnode-agent check-config {}", self.config.display()),
            status: output.status.to_string(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}

/// The agent binary the live generation of the fake root `root` carries
/// (`run/current-system/sw/bin/fleetnode-agent`), its links followed as the host sees them:
/// an absolute target is read under `root`.
fn carried_agent(root: &Path) -> Option<PathBuf> {
    let mut path = root.to_owned();
    for part in ["run", "current-system", "sw", "bin", "fleetnode-agent"] {
        path.push(part);
        // A generation's links are few and never loop; 8 is plenty.
        for _ in 0..8 {
            let Ok(target) = std::fs::read_link(&path) else {
                break;
            };
            path = if target.is_absolute() {
                root.join(target.strip_prefix("/").ok()?)
            } else {
                path.parent()?.join(target)
            };
        }
    }
    path.is_file().then_some(path)
}

/// The agent's TOML configuration for a host on `root`.
pub fn render_config(root: &FakeRoot, setup: &AgentSetup) -> Result<String> {
    let path = |p: &Path| Value::String(p.display().to_string());
    let text = |s: &str| Value::String(s.to_owned());
    let section = |entries: Vec<(&str, Value)>| {
        Value::Table(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect::<Table>(),
        )
    };
    let system = root.system_config();
    let timings = &setup.timings;
    let mut config = Table::new();
    let url = match setup.urls.as_slice() {
        [one] => text(one),
        many => Value::Array(many.iter().map(|url| text(url)).collect()),
    };
    config.insert("control_plane_url".into(), url);
    config.insert("host_id".into(), text(&setup.host));
    let mut tls = vec![("ca_file", path(&setup.ca_file))];
    match &setup.client_identity {
        Some((cert, key)) => {
            tls.push(("cert_file", path(cert)));
            tls.push(("key_file", path(key)));
        }
        None => {
            config.insert("token_file".into(), path(&setup.token_file));
        }
    }
    config.insert("state_dir".into(), path(&root.state_dir()));
    config.insert("log_format".into(), text("text"));
    config.insert("tls".into(), section(tls));
    config.insert(
        "activation".into(),
        section(vec![
            ("mode", text("test-then-commit")),
            ("timeout", text(&timings.activation_timeout)),
            ("rollback_timeout", text(&timings.activation_timeout)),
        ]),
    );
    config.insert(
        "health".into(),
        section(vec![
            ("soak", text(&timings.soak)),
            ("sustained_failure", text(&timings.sustained_failure)),
            ("on_failure", text("rollback")),
        ]),
    );
    config.insert(
        "heartbeat".into(),
        section(vec![("interval", text(&timings.heartbeat))]),
    );
    config.insert(
        "admin".into(),
        section(vec![
            ("listen", text(&setup.admin.to_string())),
            ("socket", path(&setup.socket)),
        ]),
    );
    config.insert(
        "system".into(),
        section(vec![
            ("root", path(&system.root)),
            ("profile", path(&system.profile)),
            ("nix_store", text(&system.nix_store)),
            ("nix_env", text(&system.nix_env)),
            ("systemd_run", text(&system.systemd_run)),
            ("systemctl", text(&system.systemctl)),
            (
                "require_signatures",
                Value::Boolean(system.require_signatures),
            ),
            (
                "trusted_public_keys",
                Value::Array(system.trusted_public_keys.iter().map(|k| text(k)).collect()),
            ),
        ]),
    );
    let probe = section(vec![
        ("kind", text("exec")),
        ("mode", text("enforce")),
        ("interval", text(&timings.probe_interval)),
        ("timeout", text("5s")),
        ("command", Value::Array(vec![path(&setup.probe)])),
    ]);
    config.insert("probes".into(), section(vec![(PROBE_NAME, probe)]));
    toml::to_string(&config).map_err(|e| HarnessError::Setup {
        what: "the agent's configuration".into(),
        message: e.to_string(),
    })
}
