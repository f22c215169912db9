//! A Debian root booted with systemd as PID 1 in a `systemd-nspawn` container.
//!
//! ```text
//! systemd-nspawn --boot --register=no --keep-unit --private-network -D <root> --machine=<name>
//! ```
//! `--register=no --keep-unit` make nspawn work where the machine's own PID 1 is not systemd
//! (no machined, no scope unit); `--private-network` gives the container only its own
//! loopback, so every connection a test makes stays inside it. Commands run inside with
//! `nsenter` into the container's mount, UTS, IPC, network and PID namespaces.
//!
//! A reboot inside the container (`systemctl reboot`) ends nspawn with exit status 133; the
//! container is then booted again from the same root, as a machine's firmware would, the next
//! time the test looks at it ([`Container::poll`]). `/run` starts empty on every boot.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use super::describe_output;
use crate::{HarnessError, Result};

/// The exit status of `systemd-nspawn` when the container asked for a reboot.
const REBOOT_STATUS: i32 = 133;
/// How long a boot may take until `systemctl is-system-running --wait` answers.
const BOOT_DEADLINE: Duration = Duration::from_secs(60);
/// `PATH` of commands run inside.
const INSIDE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How often a waiting loop looks again.
const POLL: Duration = Duration::from_millis(100);

/// A booted container; dropping it kills everything in it.
#[derive(Debug)]
pub struct Container {
    root: PathBuf,
    name: String,
    console: PathBuf,
    nspawn: Option<Child>,
    leader: Option<i32>,
    boots: u32,
}

impl Container {
    /// Boots `root` as machine `name`, with its console appended to `console`; returns once
    /// systemd reports the boot finished.
    pub fn boot(root: &Path, name: &str, console: &Path) -> Result<Self> {
        let mut container = Self {
            root: root.to_owned(),
            name: name.to_owned(),
            console: console.to_owned(),
            nspawn: None,
            leader: None,
            boots: 0,
        };
        container.start()?;
        Ok(container)
    }

    /// The container's root directory, as seen from outside.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a path inside the container lives outside.
    pub fn path(&self, inside: &str) -> PathBuf {
        self.root.join(inside.trim_start_matches('/'))
    }

    /// How many times it booted.
    pub fn boots(&self) -> u32 {
        self.boots
    }

    /// Boots the container again when it rebooted; fails when it stopped for another reason.
    /// Returns whether it was booted again.
    pub fn poll(&mut self) -> Result<bool> {
        let Some(nspawn) = self.nspawn.as_mut() else {
            return Err(self.stopped("is not running"));
        };
        let Some(status) = nspawn
            .try_wait()
            .map_err(HarnessError::io("wait for systemd-nspawn"))?
        else {
            return Ok(false);
        };
        self.nspawn = None;
        self.leader = None;
        if status.code() != Some(REBOOT_STATUS) {
            return Err(self.stopped(&format!("stopped ({status})")));
        }
        self.start()?;
        Ok(true)
    }

    /// Runs `argv` inside; its output, whatever its exit status.
    pub fn output(&mut self, argv: &[&str]) -> Result<Output> {
        let leader = self.leader()?;
        let mut command = Command::new("nsenter");
        command
            .arg(format!("--target={leader}"))
            .args(["--mount", "--uts", "--ipc", "--net", "--pid", "--"])
            .args(argv)
            .env_clear()
            .env("PATH", INSIDE_PATH)
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .env("NIX_REMOTE", "daemon")
            .stdin(Stdio::null());
        command.output().map_err(HarnessError::io(format!(
            "run `{}` in the container",
            argv.join(" ")
        )))
    }

    /// Runs `argv` inside; its standard output, or an error with everything it printed.
    pub fn run(&mut self, argv: &[&str]) -> Result<String> {
        let output = self.output(argv)?;
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        Err(describe_output(&argv.join(" "), &output))
    }

    /// Runs a bash script inside.
    pub fn bash(&mut self, script: &str) -> Result<String> {
        self.run(&["/bin/bash", "-euc", script])
    }

    /// The end of the console log.
    pub fn console_tail(&self, lines: usize) -> String {
        crate::process::log_tail(&self.console, lines)
    }

    fn leader(&mut self) -> Result<i32> {
        self.poll()?;
        self.leader
            .ok_or_else(|| self.stopped("has no init process"))
    }

    fn start(&mut self) -> Result<()> {
        let console = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.console)
            .map_err(HarnessError::io(format!("open {}", self.console.display())))?;
        let console_err = console
            .try_clone()
            .map_err(HarnessError::io("share the console log"))?;
        let nspawn = Command::new("systemd-nspawn")
            .args([
                "--boot",
                "--register=no",
                "--keep-unit",
                "--private-network",
            ])
            .arg("--quiet")
            .arg(format!("--directory={}", self.root.display()))
            .arg(format!("--machine={}", self.name))
            .stdin(Stdio::null())
            .stdout(Stdio::from(console))
            .stderr(Stdio::from(console_err))
            .spawn()
            .map_err(HarnessError::io("start systemd-nspawn"))?;
        let nspawn_pid = nspawn.id();
        self.nspawn = Some(nspawn);
        self.boots += 1;
        let started = Instant::now();
        while started.elapsed() < BOOT_DEADLINE {
            if let Some(leader) = init_of(nspawn_pid) {
                self.leader = Some(leader);
                let output = self.output(&["systemctl", "is-system-running", "--wait"])?;
                let state = String::from_utf8_lossy(&output.stdout).trim().to_owned();
                if state == "running" || state == "degraded" {
                    return Ok(());
                }
            }
            if let Some(status) = self
                .nspawn
                .as_mut()
                .and_then(|child| child.try_wait().ok().flatten())
            {
                self.nspawn = None;
                return Err(self.stopped(&format!("did not boot ({status})")));
            }
            std::thread::sleep(POLL);
        }
        Err(self.stopped(&format!("did not finish booting within {BOOT_DEADLINE:?}")))
    }

    fn stopped(&self, what: &str) -> HarnessError {
        HarnessError::Unexpected {
            what: format!("container {} {what}", self.name),
            report: format!(
                "console ({}), last lines:\n{}",
                self.console.display(),
                self.console_tail(30)
            ),
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        // Killing the container's init ends its PID namespace, and with it every process in it.
        if let Some(leader) = self.leader.and_then(Pid::from_raw) {
            let _ = kill_process(leader, Signal::KILL);
        }
        if let Some(mut nspawn) = self.nspawn.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = nspawn.try_wait() {
                    return;
                }
                std::thread::sleep(POLL);
            }
            let _ = nspawn.kill();
            let _ = nspawn.wait();
        }
    }
}

/// The container's init: the child of nspawn that runs `systemd`.
fn init_of(nspawn: u32) -> Option<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{nspawn}/task/{nspawn}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "systemd")
        })
}
