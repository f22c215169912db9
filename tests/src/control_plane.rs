//! `fleetnode-cp serve` as a child process over real TLS, and its operator command line.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::process::{POLL, Process, log_tail};
use crate::{HarnessError, Result};

/// How long the server may take to answer after it was started.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// How long SIGTERM may take to stop the server (it waits up to 10 s for requests in flight).
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How many free ports are tried when another process takes the one picked.
const PORT_ATTEMPTS: usize = 5;

/// The files a control plane needs.
#[derive(Debug, Clone)]
pub struct ServerFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
    /// The CA that signed it (PEM): what clients trust.
    pub ca: PathBuf,
    /// The operators' admin token.
    pub admin_token: PathBuf,
    /// The store: a redb file, or a PostgreSQL URL (passed to `--store` as it is).
    pub store: PathBuf,
    /// Where its output goes.
    pub log: PathBuf,
}

/// What a command-line invocation printed.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The command as an operator would type it (without the connection options).
    pub shown: String,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// What a start waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// The server answers operators: it listens and its store is open.
    Serving,
    /// The server accepts connections; its store may still be held by another process (it
    /// then answers 503 until it gets the store).
    Listening,
}

/// A `fleetnode-cp serve` process and the means to talk to it.
#[derive(Debug)]
pub struct ControlPlane {
    binary: PathBuf,
    files: ServerFiles,
    heartbeat_interval: String,
    log_filter: String,
    extra_args: Vec<String>,
    readiness: Readiness,
    port: u16,
    process: Option<Process>,
}

impl ControlPlane {
    /// Starts a server on a free loopback port and waits until it answers operators.
    pub fn start(binary: PathBuf, files: ServerFiles, heartbeat_interval: &str) -> Result<Self> {
        Self::start_logging(binary, files, heartbeat_interval, "info")
    }

    /// [`ControlPlane::start`] with `RUST_LOG` set to `log_filter` (`trace` logs everything).
    pub fn start_logging(
        binary: PathBuf,
        files: ServerFiles,
        heartbeat_interval: &str,
        log_filter: &str,
    ) -> Result<Self> {
        Self::start_with(
            binary,
            files,
            heartbeat_interval,
            log_filter,
            &[],
            Readiness::Serving,
        )
    }

    /// [`ControlPlane::start_logging`] with `extra_args` after the harness's own `serve`
    /// options, waiting for `readiness`.
    pub fn start_with(
        binary: PathBuf,
        files: ServerFiles,
        heartbeat_interval: &str,
        log_filter: &str,
        extra_args: &[&str],
        readiness: Readiness,
    ) -> Result<Self> {
        let mut server = Self {
            binary,
            files,
            heartbeat_interval: heartbeat_interval.to_owned(),
            log_filter: log_filter.to_owned(),
            extra_args: extra_args.iter().map(|arg| (*arg).to_owned()).collect(),
            readiness,
            port: 0,
            process: None,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = free_port()?;
            match server.start_again() {
                Ok(()) => return Ok(server),
                // Another process may have taken the port between picking and binding it.
                Err(HarnessError::Exited { tail, .. })
                    if attempt < PORT_ATTEMPTS && tail.contains("in use") =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// A control plane of its own in `dir` (certificates, admin token, store, log), with no
    /// host registered: for tests that speak HTTP to it themselves.
    pub fn start_alone(binary: PathBuf, dir: &Path) -> Result<Self> {
        let files = crate::harness::server_files(dir)?;
        Self::start(binary, files, "30s")
    }

    /// An HTTPS client that trusts this server's certificate authority.
    pub fn https_client(&self) -> Result<reqwest::Client> {
        let setup = |message: String| HarnessError::Setup {
            what: "an HTTPS client of the control plane".into(),
            message,
        };
        let roots = fleetnode_tls::read_roots(&self.files.ca).map_err(|e| setup(e.to_string()))?;
        let tls = rustls::ClientConfig::builder_with_provider(fleetnode_tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| setup(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| setup(e.to_string()))
    }

    /// The admin token operators authenticate with.
    pub fn admin_token(&self) -> Result<String> {
        let file = &self.files.admin_token;
        std::fs::read_to_string(file)
            .map(|token| token.trim().to_owned())
            .map_err(HarnessError::io(format!("read {}", file.display())))
    }

    /// The URL agents and operators use.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The server's port on loopback.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// The server's files.
    pub fn files(&self) -> &ServerFiles {
        &self.files
    }

    /// Whether the server process runs.
    pub fn is_running(&mut self) -> bool {
        self.process
            .as_mut()
            .is_some_and(|process| process.exit_status().is_none())
    }

    /// From the next start on, runs (and uses the command line of) `binary`: the control plane
    /// upgraded (or downgraded) in place, on the same port and store.
    pub fn replace_binary(&mut self, binary: PathBuf) {
        self.binary = binary;
    }

    /// Starts the server again on the same port and store, and waits until it answers.
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            return Ok(());
        }
        let mut command = Command::new(&self.binary);
        command
            .arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--tls-cert")
            .arg(&self.files.cert)
            .arg("--tls-key")
            .arg(&self.files.key)
            .arg("--admin-token-file")
            .arg(&self.files.admin_token)
            .arg("--store")
            .arg(&self.files.store)
            .arg("--heartbeat-interval")
            .arg(&self.heartbeat_interval)
            .args(&self.extra_args)
            .env("RUST_LOG", &self.log_filter);
        let what = format!("fleetnode-cp serve on port {}", self.port);
        self.process = Some(Process::spawn(&what, command, &self.files.log)?);
        match self.readiness {
            Readiness::Serving => self.wait_ready(),
            Readiness::Listening => self.wait_listening(),
        }
    }

    /// The server's command line, as an operator would type it.
    pub fn shown_serve(&self) -> String {
        format!(
            "fleetnode-cp serve --listen 127.0.0.1:{} --tls-cert {} --tls-key {} \
             --admin-token-file {} --store {} --heartbeat-interval {}",
            self.port,
            self.files.cert.display(),
            self.files.key.display(),
            self.files.admin_token.display(),
            self.files.store.display(),
            self.heartbeat_interval
        )
    }

    /// The connection options every client command gets.
    pub fn shown_connection(&self) -> String {
        format!(
            "--url {} --ca-file {} --admin-token-file {}",
            self.url(),
            self.files.ca.display(),
            self.files.admin_token.display()
        )
    }

    /// Stops the server with SIGTERM (as systemd does) and waits for it to exit.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.terminate(STOP_GRACE)?;
        }
        Ok(())
    }

    /// SIGKILLs the server: no shutdown, no answer to anything in flight (a crashed machine).
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.kill()?;
        }
        Ok(())
    }

    /// `fleetnode-cp <args>` with the connection options for this server, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.binary);
        command
            .args(args)
            .arg("--url")
            .arg(self.url())
            .arg("--ca-file")
            .arg(&self.files.ca)
            .arg("--admin-token-file")
            .arg(&self.files.admin_token);
        command
    }

    /// Runs `fleetnode-cp <args>` against this server; fails when it exits non-zero.
    pub fn cli(&self, args: &[&str]) -> Result<CliOutput> {
        let shown = format!("fleetnode-cp {}", args.join(" "));
        let output = self
            .command(args)
            .output()
            .map_err(HarnessError::io(format!("run `{shown}`")))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        if !output.status.success() {
            return Err(HarnessError::Command {
                command: shown,
                status: output.status.to_string(),
                stdout,
                stderr,
            });
        }
        Ok(CliOutput {
            shown,
            stdout,
            stderr,
        })
    }

    /// Runs `fleetnode-cp <args> --json` and parses what it prints.
    pub fn cli_json<T: DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let output = self.cli(&with_json)?;
        serde_json::from_str(&output.stdout).map_err(|e| HarnessError::Unreadable {
            command: output.shown,
            message: e.to_string(),
            output: output.stdout,
        })
    }

    /// The end of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.files.log, lines)
    }

    /// The server's log file.
    pub fn log(&self) -> &Path {
        &self.files.log
    }

    /// Waits until `fleetnode-cp hosts` succeeds: the server listens and its store is open.
    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut last_error = String::new();
        while started.elapsed() < READY_DEADLINE {
            if let Some(process) = self.process.as_mut() {
                process.check_running()?;
            }
            match self.cli(&["hosts"]) {
                Ok(_) => return Ok(()),
                Err(e) => last_error = e.to_string(),
            }
            std::thread::sleep(POLL);
        }
        Err(HarnessError::Timeout {
            what: format!("the control plane at {} to answer", self.url()),
            report: format!(
                "last answer: {last_error}\ncontrol plane log ({}):\n{}",
                self.files.log.display(),
                self.log_tail(30)
            ),
        })
    }
}

impl ControlPlane {
    /// Waits until the server accepts TCP connections on its port.
    fn wait_listening(&mut self) -> Result<()> {
        let started = Instant::now();
        let mut last_error = String::new();
        while started.elapsed() < READY_DEADLINE {
            if let Some(process) = self.process.as_mut() {
                process.check_running()?;
            }
            match std::net::TcpStream::connect(("127.0.0.1", self.port)) {
                Ok(_) => return Ok(()),
                Err(e) => last_error = e.to_string(),
            }
            std::thread::sleep(POLL);
        }
        Err(HarnessError::Timeout {
            what: format!("the control plane at {} to listen", self.url()),
            report: format!(
                "last error: {last_error}\ncontrol plane log ({}):\n{}",
                self.files.log.display(),
                self.log_tail(30)
            ),
        })
    }
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> Result<u16> {
    let listener =
        TcpListener::bind(("127.0.0.1", 0)).map_err(HarnessError::io("find a free port"))?;
    let address = listener
        .local_addr()
        .map_err(HarnessError::io("find a free port"))?;
    Ok(address.port())
}
