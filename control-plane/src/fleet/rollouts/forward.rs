//! Rollout commands on a replica that does not drive the rollouts: forwarded through the
//! database to the one that does (`store/postgres/requests.rs`), carried out there at most
//! once, and answered back.

use std::time::{Duration, Instant};

use fleetnode_wire::{HostId, Rollout, RolloutId, StartRollout};
use serde::{Deserialize, Serialize};
use tracing::warn;

use super::{Action, RequestError};
use crate::fleet::Fleet;
use crate::fleet::backend::Backend;
use crate::rollout::StartError;
use crate::store::postgres::Forwarded;

/// How long a forwarded command waits for the driving replica to answer: past a lease's time
/// to live, another replica has taken the rollouts over and answers.
const FORWARD_WAIT: Duration = Duration::from_secs(45);
/// How often the requester looks for its answer.
const FORWARD_POLL: Duration = Duration::from_millis(50);

/// A rollout command as it travels between replicas.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Start a rollout.
    Start(StartRollout),
    /// An operator's command on a rollout.
    Act {
        /// Which rollout.
        id: RolloutId,
        /// What to do.
        action: Action,
    },
    /// Take hosts out of the rollouts that own them.
    TakeOut {
        /// The hosts.
        hosts: Vec<HostId>,
        /// Why.
        why: String,
    },
}

/// The answer to a forwarded command.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// The rollout as committed.
    Rollout(Box<Rollout>),
    /// The hosts were taken out.
    TakenOut,
    /// The command was refused or failed.
    Refused {
        /// How.
        kind: Refusal,
        /// What the driving replica said.
        message: String,
    },
}

/// What kind of refusal a forwarded command met, to be answered with the same status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    /// Something named does not exist.
    NotFound,
    /// The command does not apply to things as they are.
    Conflict,
    /// The command is not valid.
    Invalid,
    /// The store failed.
    Internal,
    /// Try again shortly.
    Unavailable,
}

impl Answer {
    /// The answer a replica that carried the command out gives.
    pub fn of(result: Result<Answer, RequestError>) -> Self {
        match result {
            Ok(answer) => answer,
            Err(error) => Self::Refused {
                kind: refusal(&error),
                message: error.to_string(),
            },
        }
    }
}

fn refusal(error: &RequestError) -> Refusal {
    match error {
        RequestError::Start(StartError::UnknownHosts(_)) | RequestError::NotFound(_) => {
            Refusal::NotFound
        }
        RequestError::Start(StartError::RevokedHosts(_) | StartError::Owned { .. })
        | RequestError::Rollout(_)
        | RequestError::Contended(_) => Refusal::Conflict,
        RequestError::Start(
            StartError::TagMatchesNothing { .. } | StartError::Uncovered { .. },
        ) => Refusal::Invalid,
        RequestError::Store => Refusal::Internal,
        RequestError::Stopped | RequestError::Elsewhere | RequestError::Unanswered => {
            Refusal::Unavailable
        }
        RequestError::Forwarded { kind, .. } => *kind,
    }
}

impl Fleet {
    /// Hands `command` to the replica that drives the rollouts and waits for its answer. A
    /// command not taken within [`FORWARD_WAIT`] is withdrawn (it will never run) and refused
    /// as unavailable; one taken but not answered (the driving replica stopped while carrying
    /// it out) says so, since it may have run.
    pub(super) async fn forward(&self, command: Command) -> Result<Answer, RequestError> {
        let Backend::Postgres(backend) = &self.backend else {
            return Err(RequestError::Elsewhere);
        };
        let store = &backend.store;
        let request = serde_json::to_value(&command).map_err(|_| RequestError::Store)?;
        let id = store.forward_request(&request).await.map_err(|error| {
            warn!(%error, "cannot forward a rollout command");
            RequestError::Store
        })?;
        let deadline = Instant::now() + FORWARD_WAIT;
        loop {
            match store.forwarded(id).await {
                Ok(Forwarded::Answered(answer)) => {
                    return serde_json::from_value(answer).map_err(|error| {
                        warn!(%error, "the driving replica's answer does not read");
                        RequestError::Store
                    });
                }
                Ok(Forwarded::Taken | Forwarded::Waiting) => {}
                Err(error) => warn!(%error, "cannot read a forwarded rollout command's answer"),
            }
            if Instant::now() >= deadline {
                return match store.withdraw_request(id).await {
                    Ok(true) => Err(RequestError::Elsewhere),
                    Ok(false) | Err(_) => Err(RequestError::Unanswered),
                };
            }
            tokio::time::sleep(FORWARD_POLL).await;
        }
    }
}

/// The rollout an answer carries, or its refusal as the requester's error.
pub fn rollout(answer: Answer) -> Result<Rollout, RequestError> {
    match answer {
        Answer::Rollout(rollout) => Ok(*rollout),
        Answer::Refused { kind, message } => Err(RequestError::Forwarded { kind, message }),
        Answer::TakenOut => Err(RequestError::Store),
    }
}

/// The answer to a take-out, as the requester's result.
pub fn taken_out(answer: Answer) -> Result<(), RequestError> {
    match answer {
        Answer::TakenOut => Ok(()),
        Answer::Refused { kind, message } => Err(RequestError::Forwarded { kind, message }),
        Answer::Rollout(_) => Err(RequestError::Store),
    }
}
