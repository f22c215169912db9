//! The command-line side of the admin socket (`status`, `pause`, `resume`) and the human
//! rendering of the status.

use std::fmt::Write as _;
use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use fleetnode_wire::{AgentStatus, ProbeMode, WorkerStatus};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Longest the CLI waits for the agent.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest admin answer read.
const MAX_ANSWER: u64 = 4 * 1024 * 1024;

/// Sends one request to the agent's admin socket; returns the status and the body.
pub async fn admin_request(
    socket: &Path,
    method: &str,
    path: &str,
) -> Result<(u16, Vec<u8>), String> {
    let shown = socket.display();
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(socket)
            .await
            .map_err(|e| cannot_connect(socket, &e))?;
        request_over(stream, method, path)
            .await
            .map_err(|e| format!("{shown}: {e}"))
    };
    tokio::time::timeout(ADMIN_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("the agent at {shown} did not answer within {ADMIN_TIMEOUT:?}"))?
}

/// Sends one HTTP/1.0 request over `stream` and reads the whole answer.
pub async fn request_over<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    method: &str,
    path: &str,
) -> Result<(u16, Vec<u8>), String> {
    let request =
        format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the request: {e}"))?;
    let mut answer = Vec::new();
    stream
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await
        .map_err(|e| format!("cannot read the answer: {e}"))?;
    parse_answer(&answer)
}

fn cannot_connect(socket: &Path, error: &std::io::Error) -> String {
    let shown = socket.display();
    match error.kind() {
        ErrorKind::PermissionDenied => format!(
            "permission denied on the admin socket {shown}: only root (and the group named by admin.group, when set) may use it; run this as root"
        ),
        ErrorKind::NotFound | ErrorKind::ConnectionRefused => format!(
            "no agent listens on {shown} ({error}); is fleetnode-agent running, and is admin.socket the same in its configuration?"
        ),
        _ => format!("cannot reach the agent's admin socket {shown}: {error}"),
    }
}

fn parse_answer(answer: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the agent's answer has no header end")?;
    let head = String::from_utf8_lossy(&answer[..split]);
    let status = head
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or("the agent's answer has no status line")?;
    Ok((status, answer[split + 4..].to_vec()))
}

fn or_dash<T: std::fmt::Display>(value: Option<&T>) -> String {
    value.map_or_else(|| "-".to_owned(), ToString::to_string)
}

/// Renders the agent's status for a human.
pub fn render_status(status: &AgentStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "phase:     {}", status.phase);
    if let Some(reason) = &status.reason {
        let _ = writeln!(out, "reason:    {reason}");
    }
    let paused = if status.paused { "yes" } else { "no" };
    let _ = writeln!(out, "paused:    {paused}");
    let _ = writeln!(out, "target:    {}", or_dash(status.target.as_ref()));
    let _ = writeln!(
        out,
        "current:   {}",
        or_dash(status.system.current.as_ref())
    );
    let _ = writeln!(out, "booted:    {}", or_dash(status.system.booted.as_ref()));
    let _ = writeln!(
        out,
        "profile:   {}",
        or_dash(status.system.profile.as_ref())
    );
    let _ = writeln!(
        out,
        "directive: handled {}, latest {}",
        or_dash(status.handled_revision.as_ref()),
        or_dash(status.desired_revision.as_ref())
    );
    if let Some(deadline) = &status.next_deadline {
        let _ = writeln!(out, "next:      {:?} at {}", deadline.kind, deadline.at);
    }
    let queue = &status.queue;
    let age = queue.oldest_at.map_or_else(String::new, |oldest| {
        format!(", oldest {}s old", status.at.since(oldest).0 / 1000)
    });
    let _ = writeln!(
        out,
        "queue:     {} events ({} bytes){age}, {} dead letters, last seq {}",
        queue.depth, queue.bytes, queue.dead_letters, status.last_seq,
    );
    let _ = writeln!(out, "probes (epoch {}):", status.probe_epoch);
    for probe in &status.probes {
        let result = match probe.passing {
            Some(true) => "passing",
            Some(false) => "FAILING",
            None => "no result yet",
        };
        let mode = match probe.mode {
            ProbeMode::Enforce => "enforce",
            ProbeMode::Observe => "observe",
        };
        let _ = writeln!(
            out,
            "  {:<20} {mode:<8} {result:<14} {}",
            probe.probe, probe.detail
        );
    }
    let _ = writeln!(out, "workers:");
    for worker in &status.workers {
        let error = worker
            .last_error
            .as_ref()
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        let state = match worker.status {
            WorkerStatus::Idle => "idle",
            WorkerStatus::Running => "running",
            WorkerStatus::Faulted => "faulted",
        };
        let _ = writeln!(
            out,
            "  {:<12} {state:<8} {} restarts{error}",
            worker.name, worker.restarts
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_split_into_status_and_body() {
        let (status, body) =
            parse_answer(b"HTTP/1.0 503 Service Unavailable\r\ncontent-length: 2\r\n\r\n{}")
                .unwrap();
        assert_eq!(status, 503);
        assert_eq!(body, b"{}");
        assert!(parse_answer(b"garbage").is_err());
    }

    #[test]
    fn status_rendering_shows_what_an_operator_needs() {
        let status: AgentStatus = serde_json::from_value(serde_json::json!({
            "agent_version": "0.1.0",
            "at": 10_000,
            "phase": "failed",
            "reason": {"kind": "probe-failed", "probe": "web", "failing_for": 60_000},
            "paused": true,
            "target": "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-new",
            "system": {"current": "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-old", "booted": null, "profile": null},
            "handled_revision": 4,
            "desired_revision": 5,
            "stream": 1,
            "last_seq": 17,
            "probe_epoch": 3,
            "queue": {"depth": 2, "bytes": 300, "oldest_at": 4_000, "dead_letters": 1},
            "probes": [{"probe": "web", "mode": "enforce", "passing": false, "detail": "503"}],
            "workers": [{"name": "drainer", "status": "faulted", "restarts": 2, "last_error": "x"}]
        }))
        .unwrap();
        let text = render_status(&status);
        for expected in [
            "phase:     failed",
            "reason:    probe web failed",
            "paused:    yes",
            "current:   /nix/store/0123456789abcdfghijklmnpqrsvwxyz-old",
            "handled r4, latest r5",
            "2 events (300 bytes), oldest 6s old, 1 dead letters, last seq 17",
            "web",
            "FAILING",
            "drainer      faulted  2 restarts (last error: x)",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
    }
}
