//! The admin socket against real local users: an unprivileged user created for the test (with
//! `useradd`) is refused by `fleetnode-agent status|pause|resume`, root is served, and so is a
//! member of the group named by `admin.group`. The agent runs in this process on an in-memory
//! host; the CLI is the real binary, run as each user through `setpriv`.
//!
//! Needs root (CI runs as root): creating users and switching to them cannot be done otherwise.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use fleetnode_agent::config::Config;
use fleetnode_agent::runtime::eventloop::Exit;
use fleetnode_agent::testing::{self, Handles, MemorySystem};
use fleetnode_state_machine::StorePath;
use tokio_util::sync::CancellationToken;

const CURRENT: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-nixos-system";

/// A user or group made for this test, removed when dropped.
struct Account {
    kind: &'static str,
    name: String,
}

impl Account {
    fn user(name: String, groups: &[&str]) -> Self {
        let mut args = vec![
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
        ];
        let joined = groups.join(",");
        if !groups.is_empty() {
            args.extend(["--groups", &joined]);
        }
        args.push(&name);
        run_admin_tool("useradd", &args);
        Self { kind: "user", name }
    }

    fn group(name: String) -> Self {
        run_admin_tool("groupadd", &[&name]);
        Self {
            kind: "group",
            name,
        }
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let tool = if self.kind == "user" {
            "userdel"
        } else {
            "groupdel"
        };
        let _ = Command::new(tool).arg(&self.name).status();
    }
}

/// Runs useradd/groupadd, retrying while another process holds the account files' lock.
fn run_admin_tool(tool: &str, args: &[&str]) {
    assert!(
        rustix::process::geteuid().is_root(),
        "this test creates users with {tool}: run it as root (CI does)"
    );
    let mut last = String::new();
    for _ in 0..20 {
        let output = Command::new(tool).args(args).output().unwrap();
        if output.status.success() {
            return;
        }
        last = String::from_utf8_lossy(&output.stderr).into_owned();
        if !last.contains("lock") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{tool} {args:?} failed: {last}");
}

/// The test's accounts: a name unique to this run.
fn name(role: &str) -> String {
    format!("fnt{}{role}", std::process::id())
}

/// The agent's CLI, copied where every user may run it (the build directory may not be).
struct Cli {
    binary: PathBuf,
}

impl Cli {
    fn install(dir: &Path) -> Self {
        let binary = dir.join("fleetnode-agent");
        std::fs::copy(env!("CARGO_BIN_EXE_fleetnode-agent"), &binary).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        Self { binary }
    }

    /// `fleetnode-agent <args> --socket <socket>` as `user` (root when `None`).
    async fn run(&self, user: Option<&str>, args: &[&str], socket: &Path) -> Output {
        let mut command = match user {
            Some(user) => {
                let mut command = tokio::process::Command::new("setpriv");
                command
                    .arg(format!("--reuid={user}"))
                    .arg(format!("--regid={user}"))
                    .arg("--init-groups")
                    .arg("--")
                    .arg(&self.binary);
                command
            }
            None => tokio::process::Command::new(&self.binary),
        };
        command.args(args).arg("--socket").arg(socket);
        command.output().await.unwrap()
    }
}

/// An agent on an in-memory host with its admin socket in `dir/run`.
struct Agent {
    socket: PathBuf,
    handles: Handles,
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<Exit>,
}

async fn start(dir: &Path, group: Option<&str>) -> Agent {
    // Every directory on the way must let the users reach the socket, so that what refuses
    // them is the socket's own mode.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    let socket = dir.join("run").join("admin.sock");
    let group_line = group.map_or_else(String::new, |g| format!("group = \"{g}\"\n"));
    let text = format!(
        "control_plane_url = \"https://cp.invalid\"\nhost_id = \"web-01\"\ntoken_file = \"/nonexistent\"\nstate_dir = \"{}\"\n[admin]\nmetrics = false\nsocket = \"{}\"\n{group_line}",
        dir.join("state").display(),
        socket.display()
    );
    let config = Config::parse(&text).unwrap();
    let system = Arc::new(MemorySystem::running(
        Some(StorePath::parse(CURRENT).unwrap()),
        "boot-1",
    ));
    let cancel = CancellationToken::new();
    let started = testing::start_offline(config, system, cancel.clone())
        .await
        .unwrap()
        .expect("the agent did not start");
    let handles = started.handles();
    let task = tokio::spawn(started.run(None));
    tokio::time::timeout(Duration::from_secs(30), async {
        while !socket.exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the agent did not bind its admin socket");
    Agent {
        socket,
        handles,
        cancel,
        task,
    }
}

impl Agent {
    fn paused(&self) -> bool {
        self.handles.status.borrow().paused
    }

    async fn stop(self) {
        self.cancel.cancel();
        assert_eq!(self.task.await.unwrap(), Exit::Stopped);
    }
}

fn text(output: &Output) -> String {
    format!(
        "exit {}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn assert_refused(output: &Output) {
    assert!(!output.status.success(), "{}", text(output));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("permission denied"), "{}", text(output));
    assert!(
        stderr.contains("run this as root"),
        "the refusal says what to do: {}",
        text(output)
    );
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains(CURRENT),
        "{}",
        text(output)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_root_and_the_admin_group_may_hold_the_agent() {
    let work = tempfile::tempdir().unwrap();
    let cli = Cli::install(work.path());
    let admins = Account::group(name("g"));
    let stranger = Account::user(name("u"), &[]);
    let operator = Account::user(name("o"), &[&admins.name]);

    // Without admin.group: root only.
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path(), None).await;
    let metadata = std::fs::metadata(&agent.socket).unwrap();
    assert_eq!(metadata.mode() & 0o777, 0o600);
    assert_eq!(metadata.uid(), 0);
    for user in [&stranger.name, &operator.name] {
        for args in [&["status", "--json"][..], &["pause"], &["resume"]] {
            assert_refused(&cli.run(Some(user), args, &agent.socket).await);
        }
    }
    assert!(!agent.paused(), "a refused user paused the agent");
    let status = cli.run(None, &["status", "--json"], &agent.socket).await;
    assert!(status.status.success(), "{}", text(&status));
    let value: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(value["system"]["current"], CURRENT);
    let paused = cli.run(None, &["pause"], &agent.socket).await;
    assert!(paused.status.success(), "{}", text(&paused));
    assert!(agent.paused());
    agent.stop().await;

    // With admin.group: its members too, and still nobody else.
    let dir = tempfile::tempdir().unwrap();
    let agent = start(dir.path(), Some(&admins.name)).await;
    let metadata = std::fs::metadata(&agent.socket).unwrap();
    assert_eq!(metadata.mode() & 0o777, 0o660);
    let gid =
        fleetnode_agent::workers::admin::socket::group_id(Path::new("/etc/group"), &admins.name)
            .unwrap();
    assert_eq!(metadata.gid(), gid);
    assert_refused(
        &cli.run(Some(&stranger.name), &["pause"], &agent.socket)
            .await,
    );
    assert!(!agent.paused(), "a user outside the group paused the agent");
    let paused = cli
        .run(Some(&operator.name), &["pause"], &agent.socket)
        .await;
    assert!(paused.status.success(), "{}", text(&paused));
    assert!(agent.paused());
    let status = cli
        .run(Some(&operator.name), &["status"], &agent.socket)
        .await;
    assert!(status.status.success(), "{}", text(&status));
    assert!(
        String::from_utf8_lossy(&status.stdout).contains("paused:    yes"),
        "{}",
        text(&status)
    );
    let resumed = cli.run(None, &["resume"], &agent.socket).await;
    assert!(resumed.status.success(), "{}", text(&resumed));
    assert!(!agent.paused());
    agent.stop().await;
}
