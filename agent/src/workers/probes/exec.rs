//! `exec` probes: a program in its own process group, killed as a group on timeout or cancel.

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Output kept from each stream to explain a failure.
const OUTPUT_KEPT: usize = 4096;

/// Runs `argv` (no shell) with `timeout`; exit 0 passes.
pub(super) async fn check(argv: &[String], timeout: Duration) -> (bool, String) {
    let Some((program, args)) = argv.split_first() else {
        return (false, "no command configured".to_owned());
    };
    let mut child = match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => return (false, format!("cannot run {program}: {e}")),
    };
    // Dropped before `child` (declared after it), so on timeout or cancel the group is killed
    // while its leader is not yet reaped, or while the process that keeps the output open is
    // still alive in it: either way the group id cannot have been reused.
    let mut group = GroupKill {
        pgid: child.id().and_then(|pid| i32::try_from(pid).ok()),
    };
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let finished = tokio::time::timeout(timeout, async {
        tokio::join!(read_kept(stdout), read_kept(stderr), child.wait())
    })
    .await;
    match finished {
        Ok((stdout, stderr, Ok(status))) => {
            // The leader was reaped and its output closed: nothing of it is left to kill.
            group.disarm();
            let said = last_line(&stderr).or_else(|| last_line(&stdout));
            let ended = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit status {code}"),
                (None, Some(signal)) => format!("killed by signal {signal}"),
                (None, None) => "ended without a status".to_owned(),
            };
            let detail = match said {
                Some(line) => format!("{ended}: {line}"),
                None => ended,
            };
            (status.success(), detail)
        }
        Ok((_, _, Err(e))) => (false, format!("cannot wait for {program}: {e}")),
        Err(_) => {
            drop(group);
            (
                false,
                format!("{program} timed out after {timeout:?}; its process group was killed"),
            )
        }
    }
}

/// Kills a process group with SIGKILL when dropped, unless disarmed.
struct GroupKill {
    pgid: Option<i32>,
}

impl GroupKill {
    fn disarm(&mut self) {
        self.pgid = None;
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            kill_group(pgid);
        }
    }
}

/// Sends SIGKILL to process group `pgid` (which must be a child's own group, never ours).
fn kill_group(pgid: i32) {
    // Group 0 or 1 would mean our own group or init: never signal those.
    let Some(group) = rustix::process::Pid::from_raw(pgid).filter(|_| pgid > 1) else {
        return;
    };
    match rustix::process::kill_process_group(group, rustix::process::Signal::KILL) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(error) => tracing::warn!(pgid, %error, "cannot kill a probe's process group"),
    }
}

async fn read_kept(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept = Vec::new();
    let mut buffer = [0u8; 4096];
    // Read to the end so the probe never blocks on a full pipe; keep the last bytes.
    while let Ok(read) = stream.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        kept.extend_from_slice(&buffer[..read]);
        if kept.len() > 2 * OUTPUT_KEPT {
            kept.drain(..kept.len() - OUTPUT_KEPT);
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

fn last_line(text: &str) -> Option<String> {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .map(|line| line.chars().take(200).collect())
}
