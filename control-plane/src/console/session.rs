//! Console sessions: who signed in, until when, and the CSRF token of their forms.
//!
//! A session id is 32 random bytes, given to the browser once in a cookie; the server keeps
//! only its SHA-256 digest, so a copy of the server's memory holds no usable id. Sessions live
//! in this process: a restart or another replica asks the operator to sign in again (see
//! `docs/decisions.md`). Each session expires a fixed lifetime after sign-in; the principal's
//! standing (an operator not revoked) is checked by the caller on every request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fleetnode_wire::{Millis, Timestamp};

use crate::auth::{TokenHash, digests_equal, hash_token, hex};
use crate::clock::Clock;
use crate::fleet::Principal;

/// The session cookie. The `__Host-` prefix makes browsers refuse it unless it is `Secure`,
/// has `Path=/` and no `Domain`, so no other site or path can plant or read it.
pub const COOKIE: &str = "__Host-fleetnode-session";

/// Most sessions kept at once. A session is a few hundred bytes; expired ones are dropped
/// when a new one starts, and a full table refuses sign-ins instead of growing.
pub const MAX_SESSIONS: usize = 4_096;

/// One signed-in session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Who signed in.
    pub principal: Principal,
    /// The token every form of this session carries (hex).
    pub csrf: String,
    /// When it ends.
    pub expires: Timestamp,
    /// The digest of its id: how it is found and ended.
    pub digest: TokenHash,
}

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The table is full of live sessions.
    #[error(
        "{MAX_SESSIONS} console sessions are open on this server; sign out of unused ones or wait for them to expire, then try again"
    )]
    Full,
    /// The system's random source failed.
    #[error("cannot make a session id: the system's random source failed ({0})")]
    Random(String),
}

/// The signed-in sessions of this process.
pub struct Sessions {
    by_digest: Mutex<HashMap<TokenHash, Session>>,
    lifetime: Duration,
    clock: Arc<dyn Clock>,
}

impl Sessions {
    /// An empty table whose sessions last `lifetime`.
    pub fn new(lifetime: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            by_digest: Mutex::new(HashMap::new()),
            lifetime,
            clock,
        }
    }

    /// How long a session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Starts a session for `principal`: its id (for the cookie, shown nowhere else) and the
    /// session.
    pub fn start(&self, principal: Principal) -> Result<(String, Session), SessionError> {
        let id = random_hex()?;
        let csrf = random_hex()?;
        let now = self.clock.now();
        let lifetime = Millis(u64::try_from(self.lifetime.as_millis()).unwrap_or(u64::MAX));
        let session = Session {
            principal,
            csrf,
            expires: Timestamp(now.0.saturating_add(lifetime.0)),
            digest: hash_token(&id),
        };
        let mut table = self.lock();
        if table.len() >= MAX_SESSIONS {
            table.retain(|_, s| s.expires > now);
        }
        if table.len() >= MAX_SESSIONS {
            return Err(SessionError::Full);
        }
        table.insert(session.digest, session.clone());
        Ok((id, session))
    }

    /// The live session with this id; an expired one is dropped. The table is keyed by the
    /// id's digest, so a lookup's timing tells nothing usable about the ids it holds.
    pub fn find(&self, id: &str) -> Option<Session> {
        let digest = hash_token(id);
        let now = self.clock.now();
        let mut table = self.lock();
        let session = table.get(&digest)?.clone();
        if session.expires <= now {
            table.remove(&digest);
            return None;
        }
        Some(session)
    }

    /// Ends a session (log-out, or its principal lost its standing).
    pub fn end(&self, digest: &TokenHash) {
        self.lock().remove(digest);
    }

    /// True while the session is in the table and not expired.
    pub fn is_live(&self, digest: &TokenHash) -> bool {
        let now = self.clock.now();
        self.lock().get(digest).is_some_and(|s| s.expires > now)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<TokenHash, Session>> {
        // Every critical section inserts, removes or copies whole sessions: a panic cannot
        // leave one half written.
        self.by_digest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `Set-Cookie` value that gives the browser session `id` for `lifetime`.
pub fn cookie(id: &str, lifetime: Duration) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={}",
        lifetime.as_secs()
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn removal() -> String {
    format!("{COOKIE}=; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age=0")
}

/// The session id in a `Cookie` header, if there is one.
pub fn id_in(cookie_header: &str) -> Option<&str> {
    cookie_header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value)
        .filter(|value| !value.is_empty())
}

/// Two texts equal, compared through their digests in constant time.
pub fn texts_equal(a: &str, b: &str) -> bool {
    digests_equal(&hash_token(a), &hash_token(b))
}

fn random_hex() -> Result<String, SessionError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| SessionError::Random(e.to_string()))?;
    Ok(hex(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn a_session_is_found_by_its_id_until_it_expires_or_ends() {
        let clock = Arc::new(ManualClock::new(Timestamp(1_000_000)));
        let sessions = Sessions::new(Duration::from_secs(60), clock.clone());
        let (id, session) = sessions.start(Principal::Admin).unwrap();
        assert_ne!(session.digest, [0; 32]);
        assert!(
            !hex(&session.digest).contains(&id),
            "only the digest is kept"
        );
        assert_eq!(sessions.find(&id).unwrap().principal, Principal::Admin);
        assert!(sessions.find("not-an-id").is_none());
        clock.advance(Millis(61_000));
        assert!(sessions.find(&id).is_none(), "expired");

        let (id, session) = sessions.start(Principal::Admin).unwrap();
        sessions.end(&session.digest);
        assert!(sessions.find(&id).is_none(), "ended");
    }

    #[test]
    fn the_cookie_is_read_among_others_and_carries_every_attribute() {
        let header = format!("theme=dark; {COOKIE}=abc123; other=x");
        assert_eq!(id_in(&header), Some("abc123"));
        assert_eq!(id_in("theme=dark"), None);
        assert_eq!(id_in(&format!("{COOKIE}=")), None);
        let set = cookie("abc", Duration::from_secs(3600));
        for attribute in [
            "HttpOnly",
            "Secure",
            "SameSite=Strict",
            "Path=/",
            "Max-Age=3600",
        ] {
            assert!(set.contains(attribute), "{set}");
        }
        assert!(removal().contains("Max-Age=0"));
        assert!(texts_equal("a", "a") && !texts_equal("a", "b"));
    }
}
