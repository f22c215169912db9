//! The PostgreSQL store: the same operations as the redb store, for any number of control-plane
//! replicas sharing one database.
//!
//! Every promise that makes replicas safe lives in the database, not in a process:
//! - a host's writes serialise on its row (`SELECT ... FOR UPDATE`, rows always locked in host
//!   id order so two replicas cannot deadlock): an event batch is applied to the mirror read
//!   under that lock, and the new events and mirror are written in the same transaction;
//! - batches and heartbeats of many hosts are committed as one group, one transaction, with
//!   multi-row statements ([`PgStore::commit_group`], formed from concurrent requests by
//!   [`PgGroupWriter`]);
//! - a desired-state change computes each host's next revision inside its transaction
//!   ([`PgStore::change_desired`]) and notifies every replica on commit;
//! - single-driver work runs under a lease with a fencing token, checked in the same
//!   transaction as the writes it guards ([`PgStore::commit_rollout`], [`lease`]);
//! - wake-ups cross replicas by LISTEN/NOTIFY, with a "resync everything" signal after a lost
//!   notification connection ([`notify`]).
//!
//! The schema is versioned and migrated at start ([`migrate`]). SQL lives in this module only,
//! each statement next to the operation that runs it. Records are stored as the JSON of the
//! same serde types the redb store keeps.

mod audit;
mod config;
mod copy;
mod desired;
mod error;
mod group;
mod hosts;
mod ingest;
pub mod lease;
mod listen;
pub mod migrate;
pub mod notify;
mod password;
mod requests;
mod retention;
mod rollouts;
mod store;
mod tls;

pub use config::{PgConfig, PgOptions, TlsMode, redact};
pub use copy::CopyInto;
pub use desired::next_revision;
pub use error::PgError;
pub use group::{GROUPS_IN_FLIGHT, GroupError, MAX_GROUP, PgGroupWriter};
pub use ingest::{GroupOutcome, GroupWrite, HeartbeatOutcome};
pub use lease::{Fence, LeaseState};
pub use listen::{LISTENER_NAME, SUBSCRIPTION_CAPACITY, Subscription};
pub use notify::Wake;
pub use requests::Forwarded;
pub use store::PgStore;
