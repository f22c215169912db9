//! Wake-ups across replicas: every write that other replicas must see (a desired state, a host
//! added or revoked, an operator added or revoked) sends a NOTIFY in its own transaction, so it
//! is delivered exactly when the write commits.
//!
//! A payload is a kind letter, a colon and names separated by commas (`d:web-01,web-02`), cut
//! below PostgreSQL's payload limit: host ids and operator names are DNS labels, without
//! commas. A desired-state change names each host with the revision it committed
//! (`d:web-01=7,web-02=12`), so that a replica whose view already holds that revision (the
//! replica that made the change) need not read the host again; a name without one is read
//! again.

use fleetnode_wire::{HostId, OperatorName, Revision};
use tokio_postgres::Transaction;

use super::PgError;

/// The channel every replica listens on.
pub const CHANNEL: &str = "fleetnode";
/// Longest payload sent (PostgreSQL's limit is 8000 bytes).
const MAX_PAYLOAD: usize = 7000;

/// What changed, as a subscriber receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wake {
    /// These hosts' desired states changed, each to the revision given (when the sender said).
    Desired(Vec<(HostId, Option<Revision>)>),
    /// These hosts were added or their registration changed (revoked).
    Hosts(Vec<HostId>),
    /// These operators were added or changed (revoked).
    Operators(Vec<OperatorName>),
    /// A rollout command waits for the replica that drives the rollouts.
    Requests,
    /// Notifications may have been missed (the connection was lost, or the subscriber fell
    /// behind): re-read everything.
    Resync,
}

/// The kind of a notification.
#[derive(Debug, Clone, Copy)]
pub(super) enum Kind {
    Desired,
    Hosts,
    Operators,
    Requests,
}

impl Kind {
    fn letter(self) -> char {
        match self {
            Self::Desired => 'd',
            Self::Hosts => 'h',
            Self::Operators => 'o',
            Self::Requests => 'q',
        }
    }
}

/// Sends a notification of `names` in `txn` (delivered when it commits).
pub(super) async fn send(
    txn: &Transaction<'_>,
    kind: Kind,
    names: &[&str],
) -> Result<(), tokio_postgres::Error> {
    let payloads = payloads(kind, names);
    if payloads.is_empty() {
        return Ok(());
    }
    txn.execute(
        "SELECT pg_notify($1, payload) FROM unnest($2::text[]) AS payload",
        &[&CHANNEL, &payloads],
    )
    .await
    .map(drop)
}

fn payloads(kind: Kind, names: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for name in names {
        if !current.is_empty() && current.len() + name.len() + 1 > MAX_PAYLOAD {
            out.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push(kind.letter());
            current.push(':');
        } else {
            current.push(',');
        }
        current.push_str(name);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Reads a payload; `None` for one this build does not know (sent by a newer replica).
pub(super) fn parse(payload: &str) -> Option<Wake> {
    let (kind, names) = payload.split_once(':')?;
    let names = names.split(',').filter(|n| !n.is_empty());
    match kind {
        "d" => names
            .map(|n| {
                let (host, revision) = match n.split_once('=') {
                    Some((host, revision)) => (host, Some(Revision(revision.parse().ok()?))),
                    None => (n, None),
                };
                Some((HostId::parse(host).ok()?, revision))
            })
            .collect::<Option<_>>()
            .map(Wake::Desired),
        "h" => names
            .map(|n| HostId::parse(n).ok())
            .collect::<Option<_>>()
            .map(Wake::Hosts),
        "o" => names
            .map(|n| OperatorName::parse(n).ok())
            .collect::<Option<_>>()
            .map(Wake::Operators),
        "q" => Some(Wake::Requests),
        _ => None,
    }
}

/// Turns a failed notification into the store's error.
pub(super) fn failed(store: &super::PgStore, error: &tokio_postgres::Error) -> PgError {
    store.fail("sending a notification", error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_stay_under_the_limit_and_read_back() {
        let names: Vec<String> = (0..2000).map(|i| format!("host-{i:05}={i}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let sent = payloads(Kind::Desired, &refs);
        assert!(sent.len() > 1);
        let mut back = Vec::new();
        for payload in &sent {
            assert!(payload.len() <= MAX_PAYLOAD);
            let Some(Wake::Desired(hosts)) = parse(payload) else {
                panic!("{payload} does not read back");
            };
            back.extend(
                hosts
                    .into_iter()
                    .map(|(host, revision)| format!("{host}={}", revision.map_or(0, |r| r.0))),
            );
        }
        assert_eq!(back, names);
        assert_eq!(parse("x:y"), None);
    }

    #[test]
    fn a_desired_name_without_a_revision_reads_back_without_one() {
        let host = |id: &str| HostId::parse(id).unwrap();
        assert_eq!(
            parse("d:web-01,web-02=7"),
            Some(Wake::Desired(vec![
                (host("web-01"), None),
                (host("web-02"), Some(Revision(7)))
            ]))
        );
        assert_eq!(parse("d:web-01=seven"), None);
    }
}
