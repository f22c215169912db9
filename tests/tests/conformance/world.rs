//! One scripted control plane and the real agent binary talking to it over TLS, on a fake
//! NixOS root.

use std::time::{Duration, Instant};

use fleetnode_fixtures::certs::TestCa;
use fleetnode_fixtures::fakeroot::FakeRoot;
use fleetnode_state_machine::StorePath;
use fleetnode_tests::agent::{Agent, AgentSetup, Timings};
use fleetnode_tests::binaries;
use fleetnode_tests::control_plane::free_port;
use fleetnode_tests::process::write_file;

use crate::server::{Script, ScriptedServer};

/// The safety net of every wait; nothing is measured against it.
const DEADLINE: Duration = Duration::from_secs(90);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);
/// The host token the agent sends.
pub const TOKEN: &str = "conformance-token-0123456789";

/// Fields drop in order: the agent is killed before the server stops and the directories go.
pub struct World {
    pub agent: Agent,
    pub server: ScriptedServer,
    pub root: FakeRoot,
    /// Runs the server; kept for as long as the world lives.
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl World {
    /// Starts the server, lets `prepare` script it, then starts the agent (heartbeat every
    /// second) running generation 1.
    pub fn start(prepare: impl FnOnce(&mut Script)) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("fleetnode-conformance-")
            .tempdir()
            .unwrap();
        let ca = TestCa::new("fleetnode conformance CA").unwrap();
        let ca_file = ca.write(dir.path()).unwrap();
        let issued = ca.server().unwrap().write(dir.path(), "server").unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let server = runtime.block_on(ScriptedServer::start(&issued.cert, &issued.key));
        prepare(&mut server.lock());

        let root = FakeRoot::new();
        let initial = root.add_closure("nixos-system-web-01-gen-1");
        root.set_current(&initial);
        let token_file = dir.path().join("token");
        write_file(&token_file, TOKEN, 0o600).unwrap();
        let probe = dir.path().join("probe");
        write_file(&probe, "#!/bin/sh\necho ok\n", 0o755).unwrap();
        let setup = AgentSetup {
            host: "web-01".into(),
            urls: vec![format!("https://localhost:{}", server.addr.port())],
            token_file,
            client_identity: None,
            ca_file,
            admin: format!("127.0.0.1:{}", free_port().unwrap())
                .parse()
                .unwrap(),
            socket: dir.path().join("admin.sock"),
            probe,
            timings: Timings {
                soak: "1s".into(),
                ..Timings::default()
            },
        };
        let binary = binaries::locate(binaries::AGENT).unwrap();
        let config = dir.path().join("agent.toml");
        let log = dir.path().join("agent.log");
        let mut agent = Agent::configure(binary, &root, &setup, config, log).unwrap();
        agent.start().unwrap();
        Self {
            agent,
            server,
            root,
            _runtime: runtime,
            _dir: dir,
        }
    }

    /// Waits until `check` finds what it looks for in the script, and returns it.
    pub fn wait_for<T>(&mut self, what: &str, mut check: impl FnMut(&Script) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(found) = check(&self.server.lock()) {
                return found;
            }
            if let Err(e) = self.agent.check_running() {
                panic!("the agent exited while waiting for {what}: {e}");
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "gave up waiting for {what}; the agent's log ends:\n{}",
                    self.agent.log_tail(60)
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// Adds a closure the fake root can realise and switch to.
    pub fn closure(&self, name: &str) -> StorePath {
        self.root.add_closure(name)
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.agent.log()).unwrap_or_default()
    }
}
