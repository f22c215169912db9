//! systemd integration: readiness, status line and watchdog (`Type=notify`, `WatchdogSec=`).
//!
//! Every call is a no-op when the agent does not run under systemd (`NOTIFY_SOCKET` unset).
//! A failed notification is logged at debug level and otherwise ignored: systemd's watchdog is
//! what catches an agent that can no longer talk to it.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Recovery is done: the agent is ready (`READY=1`), with a status line.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A new status line (`STATUS=`), shown by `systemctl status`.
pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// The event loop is alive (`WATCHDOG=1`).
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The agent is shutting down (`STOPPING=1`).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// How often to ping the watchdog: half of `WATCHDOG_USEC`, when systemd set one for us.
pub fn watchdog_period() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}
