//! The subscriber side of the wake-ups: one dedicated connection per subscription LISTENs on
//! [`CHANNEL`] and hands what it hears to a bounded channel.
//!
//! Nothing is missed, only delayed: when the connection is lost (the database restarted, the
//! backend was terminated, a ping went unanswered) the task reconnects with back-off and then
//! emits [`Wake::Resync`], after which the subscriber re-reads everything; when the subscriber
//! falls behind and the channel is full, the notification that does not fit is replaced by a
//! [`Wake::Resync`] too.

use std::time::Duration;

use std::future::poll_fn;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use tracing::{info, warn};

use super::notify::{CHANNEL, Wake, parse};
use super::store::Connection;
use super::{PgError, PgStore};

/// Wake-ups waiting for the subscriber. Each holds at most one payload's names (under 7 KB),
/// so a full channel is under 2 MiB; when it is full the listener stops reading until there
/// is room for a [`Wake::Resync`], which stands for whatever it could not hand over.
pub const SUBSCRIPTION_CAPACITY: usize = 256;
/// The listening connection's name in `pg_stat_activity`.
pub const LISTENER_NAME: &str = "fleetnode-cp listener";
/// How often the listening connection is checked with an empty query: a connection cut off
/// without a reset (a partition) is noticed within this plus [`PING_TIMEOUT`].
const PING_INTERVAL: Duration = Duration::from_secs(10);
/// How long a ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// First wait before reconnecting; doubles up to [`RECONNECT_MAX`].
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A subscription to the wake-ups of every replica; dropping it closes its connection.
pub struct Subscription {
    wakes: mpsc::Receiver<Wake>,
    task: JoinHandle<()>,
}

impl Subscription {
    /// The next wake-up; `None` only if the listening task ended (it does not while the
    /// subscription lives).
    pub async fn recv(&mut self) -> Option<Wake> {
        self.wakes.recv().await
    }

    /// The next wake-up if one is waiting, without waiting for one.
    pub fn try_recv(&mut self) -> Option<Wake> {
        self.wakes.try_recv().ok()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgStore {
    /// Subscribes to the wake-ups. Returns once the LISTEN is in force: every change
    /// committed after this returns is delivered (or covered by a later [`Wake::Resync`]), so
    /// subscribe first, then load.
    pub async fn subscribe(&self) -> Result<Subscription, PgError> {
        let (sender, wakes) = mpsc::channel(SUBSCRIPTION_CAPACITY);
        let listening = self.listen(sender.clone()).await?;
        let task = tokio::spawn(keep_listening(self.clone(), sender, listening));
        Ok(Subscription { wakes, task })
    }

    /// Connects, starts driving the connection (forwarding notifications to `sender`) and
    /// LISTENs.
    async fn listen(&self, sender: mpsc::Sender<Wake>) -> Result<Listening, PgError> {
        let (client, connection) = self.dedicated(LISTENER_NAME).await?;
        let driver = tokio::spawn(drive(connection, sender));
        let listen = format!("LISTEN {CHANNEL}");
        if let Err(e) = client.batch_execute(&listen).await {
            driver.abort();
            return Err(self.fail("listening for notifications", &e));
        }
        Ok(Listening { client, driver })
    }
}

/// A listening connection: the client (kept for pings) and the task driving it, which ends
/// with it.
struct Listening {
    client: tokio_postgres::Client,
    driver: JoinHandle<()>,
}

impl Drop for Listening {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Watches the listening connection, and replaces it when it is lost.
async fn keep_listening(store: PgStore, sender: mpsc::Sender<Wake>, mut listening: Listening) {
    loop {
        watch(&mut listening).await;
        drop(listening);
        warn!(
            database = store.target(),
            "lost the notification connection to the database; reconnecting"
        );
        let mut wait = RECONNECT_FIRST;
        listening = loop {
            if sender.is_closed() {
                return;
            }
            tokio::time::sleep(wait).await;
            match store.listen(sender.clone()).await {
                Ok(listening) => break listening,
                Err(error) => {
                    warn!(%error, "reconnecting the notification connection failed");
                    wait = (wait * 2).min(RECONNECT_MAX);
                }
            }
        };
        info!(
            database = store.target(),
            "notification connection back; every replica's changes are read again"
        );
        if sender.send(Wake::Resync).await.is_err() {
            return;
        }
    }
}

/// Returns when the connection ends or stops answering pings.
async fn watch(listening: &mut Listening) {
    let mut ping = tokio::time::interval(PING_INTERVAL);
    ping.tick().await;
    loop {
        tokio::select! {
            _ = &mut listening.driver => return,
            _ = ping.tick() => {
                let answered = tokio::time::timeout(PING_TIMEOUT, listening.client.simple_query("")).await;
                if !matches!(answered, Ok(Ok(_))) {
                    return;
                }
            }
        }
    }
}

/// Drives the connection, forwarding its notifications, until it ends.
async fn drive(mut connection: Connection, sender: mpsc::Sender<Wake>) {
    loop {
        let message = poll_fn(|cx| connection.poll_message(cx)).await;
        match message {
            Some(Ok(AsyncMessage::Notification(notification))) => {
                let Some(wake) = parse(notification.payload()) else {
                    warn!(
                        payload = notification.payload(),
                        "a notification this build does not know; ignored"
                    );
                    continue;
                };
                match sender.try_send(wake) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // This one is dropped; the resync stands for it.
                        if sender.send(Wake::Resync).await.is_err() {
                            return;
                        }
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return,
                }
            }
            Some(Ok(AsyncMessage::Notice(notice))) => {
                info!(message = notice.message(), "notice from the database");
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                warn!(error = %super::error::describe(&error), "the notification connection failed");
                return;
            }
            None => return,
        }
    }
}
