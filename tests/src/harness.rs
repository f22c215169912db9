//! One control plane, one host and its agent on a fake NixOS root, driven through the real
//! binaries.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetnode_fixtures::certs::TestCa;
use fleetnode_fixtures::fakeroot::FakeRoot;
use fleetnode_state_machine::{Revision, StorePath};
use fleetnode_wire::{DesiredChanged, HostDetail};

use crate::agent::{Agent, Timings, agent_setup};
use crate::binaries;
use crate::control_plane::{CliOutput, ControlPlane, ServerFiles};
use crate::narrate;
use crate::process::{POLL, write_file};
use crate::proxy::RefusingProxy;
use crate::{HarnessError, Result};

/// The safety net of every wait: far longer than any scenario needs, so a loaded machine never
/// fails a test, and a hung one still ends with a report.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(90);
/// Events shown in a failure report.
const REPORT_EVENTS: usize = 25;
/// Log lines shown in a failure report.
const REPORT_LOG_LINES: usize = 40;

/// Whether a closure's health probe passes while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// It carries the `healthy` marker the probe looks for.
    Healthy,
    /// It does not: the probe fails while it is live.
    Broken,
}

/// How to set a harness up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The host's id.
    pub host: String,
    /// Name of the closure the host runs at the start (generation 1).
    pub initial_closure: String,
    /// The agent's timings.
    pub timings: Timings,
    /// Keep the work directory (and the fake root) when the harness is dropped.
    pub keep: bool,
    /// Safety net of the waits.
    pub deadline: Duration,
    /// Put a proxy between the agent and the control plane that refuses every event batch
    /// holding a report of this type ([`RefusingProxy`]).
    pub refuse_report: Option<&'static str>,
    /// `RUST_LOG` of the control plane and the agent.
    pub log_filter: String,
    /// The agent binary to run instead of the tree's (an older release's, for instance).
    pub agent_binary: Option<PathBuf>,
    /// The control plane binary to run (and whose CLI to use) instead of the tree's.
    pub control_plane_binary: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            host: "web-01".into(),
            initial_closure: "nixos-system-web-01-gen-1".into(),
            timings: Timings::default(),
            keep: false,
            deadline: DEFAULT_DEADLINE,
            refuse_report: None,
            log_filter: "info".into(),
            agent_binary: None,
            control_plane_binary: None,
        }
    }
}

/// A control plane, one registered host, and its agent on a fake root running generation 1.
///
/// Fields drop in declaration order: the agent and the control plane are killed before the fake
/// root kills its units and the directories are removed.
#[derive(Debug)]
pub struct Harness {
    /// The agent process.
    pub agent: Agent,
    /// The proxy the agent talks through, when asked for.
    _proxy: Option<RefusingProxy>,
    /// The control plane process.
    pub cp: ControlPlane,
    root: FakeRoot,
    work: tempfile::TempDir,
    host: String,
    initial: StorePath,
    deadline: Duration,
    setup: Vec<String>,
}

impl Harness {
    /// Sets everything up with [`Options::default`] and starts both processes.
    pub fn start() -> Result<Self> {
        Self::start_with(Options::default())
    }

    /// Sets everything up and starts the control plane and the agent; returns once the host
    /// reported in and rests, idle, on generation 1.
    pub fn start_with(options: Options) -> Result<Self> {
        let cp_binary = binaries::explicit_or_located(
            options.control_plane_binary.clone(),
            binaries::CONTROL_PLANE,
        )?;
        let agent_binary =
            binaries::explicit_or_located(options.agent_binary.clone(), binaries::AGENT)?;
        let mut work = tempfile::Builder::new()
            .prefix("fleetnode-e2e-")
            .tempdir()
            .map_err(HarnessError::io("create a work directory"))?;
        work.disable_cleanup(options.keep);
        let dir = work.path().to_owned();
        let root = FakeRoot::try_new().map_err(HarnessError::io("set up a fake NixOS root"))?;
        let initial = root.add_closure(&options.initial_closure);
        mark(&root, &initial, Health::Healthy)?;
        root.set_current(&initial);

        let files = server_files(&dir)?;
        let cp = ControlPlane::start_logging(
            cp_binary,
            files,
            &options.timings.heartbeat,
            &options.log_filter,
        )?;
        let token_file = dir.join(format!("{}.token", options.host));
        let added = cp.cli(&[
            "add-host",
            &options.host,
            "--token-file",
            &token_file.display().to_string(),
        ])?;
        let probe = dir.join("probe-generation-healthy");
        let mut setup = agent_setup(
            &cp,
            &root,
            &options.host,
            token_file,
            probe,
            &options.timings,
        )?;
        let proxy = match options.refuse_report {
            Some(report) => {
                let proxy = RefusingProxy::start(&cp, report)?;
                setup.urls = vec![proxy.url()];
                Some(proxy)
            }
            None => None,
        };
        let mut agent = Agent::configure(
            agent_binary,
            &root,
            &setup,
            dir.join("agent.toml"),
            dir.join("agent.log"),
        )?;
        agent.set_log_filter(&options.log_filter);
        let setup = vec![
            cp.shown_serve(),
            added.shown,
            format!("fleetnode-agent run --config {}", agent.config().display()),
        ];
        let mut harness = Self {
            agent,
            _proxy: proxy,
            cp,
            root,
            work,
            host: options.host,
            initial,
            deadline: options.deadline,
            setup,
        };
        harness.agent.start()?;
        harness.wait_for("the agent to report in, idle", |detail| {
            detail.row.phase.name() == "idle"
                && detail.mirror.seq > 0
                && detail.last_heartbeat.is_some()
        })?;
        Ok(harness)
    }

    /// The host's id.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The fake NixOS root the agent acts on.
    pub fn root(&self) -> &FakeRoot {
        &self.root
    }

    /// Generation 1: what the host ran, committed, when the agent first started.
    pub fn initial(&self) -> &StorePath {
        &self.initial
    }

    /// The work directory (certificates, tokens, store, configuration, logs).
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// The commands the set-up ran, as an operator would type them: the server, the host's
    /// registration, the agent.
    pub fn setup_commands(&self) -> &[String] {
        &self.setup
    }

    /// Adds a closure to the fake store; `Health::Healthy` makes the probe pass while it runs.
    pub fn add_closure(&self, name: &str, health: Health) -> Result<StorePath> {
        let path = self.root.add_closure(name);
        mark(&self.root, &path, health)?;
        Ok(path)
    }

    /// Runs `fleetnode-cp <args>` against the control plane.
    pub fn cp(&self, args: &[&str]) -> Result<CliOutput> {
        self.cp.cli(args)
    }

    /// `fleetnode-cp set-target <closure> --host <host> <extra>`; returns the new revision.
    pub fn set_target(&self, closure: &StorePath, extra: &[&str]) -> Result<Revision> {
        let mut args = vec!["set-target", closure.as_str(), "--host", &self.host];
        args.extend_from_slice(extra);
        self.revision_of(&args)
    }

    /// `fleetnode-cp rollback <host>`; returns the new revision.
    pub fn rollback(&self) -> Result<Revision> {
        self.revision_of(&["rollback", &self.host])
    }

    /// `fleetnode-cp pause <host>`; returns the new revision.
    pub fn pause(&self) -> Result<Revision> {
        self.revision_of(&["pause", &self.host])
    }

    /// `fleetnode-cp resume <host>`; returns the new revision.
    pub fn resume(&self) -> Result<Revision> {
        self.revision_of(&["resume", &self.host])
    }

    /// `fleetnode-cp host <host> --json`.
    pub fn detail(&self) -> Result<HostDetail> {
        self.cp.cli_json(&["host", &self.host])
    }

    /// Polls the host's detail until `done` holds; fails after the deadline, or at once when the
    /// agent process died, with a report of the last state and both logs.
    pub fn wait_for(
        &mut self,
        what: &str,
        mut done: impl FnMut(&HostDetail) -> bool,
    ) -> Result<HostDetail> {
        let started = Instant::now();
        let mut last: Option<HostDetail> = None;
        let mut last_error = None;
        while started.elapsed() < self.deadline {
            self.agent.check_running()?;
            match self.detail() {
                Ok(detail) if done(&detail) => return Ok(detail),
                Ok(detail) => last = Some(detail),
                Err(e) => last_error = Some(e.to_string()),
            }
            std::thread::sleep(POLL);
        }
        let mut report = String::new();
        if let Some(error) = last_error {
            let _ = writeln!(report, "last error: {error}");
        }
        report.push_str(&self.report(last.as_ref()));
        Err(HarnessError::Timeout {
            what: format!("{what} (host {}, {:?})", self.host, self.deadline),
            report,
        })
    }

    /// Waits until the mirror shows `phase`.
    pub fn wait_for_phase(&mut self, phase: &str) -> Result<HostDetail> {
        self.wait_for(&format!("phase {phase}"), |detail| {
            detail.row.phase.name() == phase
        })
    }

    /// Waits until the host acted on directive `revision` and came to rest; fails when it
    /// rests in another phase than `phase`.
    pub fn wait_settled(&mut self, revision: Revision, phase: &str) -> Result<HostDetail> {
        let detail = self.wait_for(&format!("{revision} handled, at rest"), |detail| {
            detail.mirror.handled == Some(revision) && detail.mirror.phase.is_at_rest()
        })?;
        if detail.row.phase.name() != phase {
            return Err(HarnessError::Unexpected {
                what: format!(
                    "host {} came to rest {} after {revision}, expected {phase}",
                    self.host, detail.row.phase
                ),
                report: self.report(Some(&detail)),
            });
        }
        Ok(detail)
    }

    /// Polls the agent's own status (its admin socket, so this works while the control plane
    /// is down) until `done` holds; fails like [`Harness::wait_for`].
    pub fn wait_for_agent(
        &mut self,
        what: &str,
        mut done: impl FnMut(&serde_json::Value) -> bool,
    ) -> Result<serde_json::Value> {
        let started = Instant::now();
        let mut last = String::from("(no answer yet)");
        while started.elapsed() < self.deadline {
            self.agent.check_running()?;
            match self.agent.status() {
                Ok(status) if done(&status) => return Ok(status),
                Ok(status) => last = format!("{status:#}"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(POLL);
        }
        Err(HarnessError::Timeout {
            what: format!(
                "the agent: {what} (host {}, {:?})",
                self.host, self.deadline
            ),
            report: format!("last agent status: {last}\n{}", self.report(None)),
        })
    }

    /// The agent process.
    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    /// The control plane process.
    pub fn control_plane(&self) -> &ControlPlane {
        &self.cp
    }

    /// The agent's own status (`fleetnode-agent status --json`).
    pub fn agent_status(&self) -> Result<serde_json::Value> {
        self.agent.status()
    }

    /// A report for a failure: the last state seen, the latest events, and both logs' tails.
    pub fn report(&self, last: Option<&HostDetail>) -> String {
        let mut out = String::new();
        match last {
            Some(detail) => {
                let _ = writeln!(
                    out,
                    "last state: phase {}, current {}, target {}, desired {}, handled {:?}, \
                     mirrored seq {}, diverged {:?}",
                    detail.row.phase,
                    narrate::short_or_none(detail.row.current.as_ref()),
                    narrate::short_or_none(detail.row.target.as_ref()),
                    detail.desired.revision,
                    detail.mirror.handled,
                    detail.mirror.seq,
                    detail.divergence,
                );
                let skip = detail.recent_events.len().saturating_sub(REPORT_EVENTS);
                for event in &detail.recent_events[skip..] {
                    let _ = writeln!(out, "  {}", narrate::describe(event));
                }
            }
            None => out.push_str("no state was read from the control plane\n"),
        }
        let _ = writeln!(
            out,
            "agent log ({}), last lines:\n{}",
            self.agent.log().display(),
            self.agent.log_tail(REPORT_LOG_LINES)
        );
        let _ = writeln!(
            out,
            "control plane log ({}), last lines:\n{}",
            self.cp.log().display(),
            self.cp.log_tail(REPORT_LOG_LINES)
        );
        let _ = write!(
            out,
            "fake root: {} (commands: {}/fake/command-log)",
            self.root.root().display(),
            self.root.root().display()
        );
        out
    }

    /// Gives up ownership of the directories: they are left on disk for a human to read.
    /// Returns the work directory and the fake root.
    pub fn keep_files(self) -> (PathBuf, PathBuf) {
        let Self {
            mut agent,
            mut cp,
            root,
            work,
            ..
        } = self;
        let _ = agent.stop();
        let _ = cp.stop();
        let root_path = root.root().to_owned();
        // The fake root removes its directory on drop and offers no way to keep it; forgetting
        // it keeps the files (its transient units have all ended once the agent is at rest).
        std::mem::forget(root);
        (work.keep(), root_path)
    }

    fn revision_of(&self, args: &[&str]) -> Result<Revision> {
        let changed: DesiredChanged = self.cp.cli_json(args)?;
        changed
            .hosts
            .iter()
            .find(|entry| entry.host.as_str() == self.host)
            .map(|entry| entry.revision)
            .ok_or_else(|| HarnessError::Unexpected {
                what: format!(
                    "`fleetnode-cp {}` did not change host {}: {changed:?}",
                    args.join(" "),
                    self.host
                ),
                report: String::new(),
            })
    }
}

/// Writes the PKI, the admin token, and names the store and log of a control plane in `dir`.
pub fn server_files(dir: &Path) -> Result<ServerFiles> {
    let pki = dir.join("pki");
    std::fs::create_dir_all(&pki).map_err(HarnessError::io(format!("create {}", pki.display())))?;
    let certs = || -> std::result::Result<_, fleetnode_fixtures::certs::CertError> {
        let ca = TestCa::new("fleetnode end-to-end CA")?;
        let ca_file = ca.write(&pki)?;
        let server = ca.server()?.write(&pki, "server")?;
        Ok((ca_file, server))
    };
    let (ca, server) = certs().map_err(|e| HarnessError::Setup {
        what: "the test certificates".into(),
        message: e.to_string(),
    })?;
    let admin_token = dir.join("admin-token");
    write_file(&admin_token, &random_token()?, 0o600)?;
    Ok(ServerFiles {
        cert: server.cert,
        key: server.key,
        ca,
        admin_token,
        store: dir.join("fleetnode-cp.redb"),
        log: dir.join("control-plane.log"),
    })
}

fn random_token() -> Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| HarnessError::Setup {
        what: "the admin token".into(),
        message: e.to_string(),
    })?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Marks a closure healthy (a `healthy` file in it) or not.
pub(crate) fn mark(root: &FakeRoot, closure: &StorePath, health: Health) -> Result<()> {
    let marker = root.host_path(closure.as_str()).join("healthy");
    match health {
        Health::Healthy => write_file(&marker, "", 0o644),
        Health::Broken => match std::fs::remove_file(&marker) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(HarnessError::Io {
                what: format!("remove {}", marker.display()),
                source: e,
            }),
            Ok(()) | Err(_) => Ok(()),
        },
    }
}

/// The exec probe: passes when the live generation of the fake root carries the `healthy`
/// marker. `/run/current-system` points at an absolute `/nix/store` path, which lives under the
/// fake root, so the link is resolved by hand.
pub(crate) fn probe_script(root: &Path) -> Result<String> {
    let root = root.display().to_string();
    if root.contains('\'') {
        return Err(HarnessError::Setup {
            what: "the health probe".into(),
            message: format!("the fake root's path {root:?} contains a quote"),
        });
    }
    Ok(format!(
        "#!/bin/sh\n\
         # Generated by fleetnode-tests: the health probe of the fake host.\n\
         root='{root}'\n\
         live=$(readlink \"$root/run/current-system\") || {{ echo 'no current system'; exit 1; }}\n\
         if [ -e \"$root$live/healthy\" ]; then echo \"$live is healthy\"; exit 0; fi\n\
         echo \"$live is not healthy\"\n\
         exit 1\n"
    ))
}
