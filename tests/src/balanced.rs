//! Control planes behind Debian's `haproxy`, and agents that reach them through it with mutual
//! TLS passing through.
//!
//! Two `fleetnode-cp serve` processes share one store: on a redb file the first serves and the
//! second stands by answering 503 until the file is free ([`crate::replicas`] says why); on a
//! PostgreSQL database both serve, as replicas. Both trust
//! [`BALANCER`] as their load balancer (`--trusted-proxy`), require client certificates from
//! agents (`--client-ca`) and limit each source to a few connections. haproxy
//! ([`crate::haproxy`]) listens on 127.0.0.1, connects to the servers from [`BALANCER`] with a
//! PROXY protocol v2 header, and checks each server's `/healthz` over TLS, so the standby takes
//! no traffic until it serves. Every agent's only URL is its edge relay in front of haproxy, so
//! the balancer sees each host at an address of its own ([`FIRST_HOST_ADDRESS`] onwards); it
//! authenticates with its client certificate alone (no token), which only works if the TLS
//! session runs end to end from the agent to `fleetnode-cp`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use fleetnode_fixtures::certs::TestCa;
use fleetnode_fixtures::fakeroot::FakeRoot;
use fleetnode_state_machine::StorePath;
use fleetnode_wire::HostDetail;

use crate::agent::{Agent, Timings, agent_setup};
use crate::binaries;
use crate::control_plane::{CliOutput, ControlPlane, Readiness};
use crate::haproxy::{BalancerSetup, Haproxy};
use crate::harness::{DEFAULT_DEADLINE, Health, mark, server_files};
use crate::process::POLL;
use crate::{HarnessError, Result};

/// The address haproxy connects to the control planes from: the one they trust.
pub const BALANCER: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The address the first host's connections reach the balancer from; the next host's is the
/// next address, and so on.
pub const FIRST_HOST_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);
/// Log lines shown in a failure report.
const REPORT_LOG_LINES: usize = 30;

/// One host behind the balancer.
#[derive(Debug)]
pub struct BalancedHost {
    /// Its agent.
    pub agent: Agent,
    /// Its id.
    pub id: String,
    /// The address its connections reach the balancer from (through its edge relay).
    pub address: Ipv4Addr,
    root: FakeRoot,
}

impl BalancedHost {
    /// The fake NixOS root the agent acts on.
    pub fn root(&self) -> &FakeRoot {
        &self.root
    }
}

/// haproxy, the control planes behind it, and the hosts reaching them through it.
///
/// Fields drop in declaration order: agents first, then the balancer, the servers, and the
/// directories last.
#[derive(Debug)]
pub struct Balanced {
    /// The hosts, in the order given.
    pub hosts: Vec<BalancedHost>,
    /// The balancer.
    pub haproxy: Haproxy,
    /// The control planes: 0 serves first, 1 stands by on the same store.
    pub servers: Vec<ControlPlane>,
    work: tempfile::TempDir,
}

impl Balanced {
    /// Starts two control planes (each source limited to `per_source` connections), haproxy
    /// in front of them, and an agent for each of `hosts`; returns once every host reported
    /// in, idle.
    pub fn start(hosts: &[&str], per_source: usize) -> Result<Self> {
        Self::start_with(hosts, per_source, None)
    }

    /// As [`Balanced::start`], with both control planes serving from the PostgreSQL database
    /// at `url` (replicas, not a standby).
    pub fn start_on_database(hosts: &[&str], per_source: usize, url: &str) -> Result<Self> {
        Self::start_with(hosts, per_source, Some(url))
    }

    fn start_with(hosts: &[&str], per_source: usize, database: Option<&str>) -> Result<Self> {
        let cp_binary = binaries::locate(binaries::CONTROL_PLANE)?;
        let agent_binary = binaries::locate(binaries::AGENT)?;
        let work = tempfile::Builder::new()
            .prefix("fleetnode-balanced-")
            .tempdir()
            .map_err(HarnessError::io("create a work directory"))?;
        let dir = work.path().to_owned();
        let mut files = server_files(&dir)?;
        if let Some(url) = database {
            files.store = url.into();
        }
        let agents_dir = dir.join("agents-pki");
        std::fs::create_dir_all(&agents_dir)
            .map_err(HarnessError::io(format!("create {}", agents_dir.display())))?;
        let agents_ca = TestCa::new("fleetnode agents CA").map_err(cert_error)?;
        let client_ca = agents_ca.write(&agents_dir).map_err(cert_error)?;

        let timings = Timings::default();
        let client_ca_arg = client_ca.display().to_string();
        let per_source_arg = per_source.to_string();
        let balancer_arg = BALANCER.to_string();
        let extra = [
            "--client-ca",
            client_ca_arg.as_str(),
            "--trusted-proxy",
            balancer_arg.as_str(),
            "--max-connections-per-source",
            per_source_arg.as_str(),
        ];
        let mut servers = Vec::new();
        let second = if database.is_some() {
            Readiness::Serving
        } else {
            Readiness::Listening
        };
        for (index, readiness) in [Readiness::Serving, second].into_iter().enumerate() {
            let mut files = files.clone();
            files.log = dir.join(format!("control-plane-{index}.log"));
            servers.push(ControlPlane::start_with(
                cp_binary.clone(),
                files,
                &timings.heartbeat,
                "info,fleetnode_control_plane::server::listen=debug",
                &extra,
                readiness,
            )?);
        }
        let haproxy = Haproxy::start(
            &dir,
            &BalancerSetup {
                servers: servers
                    .iter()
                    .map(|server| SocketAddr::from(([127, 0, 0, 1], server.port())))
                    .collect(),
                source: BALANCER,
                ca_file: files.ca.clone(),
                edges: (0..hosts.len()).map(host_address).collect(),
            },
        )?;
        let mut members = Vec::with_capacity(hosts.len());
        for (index, id) in hosts.iter().enumerate() {
            let token_file = dir.join(format!("{id}.token"));
            servers[0].cli(&[
                "add-host",
                id,
                "--token-file",
                &token_file.display().to_string(),
            ])?;
            let identity = agents_ca
                .client(id)
                .and_then(|issued| issued.write(&agents_dir, id))
                .map_err(cert_error)?;
            let root = FakeRoot::try_new().map_err(HarnessError::io("set up a fake NixOS root"))?;
            let initial = root.add_closure(&format!("nixos-system-{id}-gen-1"));
            mark(&root, &initial, Health::Healthy)?;
            root.set_current(&initial);
            let probe = dir.join(format!("{id}-probe"));
            let mut setup = agent_setup(&servers[0], &root, id, token_file, probe, &timings)?;
            setup.urls = vec![haproxy.edge_url(index).ok_or_else(|| HarnessError::Setup {
                what: "the agents' addresses".into(),
                message: format!("haproxy has no edge for host {index}"),
            })?];
            setup.client_identity = Some((identity.cert, identity.key));
            let agent = Agent::configure(
                agent_binary.clone(),
                &root,
                &setup,
                dir.join(format!("{id}.toml")),
                dir.join(format!("{id}.log")),
            )?;
            members.push(BalancedHost {
                agent,
                id: (*id).to_owned(),
                address: host_address(index),
                root,
            });
        }
        let mut balanced = Self {
            hosts: members,
            haproxy,
            servers,
            work,
        };
        for host in &mut balanced.hosts {
            host.agent.start()?;
        }
        for id in hosts {
            balanced.wait_for(id, "to report in, idle", |detail| {
                detail.row.phase.name() == "idle"
                    && detail.mirror.seq > 0
                    && detail.last_heartbeat.is_some()
            })?;
        }
        Ok(balanced)
    }

    /// The work directory (certificates, store, configurations, every log).
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// The CA the servers' certificates chain to.
    pub fn server_ca(&self) -> PathBuf {
        self.servers[0].files().ca.clone()
    }

    /// Adds closure `name` to every host's fake store, healthy; returns each host's path (a
    /// fake store path depends on the root it is in).
    pub fn add_closure(&self, name: &str) -> Result<Vec<(String, StorePath)>> {
        self.hosts
            .iter()
            .map(|host| {
                let added = host.root.add_closure(name);
                mark(&host.root, &added, Health::Healthy)?;
                Ok((host.id.clone(), added))
            })
            .collect()
    }

    /// `fleetnode-cp set-target <path> --host <id> <extra>` for each host's own path, through
    /// the first server that serves.
    pub fn set_targets(&mut self, targets: &[(String, StorePath)], extra: &[&str]) -> Result<()> {
        for (id, path) in targets {
            let mut args = vec!["set-target", path.as_str(), "--host", id];
            args.extend_from_slice(extra);
            self.cli(&args)?;
        }
        Ok(())
    }

    /// `fleetnode-cp <args>` through the first server that serves.
    pub fn cli(&mut self, args: &[&str]) -> Result<CliOutput> {
        let mut errors = Vec::new();
        for (index, server) in self.servers.iter_mut().enumerate() {
            if !server.is_running() {
                continue;
            }
            match server.cli(args) {
                Ok(output) => return Ok(output),
                Err(e) => errors.push(format!("server {index}: {e}")),
            }
        }
        Err(HarnessError::Unexpected {
            what: format!(
                "no control plane answered `fleetnode-cp {}`",
                args.join(" ")
            ),
            report: errors.join("\n"),
        })
    }

    /// Polls host `id`'s detail until `done` holds; fails after the safety-net deadline, or at
    /// once when its agent died, with every log's tail.
    pub fn wait_for(
        &mut self,
        id: &str,
        what: &str,
        mut done: impl FnMut(&HostDetail) -> bool,
    ) -> Result<HostDetail> {
        let started = Instant::now();
        let mut last = String::from("(nothing read yet)");
        while started.elapsed() < DEFAULT_DEADLINE {
            for host in &mut self.hosts {
                host.agent.check_running()?;
            }
            match self.cli(&["host", id, "--json"]) {
                Ok(output) => match serde_json::from_str::<HostDetail>(&output.stdout) {
                    Ok(detail) if done(&detail) => return Ok(detail),
                    Ok(detail) => {
                        last = format!(
                            "phase {}, mirrored seq {}, handled {:?}",
                            detail.row.phase, detail.mirror.seq, detail.mirror.handled
                        );
                    }
                    Err(e) => last = format!("unreadable detail: {e}"),
                },
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(POLL);
        }
        Err(HarnessError::Timeout {
            what: format!("host {id} {what} ({DEFAULT_DEADLINE:?})"),
            report: format!("last seen: {last}\n{}", self.report()),
        })
    }

    /// The tails of every log, for a failure message.
    pub fn report(&self) -> String {
        let mut out = String::new();
        let mut section = |name: String, path: &Path| {
            out.push_str(&format!(
                "{name} ({}):\n{}\n",
                path.display(),
                crate::process::log_tail(path, REPORT_LOG_LINES)
            ));
        };
        for host in &self.hosts {
            section(format!("agent {}", host.id), host.agent.log());
        }
        for (index, server) in self.servers.iter().enumerate() {
            section(format!("control plane {index}"), server.log());
        }
        section("haproxy".into(), self.haproxy.log());
        out
    }
}

/// The address host number `index` reaches the balancer from.
fn host_address(index: usize) -> Ipv4Addr {
    let [a, b, c, d] = FIRST_HOST_ADDRESS.octets();
    Ipv4Addr::new(
        a,
        b,
        c,
        d.saturating_add(u8::try_from(index).unwrap_or(u8::MAX)),
    )
}

fn cert_error(error: fleetnode_fixtures::certs::CertError) -> HarnessError {
    HarnessError::Setup {
        what: "the agents' certificates".into(),
        message: error.to_string(),
    }
}
