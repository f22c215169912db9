//! Debian's `haproxy` as a child process: a TCP-mode balancer in front of control planes,
//! writing a PROXY protocol v2 header on every connection it opens to them (`send-proxy-v2`),
//! from a chosen loopback source address, with TLS health checks of `/healthz`. The harness
//! writes its configuration to a temporary directory and runs it in the foreground (`-db`),
//! after `haproxy -c` has checked the file.
//!
//! Every process on this machine connects from 127.0.0.1, and the agent has no setting for its
//! source address. To give each agent an address of its own, as hosts on a network have, the
//! same haproxy also runs one plain TCP relay per agent ("edge"): the agent connects to its
//! edge, and the edge connects on to the balancer from its own address (127.0.0.10, .11, ...),
//! which is the client address the balancer then sees and forwards. An edge adds no header and
//! reads nothing; TLS still runs from the agent to the control plane.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::control_plane::free_port;
use crate::process::{POLL, Process, write_file};
use crate::{HarnessError, Result};

/// How long haproxy may take to listen after it was started.
const READY_DEADLINE: Duration = Duration::from_secs(30);
/// Where Debian installs the binary (`/usr/sbin` is not on every user's `PATH`).
const DEBIAN_PATH: &str = "/usr/sbin/haproxy";

/// What the balancer forwards to.
#[derive(Debug, Clone)]
pub struct BalancerSetup {
    /// The control planes, in order; all take traffic, each checked on its own.
    pub servers: Vec<SocketAddr>,
    /// The address the balancer connects to the servers from (what `--trusted-proxy` names).
    pub source: Ipv4Addr,
    /// The CA the health checks verify the servers' certificates with.
    pub ca_file: PathBuf,
    /// One relay to the balancer per address, connecting from that address.
    pub edges: Vec<Ipv4Addr>,
}

/// A running `haproxy -db`; dropping it kills it.
#[derive(Debug)]
pub struct Haproxy {
    port: u16,
    edge_ports: Vec<u16>,
    config: PathBuf,
    log: PathBuf,
    _process: Process,
}

impl Haproxy {
    /// Writes the configuration into `dir`, checks it and starts haproxy on a free loopback
    /// port; returns once it listens. Fails saying which package to install when haproxy is
    /// missing.
    pub fn start(dir: &Path, setup: &BalancerSetup) -> Result<Self> {
        let binary = locate()?;
        let port = free_port()?;
        let edge_ports = setup
            .edges
            .iter()
            .map(|_| free_port())
            .collect::<Result<Vec<_>>>()?;
        let config = dir.join("haproxy.cfg");
        write_file(&config, &render(port, &edge_ports, setup), 0o644)?;
        let check = Command::new(&binary)
            .arg("-c")
            .arg("-f")
            .arg(&config)
            .output()
            .map_err(HarnessError::io("run `haproxy -c`"))?;
        if !check.status.success() {
            return Err(HarnessError::Command {
                command: format!("haproxy -c -f {}", config.display()),
                status: check.status.to_string(),
                stdout: String::from_utf8_lossy(&check.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&check.stderr).into_owned(),
            });
        }
        let log = dir.join("haproxy.log");
        let mut command = Command::new(&binary);
        command.arg("-db").arg("-f").arg(&config);
        let mut process = Process::spawn("haproxy", command, &log)?;
        let started = Instant::now();
        loop {
            process.check_running()?;
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if started.elapsed() > READY_DEADLINE {
                return Err(HarnessError::Timeout {
                    what: format!("haproxy to listen on 127.0.0.1:{port}"),
                    report: crate::process::log_tail(&log, 30),
                });
            }
            std::thread::sleep(POLL);
        }
        Ok(Self {
            port,
            edge_ports,
            config,
            log,
            _process: process,
        })
    }

    /// The URL agents use: the balancer's frontend (the servers' certificate names localhost).
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    /// The URL of edge `index`: through it, the balancer sees the client as that edge's
    /// address.
    pub fn edge_url(&self, index: usize) -> Option<String> {
        self.edge_ports
            .get(index)
            .map(|port| format!("https://localhost:{port}"))
    }

    /// The frontend's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The generated configuration file.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// haproxy's own output (its log goes to stdout).
    pub fn log(&self) -> &Path {
        &self.log
    }
}

/// The haproxy binary, or an error saying how to install it.
fn locate() -> Result<PathBuf> {
    locate_in(Path::new(DEBIAN_PATH), std::env::var_os("PATH"))
}

/// `debian` when it exists, else `haproxy` in one of the directories of `path`.
fn locate_in(debian: &Path, path: Option<std::ffi::OsString>) -> Result<PathBuf> {
    if debian.is_file() {
        return Ok(debian.to_owned());
    }
    path.into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .map(|dir| dir.join("haproxy"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| HarnessError::Setup {
            what: "the load balancer".into(),
            message: "haproxy is not installed: install Debian's package with `apt-get install -y haproxy` (`.ci/run` does)".into(),
        })
}

/// The configuration: TCP mode, one frontend on `port`, every server with `send-proxy-v2`
/// from `setup.source`, checked over TLS on `/healthz` (503 until its store is open), its
/// connections cut when it is marked down (an agent's kept-alive connection would otherwise
/// stay with a server answering 503; cut, the agent reconnects to one that serves); and one
/// edge relay per `setup.edges` address, listening on the matching `edge_ports` entry.
fn render(port: u16, edge_ports: &[u16], setup: &BalancerSetup) -> String {
    let mut servers = String::new();
    for (index, server) in setup.servers.iter().enumerate() {
        servers.push_str(&format!("    server cp-{index} {server}\n"));
    }
    let mut edges = String::new();
    for (index, (address, edge_port)) in setup.edges.iter().zip(edge_ports).enumerate() {
        edges.push_str(&format!(
            "\nfrontend edge-{index}\n    bind 127.0.0.1:{edge_port}\n    default_backend edge-{index}\n\n\
             backend edge-{index}\n    server balancer 127.0.0.1:{port} source {address}\n"
        ));
    }
    format!(
        "# Generated by fleetnode-tests.\n\
         global\n\
         \x20   log stdout format raw local0 info\n\
         \n\
         defaults\n\
         \x20   mode tcp\n\
         \x20   log global\n\
         \x20   option tcplog\n\
         \x20   timeout connect 5s\n\
         \x20   timeout client 330s\n\
         \x20   timeout server 330s\n\
         \n\
         frontend fleetnode\n\
         \x20   bind 127.0.0.1:{port}\n\
         \x20   default_backend fleetnode-cp\n\
         \n\
         backend fleetnode-cp\n\
         \x20   balance leastconn\n\
         \x20   option httpchk GET /healthz\n\
         \x20   http-check expect status 200\n\
         \x20   default-server send-proxy-v2 source {source} check inter 500ms fall 1 rise 1 check-ssl verify required ca-file {ca} check-sni localhost on-marked-down shutdown-sessions\n\
         {servers}{edges}",
        source = setup.source,
        ca = setup.ca_file.display(),
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::locate_in;

    #[test]
    fn a_missing_haproxy_names_the_package_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let error = locate_in(
            &empty.path().join("sbin/haproxy"),
            Some(empty.path().as_os_str().to_owned()),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("apt-get install -y haproxy"), "{error}");
    }

    #[test]
    fn haproxy_is_found_on_the_path_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("haproxy"), "").unwrap();
        let found = locate_in(Path::new("/nonexistent/haproxy"), Some(dir.path().into())).unwrap();
        assert_eq!(found, dir.path().join("haproxy"));
    }
}
