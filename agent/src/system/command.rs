//! Running the host's commands: always an argv, never a shell; output captured with a cap.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use fleetnode_state_machine::{OUTPUT_TAIL_CAP, cap_tail};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::SystemError;

/// What a finished command printed.
#[derive(Debug)]
pub(super) struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// Its standard output, capped at its end.
    pub stdout: String,
    /// Its standard error, capped at its end.
    pub stderr: String,
}

impl Finished {
    /// The error for a command that ended badly.
    pub fn failure(&self, command: &str) -> SystemError {
        SystemError::CommandFailed {
            command: command.to_owned(),
            status: describe_status(self.status),
            stderr: self.stderr.trim().to_owned(),
        }
    }
}

/// An argv builder that keeps the printable form for errors and logs.
#[derive(Debug, Clone)]
pub(super) struct Argv {
    program: String,
    args: Vec<OsString>,
}

impl Argv {
    /// A command line for `program`.
    pub fn new(program: impl Into<String>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
        }
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// The command line as text, for errors and logs.
    pub fn display(&self) -> String {
        let mut text = self.program.clone();
        for arg in &self.args {
            text.push(' ');
            text.push_str(&arg.to_string_lossy());
        }
        text
    }

    /// Runs the command to completion (stdin empty), capturing both outputs. When `log_output`
    /// is set every line it prints is logged as it arrives. The process is killed if the
    /// returned future is dropped.
    pub async fn run(&self, log_output: bool) -> Result<Finished, SystemError> {
        tracing::debug!(command = %self.display(), "running");
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| SystemError::Spawn {
                command: self.display(),
                source,
            })?;
        let program = Path::new(&self.program)
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        let stdout = read_capped(child.stdout.take(), &program, log_output);
        let stderr = read_capped(child.stderr.take(), &program, log_output);
        let (stdout, stderr, status) = tokio::join!(stdout, stderr, child.wait());
        let status = status.map_err(|source| SystemError::Spawn {
            command: self.display(),
            source,
        })?;
        Ok(Finished {
            status,
            stdout,
            stderr,
        })
    }
}

/// `exit status 3`, `killed by signal 9`.
pub(super) fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "ended without a status".to_owned(),
    }
}

/// Finds a program named without a directory on the agent's `PATH`; a path is returned as is.
pub(super) fn resolve_program(program: &str) -> Result<PathBuf, SystemError> {
    if program.contains('/') {
        return Ok(PathBuf::from(program));
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .ok_or_else(|| SystemError::NotFound {
            program: program.to_owned(),
        })
}

/// Whether `path` is a regular file someone may execute.
pub(super) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

async fn read_capped(
    stream: Option<impl AsyncRead + Unpin>,
    program: &str,
    log_output: bool,
) -> String {
    let Some(stream) = stream else {
        return String::new();
    };
    let mut reader = BufReader::new(stream);
    let mut kept = String::new();
    let mut buffer = Vec::new();
    // Lines are read as bytes, so output that is not UTF-8 does not stop the read and the
    // process never blocks on a full pipe.
    while let Ok(read) = reader.read_until(b'\n', &mut buffer).await {
        if read == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buffer);
        let line = line.trim_end_matches('\n');
        if log_output {
            tracing::info!(command = program, "{line}");
        }
        kept.push_str(line);
        kept.push('\n');
        if kept.len() > 2 * OUTPUT_TAIL_CAP {
            kept = cap_tail(&kept, OUTPUT_TAIL_CAP);
        }
        buffer.clear();
    }
    cap_tail(&kept, OUTPUT_TAIL_CAP)
}
