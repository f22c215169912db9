//! Child processes that are killed when dropped, with their output in a log file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

use crate::{HarnessError, Result};

/// How often a waiting loop looks again.
pub const POLL: Duration = Duration::from_millis(100);

/// A running child process. Dropping it kills it (SIGKILL) and reaps it.
#[derive(Debug)]
pub struct Process {
    what: String,
    child: Child,
    log: PathBuf,
    exited: Option<ExitStatus>,
}

impl Process {
    /// Starts `command` with stdin closed and stdout and stderr appended to `log`, after a
    /// marker line naming `what`, so restarts of one process share one readable log.
    pub fn spawn(what: &str, mut command: Command, log: &Path) -> Result<Self> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(HarnessError::io(format!("open the log {}", log.display())))?;
        writeln!(file, "---- harness: starting {what} ----").map_err(HarnessError::io(format!(
            "write to the log {}",
            log.display()
        )))?;
        let stderr = file
            .try_clone()
            .map_err(HarnessError::io(format!("share the log {}", log.display())))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(file))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(HarnessError::io(format!(
                "start {what} ({})",
                command.get_program().to_string_lossy()
            )))?;
        Ok(Self {
            what: what.to_owned(),
            child,
            log: log.to_owned(),
            exited: None,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it ended, if it has (reaps it).
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// An [`HarnessError::Exited`] error when the process is no longer running.
    pub fn check_running(&mut self) -> Result<()> {
        match self.exit_status() {
            None => Ok(()),
            Some(status) => Err(HarnessError::Exited {
                what: self.what.clone(),
                status: status.to_string(),
                log: self.log.clone(),
                tail: log_tail(&self.log, 30),
            }),
        }
    }

    /// Sends `signal` to the process (nothing when it has already exited).
    pub fn signal(&mut self, signal: Signal) -> Result<()> {
        if self.exit_status().is_some() {
            return Ok(());
        }
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| HarnessError::Setup {
                what: format!("signalling {}", self.what),
                message: format!("pid {} is not a valid process id", self.child.id()),
            })?;
        kill_process(pid, signal).map_err(|errno| HarnessError::Io {
            what: format!("send {signal:?} to {} (pid {pid:?})", self.what),
            source: errno.into(),
        })
    }

    /// SIGKILL, then reap: the process gets no chance to clean up (a crash, a power cut).
    pub fn kill(&mut self) -> Result<ExitStatus> {
        self.signal(Signal::KILL)?;
        self.wait()
    }

    /// SIGTERM, then wait up to `grace` for it to exit; SIGKILL after that.
    pub fn terminate(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.signal(Signal::TERM)?;
        let started = Instant::now();
        while started.elapsed() < grace {
            if let Some(status) = self.exit_status() {
                return Ok(status);
            }
            std::thread::sleep(POLL);
        }
        self.kill()
    }

    fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        let status = self
            .child
            .wait()
            .map_err(HarnessError::io(format!("wait for {}", self.what)))?;
        self.exited = Some(status);
        Ok(status)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exit_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last `lines` lines of a log file (or why it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            let start = all.len().saturating_sub(lines);
            all[start..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Creates (truncating) a file and writes `contents` with `mode`.
pub fn write_file(path: &Path, contents: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(HarnessError::io(format!("create {}", path.display())))?;
    file.write_all(contents.as_bytes())
        .map_err(HarnessError::io(format!("write {}", path.display())))
}
