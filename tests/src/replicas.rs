//! Several `fleetnode-cp serve` processes on one store (a redb file, or a PostgreSQL database
//! they all serve from), and one host whose agent lists their addresses in
//! `control_plane_url`.
//!
//! redb lets one process hold a store at a time, so of servers started on the same store the
//! first serves and the others stand by: they listen and answer every request 503 (with
//! `Retry-After`) until the store is free, then open it and serve. That is a real control plane
//! answering 503, and killing the serving one is a real failover: a standby takes the store
//! over within a second and serves the same fleet at its own address. A [`Address::Dead`]
//! entry is a loopback port nothing listens on.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use fleetnode_fixtures::fakeroot::FakeRoot;
use fleetnode_state_machine::{Revision, StorePath};
use fleetnode_wire::{DesiredChanged, HostDetail};

use crate::agent::{Agent, Timings, agent_setup};
use crate::binaries;
use crate::control_plane::{ControlPlane, Readiness, free_port};
use crate::harness::{DEFAULT_DEADLINE, Health, mark, server_files};
use crate::process::POLL;
use crate::{HarnessError, Result};

/// Log lines shown in a failure report.
const REPORT_LOG_LINES: usize = 30;

/// One entry of the agent's `control_plane_url` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Address {
    /// The server started `n`th (0 serves first, the others stand by).
    Server(usize),
    /// A loopback port nothing listens on.
    Dead,
}

/// Servers on one store, one registered host, and its agent on a fake root running
/// generation 1.
///
/// Fields drop in declaration order: the agent and the servers are killed before the fake root
/// kills its units and the directories are removed.
#[derive(Debug)]
pub struct Replicas {
    /// The agent process.
    pub agent: Agent,
    /// The servers, in the order started.
    pub servers: Vec<ControlPlane>,
    root: FakeRoot,
    work: tempfile::TempDir,
    host: String,
    urls: Vec<String>,
}

impl Replicas {
    /// Starts `servers` control planes on one store (the first serving, the others standing
    /// by), registers `web-01`, and starts its agent with the URLs of `order`; returns once the
    /// host reported in, idle.
    pub fn start(servers: usize, order: &[Address]) -> Result<Self> {
        Self::start_with(servers, order, None, &[])
    }

    /// Starts `servers` replicas on the PostgreSQL database at `url`, every one serving, with
    /// `extra_args` for each `serve`; registers `web-01` and starts its agent with the URLs of
    /// `order`.
    pub fn start_on_database(
        servers: usize,
        order: &[Address],
        url: &str,
        extra_args: &[&str],
    ) -> Result<Self> {
        Self::start_with(servers, order, Some(url), extra_args)
    }

    fn start_with(
        servers: usize,
        order: &[Address],
        database: Option<&str>,
        extra_args: &[&str],
    ) -> Result<Self> {
        let cp_binary = binaries::locate(binaries::CONTROL_PLANE)?;
        let agent_binary = binaries::locate(binaries::AGENT)?;
        let work = tempfile::Builder::new()
            .prefix("fleetnode-replicas-")
            .tempdir()
            .map_err(HarnessError::io("create a work directory"))?;
        let dir = work.path().to_owned();
        let root = FakeRoot::try_new().map_err(HarnessError::io("set up a fake NixOS root"))?;
        let initial = root.add_closure("nixos-system-web-01-gen-1");
        mark(&root, &initial, Health::Healthy)?;
        root.set_current(&initial);

        let timings = Timings::default();
        let files = server_files(&dir)?;
        let mut started = Vec::with_capacity(servers);
        for index in 0..servers {
            let mut files = files.clone();
            files.log = dir.join(format!("control-plane-{index}.log"));
            if let Some(url) = database {
                files.store = url.into();
            }
            let readiness = if index == 0 || database.is_some() {
                Readiness::Serving
            } else {
                Readiness::Listening
            };
            started.push(ControlPlane::start_with(
                cp_binary.clone(),
                files,
                &timings.heartbeat,
                "info",
                extra_args,
                readiness,
            )?);
        }
        let host = "web-01".to_owned();
        let token_file = dir.join("web-01.token");
        let token_arg = token_file.display().to_string();
        started
            .first()
            .ok_or_else(|| HarnessError::Setup {
                what: "the replicas".into(),
                message: "at least one server is needed".into(),
            })?
            .cli(&["add-host", &host, "--token-file", &token_arg])?;
        let mut setup = agent_setup(
            &started[0],
            &root,
            &host,
            token_file,
            dir.join("probe"),
            &timings,
        )?;
        setup.urls = order
            .iter()
            .map(|address| match address {
                Address::Server(n) => {
                    started
                        .get(*n)
                        .map(ControlPlane::url)
                        .ok_or_else(|| HarnessError::Setup {
                            what: "the agent's addresses".into(),
                            message: format!("there is no server {n}"),
                        })
                }
                Address::Dead => free_port().map(|port| format!("https://localhost:{port}")),
            })
            .collect::<Result<_>>()?;
        let agent = Agent::configure(
            agent_binary,
            &root,
            &setup,
            dir.join("agent.toml"),
            dir.join("agent.log"),
        )?;
        let mut replicas = Self {
            agent,
            servers: started,
            root,
            work,
            host,
            urls: setup.urls,
        };
        replicas.agent.start()?;
        replicas.wait_for("the agent to report in, idle", |detail| {
            detail.row.phase.name() == "idle"
                && detail.mirror.seq > 0
                && detail.last_heartbeat.is_some()
        })?;
        Ok(replicas)
    }

    /// The agent's `control_plane_url` list, in order.
    pub fn urls(&self) -> &[String] {
        &self.urls
    }

    /// The fake NixOS root the agent acts on.
    pub fn root(&self) -> &FakeRoot {
        &self.root
    }

    /// The work directory (certificates, tokens, store, configuration, logs).
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// Adds a closure to the fake store; `Health::Healthy` makes the probe pass while it runs.
    pub fn add_closure(&self, name: &str, health: Health) -> Result<StorePath> {
        let path = self.root.add_closure(name);
        mark(&self.root, &path, health)?;
        Ok(path)
    }

    /// `fleetnode-cp set-target <closure> --host web-01 <extra>` through the server that
    /// serves; returns the new revision.
    pub fn set_target(&mut self, closure: &StorePath, extra: &[&str]) -> Result<Revision> {
        let mut args = vec!["set-target", closure.as_str(), "--host", "web-01", "--json"];
        args.extend_from_slice(extra);
        let output = self.serving()?.cli(&args)?;
        let changed: DesiredChanged =
            serde_json::from_str(&output.stdout).map_err(|e| HarnessError::Unreadable {
                command: output.shown.clone(),
                message: e.to_string(),
                output: output.stdout.clone(),
            })?;
        changed
            .hosts
            .iter()
            .find(|entry| entry.host.as_str() == self.host)
            .map(|entry| entry.revision)
            .ok_or_else(|| HarnessError::Unexpected {
                what: format!("`{}` did not change host {}", output.shown, self.host),
                report: output.stdout,
            })
    }

    /// The host's detail from whichever server serves now.
    pub fn detail(&mut self) -> Result<HostDetail> {
        let host = self.host.clone();
        self.serving()?.cli_json(&["host", &host])
    }

    /// Polls the host's detail (from whichever server serves) until `done` holds; fails after
    /// the safety-net deadline, or at once when the agent died, with a report.
    pub fn wait_for(
        &mut self,
        what: &str,
        mut done: impl FnMut(&HostDetail) -> bool,
    ) -> Result<HostDetail> {
        let started = Instant::now();
        let mut last = String::from("(nothing read yet)");
        while started.elapsed() < DEFAULT_DEADLINE {
            self.agent.check_running()?;
            match self.detail() {
                Ok(detail) if done(&detail) => return Ok(detail),
                Ok(detail) => {
                    last = format!(
                        "phase {}, mirrored seq {}, handled {:?}",
                        detail.row.phase, detail.mirror.seq, detail.mirror.handled
                    );
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(POLL);
        }
        Err(self.timeout(what, &last))
    }

    /// Polls `rollout status ID` (from whichever server serves) until it shows `phase`;
    /// returns what it printed.
    pub fn wait_for_rollout(&mut self, id: u64, phase: &str) -> Result<String> {
        let started = Instant::now();
        let mut last = String::from("(nothing read yet)");
        let id = id.to_string();
        while started.elapsed() < DEFAULT_DEADLINE {
            self.agent.check_running()?;
            match self
                .serving()
                .and_then(|s| s.cli(&["rollout", "status", &id]))
            {
                Ok(output) if output.stdout.contains(phase) => return Ok(output.stdout),
                Ok(output) => last = output.stdout,
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(POLL);
        }
        Err(self.timeout(&format!("rollout {id} {phase}"), &last))
    }

    /// Polls the agent's own status (its admin socket) until `done` holds.
    pub fn wait_for_agent(
        &mut self,
        what: &str,
        mut done: impl FnMut(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let started = Instant::now();
        let mut last = String::from("(no answer yet)");
        while started.elapsed() < DEFAULT_DEADLINE {
            self.agent.check_running()?;
            match self.agent.status() {
                Ok(status) if done(&status) => return Ok(status),
                Ok(status) => last = format!("{status:#}"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(POLL);
        }
        Err(self.timeout(&format!("the agent: {what}"), &last))
    }

    /// The agent's log and every server's, for a failure message.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "agent log ({}):\n{}",
            self.agent.log().display(),
            self.agent.log_tail(REPORT_LOG_LINES)
        );
        for (index, server) in self.servers.iter().enumerate() {
            let _ = writeln!(
                out,
                "server {index} log ({}):\n{}",
                server.log().display(),
                server.log_tail(REPORT_LOG_LINES)
            );
        }
        out
    }

    /// The first running server whose operator command line answers.
    fn serving(&mut self) -> Result<&ControlPlane> {
        let mut errors = Vec::new();
        let mut found = None;
        for (index, server) in self.servers.iter_mut().enumerate() {
            if !server.is_running() {
                continue;
            }
            match server.cli(&["hosts"]) {
                Ok(_) => {
                    found = Some(index);
                    break;
                }
                Err(e) => errors.push(format!("server {index}: {e}")),
            }
        }
        match found {
            Some(index) => Ok(&self.servers[index]),
            None => Err(HarnessError::Unexpected {
                what: "no control plane serves".into(),
                report: errors.join("\n"),
            }),
        }
    }

    fn timeout(&self, what: &str, last: &str) -> HarnessError {
        HarnessError::Timeout {
            what: format!("{what} (host {}, {:?})", self.host, DEFAULT_DEADLINE),
            report: format!("last seen: {last}\n{}", self.report()),
        }
    }
}
