//! The command-line side of the admin listener (`status`, `pause`, `resume`) and the human
//! rendering of the status.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest the CLI waits for the agent.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest admin answer read.
const MAX_ANSWER: u64 = 4 * 1024 * 1024;

/// Sends one HTTP/1.0 request to the admin listener; returns the status and the body.
pub async fn admin_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> Result<(u16, Vec<u8>), String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| {
            format!("cannot reach the agent's admin listener at {addr}: {e}; is fleetnode-agent running?")
        })?;
        let request =
            format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| format!("cannot send to {addr}: {e}"))?;
        let mut answer = Vec::new();
        stream
            .take(MAX_ANSWER)
            .read_to_end(&mut answer)
            .await
            .map_err(|e| format!("cannot read from {addr}: {e}"))?;
        parse_answer(&answer)
    };
    tokio::time::timeout(ADMIN_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("the agent at {addr} did not answer within {ADMIN_TIMEOUT:?}"))?
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

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn revision(value: &Value, key: &str) -> String {
    value
        .get(key)
        .and_then(Value::as_u64)
        .map_or_else(|| "-".to_owned(), |r| format!("r{r}"))
}

/// Renders `/status` for a human.
pub fn render_status(status: &Value) -> String {
    let mut out = String::new();
    let system = status.get("system").cloned().unwrap_or(Value::Null);
    let _ = writeln!(out, "phase:     {}", text(status, "phase"));
    if let Some(reason) = status.get("reason").and_then(Value::as_str) {
        let _ = writeln!(out, "reason:    {reason}");
    }
    let paused = status
        .get("paused")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let _ = writeln!(out, "paused:    {}", if paused { "yes" } else { "no" });
    let _ = writeln!(out, "target:    {}", text(status, "target"));
    let _ = writeln!(out, "current:   {}", text(&system, "current"));
    let _ = writeln!(out, "booted:    {}", text(&system, "booted"));
    let _ = writeln!(out, "profile:   {}", text(&system, "profile"));
    let _ = writeln!(
        out,
        "directive: handled {}, latest {}",
        revision(status, "handled_revision"),
        revision(status, "desired_revision")
    );
    let queue = status.get("queue").cloned().unwrap_or(Value::Null);
    let number = |v: &Value, k: &str| v.get(k).and_then(Value::as_u64).unwrap_or(0);
    let age = match (
        queue.get("oldest_at").and_then(Value::as_u64),
        status.get("at").and_then(Value::as_u64),
    ) {
        (Some(oldest), Some(at)) => format!(", oldest {}s old", at.saturating_sub(oldest) / 1000),
        _ => String::new(),
    };
    let _ = writeln!(
        out,
        "queue:     {} events ({} bytes){age}, {} dead letters, last seq {}",
        number(&queue, "depth"),
        number(&queue, "bytes"),
        number(&queue, "dead_letters"),
        number(status, "last_seq"),
    );
    let _ = writeln!(out, "probes (epoch {}):", number(status, "probe_epoch"));
    for probe in status
        .get("probes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let result = match probe.get("passing").and_then(Value::as_bool) {
            Some(true) => "passing",
            Some(false) => "FAILING",
            None => "no result yet",
        };
        let _ = writeln!(
            out,
            "  {:<20} {:<8} {:<14} {}",
            text(probe, "probe"),
            text(probe, "mode"),
            result,
            text(probe, "detail")
        );
    }
    let _ = writeln!(out, "workers:");
    for worker in status
        .get("workers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let restarts = number(worker, "restarts");
        let error = worker
            .get("last_error")
            .and_then(Value::as_str)
            .map(|e| format!(" (last error: {e})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<12} {:<8} {restarts} restarts{error}",
            text(worker, "name"),
            text(worker, "status"),
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
        let status = serde_json::json!({
            "phase": "failed",
            "reason": "probe web failed without a break for 1m",
            "paused": true,
            "target": "/nix/store/x-new",
            "system": {"current": "/nix/store/x-old", "booted": null, "profile": null},
            "handled_revision": 4,
            "desired_revision": 5,
            "last_seq": 17,
            "probe_epoch": 3,
            "at": 10_000,
            "queue": {"depth": 2, "bytes": 300, "oldest_at": 4_000, "dead_letters": 1},
            "probes": [{"probe": "web", "mode": "enforce", "passing": false, "detail": "503"}],
            "workers": [{"name": "drainer", "status": "faulted", "restarts": 2, "last_error": "x"}]
        });
        let text = render_status(&status);
        for expected in [
            "phase:     failed",
            "reason:    probe web failed",
            "paused:    yes",
            "current:   /nix/store/x-old",
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
