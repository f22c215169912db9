//! A fleet: one control plane and several hosts, each a real agent on its own fake NixOS root,
//! for rollouts end to end. Like [`crate::Harness`], everything is driven through the real
//! binaries, every wait has a deadline that is only a safety net, and every child process is
//! killed when its handle is dropped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fleetnode_fixtures::fakeroot::FakeRoot;
use fleetnode_state_machine::{PhaseKind, StorePath};
use fleetnode_wire::{HostDetail, RolloutId, RolloutStatus};

use crate::agent::{Agent, Timings, agent_setup};
use crate::binaries;
use crate::control_plane::{CliOutput, ControlPlane};
use crate::harness::{DEFAULT_DEADLINE, Health, mark, server_files};
use crate::process::POLL;
use crate::release::{Release, Shape};
use crate::{HarnessError, Result};

/// Log lines of each process shown in a failure report.
const REPORT_LOG_LINES: usize = 12;

/// One host of a fleet to set up.
#[derive(Debug, Clone)]
pub struct HostSpec {
    /// Its id.
    pub id: String,
    /// Its tags.
    pub tags: Vec<String>,
}

/// How to set a fleet up.
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// The hosts.
    pub hosts: Vec<HostSpec>,
    /// Every agent's timings.
    pub timings: Timings,
    /// Keep the work directory and the fake roots when the fleet is dropped.
    pub keep: bool,
    /// Safety net of the waits.
    pub deadline: Duration,
    /// The agent binary every host starts with, instead of the tree's (an older release's).
    pub agent_binary: Option<PathBuf>,
    /// Run every agent as its systemd service would run ([`Agent::run_as_service`]): it
    /// restarts into the agent a committed generation carries.
    pub agents_as_services: bool,
}

impl FleetOptions {
    /// `count` hosts `web-01`, `web-02`, …; the first `canaries` tagged `canary`.
    pub fn hosts(count: usize, canaries: usize) -> Self {
        let hosts = (1..=count)
            .map(|n| HostSpec {
                id: format!("web-{n:02}"),
                tags: if n <= canaries {
                    vec!["canary".to_owned()]
                } else {
                    Vec::new()
                },
            })
            .collect();
        Self {
            hosts,
            timings: Timings {
                soak: "2s".into(),
                ..Timings::default()
            },
            keep: false,
            deadline: DEFAULT_DEADLINE,
            agent_binary: None,
            agents_as_services: false,
        }
    }
}

/// One host of the fleet: its agent and its fake root. The agent drops first.
#[derive(Debug)]
pub struct Member {
    /// The agent process.
    pub agent: Agent,
    root: FakeRoot,
    id: String,
    initial: StorePath,
}

impl Member {
    /// The host's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Its fake NixOS root.
    pub fn root(&self) -> &FakeRoot {
        &self.root
    }

    /// What it ran, committed, when its agent first started.
    pub fn initial(&self) -> &StorePath {
        &self.initial
    }
}

/// A control plane and its hosts.
#[derive(Debug)]
pub struct Fleet {
    /// The hosts, by id order.
    pub members: Vec<Member>,
    /// The control plane.
    pub cp: ControlPlane,
    work: tempfile::TempDir,
    deadline: Duration,
    setup: Vec<String>,
}

impl Fleet {
    /// Starts the control plane and every agent; returns once every host reported in, idle.
    pub fn start(options: FleetOptions) -> Result<Self> {
        let cp_binary = binaries::locate(binaries::CONTROL_PLANE)?;
        let agent_binary =
            binaries::explicit_or_located(options.agent_binary.clone(), binaries::AGENT)?;
        let mut work = tempfile::Builder::new()
            .prefix("fleetnode-fleet-")
            .tempdir()
            .map_err(HarnessError::io("create a work directory"))?;
        work.disable_cleanup(options.keep);
        let dir = work.path().to_owned();
        let cp = ControlPlane::start(cp_binary, server_files(&dir)?, &options.timings.heartbeat)?;
        let mut setup = vec![cp.shown_serve()];
        let mut members = Vec::with_capacity(options.hosts.len());
        for spec in &options.hosts {
            let (member, shown) = Self::member(&cp, &agent_binary, &dir, spec, &options)?;
            setup.extend(shown);
            members.push(member);
        }
        let mut fleet = Self {
            members,
            cp,
            work,
            deadline: options.deadline,
            setup,
        };
        for member in &mut fleet.members {
            member.agent.start()?;
        }
        for id in fleet.ids() {
            fleet.wait_for_host(&id, "to report in, idle", |detail| {
                detail.row.phase == PhaseKind::Idle
                    && detail.mirror.seq > 0
                    && detail.last_heartbeat.is_some()
            })?;
        }
        Ok(fleet)
    }

    /// Registers one host and configures its agent on a new fake root running generation 1.
    fn member(
        cp: &ControlPlane,
        agent_binary: &Path,
        dir: &Path,
        spec: &HostSpec,
        options: &FleetOptions,
    ) -> Result<(Member, Vec<String>)> {
        let root = FakeRoot::try_new().map_err(HarnessError::io("set up a fake NixOS root"))?;
        let initial = root.add_closure(&format!("nixos-system-{}-gen-1", spec.id));
        mark(&root, &initial, Health::Healthy)?;
        root.set_current(&initial);
        let token_file = dir.join(format!("{}.token", spec.id));
        let mut args = vec!["add-host".to_owned(), spec.id.clone()];
        for tag in &spec.tags {
            args.extend(["--tag".to_owned(), tag.clone()]);
        }
        args.extend(["--token-file".to_owned(), token_file.display().to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let added = cp.cli(&args)?;
        let probe = dir.join(format!("{}-probe", spec.id));
        let setup = agent_setup(cp, &root, &spec.id, token_file, probe, &options.timings)?;
        let mut agent = Agent::configure(
            agent_binary.to_owned(),
            &root,
            &setup,
            dir.join(format!("{}.toml", spec.id)),
            dir.join(format!("{}.log", spec.id)),
        )?;
        if options.agents_as_services {
            agent.run_as_service(root.root());
        }
        let shown = vec![
            added.shown,
            format!("fleetnode-agent run --config {}", agent.config().display()),
        ];
        let member = Member {
            agent,
            root,
            id: spec.id.clone(),
            initial,
        };
        Ok((member, shown))
    }

    /// Every host's id, in order.
    pub fn ids(&self) -> Vec<String> {
        self.members.iter().map(|m| m.id.clone()).collect()
    }

    /// The host `id`.
    pub fn host(&self, id: &str) -> Result<&Member> {
        self.members
            .iter()
            .find(|m| m.id == id)
            .ok_or_else(|| no_such_host(id))
    }

    /// The host `id`, to start or stop its agent.
    pub fn host_mut(&mut self, id: &str) -> Result<&mut Member> {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .ok_or_else(|| no_such_host(id))
    }

    /// The work directory (certificates, tokens, store, manifests, configurations, logs).
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// The set-up commands as an operator would type them.
    pub fn setup_commands(&self) -> &[String] {
        &self.setup
    }

    /// Adds a closure `nixos-system-<host>-<generation>` to every host's store; the hosts in
    /// `broken` get one whose health probe fails.
    pub fn release(&self, generation: &str, broken: &[&str]) -> Result<Release> {
        let mut closures = BTreeMap::new();
        for member in &self.members {
            let path = member
                .root
                .add_closure(&format!("nixos-system-{}-{generation}", member.id));
            let health = if broken.contains(&member.id.as_str()) {
                Health::Broken
            } else {
                Health::Healthy
            };
            mark(&member.root, &path, health)?;
            closures.insert(member.id.clone(), path);
        }
        Ok(Release { closures })
    }

    /// Writes a release manifest as CI would, in the work directory.
    pub fn write_manifest(&self, release: &Release, name: &str, shape: Shape) -> Result<PathBuf> {
        release.write(&self.work.path().join(format!("{name}.json")), shape)
    }

    /// Runs `fleetnode-cp <args>`.
    pub fn cp(&self, args: &[&str]) -> Result<CliOutput> {
        self.cp.cli(args)
    }

    /// `fleetnode-cp rollout start <manifest> <extra> --json`.
    pub fn start_rollout(&self, manifest: &Path, extra: &[&str]) -> Result<RolloutStatus> {
        let manifest = manifest.display().to_string();
        let mut args = vec!["rollout", "start", manifest.as_str()];
        args.extend_from_slice(extra);
        self.cp.cli_json(&args)
    }

    /// `fleetnode-cp rollout status <id> --json`.
    pub fn rollout(&self, id: RolloutId) -> Result<RolloutStatus> {
        self.cp.cli_json(&["rollout", "status", &id.to_string()])
    }

    /// `fleetnode-cp host <id> --json`.
    pub fn detail(&self, host: &str) -> Result<HostDetail> {
        self.cp.cli_json(&["host", host])
    }

    /// Polls the rollout until `done` holds; fails after the deadline, or when an agent that
    /// should run died, with a report.
    pub fn wait_rollout(
        &mut self,
        id: RolloutId,
        what: &str,
        mut done: impl FnMut(&RolloutStatus) -> bool,
    ) -> Result<RolloutStatus> {
        let started = Instant::now();
        let mut last = None;
        let mut last_error = None;
        while started.elapsed() < self.deadline {
            for member in &mut self.members {
                member.agent.check_running()?;
            }
            match self.rollout(id) {
                Ok(status) if done(&status) => return Ok(status),
                Ok(status) => last = Some(status),
                Err(e) => last_error = Some(e.to_string()),
            }
            std::thread::sleep(POLL);
        }
        let mut report = last_error.map_or_else(String::new, |e| format!("last error: {e}\n"));
        report.push_str(&self.report(last.map(|s| s.rollout.id)));
        Err(HarnessError::Timeout {
            what: format!("rollout {id}: {what} ({:?})", self.deadline),
            report,
        })
    }

    /// Polls one host's detail until `done` holds.
    pub fn wait_for_host(
        &mut self,
        host: &str,
        what: &str,
        mut done: impl FnMut(&HostDetail) -> bool,
    ) -> Result<HostDetail> {
        let started = Instant::now();
        let mut last_error = None;
        while started.elapsed() < self.deadline {
            self.host_mut(host)?.agent.check_running()?;
            match self.detail(host) {
                Ok(detail) if done(&detail) => return Ok(detail),
                Ok(_) => {}
                Err(e) => last_error = Some(e.to_string()),
            }
            std::thread::sleep(POLL);
        }
        let mut report = last_error.map_or_else(String::new, |e| format!("last error: {e}\n"));
        report.push_str(&self.report(None));
        Err(HarnessError::Timeout {
            what: format!("host {host} {what} ({:?})", self.deadline),
            report,
        })
    }

    /// A failure report: the rollout as `fleetnode-cp rollout status` shows it, and the end of
    /// every log.
    pub fn report(&self, rollout: Option<RolloutId>) -> String {
        let mut out = String::new();
        if let Some(id) = rollout {
            match self.cp(&["rollout", "status", &id.to_string()]) {
                Ok(output) => out.push_str(&output.stdout),
                Err(e) => {
                    let _ = writeln!(out, "(rollout {id} unreadable: {e})");
                }
            }
        }
        for member in &self.members {
            let _ = writeln!(
                out,
                "{} agent log ({}), last lines:\n{}",
                member.id,
                member.agent.log().display(),
                member.agent.log_tail(REPORT_LOG_LINES)
            );
        }
        let _ = writeln!(
            out,
            "control plane log ({}), last lines:\n{}",
            self.cp.log().display(),
            self.cp.log_tail(REPORT_LOG_LINES * 2)
        );
        out
    }

    /// Gives up ownership of the directories: they stay on disk. Returns the work directory
    /// and the fake roots.
    pub fn keep_files(self) -> (PathBuf, Vec<PathBuf>) {
        let Self {
            members,
            mut cp,
            work,
            ..
        } = self;
        let mut roots = Vec::with_capacity(members.len());
        for mut member in members {
            let _ = member.agent.stop();
            roots.push(member.root.root().to_owned());
            // As in `Harness::keep_files`: forgetting the root keeps its files.
            std::mem::forget(member.root);
        }
        let _ = cp.stop();
        (work.keep(), roots)
    }
}

fn no_such_host(id: &str) -> HarnessError {
    HarnessError::Setup {
        what: format!("host {id}"),
        message: "the fleet has no such host".into(),
    }
}
