//! Live updates: `GET /console/events`, a Server-Sent Events stream of small notices naming
//! what changed (`hosts`, `rollouts`, `audit`); the page reads itself again when a notice
//! names what it shows.
//!
//! A stream holds the fleet's change counters (one `watch` value, not a queue) and the time of
//! its last notice, so its memory is the same after a day as after a second, however fast the
//! fleet changes; notices are at most one per [`NOTICE_INTERVAL`], each naming every kind that
//! changed since the last. On a shared store a notice also goes out every [`SHARED_POLL`]:
//! another replica's agents move mirrors without a notification. The stream ends when the
//! session ends (sign-out, expiry, a revoked operator: an `ended` notice first) and when the
//! server stops; the browser's `EventSource` reconnects by itself after a restart.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio::time::Instant;

use super::MAX_LIVE_STREAMS;
use super::guard::{ConsoleError, Signed, in_standing};
use super::session::Session;
use crate::fleet::ChangeCount;
use crate::server::App;

/// Least time between two notices of one stream: a burst of changes makes one notice.
pub const NOTICE_INTERVAL: Duration = Duration::from_millis(500);
/// A comment line this often keeps proxies from closing an idle stream.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often an idle stream checks that its session still stands.
pub const SESSION_RECHECK: Duration = Duration::from_secs(30);
/// On a shared store, how often a stream announces a possible change.
pub const SHARED_POLL: Duration = Duration::from_secs(2);

/// `GET /console/events`.
pub async fn events(State(app): State<Arc<App>>, signed: Signed) -> Result<Response, ConsoleError> {
    let fleet = app
        .fleet()
        .map_err(|_| super::fleet_page::starting())?
        .clone();
    let permit = Permit::take(&app)?;
    let changes = fleet.changes();
    let seen = *changes.borrow();
    let live = Live {
        poll: if fleet.is_shared() {
            SHARED_POLL
        } else {
            SESSION_RECHECK
        },
        shared: fleet.is_shared(),
        app,
        session: signed.session,
        changes,
        seen,
        last: None,
        greeted: false,
        ended: false,
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(live, next_notice);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// One stream's state.
struct Live {
    app: Arc<App>,
    session: Session,
    changes: watch::Receiver<ChangeCount>,
    seen: ChangeCount,
    last: Option<Instant>,
    poll: Duration,
    shared: bool,
    greeted: bool,
    ended: bool,
    _permit: Permit,
}

/// The next notice of a stream, or its end.
async fn next_notice(mut live: Live) -> Option<(Result<Event, Infallible>, Live)> {
    if live.ended {
        return None;
    }
    if !live.greeted {
        live.greeted = true;
        return Some((Ok(Event::default().event("hello").data("live")), live));
    }
    if let Some(last) = live.last {
        tokio::time::sleep_until(last + NOTICE_INTERVAL).await;
    }
    let shutdown = live.app.settings.shutdown.clone();
    loop {
        let polled = tokio::select! {
            changed = live.changes.changed() => {
                if changed.is_err() {
                    return None;
                }
                false
            }
            () = tokio::time::sleep(live.poll) => true,
            () = shutdown.cancelled() => return None,
        };
        if !live.app.console.sessions.is_live(&live.session.digest)
            || !in_standing(&live.app, &live.session)
        {
            live.ended = true;
            let notice = Event::default().event("ended").data("the session ended");
            return Some((Ok(notice), live));
        }
        let now = *live.changes.borrow_and_update();
        let mut kinds: Vec<&str> = now.since(&live.seen).iter().map(|k| k.name()).collect();
        live.seen = now;
        if kinds.is_empty() && polled && live.shared {
            kinds = vec!["hosts", "rollouts", "audit"];
        }
        if kinds.is_empty() {
            continue;
        }
        live.last = Some(Instant::now());
        let notice = Event::default().event("change").data(kinds.join(" "));
        return Some((Ok(notice), live));
    }
}

/// A place among the [`MAX_LIVE_STREAMS`]; given back when the stream is dropped.
struct Permit {
    app: Arc<App>,
}

impl Permit {
    fn take(app: &Arc<App>) -> Result<Self, ConsoleError> {
        let before = app.console.live_streams.fetch_add(1, Ordering::SeqCst);
        let permit = Self { app: app.clone() };
        if before >= MAX_LIVE_STREAMS {
            drop(permit);
            return Err(ConsoleError::Unavailable(format!(
                "{MAX_LIVE_STREAMS} console pages follow the fleet live on this server already; this page works without live updates (reload it to see changes)"
            )));
        }
        Ok(permit)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.app.console.live_streams.fetch_sub(1, Ordering::SeqCst);
    }
}
